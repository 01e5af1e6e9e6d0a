"""The training loop: :func:`train`, readable top to bottom.

One step:

1. take batch ``step`` of the task's training stream (every process builds the same global batch
   and keeps its rows);
2. continue the carried hidden state where the task streams (zeroed where ``reset``), else start
   from zeros;
3. forward, the task's loss, backward (DDP averages gradients over processes), clip, update with
   the learning rate of this step's schedule;
4. score the batch's sequences (for the logs and the task's success criterion);
5. every ``eval_every`` steps evaluate on the task's test set, every ``checkpoint_every`` steps
   and whenever the test loss improves write a checkpoint;
6. stop at ``steps``, or once the task says it is solved.

Everything random derives from ``train.seed`` (the data from the task's seeded streams, the
initial weights and dropout from torch's generator, whose state is checkpointed), so a run
interrupted and resumed on the CPU ends with the same weights, bit for bit, as one that was not.

What a step changes is a :class:`~carousel.train.state.RunState` (model, optimiser, carried
state, recent scores, progress), which saves itself to a checkpoint and restores itself from
one; the run directory's lock and checks are in :mod:`carousel.train.run_dir`, the optimiser,
its schedule and clipping in :mod:`carousel.train.optim`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from carousel import models
from carousel.kernels.threads import set_num_threads
from carousel.tasks import Task, build_task
from carousel.tasks.base import Batch, shard_range
from carousel.train import distributed
from carousel.train.config import Config
from carousel.train.logging import RunLog
from carousel.train.optim import clip_gradients, learning_rate, make_optimizer
from carousel.train.run_dir import RunLock, open_run_directory, write_run_files
from carousel.train.state import Progress, RunState, Window, continue_state, detach


@dataclass(eq=False)
class TrainResult(Mapping):
    """What :func:`train` returns: the run's summary, the trained model and its learning curve.

    The result reads as its summary (``result["solved_sequences"]``, ``dict(result)``).

    Attributes:
        summary: ``step``, ``sequences``, ``seconds``, ``solved`` (bool), ``solved_step``,
            ``solved_sequences``, ``best_step``, ``best_loss`` and ``evaluation`` (the final
            test metrics).
        model: the trained model with the weights after the last step, in eval mode (the best
            checkpoint's weights are in the run directory:
            :func:`~carousel.train.checkpoint.load_trained_model`).
        curve: the rows of ``metrics.csv``, a resumed run's earlier rows included: column ->
            number, empty cells left out (as :func:`~carousel.train.logging.read_metrics`
            reads them).
    """

    summary: dict
    model: torch.nn.Module = field(repr=False)
    curve: list[dict[str, float]] = field(default_factory=list, repr=False)

    def __getitem__(self, key: str):
        return self.summary[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.summary)

    def __len__(self) -> int:
        return len(self.summary)


def train(
    config: Config,
    run_dir: str | Path,
    *,
    resume: bool = False,
    quiet: bool = False,
    task: Task | None = None,
) -> TrainResult:
    """Train as ``config`` says, writing the run to ``run_dir``; return the summary, the model
    and the learning curve.

    Args:
        config: the run's configuration.
        run_dir: a new (or empty) directory, or with ``resume`` the directory of the run to
            continue from its latest checkpoint.
        resume: continue the run in ``run_dir``; its configuration must match ``config`` except
            for the settings in :data:`~carousel.train.run_dir.RESUMABLE`.
        quiet: print nothing.
        task: a task object to use instead of building ``config.task`` (for tasks that are not
            registered); its name must equal ``config.task``.

    ``config.train.threads``, if set, sets this process's thread count for good
    (:func:`carousel.set_num_threads`); otherwise the threads are left as they are.

    Returns:
        a :class:`TrainResult`: it reads as the summary (``result["solved_sequences"]``), and
        holds the trained model (``result.model``) and the learning curve (``result.curve``).

    The run directory is locked for the whole run (:class:`~carousel.train.run_dir.RunLock`).

    Raises:
        ValueError: bad settings, or a run directory that is not empty without ``resume``;
            :class:`~carousel.train.checkpoint.CheckpointError` (a ``ValueError``) for a run
            directory in use by another process, a run or checkpoint that does not match or is
            corrupt, or a resume with fewer ``steps`` than the checkpoint's. Nothing is written
            before these checks.
        KeyboardInterrupt: after SIGINT/SIGTERM, once the current step's checkpoint is written
            (a signal after the last step does not interrupt: the run has finished).
    """
    config.check()  # it may have been changed since it was made
    if config.train.threads:
        set_num_threads(config.train.threads)
    context = distributed.setup(config.train.device)
    lock = RunLock(Path(run_dir)) if context.is_main else None
    try:
        result = _train(config, Path(run_dir), resume, quiet, task, context, lock)
    except BaseException:
        distributed.teardown(context, wait=False)
        raise
    finally:
        if lock is not None:
            lock.release()
    distributed.teardown(context)
    return result


def _train(config: Config, run_dir: Path, resume: bool, quiet: bool, task, context, lock):
    settings = config.train
    if settings.batch_size % context.world_size:
        raise ValueError(
            f"batch_size ({settings.batch_size}) must be a multiple of the number of processes "
            f"({context.world_size}): every process takes an equal share of each batch"
        )

    # 1. Task, model and optimiser, all determined by the seed.
    if task is None:
        task = build_task(config.task, config.task_options, settings.seed)
    elif task.name != config.task:
        raise ValueError(f"task object {task.name!r} does not match config.task {config.task!r}")
    torch.manual_seed(settings.seed)
    model = models.build(task.io, config.model).to(context.device)
    state = RunState(model, make_optimizer(model, config.optim), Window(task.window))
    torch.manual_seed(settings.seed + context.rank)  # dropout differs between processes

    # 2. The run directory: locked (by rank 0, for the run's whole life) and checked.
    latest = open_run_directory(run_dir, config, resume, lock, task.vocabulary, context)

    # 3. Resume: weights, optimiser, carried state, recent scores, progress and RNG states,
    #    every part of the checkpoint checked before any is used.
    if latest is not None:
        state.restore(latest, config, context)
    progress, optimizer = state.progress, state.optimizer

    # 4. Only now write: the configuration, the vocabulary, the logs.
    if context.is_main:
        write_run_files(run_dir, config, task.vocabulary)
    log = RunLog(run_dir, settings.steps, progress.step, context.is_main, quiet)
    if latest is not None:
        log.message(f"resuming {run_dir} from step {progress.step} ({latest.name})")
    network = distributed.wrap(model, context)  # DDP over several processes

    # 5. The loop.
    finished = progress.step >= settings.steps or (
        progress.solved_step is not None and settings.stop_when_solved
    )
    evaluation = None
    model.train()
    with distributed.StopRequest() as stop:
        while not finished:
            started = time.perf_counter()
            batch = task.train_batch(progress.step, settings.batch_size)
            batch = batch.shard(context.rank, context.world_size).to(context.device)
            lr = learning_rate(config.optim, progress.step, settings.steps)
            for group in optimizer.param_groups:
                group["lr"] = lr

            start = continue_state(state.carried, batch.reset)  # None: zeros
            output, final = network(batch.x, batch.mask, start)  # final: the state after the batch
            loss = task.loss(output, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = clip_gradients(model, config.optim)
            optimizer.step()
            state.carried = detach(final) if batch.reset is not None else None

            progress.step += 1
            progress.sequences += settings.batch_size
            with torch.no_grad():
                scores = distributed.gather_rows(context, task.scores(output.detach(), batch))
            state.recent.add(scores)
            for name, value in scores.items():
                progress.row_totals[name] = progress.row_totals.get(name, 0.0) + float(value.sum())
            progress.row_sequences += settings.batch_size
            progress.row_steps += 1
            progress.row_grad_norm += grad_norm

            at_end = progress.step == settings.steps
            evaluation = None
            if (settings.eval_every and progress.step % settings.eval_every == 0) or at_end:
                evaluation = evaluate(model, task, context)
            if progress.solved_step is None and task.solved(state.recent.values, evaluation):
                progress.solved_step, progress.solved_sequences = progress.step, progress.sequences
                log.message(f"solved after {progress.step} steps, {progress.sequences} sequences")
            finished = at_end or (progress.solved_step is not None and settings.stop_when_solved)
            if finished and evaluation is None:
                evaluation = evaluate(model, task, context)
            progress.seconds += time.perf_counter() - started

            improved = evaluation is not None and (
                progress.best_loss is None or evaluation["loss"] < progress.best_loss
            )
            if improved:
                progress.best_loss, progress.best_step = evaluation["loss"], progress.step
            if progress.step % settings.log_every == 0 or evaluation is not None or finished:
                write_row(log, task, progress, lr, evaluation)
            interrupted = distributed.any_process(context, stop.requested)
            scheduled = progress.step % settings.checkpoint_every == 0
            if scheduled or improved or finished or interrupted:
                state.save(run_dir, config, task.io, context, improved)
            log.step()
            if interrupted and not finished:
                log.close(config.task)
                log.message(f"interrupted after step {progress.step}; continue with --resume")
                raise KeyboardInterrupt
        # Still under the stop request: a signal now cannot turn a finished run into a failure.
        log.close(config.task)
        if evaluation is None and latest is not None:  # resumed a finished run: its test metrics
            evaluation = evaluate(model, task, context)
    summary = {
        "step": progress.step,
        "sequences": progress.sequences,
        "solved": progress.solved_step is not None,
        "solved_step": progress.solved_step,
        "solved_sequences": progress.solved_sequences,
        "best_step": progress.best_step,
        "best_loss": progress.best_loss,
        "evaluation": evaluation,
        "seconds": progress.seconds,
    }
    curve = distributed.broadcast_object(context, log.rows)  # rank 0 read the earlier rows
    return TrainResult(summary, model.eval(), curve)


# ---- the pieces of a step ------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, task: Task, context, batches: Iterable[Batch] | None = None
) -> dict[str, float]:
    """The task's metrics on ``batches`` (default: its evaluation set, ``task.eval_batches()``);
    each process scores its rows of every batch."""
    model.eval()
    totals: dict[str, float] = {}
    sequences, carried = 0, None
    for batch in task.eval_batches() if batches is None else batches:
        start, stop = shard_range(batch.size, context.rank, context.world_size)
        if start == stop:
            continue
        batch = batch.shard(context.rank, context.world_size).to(context.device)
        output, state = model(batch.x, batch.mask, continue_state(carried, batch.reset))
        carried = state if batch.reset is not None else None
        for name, value in task.scores(output, batch).items():
            totals[name] = totals.get(name, 0.0) + float(value.double().sum())
        sequences += batch.size
    model.train()
    combined: dict[str, float] = {}
    count = 0
    for part, part_count in distributed.gather_objects(context, (totals, sequences)):
        for name, value in part.items():
            combined[name] = combined.get(name, 0.0) + value
        count += part_count
    return {name: float(value) for name, value in task.metrics(combined, count).items()}


def write_row(log: RunLog, task: Task, progress: Progress, lr: float, evaluation) -> None:
    """A row of training metrics since the last row (and test metrics, if any)."""
    train_metrics = task.metrics(progress.row_totals, progress.row_sequences)
    fixed = {
        "step": progress.step,
        "sequences": progress.sequences,
        "seconds": round(progress.seconds, 3),
        "lr": lr,
        "grad_norm": progress.row_grad_norm / progress.row_steps,
    }
    log.row(fixed, {k: float(v) for k, v in train_metrics.items()}, evaluation)
    if evaluation is not None:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in evaluation.items())
        log.message(f"step {progress.step}: test {shown}")
    progress.row_totals, progress.row_sequences = {}, 0
    progress.row_steps, progress.row_grad_norm = 0, 0.0
