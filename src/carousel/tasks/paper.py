r"""What the tasks of Hochreiter & Schmidhuber (1997) share: fresh seeded sequences, sigmoid output
units trained on the squared error, "correct" meaning every output error below a tolerance, and
stopping rules judged on the most recent training sequences.

A :class:`SequenceTask` subclass writes :meth:`~SequenceTask.sequences` (``count`` sequences from
a ``torch.Generator``) and sets, in ``__init__``, ``self.io`` (``"regressor"``: targets at the end
``y (B, O)``; ``"tagger"``: a target at every step ``y (B, T, O)``), ``self.tolerance`` and the
stopping rule. Targets are the first ``O = io.output_size`` features of ``y``; a task may carry
more per-step information after them for its own :meth:`~SequenceTask.scores` (the Reber grammar
carries the set of legal next symbols).

The per-sequence scores are ``loss`` (the squared error summed over outputs and target steps),
``abs_error`` (the largest absolute error of the sequence) and ``correct`` (``abs_error`` below
the tolerance). The stopping rule (:meth:`SequenceTask.solved`): the last ``stop_window``
training sequences hold at most ``max_wrong`` wrong ones and, if ``stop_error`` is set, their
mean ``loss`` is below it. Where the paper judges success on a stretch of sequences *after*
training (experiment 2: "after training, during 10,000 successive, randomly chosen input
sequences, the maximal absolute error ... is always below 0.25"), ``count_before_window`` is set
and the sequences to success are those before the window (:meth:`SequenceTask.to_success`).
"""

from __future__ import annotations

from torch import Tensor

from carousel.options import option
from carousel.tasks.base import Batch, Task, generator


