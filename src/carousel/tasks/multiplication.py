r"""The multiplication problem: experiment 5 of Hochreiter & Schmidhuber (1997).

As the adding problem (:mod:`carousel.tasks.adding`, the same pairs, lengths and marker
placement, :func:`~carousel.tasks.adding.marked_pairs`), except that the values are uniform in
:math:`[0, 1]` and the target, given only at the end, is the product :math:`X_1 X_2`. A marked
first pair gets the value 1.0, the multiplicative identity (the paper: "in the rare case where
the first pair of the input sequence gets marked, we set :math:`X_1` to 1.0"; here that holds
whichever of the two marks it, as in the adding problem). A sequence is *correct* if the
absolute error of the output at its end is below 0.04; the loss is the squared error.

The paper stops (and tests) "as soon as less than :math:`n_{seq}` of the 2000 most recent
training sequences lead to absolute errors exceeding 0.04", with :math:`n_{seq}` = 140 or 13:
``solved`` holds when at most ``n_seq - 1`` of the last ``stop_window`` = 2,000 training
sequences are wrong, with no condition on the mean error. Its test set has 2,560 sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from carousel.options import option
from carousel.tasks.adding import TOLERANCE, marked_pairs
from carousel.tasks.base import Batch, ModelIO
from carousel.tasks.paper import SequenceTask, check_options, stop_window_option, test_size_option


@dataclass(frozen=True)
class MultiplicationOptions:
    """Options of the multiplication problem."""

    length: int = option(100, "T: sequence lengths are uniform in [T, T + T//10] (the paper: 100)")
    n_seq: int = option(
        140,
        "solved when fewer than n_seq of the latest stop_window training sequences "
        "are wrong (the paper: 140, 13)",
        minimum=1,
    )
    test_size: int = test_size_option(2560)
    output_activation: str = option(
        "sigmoid", "output unit: sigmoid (the paper) or identity", choices=("sigmoid", "identity")
    )
    stop_window: int = stop_window_option(
        2000, "the number of latest training sequences n_seq counts in"
    )


class MultiplicationTask(SequenceTask):
    """The multiplication problem; see the module docstring. ``x``: ``(B, T, 2)``, ``y``:
    ``(B, 1)``."""

    name = "multiplication"
    Options = MultiplicationOptions
    tolerance = TOLERANCE

    def configure(self, options: MultiplicationOptions) -> None:
        length = (options.length >= 12, f"at least 12; got {options.length}")
        check_options("multiplication", length=length)
        self.io = ModelIO("regressor", 2, 1, output_activation=options.output_activation)
        self.max_wrong = options.n_seq - 1

    def sequences(self, count: int, rng: torch.Generator) -> Batch:
        """``count`` sequences drawn with ``rng``."""
        pairs = marked_pairs(count, self.options.length, rng, low=0.0, high=1.0, identity=1.0)
        y = pairs.first_value * pairs.second_value  # (B,)
        return Batch(x=pairs.inputs, y=y.unsqueeze(1), mask=pairs.mask)
