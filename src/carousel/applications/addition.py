"""Written addition with an LSTM encoder-decoder: ``"357+68"`` -> ``"425"``.

The task is :mod:`carousel.tasks.addition_text`: operands of 1 to ``max_digits`` = 3 digits,
the source fed in reverse (Sutskever et al. 2014), a fixed hash partition of the operand pairs
into training, validation and test parts, so no test problem (in either operand order) is ever
trained on or used to pick the checkpoint. The model is :class:`carousel.models.Seq2Seq`, one
LSTM layer of 128 cells for the encoder and one for the decoder, embeddings of 32.

The report decodes the test set (distinct in-distribution problems) and the longer-number set
(both operands of ``max_digits + 1`` digits, longer than anything seen in training) with greedy
decoding and with beam search (width :data:`BEAM_WIDTH`), and scores:

- ``exact``, ``exact_long``: the fraction of problems whose decoded answer is the sum;
- ``accuracy``, ``accuracy_long``: character accuracy, the fraction of target tokens (the sum's
  digits and the end token) that the decoded output has at the same position, read from the
  left (an answer of the wrong length is wrong from where it departs);
- ``loss``: the teacher-forced cross-entropy per target token on the test set (the LSTM only).

There is no learned baseline for this task. The one reference row is a rule that needs no
training: the digit-wise sum with every carry dropped (``57+68`` -> ``15``). Its exact match is
the share of problems that need no carry at all, so it tells how much of the LSTM's score is
carrying; it is right on any length, which the LSTM is not.

A plot (``exact_by_digits.png``) shows exact match by the number of digits of the longer
operand, 1 to ``max_digits`` from the test set and ``max_digits + 1`` from the longer set.
"""

from __future__ import annotations

from pathlib import Path

import torch

from carousel.applications.runner import Metric, Report, test_metrics
from carousel.tasks.addition_text import AdditionTextTask, digit_count, sum_without_carries
from carousel.train import Config
from carousel.train.config import ModelConfig, OptimConfig, TrainConfig

NAME = "addition"
TITLE = "Written addition: an LSTM encoder-decoder learns 357+68 -> 425"
METRICS = [
    Metric("exact", "exact match (test)", True),
    Metric("exact_long", "exact match (longer operands)", True),
    Metric("accuracy", "character accuracy (test)", True),
    Metric("accuracy_long", "character accuracy (longer operands)", True),
    Metric("loss", "teacher-forced loss (nats/token)", False),
]
BEAM_WIDTH = 4
"""The beam search's width."""
SAMPLES = 6
"""Sample decodings shown per set."""


def config(quick: bool) -> Config:
    """The LSTM's run: 3,000 steps of 128 problems, Adam at 1e-2 with warm-up and cosine decay,
    gradients clipped to norm 1 (``quick``: 20 tiny steps, 2-digit operands, a few dozen test
    problems)."""
    if quick:
        return Config(
            task="addition_text",
            task_options={
                "max_digits": 2,
                "reverse_source": True,
                "valid_size": 48,
                "test_size": 64,
                "long_size": 32,
            },
            model=ModelConfig(hidden_size=16, embedding_size=8),
            optim=OptimConfig(lr=1e-2, clip_norm=1.0),
            train=TrainConfig(
                steps=20, batch_size=16, eval_every=10, log_every=5, checkpoint_every=10
            ),
        )
    return Config(
        task="addition_text",
        task_options={"max_digits": 3, "reverse_source": True},
        model=ModelConfig(hidden_size=128, num_layers=1, embedding_size=32),
        optim=OptimConfig(lr=1e-2, schedule="cosine", warmup_steps=100, clip_norm=1.0),
        train=TrainConfig(
            steps=3000, batch_size=128, eval_every=250, log_every=50, checkpoint_every=1000
        ),
    )


