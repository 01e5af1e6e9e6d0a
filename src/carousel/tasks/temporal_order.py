r"""The temporal order problem: experiment 6 of Hochreiter & Schmidhuber (1997), tasks 6a and 6b.

Eight symbols, one-hot in the order ``E, B, a, b, c, d, X, Y`` (feature ``i`` is symbol ``i``).
The length is uniform in :math:`[100, 110]`. Counting positions from 1 as the paper does
(position 1 is the first element, tensor step 0), a sequence starts with ``E`` (position 1),
ends with the trigger ``B`` (the last position), and every other element is drawn uniformly from
``a, b, c, d``, except for the relevant elements, each ``X`` or ``Y`` with probability 1/2:

- **6a**: two, at positions :math:`t_1 \in [10, 20]` and :math:`t_2 \in [50, 60]` (uniform);
  4 classes by their order: ``XX, XY, YX, YY`` (the paper's Q, R, S, U) are classes 0-3;
- **6b**: three, at :math:`t_1 \in [10, 20]`, :math:`t_2 \in [33, 43]`,
  :math:`t_3 \in [66, 76]`; 8 classes ``XXX, XXY, ..., YYY`` (Q, R, S, U, V, A, B, C) are
  classes 0-7 (``X`` = 0, ``Y`` = 1, the first relevant element the most significant bit).

Head ``"regressor"`` with 4 (6a) or 8 (6b) sigmoid outputs; the target at the end is the class,
one-hot (``y (B, 4)`` or ``(B, 8)``); the loss is the squared error summed over the outputs. A
sequence is *correct* if every output's absolute error is below 0.3. The paper stops training
"once the average training error falls below 0.1 and the 2000 most recent sequences were
classified correctly": here the last ``stop_window`` = 2,000 training sequences all correct and
their mean loss below ``stop_error`` = 0.1. Its test set has 2,560 sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.functional import one_hot

from carousel.options import option
from carousel.tasks.base import Batch, ModelIO
from carousel.tasks.paper import SequenceTask, stop_window_option, test_size_option

SYMBOLS = ("E", "B", "a", "b", "c", "d", "X", "Y")
"""The symbols in the order of their one-hot features."""
PROBLEMS = ("6a", "6b")
POSITIONS = {"6a": ((10, 20), (50, 60)), "6b": ((10, 20), (33, 43), (66, 76))}
"""The ranges of the relevant positions (counted from 1, bounds included)."""
SHORTEST, LONGEST = 100, 110
TOLERANCE = 0.3


@dataclass(frozen=True)
class TemporalOrderOptions:
    """Options of the temporal order problem."""

    problem: str = option(
        "6a", "6a: two relevant symbols, 4 classes; 6b: three, 8", choices=PROBLEMS
    )
    test_size: int = test_size_option(2560)
    stop_window: int = stop_window_option(
        2000, "solved when this many latest training sequences were all correct ..."
    )
    stop_error: float = option(0.1, "... and their mean squared error is below this")


class TemporalOrderTask(SequenceTask):
    """The temporal order problem; see the module docstring. ``x``: ``(B, T, 8)``, ``y``:
    ``(B, 4)`` (6a) or ``(B, 8)`` (6b)."""

    name = "temporal_order"
    Options = TemporalOrderOptions
    tolerance = TOLERANCE

    def configure(self, options: TemporalOrderOptions) -> None:
        self.positions = POSITIONS[self.options.problem]
        self.io = ModelIO("regressor", 8, 2 ** len(self.positions), output_activation="sigmoid")

    def sequences(self, count: int, rng: torch.Generator) -> Batch:
        """``count`` sequences drawn with ``rng``."""
        lengths = torch.randint(SHORTEST, LONGEST + 1, (count,), generator=rng)  # (B,)
        steps = int(lengths.max())
        elements = torch.randint(2, 6, (count, steps), generator=rng)  # fillers a, b, c, d
        rows = torch.arange(count)
        elements[:, 0] = 0  # E
        elements[rows, lengths - 1] = 1  # B, the trigger
        relevant = torch.randint(2, (count, len(self.positions)), generator=rng)  # 0: X, 1: Y
        for k, (low, high) in enumerate(self.positions):
            position = torch.randint(low, high + 1, (count,), generator=rng)  # counted from 1
            elements[rows, position - 1] = 6 + relevant[:, k]
        weights = 2 ** torch.arange(len(self.positions) - 1, -1, -1)  # first = most significant
        label = (relevant * weights).sum(1)  # (B,)
        mask = torch.arange(steps) < lengths.unsqueeze(1)  # (B, T)
        x = one_hot(elements, 8).float() * mask.unsqueeze(-1)  # (B, T, 8)
        return Batch(x=x, y=one_hot(label, self.io.output_size).float(), mask=mask)