class SequenceTask(Task):
    """Base of the 1997 paper's tasks; see the module docstring.

    Attributes (set by subclasses; ``test_size``, ``window`` and ``stop_error`` are taken from
    the options ``test_size``, ``stop_window`` and ``stop_error`` of a task that has them, after
    :meth:`~carousel.tasks.base.Task.configure`, so a task sets them there only from others):
        tolerance: a sequence is correct when every output error at its target steps is below this.
        stop_error: the mean ``loss`` over the window must be below this (``None``: no such rule).
        max_wrong: at most this many wrong sequences in the window.
        count_before_window: the paper counts the training sequences before the window of
            successful ones, not those up to its end (see the module docstring).
        test_size: sequences in the fixed test set.
    """

    tolerance: float = 0.04
    stop_error: float | None = None
    max_wrong: int = 0
    count_before_window: bool = False
    test_size: int = 2560
    test_batch: int = 256

    def __init__(self, options=None, seed: int = 0) -> None:
        super().__init__(options, seed)
        renamed = {"test_size": "test_size", "window": "stop_window", "stop_error": "stop_error"}
        for attribute, name in renamed.items():
            if hasattr(self.options, name):
                setattr(self, attribute, getattr(self.options, name))

    def sequences(self, count: int, rng) -> Batch:
        """``count`` fresh sequences drawn with the ``torch.Generator`` ``rng``."""
        raise NotImplementedError

    def train_batch(self, index: int, batch_size: int) -> Batch:
        """Training batch ``index``: fresh sequences from its own seeded stream."""
        return self.sequences(batch_size, generator(self.seed, f"{self.name}-train", index))

    def eval_batches(self) -> list[Batch]:
        """The test set: ``test_size`` sequences in batches of ``test_batch``, drawn once."""
        if getattr(self, "_test", None) is None:
            self._test = self.fixed_set("test", self.test_size, self.test_batch)
        return self._test

    def fixed_set(self, stream: str, size: int, batch_size: int = 256) -> list[Batch]:
        """``size`` sequences in batches of ``batch_size``, drawn from the seeded stream
        ``stream`` of this task (the same on every call)."""
        rng = generator(self.seed, f"{self.name}-{stream}")
        sizes = [batch_size] * (size // batch_size) + (
            [size % batch_size] if size % batch_size else []
        )
        return [self.sequences(count, rng) for count in sizes]

    def final_batches(self) -> list[Batch]:
        """The set a finished network is scored on: the test set, unless a task's stopping
        rule is judged on a small check set and the paper scores a larger one (experiment 3)."""
        return self.eval_batches()

    def errors(self, output: Tensor, batch: Batch) -> Tensor:
        """``output - target`` at the target steps: ``(B, O)`` or ``(B, T, O)`` (zero where
        ``mask`` is false)."""
        target = batch.y[..., : output.shape[-1]]
        difference = output - target
        if difference.dim() == 3:
            difference = difference * batch.mask.unsqueeze(-1)
        return difference

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        """Mean over sequences of the squared error summed over outputs and target steps."""
        return self.errors(output, batch).square().flatten(1).sum(1).mean()

    def scores(self, output: Tensor, batch: Batch) -> dict[str, Tensor]:
        """Per sequence: ``loss`` (summed squared error), ``abs_error`` (largest), ``correct``."""
        difference = self.errors(output, batch).flatten(1)
        error = difference.abs().amax(1)  # (B,)
        return {
            "loss": difference.square().sum(1),
            "abs_error": error,
            "correct": (error < self.tolerance).double(),
        }

    def metrics(self, totals: dict[str, float], sequences: int) -> dict[str, float]:
        """``loss`` (mean squared error per sequence), ``abs_error``, ``accuracy``, ``wrong``."""
        return {
            "loss": totals["loss"] / sequences,
            "abs_error": totals["abs_error"] / sequences,
            "accuracy": totals["correct"] / sequences,
            "wrong": sequences - totals["correct"],
        }

    def solved(self, recent: dict[str, Tensor], evaluation: dict[str, float] | None) -> bool:
        """The paper's rule on the training stream: a full window of ``window`` sequences with
        at most ``max_wrong`` wrong and, if ``stop_error`` is set, mean loss below it."""
        if self.window == 0 or not recent or len(recent["correct"]) < self.window:
            return False
        wrong = len(recent["correct"]) - float(recent["correct"].sum())
        if wrong > self.max_wrong:
            return False
        return self.stop_error is None or float(recent["loss"].mean()) < self.stop_error

    def to_success(self, sequences: int) -> int:
        """The paper's count of sequences to success when the stopping rule first held after
        ``sequences`` training sequences: ``sequences``, or with ``count_before_window`` those
        before the window of ``window`` successful ones."""
        return sequences - self.window if self.count_before_window else sequences

    def milestones(
        self, recent: dict[str, Tensor], evaluation: dict[str, float] | None
    ) -> dict[str, bool]:
        """Intermediate criteria the paper reports besides :meth:`solved` (e.g. the two-sequence
        problem's ``ST1`` and ``ST2``), by name, with the arguments of :meth:`solved`.

        The default is ``{}``: a task with no intermediate milestones.
        """
        return {}


WINDOW_HELP = "solved when this many latest training sequences were all correct"


def test_size_option(default: int):
    """The ``test_size`` field of a task's options: sequences in its fixed test set."""
    return option(default, "sequences in the fixed test set", minimum=1)


def stop_window_option(default: int, help: str = WINDOW_HELP):
    """The ``stop_window`` field of a task's options: the latest training sequences its stopping
    rule looks at (:attr:`SequenceTask.window`)."""
    return option(default, help, minimum=0)


def check_options(task: str, **conditions: tuple[bool, str]) -> None:
    """Raise ``ValueError`` naming the first option whose condition is false.

    ``conditions`` maps an option name (as the message shows it, e.g. ``"length (T)"``) to
    ``(holds, what it must be)``.
    """
    for name, (holds, expected) in conditions.items():
        if not holds:
            raise ValueError(f"{task} option {name} must be {expected}")
