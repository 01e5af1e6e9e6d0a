r"""The adding problem: experiment 4 of Hochreiter & Schmidhuber (1997).

Each step is a pair (value, marker). Values are uniform in :math:`[-1, 1]`; markers are 0 except
that exactly two pairs are marked with 1 and the first and the last pair carry -1:

1. the length is a random integer in :math:`[T, T + \lfloor T/10 \rfloor]`;
2. :math:`X_1` is one of the first 10 pairs, marked;
3. :math:`X_2` is one of the first :math:`T/2 - 1` still-unmarked pairs (positions
   :math:`0 \dots \lfloor T/2 \rfloor - 1` without :math:`X_1`'s), marked;
4. the first and the last pair get marker -1, except that a marked first pair keeps its 1 and
   its value is set to 0 (the paper: ":math:`X_1` is set to zero in the rare case where the
   first pair of the sequence got marked"; here that holds whichever of the two marks it).

The target, given only at the end, is :math:`0.5 + (X_1 + X_2) / 4`; a sequence is *correct* if
the absolute error of the output at its end is below 0.04. The loss is the squared error. The
paper stops training when the average training error is below 0.01 and the last 2,000 training
sequences were all correct; here the average is the mean squared error over those 2,000
sequences (``stop_error``, ``stop_window``). Its test set has 2,560 sequences.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from carousel.tasks.base import Batch, ModelIO, Task, generator

TOLERANCE = 0.04
"""A sequence is correct if the absolute error at its end is below this (the paper's value)."""


@dataclass(frozen=True)
class AddingOptions:
    """Options of the adding problem."""

    length: int = field(
        default=100,
        metadata={
            "help": "T: sequence lengths are uniform in [T, T + T//10] (the paper: 100, 500, 1000)"
        },
    )
    test_size: int = field(default=2560, metadata={"help": "sequences in the fixed test set"})
    output_activation: str = field(
        default="sigmoid",
        metadata={
            "help": "output unit: sigmoid (the paper) or identity",
            "choices": ("sigmoid", "identity"),
        },
    )
    stop_window: int = field(
        default=2000,
        metadata={"help": "solved when this many latest training sequences were all correct ..."},
    )
    stop_error: float = field(
        default=0.01, metadata={"help": "... and their mean squared error is below this"}
    )


class AddingTask(Task):
    """The adding problem; see the module docstring. ``x``: ``(B, T, 2)``, ``y``: ``(B, 1)``."""

    name = "adding"
    Options = AddingOptions

    def __init__(self, options: AddingOptions | None = None, seed: int = 0) -> None:
        super().__init__(options, seed)
        options = self.options
        if options.length < 12:
            raise ValueError(f"adding option length (T) must be at least 12; got {options.length}")
        if options.test_size < 1 or options.stop_window < 0:
            raise ValueError("adding options test_size must be >= 1 and stop_window >= 0")
        self.io = ModelIO("regressor", 2, 1, output_activation=options.output_activation)
        self.window = options.stop_window
        self._test: list[Batch] | None = None

    def sequences(self, count: int, rng: torch.Generator) -> Batch:
        """``count`` sequences drawn with ``rng``."""
        short = self.options.length
        lengths = torch.randint(short, short + short // 10 + 1, (count,), generator=rng)  # (B,)
        steps = int(lengths.max())
        values = torch.rand(count, steps, generator=rng) * 2 - 1  # (B, T)
        first = torch.randint(0, 10, (count,), generator=rng)  # (B,)
        second = torch.randint(0, short // 2 - 1, (count,), generator=rng)
        second = second + (second >= first).long()  # skip X1's position
        rows = torch.arange(count)
        markers = torch.zeros(count, steps)
        markers[:, 0] = -1.0
        markers[rows, lengths - 1] = -1.0
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        values[:, 0] = torch.where(
            markers[:, 0] == 1, 0.0, values[:, 0]
        )  # a marked first pair adds 0
        mask = torch.arange(steps) < lengths.unsqueeze(1)  # (B, T)
        x = torch.stack([values, markers], dim=-1) * mask.unsqueeze(-1)  # (B, T, 2)
        y = 0.5 + (values[rows, first] + values[rows, second]) / 4  # (B,)
        return Batch(x=x, y=y.unsqueeze(1), mask=mask)

    def train_batch(self, index: int, batch_size: int) -> Batch:
        """Training batch ``index``: fresh sequences from its own seeded stream."""
        return self.sequences(batch_size, generator(self.seed, "adding-train", index))

    def eval_batches(self) -> list[Batch]:
        """The test set: ``test_size`` sequences in batches of 256, drawn once."""
        if self._test is None:
            rng = generator(self.seed, "adding-test")
            sizes = [256] * (self.options.test_size // 256)
            if self.options.test_size % 256:
                sizes.append(self.options.test_size % 256)
            self._test = [self.sequences(size, rng) for size in sizes]
        return self._test

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        """Mean over sequences of the squared error at the end; ``output`` is ``(B, 1)``."""
        return (output - batch.y).square().sum(-1).mean()

    def scores(self, output: Tensor, batch: Batch) -> dict[str, Tensor]:
        """Per sequence: ``loss`` (squared error), ``abs_error``, ``correct`` (0/1)."""
        error = (output - batch.y).abs().amax(-1)  # (B,)
        return {
            "loss": (output - batch.y).square().sum(-1),
            "abs_error": error,
            "correct": (error < TOLERANCE).double(),
        }

    def metrics(self, totals: dict[str, float], sequences: int) -> dict[str, float]:
        """``loss`` (mean squared error), ``abs_error``, ``accuracy`` and ``wrong`` (a count)."""
        return {
            "loss": totals["loss"] / sequences,
            "abs_error": totals["abs_error"] / sequences,
            "accuracy": totals["correct"] / sequences,
            "wrong": sequences - totals["correct"],
        }

    def solved(self, recent: dict[str, Tensor], evaluation: dict[str, float] | None) -> bool:
        """The paper's rule on the training stream: the last ``stop_window`` sequences were all
        correct and their mean squared error is below ``stop_error``."""
        if self.window == 0 or not recent or len(recent["correct"]) < self.window:
            return False
        return (
            bool(recent["correct"].all()) and float(recent["loss"].mean()) < self.options.stop_error
        )
