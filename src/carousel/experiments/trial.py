"""One trial of an experiment: train until the task's stopping rule holds or the budget is spent.

Two ways to train, one result (:class:`Trial`):

- :func:`run_faithful`: the 1997 network and online learning rule (:mod:`.faithful`), one
  sequence at a time in compiled code, the stopping rule checked after every chunk of
  sequences (and, when it holds, the first sequence of the chunk at which it held counted);
- :func:`run_trainer`: any carousel model through carousel's training loop
  (:func:`carousel.train.train`: minibatches, Adam, clipping), the rule checked after every step.

Both count training sequences exactly and score the final network on the task's test set.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from carousel.experiments.faithful import Faithful, Net1997, as_output, batch_arrays
from carousel.tasks import Task, build_task
from carousel.train.state import Window


@dataclass
class Trial:
    """What one trial did.

    Attributes:
        solved: the stopping rule held within the budget.
        sequences: training sequences to success as the paper counts them (those seen until
            the rule held, or before its window of successful sequences:
            :meth:`~carousel.tasks.paper.SequenceTask.to_success`); the whole budget if not
            solved.
        milestones: sequences until each of the task's intermediate milestones first held.
        test: the task's test metrics of the final network (``loss``, ``wrong``, ...).
        test_size: sequences in that test set.
        weights: trainable weights of the network.
        seconds: wall-clock time of the trial.
        curve: the learning curve, ``(sequences, mean training loss, training accuracy)`` over
            about 200 stretches of the run (not written to ``trials.csv``).
        network: the trained :class:`~carousel.experiments.faithful.Net1997` (faithful trials).
    """

    solved: bool
    sequences: int
    test: dict[str, float]
    test_size: int
    weights: int
    seconds: float
    milestones: dict[str, int] = field(default_factory=dict)
    curve: list[tuple[int, float, float]] = field(default_factory=list, repr=False)
    network: object = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """A JSON-ready dict, without the curve."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("curve", "network")
        }


class Recent(Window):
    """The training loop's window of recent per-sequence scores, which can also be read as it
    stood at any position of the chunk being added."""

    def ending_at(self, scores: dict[str, torch.Tensor], position: int) -> dict[str, torch.Tensor]:
        """The window as it was after sequence ``position`` of a chunk (``scores``) whose
        predecessors are in the window now."""
        return {
            name: torch.cat([self.values.get(name, value[:0]), value[: position + 1].double()])[
                -self.size :
            ]
            for name, value in scores.items()
        }


def _milestones(task: Task, recent, evaluation) -> dict[str, bool]:
    return task.milestones(recent, evaluation) if hasattr(task, "milestones") else {}


def test_batches(task: Task) -> list:
    """The batches a trial's final network is scored on: the task's ``final_batches()``
    (:class:`~carousel.tasks.paper.SequenceTask`), else its test set."""
    return task.final_batches() if hasattr(task, "final_batches") else task.eval_batches()


