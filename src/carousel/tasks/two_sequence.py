r"""The two-sequence problem (noise and signal on one input line): experiment 3 of Hochreiter &
Schmidhuber (1997), after Bengio et al. (1994); tasks 3a, 3b and 3c.

One input line. A sequence belongs to class 1 or class 2 with probability 1/2 each; its length
is uniform in :math:`[T, T + \lfloor T/10 \rfloor]`. Its first :math:`N` elements (steps
:math:`0 \dots N-1`) are 1.0 for class 1 and -1.0 for class 2; the later ones are Gaussian with
mean 0 and variance 0.2.

- **3a**: as above; the target at the end is 1.0 for class 1 and 0.0 for class 2.
- **3b**: as 3a, with Gaussian noise (mean 0, variance 0.2) also added to the first :math:`N`
  elements.
- **3c**: as 3a (noise-free first elements), but the target is 0.2 for class 1 and 0.8 for
  class 2 (the paper's assignment), plus Gaussian noise of mean 0 and variance 0.1; the net
  must learn the conditional expectation.

Head ``"regressor"`` with one sigmoid output trained on the squared error against ``y[:, 0]``,
the (noisy, in 3c) target; ``y[:, 1]`` holds the noise-free target (the same as ``y[:, 0]`` in
3a and 3b), ``y`` is ``(B, 2)``. The scores judge the noise-free target: ``abs_error`` is
:math:`|\text{output} - \text{noise-free target}|`, ``correct`` means it is below 0.2 (3a, 3b;
"absolute output error at sequence end below 0.2") or 0.1 (3c; the paper's misclassification is
a deviation above 0.1); ``loss`` is the squared error against ``y[:, 0]``.

Stopping (the paper), on a check set of ``check_size`` = 256 test sequences (the test set of
:meth:`~carousel.tasks.paper.SequenceTask.eval_batches`), see :meth:`TwoSequenceTask.milestones`:

- 3a: ST1 = none of them wrong; ST2 = ST1 and mean absolute error below 0.01;
- 3b: ST1 = fewer than 6 wrong; ST2 = ST1 and mean absolute error below 0.04 (the paper's text
  includes ST1 in ST2);
- 3c: stop = none wrong and mean deviation from the noise-free target below 0.015.

:meth:`TwoSequenceTask.solved` is ST2 (3c: stop); it looks only at the evaluation (``window`` is
0). The paper's further test set of 2,560 sequences, scored after ST2, is not part of the task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from carousel.options import option
from carousel.tasks.base import Batch, ModelIO
from carousel.tasks.paper import SequenceTask, check_options

PROBLEMS = ("3a", "3b", "3c")
INPUT_NOISE_VARIANCE = 0.2
TARGET_NOISE_VARIANCE = 0.1
"""3c: the variance of the noise on the targets."""


@dataclass(frozen=True)
class TwoSequenceOptions:
    """Options of the two-sequence problem."""

    problem: str = option(
        "3a",
        "3a: the paper's 2-sequence problem; 3b: noisy first elements; 3c: noisy targets 0.2 / 0.8",
        choices=PROBLEMS,
    )
    length: int = option(
        100, "T: sequence lengths are uniform in [T, T + T//10] (the paper: 100, 1000)"
    )
    informative: int = option(
        3, "N: the first N elements carry the class (the paper: 1, 3)", minimum=1
    )
    check_size: int = option(256, "test sequences the stopping criteria are judged on", minimum=1)
    final_size: int = option(2560, "test sequences a finished network is scored on", minimum=1)


class TwoSequenceTask(SequenceTask):
    """The two-sequence problem; see the module docstring. ``x``: ``(B, T, 1)``, ``y``:
    ``(B, 2)`` (training target, noise-free target)."""

    name = "two_sequence"
    Options = TwoSequenceOptions
    window = 0

    def configure(self, options: TwoSequenceOptions) -> None:
        check_options(
            "two_sequence",
            length=(
                options.length >= options.informative,
                f"at least informative (N = {options.informative}); got {options.length}",
            ),
        )
        self.io = ModelIO("regressor", 1, 1, output_activation="sigmoid")
        self.tolerance = 0.1 if options.problem == "3c" else 0.2
        self.test_size = options.check_size

    def final_batches(self) -> list[Batch]:
        """The paper's separate test set of ``final_size`` (2,560) sequences, in batches of 256,
        drawn once from its own stream (the fraction misclassified of its tables)."""
        if getattr(self, "_final", None) is None:
            self._final = self.fixed_set("final", self.options.final_size)
        return self._final

    def sequences(self, count: int, rng: torch.Generator) -> Batch:
        """``count`` sequences drawn with ``rng``."""
        short, problem = self.options.length, self.options.problem
        first_class = torch.randint(2, (count,), generator=rng).bool()  # (B,) True: class 1
        lengths = torch.randint(short, short + short // 10 + 1, (count,), generator=rng)
        steps = int(lengths.max())
        noise = torch.randn(count, steps, generator=rng) * math.sqrt(INPUT_NOISE_VARIANCE)
        sign = torch.where(first_class, 1.0, -1.0).unsqueeze(1)  # (B, 1)
        informative = torch.arange(steps) < self.options.informative  # (T,)
        signal = sign + noise if problem == "3b" else sign.expand(count, steps)
        mask = torch.arange(steps) < lengths.unsqueeze(1)  # (B, T)
        x = torch.where(informative, signal, noise) * mask  # (B, T)
        if problem == "3c":
            clean = torch.where(first_class, 0.2, 0.8)  # (B,)
            noisy = clean + torch.randn(count, generator=rng) * math.sqrt(TARGET_NOISE_VARIANCE)
        else:
            clean = noisy = first_class.float()
        return Batch(x=x.unsqueeze(-1), y=torch.stack([noisy, clean], dim=1), mask=mask)

    def scores(self, output: Tensor, batch: Batch) -> dict[str, Tensor]:
        """``loss`` against the training target; ``abs_error`` and ``correct`` against the
        noise-free target."""
        deviation = (output[:, 0] - batch.y[:, 1]).abs()  # (B,)
        return {
            "loss": super().scores(output, batch)["loss"],
            "abs_error": deviation,
            "correct": (deviation < self.tolerance).double(),
        }

    def milestones(
        self, recent: dict[str, Tensor], evaluation: dict[str, float] | None
    ) -> dict[str, bool]:
        """The paper's criteria on the check set: ``{"ST1", "ST2"}`` (3a, 3b) or ``{"stop"}``
        (3c); all false without an evaluation."""
        wrong = math.inf if evaluation is None else evaluation["wrong"]
        error = math.inf if evaluation is None else evaluation["abs_error"]
        if self.options.problem == "3c":
            return {"stop": wrong == 0 and error < 0.015}
        if self.options.problem == "3a":
            first = wrong == 0
            return {"ST1": first, "ST2": first and error < 0.01}
        first = wrong < 6
        return {"ST1": first, "ST2": first and error < 0.04}

    def solved(self, recent: dict[str, Tensor], evaluation: dict[str, float] | None) -> bool:
        """ST2 (3c: stop) on the latest evaluation."""
        return list(self.milestones(recent, evaluation).values())[-1]
