r"""Noise-free and noisy sequences with long time lags: experiment 2 of Hochreiter & Schmidhuber
(1997), tasks 2a, 2b and 2c. Symbols are one-hot, numbered as in the paper (symbol :math:`a_i` is
feature :math:`i - 1`).

**2a** (noise-free). :math:`p + 1` symbols :math:`a_1, \dots, a_{p-1}, a_p = x, a_{p+1} = y`.
A sequence is :math:`(y, a_1, \dots, a_{p-1}, y)` or :math:`(x, a_1, \dots, a_{p-1}, x)`, each
with probability 1/2: :math:`p + 1` elements. Head ``"tagger"``: the inputs are the first
:math:`p` elements, the target at step :math:`t` the one-hot element :math:`t + 1`
(``y (B, p, p + 1)``); :math:`p + 1` sigmoid outputs. Correct: every output's absolute error
below 0.25 at every step.

**2b** (no local regularities). As 2a, but the :math:`p - 1` middle elements are drawn
uniformly, with replacement, from :math:`a_1, \dots, a_{p-1}`. The paper predicts every element
("again, every next sequence element has to be predicted") but judges only the final one, the
only predictable one ("the maximal absolute error of all output units is below 0.25 at sequence
end"). ``targets="every"`` does so: head ``"tagger"``, the target at step :math:`t` the one-hot
element :math:`t + 1` as in 2a (``y (B, p, p + 1)``), the loss summed over every step,
``abs_error`` and ``correct`` judged on the last step alone. ``targets="end"`` (the default)
trains on the last element only: head ``"regressor"``, its one-hot over the :math:`p + 1`
symbols (``y (B, p + 1)``).

**2c** (very long time lags, distractors). :math:`p + 4` symbols
:math:`a_1, \dots, a_p, a_{p+1} = e, a_{p+2} = b, a_{p+3} = x, a_{p+4} = y`, the
:math:`a_i` being distractors. The sequence is
:math:`(b, s, a_{i_1}, \dots, a_{i_{q+k}}, e, s)` with :math:`s \in \{x, y\}` (probability 1/2
each) and the :math:`i_j` uniform in :math:`1 \dots p` (the paper prints :math:`\le q`; it means
the :math:`p` distractor symbols). Input steps (from 0):

- step 0: :math:`b`; step 1: :math:`s`;
- steps :math:`2 \dots q + 1`: the prefix's :math:`q` distractors (the paper's "prefix of
  length :math:`q + 2`");
- steps :math:`q + 2 \dots q + k + 1`: :math:`k` further distractors: after the prefix each
  further element is a distractor with probability 9/10 or :math:`e` with probability 1/10, so
  :math:`P(k) = 0.1 \cdot 0.9^k`; :math:`k` is capped at :data:`EXTRA_CAP` = 200 (an :math:`e`
  is forced then, probability :math:`0.9^{200} \approx 7 \cdot 10^{-10}`);
- step :math:`q + k + 2`: :math:`e`, the last input.

So an input sequence has :math:`q + k + 3` steps (the paper's length :math:`q + k + 4` counts the
final :math:`s`), at least :math:`q + 3` and on average :math:`q + 12` (the paper states an
expected length of :math:`q + 14`, yet its own sum :math:`4 + \sum_k 0.1 \cdot 0.9^k (q + k)`
is :math:`q + 13`); the minimal lag from :math:`s` to the target is :math:`q + 1`. Head
``"regressor"``, 2 sigmoid outputs, the target at the end the one-hot :math:`s` (output 0:
:math:`x`, output 1: :math:`y`). Correct: both output errors below 0.2.

Success, for every problem (the paper): "after training, during 10,000 successive, randomly
chosen input sequences, the maximal absolute error of all output units is always below" the
tolerance. Here: the last 10,000 training sequences all correct (``stop_window``; no condition on
the mean error), each judged before the weights change for it; the sequences to success are
those *before* that window (``count_before_window``), as the paper counts them (its 5,040
sequences for 2a are fewer than the 10,000 of the window). The paper has no test set for this
experiment; :meth:`~carousel.tasks.paper.SequenceTask.eval_batches` gives ``test_size`` fresh
sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.functional import one_hot

from carousel.options import option
from carousel.tasks.base import Batch, ModelIO
from carousel.tasks.paper import SequenceTask, check_options, stop_window_option, test_size_option

PROBLEMS = ("2a", "2b", "2c")
TARGETS = ("end", "every")
EXTRA_CAP = 200
"""2c: the most further distractors :math:`k` after the prefix."""


@dataclass(frozen=True)
class LongLagOptions:
    """Options of experiment 2."""

    problem: str = option(
        "2a",
        "2a: fixed middle; 2b: random middle; 2c: distractors and the trigger e",
        choices=PROBLEMS,
    )
    p: int = option(100, "2a, 2b: p + 1 symbols, sequences of p + 1; 2c: p distractor symbols")
    q: int = stop_window_option(100, "2c: distractors in the prefix (minimal time lag q + 1)")
    targets: str = option(
        "end",
        "2b: train on the last element only (end), or on every next element, "
        "judged at the end (every: the paper)",
        choices=TARGETS,
    )
    test_size: int = test_size_option(256)
    stop_window: int = stop_window_option(10000)


class LongLagTask(SequenceTask):
    """Experiment 2 (tasks 2a, 2b, 2c); see the module docstring."""

    name = "longlag"
    Options = LongLagOptions
    count_before_window = True  # success is judged after training (module docstring)

    def configure(self, options: LongLagOptions) -> None:
        problem, p = options.problem, options.p
        least_p = 1 if problem == "2c" else 2
        check_options(
            "longlag",
            p=(p >= least_p, f"at least {least_p} for {problem}; got {p}"),
            targets=(
                options.targets == "end" or problem == "2b",
                f"'end' unless problem is 2b (2a has targets at every step, 2c at the end); "
                f"got {options.targets!r} with problem {problem!r}",
            ),
        )
        self.every_step = problem == "2a" or options.targets == "every"
        if problem == "2c":
            self.io = ModelIO("regressor", p + 4, 2, output_activation="sigmoid")
        else:
            head = "tagger" if self.every_step else "regressor"
            self.io = ModelIO(head, p + 1, p + 1, output_activation="sigmoid")
        self.tolerance = 0.2 if problem == "2c" else 0.25

    def sequences(self, count: int, rng: torch.Generator) -> Batch:
        """``count`` sequences drawn with ``rng``."""
        if self.options.problem == "2c":
            return self._distractor_sequences(count, rng)
        p = self.options.p
        last = p - 1 + torch.randint(2, (count,), generator=rng)  # (B,) x = p - 1, y = p
        if self.options.problem == "2a":
            middle = torch.arange(p - 1).expand(count, p - 1)  # a_1 .. a_{p-1}
        else:
            middle = torch.randint(p - 1, (count, p - 1), generator=rng)
        elements = torch.cat([last[:, None], middle, last[:, None]], dim=1)  # (B, p + 1)
        x = one_hot(elements[:, :-1], p + 1).float()  # (B, p, p + 1)
        mask = torch.ones(count, p, dtype=torch.bool)
        if self.every_step:
            return Batch(x=x, y=one_hot(elements[:, 1:], p + 1).float(), mask=mask)
        return Batch(x=x, y=one_hot(last, p + 1).float(), mask=mask)

    def scores(self, output: Tensor, batch: Batch) -> dict[str, Tensor]:
        """As :meth:`~carousel.tasks.paper.SequenceTask.scores`; 2b with targets at every step
        judges ``abs_error`` and ``correct`` on the last step alone (``loss``: every step)."""
        scores = super().scores(output, batch)
        if self.options.problem == "2b" and self.every_step:
            error = self.errors(output, batch)[:, -1].abs().amax(1)  # (B,) the last step
            scores["abs_error"] = error
            scores["correct"] = (error < self.tolerance).double()
        return scores

    def _distractor_sequences(self, count: int, rng: torch.Generator) -> Batch:
        """2c: ``count`` sequences ``b, s, q + k distractors, e``; the target ``s``."""
        p, q = self.options.p, self.options.q
        second = torch.randint(2, (count,), generator=rng)  # (B,) 0: x, 1: y
        trigger = torch.rand(count, EXTRA_CAP, generator=rng) < 0.1  # e instead of distractor k
        extra = torch.where(trigger.any(1), trigger.int().argmax(1), EXTRA_CAP)  # (B,) k
        lengths = q + 3 + extra
        steps = int(lengths.max())
        elements = torch.randint(p, (count, steps), generator=rng)  # distractors a_1 .. a_p
        elements[:, 0] = p + 1  # b
        elements[:, 1] = p + 2 + second  # x or y
        elements[torch.arange(count), lengths - 1] = p  # e
        mask = torch.arange(steps) < lengths.unsqueeze(1)  # (B, T)
        x = one_hot(elements, p + 4).float() * mask.unsqueeze(-1)  # (B, T, p + 4)
        return Batch(x=x, y=one_hot(second, 2).float(), mask=mask)
