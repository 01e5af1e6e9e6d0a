r"""Character-level language model of Python's bundled documentation, against a Kneser-Ney
n-gram model.

Data: the help topics that ship with Python (``pydoc_data.topics``, about 465,000 characters of
English and code); the first 80 % trains, the next 10 % validates (best checkpoint, n-gram
order), the final 10 % is the test text (:class:`~carousel.tasks.charlm.CharLMTask`). The LSTM
reads the training text as 32 streams with stateful truncated BPTT over chunks of 100
characters.

Baseline: an interpolated Kneser-Ney character n-gram model (Kneser & Ney 1995; Chen & Goodman
1999) fitted on the training text, whose order (1 to 12, tried in turn until one is no better) is the one with the lowest validation
bits per character. For a context :math:`h` of ``n - 1`` characters,

.. math::

    P(c \mid h) = \frac{\max(N(h c) - D, 0)}{N(h)} + \frac{D \, T(h)}{N(h)} P(c \mid h')

where :math:`h'` drops the oldest character, :math:`N` counts occurrences at the highest order
and *continuation counts* (distinct characters seen before) at the lower orders, :math:`T(h)`
is the number of distinct characters seen after :math:`h`, and :math:`D = 0.75`. Contexts never
seen fall back to the shorter one; the lowest order interpolates with the uniform distribution
over the vocabulary, so every character has a probability.

Both models are scored on the same test characters: bits per character, and the share of
characters predicted exactly by the most likely next character.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch

from carousel.applications.runner import Metric, Report, test_metrics
from carousel.train import Config, ModelConfig, OptimConfig, TrainConfig

NAME = "charlm"
TITLE = "Character-level language model: Python's documentation (pydoc_data.topics)"
METRICS = [
    Metric("bpc", "test bits per character", higher_is_better=False, digits=3),
    Metric("accuracy", "next character accuracy", higher_is_better=True, digits=3),
]
PROMPT = "The for statement"


def config(quick: bool) -> Config:
    """One LSTM layer of 256 cells over 64-wide character embeddings, Adam with warm-up and
    cosine decay, 3,000 steps of 32 x 100 characters (``quick``: 20,000 characters, 20 steps)."""
    return Config(
        task="charlm",
        task_options={
            "seq_len": 100 if not quick else 50,
            "valid_fraction": 0.1,
            "test_fraction": 0.1,
            "max_chars": 20_000 if quick else 0,
        },
        model=ModelConfig(
            hidden_size=256 if not quick else 32,
            embedding_size=64 if not quick else 16,
            dropout=0.1,
        ),
        optim=OptimConfig(
            optimizer="adam",
            lr=3e-3,
            schedule="cosine",
            warmup_steps=100 if not quick else 2,
            clip_norm=1.0,
        ),
        train=TrainConfig(
            steps=3000 if not quick else 20,
            batch_size=32,
            eval_every=250 if not quick else 10,
            log_every=50 if not quick else 5,
            checkpoint_every=250 if not quick else 10,
        ),
    )


class KneserNey:
    """Interpolated Kneser-Ney character n-gram model of order ``order`` (see the module
    docstring).

    Args:
        text: the training text.
        order: the longest n-gram (context of ``order - 1`` characters), >= 1.
        vocabulary: every character that may be scored (the uniform floor spreads over it).
        discount: the absolute discount ``D`` in (0, 1).
    """

    def __init__(
        self, text: str, order: int, vocabulary: list[str], discount: float = 0.75
    ) -> None:
        if order < 1:
            raise ValueError(f"order must be >= 1; got {order}")
        if not 0 < discount < 1:
            raise ValueError(f"discount must lie in (0, 1); got {discount}")
        self.order, self.discount, self.vocabulary = order, discount, list(vocabulary)
        self.index = {char: i for i, char in enumerate(self.vocabulary)}
        # counts[k][context] = Counter of the next character, for contexts of k characters;
        # raw counts at the highest order, continuation counts below it.
        raw: list[dict[str, Counter]] = [defaultdict(Counter) for _ in range(order)]
        for k in range(order):
            for end in range(k, len(text)):
                raw[k][text[end - k : end]][text[end]] += 1
        self.counts = [raw[order - 1]]
        for k in range(order - 2, -1, -1):
            continuation: dict[str, Counter] = defaultdict(Counter)
            for context, following in raw[k + 1].items():
                for char in following:
                    continuation[context[1:]][char] += 1  # one per distinct preceding character
            self.counts.insert(0, continuation)
        self.totals = [{h: sum(c.values()) for h, c in level.items()} for level in self.counts]

    def probability(self, context: str, char: str) -> float:
        r""":math:`P(\text{char} \mid \text{context})`, using the last ``order - 1`` characters
        of ``context``."""
        probability = 1.0 / len(self.vocabulary)
        for k in range(self.order):
            if k > len(context):
                break
            history = context[len(context) - k :] if k else ""
            following = self.counts[k].get(history)
            if following is None:
                break  # unseen context: longer ones are unseen too
            total = self.totals[k][history]
            probability = (
                max(following.get(char, 0) - self.discount, 0.0)
                + self.discount * len(following) * probability
            ) / total
        return probability

    def distribution(self, context: str) -> np.ndarray:
        r""":math:`P(\cdot \mid \text{context})` over the vocabulary, ``(V,)`` float64."""
        probabilities = np.full(len(self.vocabulary), 1.0 / len(self.vocabulary))
        for k in range(min(self.order, len(context) + 1)):
            history = context[len(context) - k :] if k else ""
            following = self.counts[k].get(history)
            if following is None:
                break
            counts = np.zeros(len(self.vocabulary))
            for char, count in following.items():
                counts[self.index[char]] = count
            probabilities = (
                np.maximum(counts - self.discount, 0.0)
                + self.discount * len(following) * probabilities
            ) / self.totals[k][history]
        return probabilities

    def most_likely(self, context: str) -> str:
        """The character of highest probability after ``context``."""
        return self.vocabulary[int(self.distribution(context).argmax())]

    def score(self, text: str, start: int, stop: int) -> tuple[float, int]:
        r"""``(bits, correct)`` for the characters ``text[start:stop]``, each predicted from the
        characters before it: summed :math:`-\log_2 P` and exactly predicted characters."""
        bits, correct = 0.0, 0
        span = self.order - 1
        for end in range(start, stop):
            probabilities = self.distribution(text[max(0, end - span) : end])
            target = self.index[text[end]]
            bits -= math.log2(probabilities[target])
            correct += int(probabilities.argmax()) == target
        return bits, correct


def ngram_baseline(task, orders=range(1, 13)) -> tuple[int, dict[str, float], list[str]]:
    """The Kneser-Ney model whose order has the lowest validation bits per character, scored on
    the test text: ``(order, metrics, notes)``."""
    train_text, valid_text = task.decode(task.train_ids), task.decode(task.valid_ids)
    whole = train_text + valid_text + task.decode(task.test_ids)
    valid_start, test_start = len(train_text), len(train_text) + len(valid_text)
    best, notes = None, []
    for order in orders:
        model = KneserNey(train_text, order, task.vocabulary)
        bits = sum(
            -math.log2(model.probability(whole[max(0, end - order + 1) : end], whole[end]))
            for end in range(valid_start, test_start)
        )
        bpc = bits / len(valid_text)
        notes.append(f"{order}: {bpc:.3f}")
        if best is None or bpc < best[1]:
            best = (order, bpc, model)
        else:
            break  # past the best order: longer contexts only overfit more
    order, _, model = best
    # Score the test text as the LSTM sees it: eval_streams streams, each predicted from its own
    # start (the LSTM's state starts at zero at each stream's first character).
    streams = task.chunks(task.test_ids, task.options.eval_streams)
    bits, correct, chars = 0.0, 0, 0
    for row in streams:
        text = task.decode(row)
        row_bits, row_correct = model.score(text, 1, len(text))
        bits, correct, chars = bits + row_bits, correct + row_correct, chars + len(text) - 1
    text = "Kneser-Ney orders tried, validation bits per character: " + ", ".join(notes) + "."
    return order, {"bpc": bits / chars, "accuracy": correct / chars}, [text]


def report(task, model, out_dir: Path, quiet: bool) -> Report:
    """The LSTM's and the best Kneser-Ney model's test bits per character, and a sample."""
    lstm = test_metrics(model, task)
    order, ngram, notes = ngram_baseline(task)
    prompt = torch.tensor([task.index[char] for char in PROMPT])
    generator = torch.Generator().manual_seed(0)
    sample = PROMPT + task.decode(model.sample(prompt, 400, 0.5, generator))
    (out_dir / "sample.txt").write_text(sample + "\n", encoding="utf-8")
    layer = model.encoder.layer
    notes += [
        "",
        f"A sample (temperature 0.5, prompt {PROMPT!r}; `carousel sample {out_dir}/run "
        f'--prime "{PROMPT}"` draws more):',
        "",
        "```text",
        sample,
        "```",
    ]
    return Report(
        rows={
            f"LSTM ({layer.hidden_size} cells)": lstm,
            f"Kneser-Ney {order}-gram": ngram,
        },
        notes=notes,
        files=["sample.txt"],
    )