def decode(model, task: AdditionTextTask, split: str, beam_width: int = 1) -> list[str]:
    """The model's answers to the fixed problems of ``split`` (``"test"`` or ``"long"``), in
    order: greedy decoding for ``beam_width`` 1, else beam search of that width."""
    device = next(model.parameters()).device
    max_length = task.test_digits + 2  # the longest sum's digits and the end token
    answers = []
    for batch in task.batches(*task.problems(split)):
        source, mask = batch.x[0].to(device), batch.mask.to(device)
        if beam_width == 1:
            tokens = model.greedy(source, mask, max_length=max_length)
        else:
            tokens, _ = model.beam_search(
                source, mask, beam_width=beam_width, max_length=max_length
            )
        answers.extend(task.decode(row) for row in tokens.cpu())
    return answers


def score(predictions: list[str], answers: list[str]) -> dict[str, torch.Tensor]:
    """Per problem ``(N,)``: ``exact`` (the prediction is the answer), ``correct`` (target tokens,
    the answer's characters and the end token, matched at the same position from the left) and
    ``tokens`` (the target's length, the end token included)."""
    if len(predictions) != len(answers):
        raise ValueError(
            f"predictions and answers must be as many; got {len(predictions)} and {len(answers)}"
        )
    exact, correct, tokens = [], [], []
    for predicted, answer in zip(predictions, answers, strict=True):
        target = [*answer, None]  # None: the end token
        output = [*predicted, None]
        exact.append(predicted == answer)
        correct.append(sum(p == t for p, t in zip(output, target, strict=False)))
        tokens.append(len(target))
    return {
        "exact": torch.tensor(exact, dtype=torch.float64),
        "correct": torch.tensor(correct, dtype=torch.float64),
        "tokens": torch.tensor(tokens, dtype=torch.float64),
    }


def summary(scores: dict[str, torch.Tensor]) -> tuple[float, float]:
    """``(exact match, character accuracy)`` of :func:`score` 's output."""
    return float(scores["exact"].mean()), float(scores["correct"].sum() / scores["tokens"].sum())


