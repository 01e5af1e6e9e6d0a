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

from dataclasses import dataclass, field

import torch

from carousel.tasks.adding import TOLERANCE, marked_pairs
from carousel.tasks.base import Batch, ModelIO
from carousel.tasks.paper import SequenceTask, check_options


@dataclass(frozen=True)
class MultiplicationOptions:
    """Options of the multiplication problem."""

    length: int = field(
        default=100,
        metadata={"help": "T: sequence lengths are uniform in [T, T + T//10] (the paper: 100)"},
    )
    n_seq: int = field(
        default=140,
        metadata={
            "help": "solved when fewer than n_seq of the latest stop_window training sequences "
            "are wrong (the paper: 140, 13)"
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
        default=2000, metadata={"help": "the number of latest training sequences n_seq counts in"}
    )


class MultiplicationTask(SequenceTask):
    """The multiplication problem; see the module docstring. ``x``: ``(B, T, 2)``, ``y``:
    ``(B, 1)``."""

    name = "multiplication"
    Options = MultiplicationOptions
    tolerance = TOLERANCE

    def __init__(self, options: MultiplicationOptions | None = None, seed: int = 0) -> None:
        super().__init__(options, seed)
        options = self.options
        check_options(
            "multiplication",
            length=(options.length >= 12, f"at least 12; got {options.length}"),
            n_seq=(options.n_seq >= 1, f">= 1; got {options.n_seq}"),
            test_size=(options.test_size >= 1, f">= 1; got {options.test_size}"),
            stop_window=(options.stop_window >= 0, f">= 0; got {options.stop_window}"),
        )
        self.io = ModelIO("regressor", 2, 1, output_activation=options.output_activation)
        self.window, self.max_wrong = options.stop_window, options.n_seq - 1
        self.test_size = options.test_size

    def sequences(self, count: int, rng: torch.Generator) -> Batch:
        """``count`` sequences drawn with ``rng``."""
        pairs = marked_pairs(count, self.options.length, rng, low=0.0, high=1.0, identity=1.0)
        y = pairs.first_value * pairs.second_value  # (B,)
        return Batch(x=pairs.inputs, y=y.unsqueeze(1), mask=pairs.mask)