def run_faithful(
    task: Task,
    settings: Faithful,
    *,
    seed: int,
    budget: int,
    eval_every: int = 0,
    chunk: int = 100,
    progress: Callable[[int], None] | None = None,
) -> Trial:
    """Train the 1997 network online on ``task`` until its rule holds or ``budget`` sequences.

    Args:
        task: a task whose head is ``"regressor"`` (targets at the end) or ``"tagger"``.
        settings: the network and learning rule.
        seed: seed of the initial weights (the task carries its own data seed).
        budget: the most training sequences.
        eval_every: score the test set every this many sequences, for rules that use it
            (0: only at the end); rounded up to a multiple of ``chunk``.
        chunk: sequences generated and trained per compiled call.
        progress: called with the number of sequences seen after every chunk.

    With ``settings.staged`` (sequential construction) the network starts without memory
    blocks and one is added whenever ``settings.plateau`` holds on the windows' mean training
    errors (:meth:`~carousel.experiments.faithful.Plateau.holds`; the window must be a
    multiple of ``chunk``); the milestone ``"block k"`` records the sequences seen when block
    ``k`` was added.
    """
    if task.io.head not in ("regressor", "tagger") or task.io.tokens:
        raise ValueError(
            f"the faithful network needs a regressor or tagger task with real-valued inputs; "
            f"task {task.name!r} has head {task.io.head!r}"
        )
    if budget < 1 or chunk < 1:
        raise ValueError(f"budget and chunk must be >= 1; got {budget}, {chunk}")
    plateau = settings.plateau
    if settings.staged and plateau.window % chunk:
        raise ValueError(
            f"a staged network's plateau window must be a multiple of chunk; got window "
            f"{plateau.window}, chunk {chunk}"
        )
    per_step = task.io.head == "tagger"
    outputs = task.io.output_size
    net = Net1997.create(settings, task.io.input_size, outputs, seed)
    window_means: list[float] = []  # the staged network's mean error per plateau window
    window_sum, window_count = 0.0, 0
    recent = Recent(task.window)
    eval_every = -(-eval_every // chunk) * chunk if eval_every else 0
    reached: dict[str, int] = {}
    start = time.perf_counter()

    def evaluate(batches) -> dict[str, float]:
        totals: dict[str, float] = {}
        count = 0
        for batch in batches:
            x, lengths, _ = batch_arrays(batch, outputs, per_step)
            scores = task.scores(as_output(net.predict(x, lengths, per_step), per_step), batch)
            for name, value in scores.items():
                totals[name] = totals.get(name, 0.0) + float(value.sum())
            count += batch.size
        return task.metrics(totals, count)

    curve: list[tuple[int, float, float]] = []
    stretch = {"loss": 0.0, "correct": 0.0, "count": 0}
    curve_every = max(chunk, budget // 200)
    seen, index, solved = 0, 0, False
    while seen < budget and not solved:
        batch = task.train_batch(index, min(chunk, budget - seen))
        index += 1
        x, lengths, targets = batch_arrays(batch, outputs, per_step)
        scores = task.scores(as_output(net.train(x, lengths, targets, per_step), per_step), batch)
        evaluation = None
        if eval_every and (seen + batch.size) % eval_every == 0:
            evaluation = evaluate(task.eval_batches())
        window = recent.ending_at(scores, batch.size - 1) if task.window else {}
        for name, held in _milestones(task, window, evaluation).items():
            if held and name not in reached:
                reached[name] = seen + batch.size
        if task.solved(window, evaluation):
            solved = True
            # a rule on training scores alone may have held earlier within the chunk: count
            # the sequences up to the first position where it held
            first = batch.size - 1
            if evaluation is None:
                first = next(
                    m for m in range(batch.size) if task.solved(recent.ending_at(scores, m), None)
                )
            seen += first + 1
        else:
            seen += batch.size
        recent.add(scores)
        if net.active_blocks < settings.blocks and not solved:
            window_sum += float(scores["loss"].sum())
            window_count += batch.size
            if window_count == plateau.window:
                window_means.append(window_sum / window_count)
                window_sum, window_count = 0.0, 0
                if plateau.holds(window_means):
                    net.add_block()
                    reached[f"block {net.active_blocks}"] = seen
                    window_means.clear()
        stretch["loss"] += float(scores["loss"].sum())
        stretch["correct"] += float(scores["correct"].sum())
        stretch["count"] += batch.size
        if stretch["count"] >= curve_every or solved or seen >= budget:
            count = stretch["count"]
            curve.append((seen, stretch["loss"] / count, stretch["correct"] / count))
            stretch = {"loss": 0.0, "correct": 0.0, "count": 0}
        if progress is not None:
            progress(seen)
    test = test_batches(task)
    return Trial(
        solved=solved,
        sequences=_to_success(task, seen) if solved else seen,
        test=evaluate(test),
        test_size=sum(batch.size for batch in test),
        weights=net.num_weights(),
        seconds=time.perf_counter() - start,
        milestones=reached,
        curve=curve,
        network=net,
    )


def run_trainer(
    task_name: str,
    task_options: dict,
    *,
    model: dict,
    optim: dict,
    batch_size: int,
    seed: int,
    budget: int,
    eval_every: int = 0,
    run_dir: str | None = None,
    quiet: bool = True,
    progress: Callable[[int], None] | None = None,
) -> Trial:
    """Train a carousel model with carousel's loop (:func:`carousel.train.train`).

    Args:
        task_name, task_options: the task, as ``carousel train`` takes it.
        model, optim: fields of :class:`~carousel.train.ModelConfig` and
            :class:`~carousel.train.OptimConfig`.
        batch_size: sequences per step.
        seed: seed of data, weights and dropout.
        budget: the most training sequences (rounded down to whole steps).
        eval_every: evaluate every this many sequences (0: at the end only).
        run_dir: where the run is written (default: a temporary directory, removed after).
        quiet: no progress bar or messages.
        progress: called with the number of sequences seen after every step.
    """
    from carousel.train import Config, ModelConfig, OptimConfig, TrainConfig, train

    steps = max(1, budget // batch_size)
    every = max(1, eval_every // batch_size) if eval_every else steps
    config = Config(
        task_name,
        dict(task_options),
        ModelConfig(**model),
        OptimConfig(**optim),
        TrainConfig(
            steps=steps,
            batch_size=batch_size,
            seed=seed,
            eval_every=every,
            log_every=max(1, steps // 100),
            checkpoint_every=steps,
            keep_last=1,
        ),
    )
    task = build_task(task_name, task_options, seed)
    if progress is not None:
        draw = task.train_batch

        def train_batch(index: int, size: int):
            progress((index + 1) * size)
            return draw(index, size)

        task.train_batch = train_batch
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        result = train(config, Path(run_dir or scratch), quiet=quiet, task=task)
    solved = bool(result["solved"])
    return Trial(
        solved=solved,
        sequences=_to_success(task, result["solved_sequences"])
        if solved
        else int(result["sequences"]),
        test=dict(result["evaluation"]),
        test_size=sum(batch.size for batch in task.eval_batches()),
        weights=_count_weights(result.model),
        seconds=time.perf_counter() - start,
        curve=_curve(result.curve),
    )


def _to_success(task: Task, sequences: int) -> int:
    """The paper's count of sequences to success for a rule that held after ``sequences``."""
    return task.to_success(int(sequences)) if hasattr(task, "to_success") else int(sequences)


def _curve(rows: list[dict[str, float]]) -> list[tuple[int, float, float]]:
    """``(sequences, training loss, training accuracy)`` from a run's learning curve."""
    return [
        (int(row["sequences"]), row["train_loss"], row.get("train_accuracy", math.nan))
        for row in rows
        if "train_loss" in row
    ]


def _count_weights(model) -> int:
    """Trainable weights of ``model``: recurrent layers count without their masked-out entries
    (:meth:`~carousel.nn.Recurrent.num_weights`: the sLSTM's off-head blocks, FGR's masked
    columns), everything else in full."""
    from carousel.nn import Recurrent

    layers = [m for m in model.modules() if isinstance(m, Recurrent)]
    inside = {id(p) for layer in layers for p in layer.parameters()}
    rest = sum(p.numel() for p in model.parameters() if id(p) not in inside)
    return rest + sum(layer.num_weights() for layer in layers)