def report(task: AdditionTextTask, model, out_dir: Path, quiet: bool) -> Report:
    """Greedy and beam decoding of the test and longer-number sets, the no-carry rule, the
    exact match by digits (table and plot) and sample decodings."""
    model.eval()
    teacher_forced = test_metrics(model, task)
    layer = model.encoder.layer
    lstm = f"LSTM seq2seq ({layer.num_layers} x {layer.hidden_size} cells)"
    problems = {split: task.problems(split) for split in ("test", "long")}
    answers = {
        split: [str(total) for total in (a + b).tolist()] for split, (a, b) in problems.items()
    }
    predictions = {
        "greedy": {split: decode(model, task, split) for split in problems},
        f"beam {BEAM_WIDTH}": {split: decode(model, task, split, BEAM_WIDTH) for split in problems},
        "no carries": {
            split: [
                str(sum_without_carries(x, y)) for x, y in zip(a.tolist(), b.tolist(), strict=True)
            ]
            for split, (a, b) in problems.items()
        },
    }
    names = {
        "greedy": f"{lstm}, greedy",
        f"beam {BEAM_WIDTH}": f"{lstm}, beam {BEAM_WIDTH}",
        "no carries": "digit-wise sum without carries (rule)",
    }
    rows: dict[str, dict[str, float]] = {}
    scores: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    for method, outputs in predictions.items():
        scores[method] = {split: score(outputs[split], answers[split]) for split in problems}
        exact, accuracy = summary(scores[method]["test"])
        exact_long, accuracy_long = summary(scores[method]["long"])
        rows[names[method]] = {
            "exact": exact,
            "exact_long": exact_long,
            "accuracy": accuracy,
            "accuracy_long": accuracy_long,
        }
    rows[names["greedy"]]["loss"] = teacher_forced["loss"]

    # Exact match by the number of digits of the longer operand.
    a, b = problems["test"]
    longer = torch.maximum(digit_count(a), digit_count(b))
    digits = [*range(1, task.options.max_digits + 1), task.test_digits]
    by_digits: dict[str, list[float]] = {method: [] for method in predictions}
    counts = []
    for k in digits:
        if k == task.test_digits:
            chosen, split = torch.ones(len(answers["long"]), dtype=torch.bool), "long"
        else:
            chosen, split = longer == k, "test"
        counts.append(int(chosen.sum()))
        for method in predictions:
            exact = scores[method][split]["exact"][chosen]
            by_digits[method].append(float(exact.mean()) if len(exact) else float("nan"))

    options = task.options
    notes = [
        f"Test set: {options.test_size:,} distinct problems with operands of 1-{options.max_digits} "
        f"digits from the test part ({options.test_fraction:.0%}) of a fixed hash partition of "
        "the unordered operand pairs; training draws only from the training part "
        f"({1 - options.test_fraction - options.valid_fraction:.0%}) and the checkpoint was "
        f"chosen on {options.valid_size:,} problems of the validation part "
        f"({options.valid_fraction:.0%}). Longer operands: {options.long_size:,} distinct "
        f"problems whose two operands have exactly {task.test_digits} digits, never seen in "
        "training. Source fed " + ("in reverse." if options.reverse_source else "as written."),
        f"Teacher forcing on the test set (the decoder reads the true previous digit): token "
        f"accuracy {teacher_forced['accuracy']:.4f}, exact match {teacher_forced['exact']:.4f}.",
        "",
        "Exact match by the number of digits of the longer operand "
        f"({task.test_digits} digits: the longer-operand set):",
        "",
        "| digits | problems | " + " | ".join(names[m] for m in predictions) + " |",
        "|---:|---:|" + "---:|" * len(predictions),
    ]
    for index, k in enumerate(digits):
        cells = " | ".join(f"{by_digits[m][index]:.4f}" for m in predictions)
        notes.append(f"| {k} | {counts[index]:,} | {cells} |")

    def line(split: str, index: int) -> str:
        x, y = problems[split]
        greedy = predictions["greedy"][split][index]
        beam = predictions[f"beam {BEAM_WIDTH}"][split][index]
        answer = answers[split][index]
        mark = "right" if greedy == answer else "wrong"
        problem = task.source_text(int(x[index]), int(y[index]))
        return f"- `{problem}` -> `{greedy}` / `{beam}`; answer `{answer}` ({mark})"

    notes += ["", f"Sample decodings (greedy / beam {BEAM_WIDTH}; answer):", ""]
    for split in problems:
        notes += [line(split, index) for index in range(min(SAMPLES, len(answers[split])))]
    wrong = [i for i, e in enumerate(scores["greedy"]["test"]["exact"].tolist()) if not e]
    if wrong:
        notes += [
            "",
            f"Greedy errors on the test set ({min(SAMPLES, len(wrong))} of {len(wrong)}):",
        ]
        notes += ["", *(line("test", index) for index in wrong[:SAMPLES])]
    notes.append("")
    files = [_plot(out_dir, digits, counts, by_digits, names, options.max_digits)]
    return Report(rows=rows, notes=notes, files=files, ours=2)


def _plot(out_dir: Path, digits, counts, by_digits, names, max_digits: int) -> str:
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "the addition application's plot needs matplotlib: pip install 'carousel-lstm[apps]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    styles = [("o", "-"), ("s", "--"), ("^", ":")]
    for (method, values), (marker, linestyle) in zip(by_digits.items(), styles, strict=True):
        axes.plot(digits, values, marker=marker, linestyle=linestyle, label=names[method])
    axes.axvline(max_digits + 0.5, color="grey", linestyle=":", linewidth=1)
    axes.text(max_digits + 0.55, 0.5, "longer than\ntraining", color="grey", fontsize=8)
    axes.set_xticks(digits, [f"{k}\n({n:,} problems)" for k, n in zip(digits, counts, strict=True)])
    axes.set_xlabel("digits of the longer operand")
    axes.set_ylabel("exact match")
    axes.set_ylim(-0.02, 1.02)
    axes.set_title("Written addition: exact match by operand length")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out_dir / "exact_by_digits.png", dpi=120)
    plt.close(figure)
    return "exact_by_digits.png"
