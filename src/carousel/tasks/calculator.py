r"""The pocket calculator of the ECE 417 LSTM lecture (M. Hasegawa-Johnson, "Long/Short-Term
Memory", University of Illinois, 2020) as a task; :mod:`carousel.diagnostics.calculator` works
the lecture's own networks through.

The calculator: when :math:`x[t] > 0`, add it to the tally, :math:`c[t] = c[t-1] + x[t]`, and
print nothing (0); when :math:`x[t] = 0` (the "=" key), print the tally,
:math:`y[t] = c[t-1]`, then reset it, :math:`c[t] = 0`; :math:`c[-1] = 0`. Non-zero inputs are
at least 1. The lecture's example: input ``1, 2, 1, 0, 1, 1, 1, 0``, target
``0, 0, 0, 4, 0, 0, 0, 3``.

Sequences: the length is uniform in ``[min_length, max_length]`` (default 8, the example's
length, to 16); each input is 0 with probability ``zero_probability`` (default 0.3), else a digit
uniform in ``1 .. max_digit`` (default 3); the last input is always 0, so every sequence ends by
printing its final tally. One input line carries the number itself, ``x (B, T, 1)``.

Scoring. The lecture scores the error only where something is printed,
:math:`E = \frac12 \sum_{t:\, y[t] > 0} (h[t] - y[t])^2` ("the 'print out nothing' part is not
scored"); it also remarks that the other steps maybe should be, and its LSTM section sums over
every step. Option ``scored``: ``"printed"`` (the default: the steps with :math:`y[t] > 0`, so a
print of a zero tally is not scored either) or ``"every"`` step. The scored steps travel in the
targets: ``y (B, T, 2)``, feature 0 the printed value :math:`y[t]`, feature 1 the weight 1.0 at
scored steps and 0.0 elsewhere (and after the end). Head ``"tagger"``, one identity output
(tallies exceed 1). The loss is the squared error summed over the scored steps (:math:`2E`),
``abs_error`` the largest scored error; a sequence is *correct* if every scored output is within
0.5 of its target, i.e. right after rounding. The lecture has no stopping rule; here ``solved``
holds when the last ``stop_window`` = 1,000 training sequences were all correct.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from carousel.options import option
from carousel.tasks.base import Batch, ModelIO
from carousel.tasks.paper import SequenceTask, check_options, stop_window_option, test_size_option

SCORED = ("printed", "every")


def printed_values(x: Tensor) -> Tensor:
    """What the calculator prints for the inputs ``x`` ``(B, T)``: ``(B, T)``, the tally at each
    0 input (then reset), 0 elsewhere."""
    printed = torch.zeros_like(x)
    tally = torch.zeros_like(x[:, 0])  # (B,)
    for t in range(x.shape[1]):
        equal = x[:, t] == 0
        printed[:, t] = torch.where(equal, tally, 0.0)
        tally = torch.where(equal, 0.0, tally + x[:, t])
    return printed


@dataclass(frozen=True)
class CalculatorOptions:
    """Options of the pocket calculator task."""

    min_length: int = option(8, "the shortest sequence", minimum=1)
    max_length: int = option(16, "the longest sequence")
    max_digit: int = option(3, "summands are uniform in 1 .. max_digit", minimum=1)
    zero_probability: float = option(0.3, "the probability of an input 0 ('=', print and reset)")
    scored: str = option(
        "printed",
        "steps whose error counts: printed (y > 0, the lecture) or every step",
        choices=SCORED,
    )
    test_size: int = test_size_option(1000)
    stop_window: int = stop_window_option(1000)


class CalculatorTask(SequenceTask):
    """The pocket calculator; see the module docstring. ``x``: ``(B, T, 1)``, ``y``:
    ``(B, T, 2)`` (printed value, scored-step weight)."""

    name = "calculator"
    Options = CalculatorOptions
    tolerance = 0.5

    def configure(self, options: CalculatorOptions) -> None:
        check_options(
            "calculator",
            max_length=(
                options.max_length >= options.min_length,
                f">= min_length ({options.min_length}); got {options.max_length}",
            ),
            zero_probability=(
                0.0 <= options.zero_probability <= 1.0,
                f"in [0, 1]; got {options.zero_probability}",
            ),
        )
        self.io = ModelIO("tagger", 1, 1, output_activation="identity")

    def sequences(self, count: int, rng: torch.Generator) -> Batch:
        """``count`` sequences drawn with ``rng``."""
        options = self.options
        lengths = torch.randint(options.min_length, options.max_length + 1, (count,), generator=rng)
        steps = int(lengths.max())
        digits = torch.randint(1, options.max_digit + 1, (count, steps), generator=rng).float()
        equals = torch.rand(count, steps, generator=rng) < options.zero_probability
        x = torch.where(equals, 0.0, digits)  # (B, T)
        x[torch.arange(count), lengths - 1] = 0.0
        mask = torch.arange(steps) < lengths.unsqueeze(1)  # (B, T)
        x = x * mask
        printed = printed_values(x) * mask
        scored = mask & (printed > 0) if options.scored == "printed" else mask
        y = torch.stack([printed, scored.float()], dim=-1)  # (B, T, 2)
        return Batch(x=x.unsqueeze(-1), y=y, mask=mask)

    def errors(self, output: Tensor, batch: Batch) -> Tensor:
        """``output - target`` at the scored steps, zero elsewhere: ``(B, T, 1)``."""
        return (output - batch.y[..., :1]) * batch.y[..., 1:]
