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

from dataclasses import dataclass

import torch
from torch import Tensor

from carousel.options import option
from carousel.tasks.base import Batch, ModelIO
from carousel.tasks.paper import SequenceTask, check_options, stop_window_option, test_size_option

TOLERANCE = 0.04
"""A sequence is correct if the absolute error at its end is below this (the paper's value)."""


@dataclass(frozen=True)
class AddingOptions:
    """Options of the adding problem."""

    length: int = option(
        100, "T: sequence lengths are uniform in [T, T + T//10] (the paper: 100, 500, 1000)"
    )
    test_size: int = test_size_option(2560)
    output_activation: str = option(
        "sigmoid", "output unit: sigmoid (the paper) or identity", choices=("sigmoid", "identity")
    )
    stop_window: int = stop_window_option(
        2000, "solved when this many latest training sequences were all correct ..."
    )
    stop_error: float = option(0.01, "... and their mean squared error is below this")


class AddingTask(SequenceTask):
    """The adding problem; see the module docstring. ``x``: ``(B, T, 2)``, ``y``: ``(B, 1)``."""

    name = "adding"
    Options = AddingOptions
    tolerance = TOLERANCE

    def configure(self, options: AddingOptions) -> None:
        length = (options.length >= 12, f"at least 12; got {options.length}")
        check_options("adding", **{"length (T)": length})
        self.io = ModelIO("regressor", 2, 1, output_activation=options.output_activation)

    def sequences(self, count: int, rng: torch.Generator) -> Batch:
        """``count`` sequences drawn with ``rng``."""
        pairs = marked_pairs(count, self.options.length, rng, low=-1.0, high=1.0, identity=0.0)
        y = 0.5 + (pairs.first_value + pairs.second_value) / 4  # (B,)
        return Batch(x=pairs.inputs, y=y.unsqueeze(1), mask=pairs.mask)


@dataclass(frozen=True)
class MarkedPairs:
    """Sequences of (value, marker) pairs with two marked pairs, as :func:`marked_pairs` draws
    them; ``B`` sequences, ``T`` steps (the longest).

    Attributes:
        values: ``(B, T)`` the first components (not yet zero-padded).
        markers: ``(B, T)`` the second components: 1 at the marked pairs, -1 at the first and
            the last pair unless marked, else 0 (not yet zero-padded).
        first, second: ``(B,)`` the positions of :math:`X_1` and :math:`X_2`.
        mask: ``(B, T)`` the steps that exist.
    """

    values: Tensor
    markers: Tensor
    first: Tensor
    second: Tensor
    mask: Tensor

    @property
    def inputs(self) -> Tensor:
        """``(B, T, 2)`` the pairs, zero after each sequence's end."""
        return torch.stack([self.values, self.markers], dim=-1) * self.mask.unsqueeze(-1)

    @property
    def first_value(self) -> Tensor:
        """``(B,)`` :math:`X_1`."""
        return self.values[torch.arange(len(self.first)), self.first]

    @property
    def second_value(self) -> Tensor:
        """``(B,)`` :math:`X_2`."""
        return self.values[torch.arange(len(self.second)), self.second]


def marked_pairs(
    count: int, length: int, rng: torch.Generator, *, low: float, high: float, identity: float
) -> MarkedPairs:
    r"""The marker placement of experiments 4 and 5: ``count`` sequences of pairs whose values
    are uniform in :math:`[\text{low}, \text{high}]`, marked as the module docstring says
    (steps 1-4); a marked first pair gets the value ``identity`` (0 for adding, 1 for
    multiplying), so that it does not change the result.

    Args:
        count: ``B``, the number of sequences.
        length: ``T``; lengths are uniform in :math:`[T, T + \lfloor T/10 \rfloor]`.
        rng: the generator every random choice is drawn from.
    """
    lengths = torch.randint(length, length + length // 10 + 1, (count,), generator=rng)  # (B,)
    steps = int(lengths.max())
    values = torch.rand(count, steps, generator=rng) * (high - low) + low  # (B, T)
    first = torch.randint(0, 10, (count,), generator=rng)  # (B,)
    second = torch.randint(0, length // 2 - 1, (count,), generator=rng)
    second = second + (second >= first).long()  # skip X1's position
    rows = torch.arange(count)
    markers = torch.zeros(count, steps)
    markers[:, 0] = -1.0
    markers[rows, lengths - 1] = -1.0
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    values[:, 0] = torch.where(markers[:, 0] == 1, identity, values[:, 0])
    mask = torch.arange(steps) < lengths.unsqueeze(1)  # (B, T)
    return MarkedPairs(values=values, markers=markers, first=first, second=second, mask=mask)
