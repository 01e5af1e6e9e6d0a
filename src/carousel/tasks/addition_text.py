r"""Written addition as a sequence-to-sequence task: ``"357+68"`` -> ``"425"`` and the end token.

An encoder reads the problem character by character, a decoder writes the sum's digits, most
significant first, then the end token (Sutskever et al. 2014; the encoder-decoder is
:class:`carousel.models.Seq2Seq`).

Vocabulary (:data:`VOCABULARY`, saved with a run): ``<s>`` (the decoder's start token, id 0),
``</s>`` (the end token, id 1), the digits ``0``-``9`` (ids 2-11) and ``+`` (id 12). Sources
and targets of a batch are padded with the end token; the masks say which steps exist.

Problems. An operand has ``k`` digits, ``k`` uniform in ``1..max_digits``, and is then uniform
among the numbers of ``k`` digits (``0..9`` for one digit, ``10^(k-1)..10^k - 1`` otherwise), so
that short and long operands are equally common.

Splits, fixed and disjoint. Every *unordered* pair ``{a, b}`` of operands of at most
``max_digits`` digits falls in one of three parts by a fixed hash of ``(min(a, b), max(a, b))``
(SplitMix64, independent of the seed): the test part (a ``test_fraction`` of the pairs), the
validation part (``valid_fraction``) and the training part (the rest). Training batches are
drawn from the training part only, the validation set (:meth:`AdditionTextTask.eval_batches`,
used to pick the best checkpoint) from the validation part and the test set
(:meth:`AdditionTextTask.test_batches`) from the test part, so no test problem, nor the same
problem with its operands swapped, is ever trained on or used for model selection. The
validation and test sets are fixed draws of ``valid_size`` and ``test_size`` *distinct*
problems (seeded by the task's seed); training batches are seeded draws with replacement.

The longer-number set (:meth:`AdditionTextTask.long_batches`) has ``long_size`` distinct
problems whose operands have exactly ``test_digits`` digits (default ``max_digits + 1``), more
than any training problem: it measures generalisation to longer inputs.

With ``reverse_source`` the source characters are fed in reverse order (``"86+753"``), the
trick of Sutskever et al. that puts the first output's inputs close to the decoder's start.

Shapes: ``x = (source (B, S), decoder_input (B, T))``, ``mask`` ``(B, S)``, ``y`` ``(B, T)``
(the sum's digits, then ``</s>``), ``target_mask`` ``(B, T)``; ``decoder_input`` is ``<s>``
followed by ``y`` without its last step. ``S`` is the longest source, ``T`` the longest answer
plus one.

Metrics (teacher forcing: the decoder reads the true previous token): ``loss``, the
cross-entropy per target token (nats, the end token included); ``accuracy``, the fraction of
target tokens predicted exactly; ``exact``, the fraction of problems whose every target token
is predicted exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from carousel.options import option
from carousel.tasks.base import Batch, ModelIO, Task, check_held_out, generator

VOCABULARY = ["<s>", "</s>", *"0123456789", "+"]
"""The token of each id."""
START, END, PLUS = 0, 1, 12
DIGIT = 2
"""The id of digit ``d`` is ``DIGIT + d``."""
SPLITS = ("train", "valid", "test")
EVAL_BATCH = 500
"""Problems per batch of the validation, test and longer-number sets."""
MAX_DIGITS = 9
"""The most digits an operand may have (the sums stay far inside int64)."""


@dataclass(frozen=True)
class AdditionTextOptions:
    """Options of written addition."""

    max_digits: int = option(3, "training, validation and test operands have 1..N digits")
    test_digits: int = option(0, "operand digits of the longer-number set (0: max_digits + 1)")
    reverse_source: bool = option(False, "feed the source characters in reverse order")
    valid_fraction: float = option(0.05, "fraction of operand pairs kept for validation")
    test_fraction: float = option(0.05, "fraction of operand pairs kept for the test set")
    valid_size: int = option(1000, "distinct problems in the validation set")
    test_size: int = option(2000, "distinct problems in the test set")
    long_size: int = option(1000, "distinct problems in the longer-number set")
    target_exact: float = option(
        0.0, "solved when the validation exact-match reaches this (0: never)"
    )


def splitmix64(values: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser of ``values`` (uint64, any shape): a fixed, well-mixed hash."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def digit_count(values: Tensor) -> Tensor:
    """Decimal digits of non-negative integers ``values`` (``0`` has one digit); same shape."""
    count = torch.ones_like(values)
    rest = values // 10
    while bool((rest > 0).any()):
        count += (rest > 0).long()
        rest = rest // 10
    return count


def sum_without_carries(a: int, b: int) -> int:
    """The digit-wise sum of ``a`` and ``b`` with every carry dropped: ``57 + 68`` -> ``15``
    (``5+6 = 11`` -> 1, ``7+8 = 15`` -> 5); leading zeros vanish (``50 + 50`` -> ``0``)."""
    result, place = 0, 1
    while a or b:
        result += (a % 10 + b % 10) % 10 * place
        a, b, place = a // 10, b // 10, place * 10
    return result


class AdditionTextTask(Task):
    """Written addition, encoder-decoder; see the module docstring for the splits and shapes."""

    name = "addition_text"
    Options = AdditionTextOptions
    vocabulary = VOCABULARY

    def configure(self, options: AdditionTextOptions) -> None:
        if not 1 <= options.max_digits < MAX_DIGITS:
            raise ValueError(
                f"addition_text option max_digits must lie in [1, {MAX_DIGITS - 1}]; "
                f"got {options.max_digits}"
            )
        self.test_digits = options.test_digits or options.max_digits + 1
        if not options.max_digits < self.test_digits <= MAX_DIGITS:
            raise ValueError(
                f"addition_text option test_digits must exceed max_digits ({options.max_digits}) "
                f"and be at most {MAX_DIGITS} (0: max_digits + 1); got {options.test_digits}"
            )
        check_held_out("addition_text", options, below=0.5)
        for name in ("valid_size", "test_size", "long_size"):
            if getattr(options, name) < 1:
                raise ValueError(
                    f"addition_text option {name} must be at least 1; got {getattr(options, name)}"
                )
        self.io = ModelIO(
            "seq2seq",
            len(VOCABULARY),
            len(VOCABULARY),
            tokens=True,
            start_token=START,
            end_token=END,
        )
        self._fixed: dict[str, tuple[Tensor, Tensor]] = {}
        self._batches: dict[str, list[Batch]] = {}

    # ---- problems and splits ---------------------------------------------------------------

    def split_of(self, a: Tensor, b: Tensor) -> Tensor:
        """The part (0 train, 1 validation, 2 test) of each operand pair, ``(N,)`` int64; it
        depends on the unordered pair only, and not on the seed."""
        low = torch.minimum(a, b).numpy().astype(np.uint64)
        high = torch.maximum(a, b).numpy().astype(np.uint64)
        key = splitmix64(splitmix64(low) ^ high)
        position = (key >> np.uint64(11)).astype(np.float64) / float(2**53)  # uniform in [0, 1)
        valid, test = self.options.valid_fraction, self.options.test_fraction
        split = np.where(position < test, 2, np.where(position < test + valid, 1, 0))
        return torch.from_numpy(split.astype(np.int64))

    def operands(
        self, count: int, rng: torch.Generator, digits: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """``count`` operand pairs ``(a (N,), b (N,))`` int64: each operand's digits uniform in
        ``1..max_digits`` (or exactly ``digits``), then the operand uniform among those numbers."""
        pairs = []
        for _ in range(2):
            if digits is None:
                length = torch.randint(1, self.options.max_digits + 1, (count,), generator=rng)
            else:
                length = torch.full((count,), digits, dtype=torch.long)
            high = 10**length
            low = torch.where(length == 1, 0, high // 10)
            uniform = torch.rand(count, generator=rng, dtype=torch.float64)
            value = low + (uniform * (high - low).double()).long()
            pairs.append(torch.minimum(value, high - 1))
        return pairs[0], pairs[1]

    def draw(self, count: int, split: str, rng: torch.Generator, distinct: bool = False):
        """``count`` problems ``(a (N,), b (N,))`` of ``split`` (``"train"``, ``"valid"``,
        ``"test"``, or ``"long"``: operands of ``test_digits`` digits), drawn with ``rng``;
        ``distinct``: no problem twice.

        Raises:
            ValueError: the split has fewer than ``count`` distinct problems.
        """
        if split not in (*SPLITS, "long"):
            raise ValueError(f"split must be one of {(*SPLITS, 'long')}; got {split!r}")
        found: dict[tuple[int, int], None] = {}
        kept_a, kept_b, total = [], [], 0
        for _ in range(1000):
            if split == "long":
                a, b = self.operands(2 * count, rng, self.test_digits)
            else:
                a, b = self.operands(2 * count, rng)
                keep = self.split_of(a, b) == SPLITS.index(split)
                a, b = a[keep], b[keep]
            if distinct:
                fresh = []
                for index, pair in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
                    if pair not in found:
                        found[pair] = None
                        fresh.append(index)
                a, b = a[fresh], b[fresh]
            kept_a.append(a)
            kept_b.append(b)
            total += len(a)
            if total >= count:
                return torch.cat(kept_a)[:count], torch.cat(kept_b)[:count]
        raise ValueError(
            f"addition_text: the {split} part has fewer than {count} distinct problems with "
            f"max_digits={self.options.max_digits}; lower the option {split}_size or raise "
            "max_digits"
        )

    def problems(self, split: str) -> tuple[Tensor, Tensor]:
        """The fixed problems ``(a (N,), b (N,))`` of ``"valid"`` (``valid_size``), ``"test"``
        (``test_size``) or ``"long"`` (``long_size``), the same on every call."""
        if split not in self._fixed:
            sizes = {
                "valid": self.options.valid_size,
                "test": self.options.test_size,
                "long": self.options.long_size,
            }
            if split not in sizes:
                raise ValueError(f"split must be one of {list(sizes)}; got {split!r}")
            rng = generator(self.seed, self.name, split)
            self._fixed[split] = self.draw(sizes[split], split, rng, distinct=True)
        return self._fixed[split]

    # ---- text and batches ------------------------------------------------------------------

    def source_text(self, a: int, b: int) -> str:
        """The problem as written, ``"357+68"`` (not reversed)."""
        return f"{a}+{b}"

    def encode(self, text: str) -> Tensor:
        """Token ids of ``text`` (digits and ``+``), ``(len(text),)`` int64."""
        unknown = sorted(set(text) - set("0123456789+"))
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {unknown}")
        return torch.tensor([PLUS if c == "+" else DIGIT + int(c) for c in text], dtype=torch.long)

    def decode(self, ids: Tensor) -> str:
        """The text of token ids ``(L,)`` up to (without) the first end token."""
        text = []
        for token in ids.tolist():
            if token == END:
                break
            text.append(VOCABULARY[token])
        return "".join(text)

    def batch(self, a: Tensor, b: Tensor) -> Batch:
        """The batch of problems ``a + b`` (each ``(B,)``); see the module docstring."""
        sources = [self.source_text(x, y) for x, y in zip(a.tolist(), b.tolist(), strict=True)]
        if self.options.reverse_source:
            sources = [source[::-1] for source in sources]
        answers = [str(total) for total in (a + b).tolist()]
        size = len(sources)
        source = torch.full((size, max(map(len, sources))), END)
        target = torch.full((size, max(map(len, answers)) + 1), END)
        for row, (text, answer) in enumerate(zip(sources, answers, strict=True)):
            source[row, : len(text)] = self.encode(text)
            target[row, : len(answer)] = self.encode(answer)
        source_lengths = torch.tensor([len(text) for text in sources])
        target_lengths = torch.tensor([len(answer) + 1 for answer in answers])
        mask = torch.arange(source.shape[1]) < source_lengths.unsqueeze(1)  # (B, S)
        target_mask = torch.arange(target.shape[1]) < target_lengths.unsqueeze(1)  # (B, T)
        decoder_input = torch.cat([torch.full((size, 1), START), target[:, :-1]], dim=1)
        return Batch(x=(source, decoder_input), y=target, mask=mask, target_mask=target_mask)

    def batches(self, a: Tensor, b: Tensor, size: int = EVAL_BATCH) -> list[Batch]:
        """Problems ``a + b`` in batches of ``size``, in order."""
        return [self.batch(a[i : i + size], b[i : i + size]) for i in range(0, len(a), size)]

    def train_batch(self, index: int, batch_size: int) -> Batch:
        """``batch_size`` problems of the training part, drawn from the stream ``index``."""
        rng = generator(self.seed, self.name, "train", index)
        return self.batch(*self.draw(batch_size, "train", rng))

    def _fixed_batches(self, split: str) -> list[Batch]:
        if split not in self._batches:
            self._batches[split] = self.batches(*self.problems(split))
        return self._batches[split]

    def eval_batches(self) -> list[Batch]:
        """The validation set: ``valid_size`` distinct problems of the validation part."""
        return self._fixed_batches("valid")

    def test_batches(self) -> list[Batch]:
        """The test set: ``test_size`` distinct problems of the test part."""
        return self._fixed_batches("test")

    def long_batches(self) -> list[Batch]:
        """The longer-number set: ``long_size`` distinct problems with operands of exactly
        ``test_digits`` digits."""
        return self._fixed_batches("long")

    # ---- loss and metrics ------------------------------------------------------------------

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        """Cross-entropy per target token (end token included); ``output``: logits
        ``(B, T, V)``."""
        return F.cross_entropy(output[batch.target_mask], batch.y[batch.target_mask])

    def scores(self, output: Tensor, batch: Batch) -> dict[str, Tensor]:
        """Per problem: summed negative log-likelihood, target tokens, correct tokens, and
        whether all of them are correct."""
        labelled = batch.target_mask
        nll = F.cross_entropy(output.transpose(1, 2), batch.y, reduction="none")  # (B, T)
        correct = (output.argmax(-1) == batch.y) & labelled
        tokens = labelled.sum(1)
        return {
            "nll": (nll * labelled).sum(1),
            "tokens": tokens,
            "correct": correct.sum(1),
            "exact": (correct.sum(1) == tokens).double(),
        }

    def metrics(self, totals: dict[str, float], sequences: int) -> dict[str, float]:
        """``loss`` (nats per target token), ``accuracy`` (per token), ``exact`` (per problem)."""
        return {
            "loss": totals["nll"] / totals["tokens"],
            "accuracy": totals["correct"] / totals["tokens"],
            "exact": totals["exact"] / sequences,
        }

    def solved(self, recent: dict[str, Tensor], evaluation: dict[str, float] | None) -> bool:
        """Validation exact-match at or above ``target_exact`` (if set)."""
        target = self.options.target_exact
        return bool(target > 0 and evaluation is not None and evaluation["exact"] >= target)
