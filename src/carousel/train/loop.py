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
"""

from __future__ import annotations

import base64
import dataclasses
import math
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from carousel import models
from carousel.kernels.threads import set_num_threads
from carousel.tasks import Task, build_task
from carousel.tasks.base import Batch, shard_range
from carousel.train import checkpoint, distributed
from carousel.train.checkpoint import CheckpointError
from carousel.train.config import Config, OptimConfig
from carousel.train.logging import RunLog, check_metrics

RESUMABLE = (
    "train.steps",
    "train.eval_every",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_last",
    "train.stop_when_solved",
    "train.device",
    "train.threads",
    "model.backend",
)
"""Settings a resumed run may change; any other difference from the saved run is an error."""


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint.

    ``row_*`` accumulate the training scores since the last row of ``metrics.csv``.
    """

    step: int = 0
    sequences: int = 0
    seconds: float = 0.0
    best_loss: float | None = None
    best_step: int | None = None
    solved_step: int | None = None
    solved_sequences: int | None = None
    row_totals: dict[str, float] = field(default_factory=dict)
    row_sequences: int = 0
    row_steps: int = 0
    row_grad_norm: float = 0.0


class Window:
    """The per-sequence scores of the most recent ``size`` training sequences, oldest first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.values: dict[str, Tensor] = {}

    def add(self, scores: dict[str, Tensor]) -> None:
        """Append a batch's scores (each ``(B,)``), dropping the oldest beyond ``size``."""
        if self.size:
            for name, value in scores.items():
                previous = self.values.get(name, value[:0])
                self.values[name] = torch.cat([previous, value])[-self.size :]


def train(
    config: Config,
    run_dir: str | Path,
    *,
    resume: bool = False,
    quiet: bool = False,
    task: Task | None = None,
) -> dict:
    """Train as ``config`` says, writing the run to ``run_dir``; return a summary.

    Args:
        config: the run's configuration.
        run_dir: a new (or empty) directory, or with ``resume`` the directory of the run to
            continue from its latest checkpoint.
        resume: continue the run in ``run_dir``; its configuration must match ``config`` except
            for the settings in :data:`RESUMABLE`.
        quiet: print nothing.

    ``config.train.threads``, if set, sets this process's thread count for good
    (:func:`carousel.set_num_threads`); otherwise the threads are left as they are.
        task: a task object to use instead of building ``config.task`` (for tasks that are not
            registered); its name must equal ``config.task``.

    Returns:
        ``step``, ``sequences``, ``solved`` (bool), ``solved_step``, ``solved_sequences``,
        ``best_step``, ``best_loss`` and ``evaluation`` (the final test metrics).

    The run directory is locked for the whole run (:class:`~carousel.train.checkpoint.RunLock`).

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
    lock = checkpoint.RunLock(Path(run_dir)) if context.is_main else None
    try:
        summary = _train(config, Path(run_dir), resume, quiet, task, context, lock)
    except BaseException:
        distributed.teardown(context, wait=False)
        raise
    finally:
        if lock is not None:
            lock.release()
    distributed.teardown(context)
    return summary


def _train(config: Config, run_dir: Path, resume: bool, quiet: bool, task, context, lock) -> dict:
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
    optimizer = make_optimizer(model, config.optim)
    torch.manual_seed(settings.seed + context.rank)  # dropout differs between processes

    # 2. The run directory: locked (by rank 0, for the run's whole life) and checked.
    latest = _broadcast_checked(
        context, lambda: check_run_directory(run_dir, config, resume, lock, task.vocabulary)
    )

    # 3. Resume: weights, optimiser, carried state, recent scores, progress and RNG states,
    #    every part of the checkpoint checked before any is used.
    progress, carried, recent = Progress(), None, Window(task.window)
    if latest is not None:
        progress, carried = restore(latest, model, optimizer, recent, config, context)

    # 4. Only now write: the configuration, the vocabulary, the logs.
    if context.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        checkpoint.write_json(run_dir / "config.json", config.to_dict())
        if task.vocabulary is not None:
            checkpoint.write_json(run_dir / "vocab.json", task.vocabulary)
    log = RunLog(run_dir, settings.steps, progress.step, context.is_main, quiet)
    if latest is not None:
        log.message(f"resuming {run_dir} from step {progress.step} ({latest.name})")
    network = model
    if context.world_size > 1:
        device_ids = [context.device.index] if context.device.type == "cuda" else None
        network = DistributedDataParallel(model, device_ids=device_ids)

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

            output, state = network(batch.x, batch.mask, continue_state(carried, batch.reset))
            loss = task.loss(output, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = clip_gradients(model, config.optim)
            optimizer.step()
            carried = detach(state) if batch.reset is not None else None

            progress.step += 1
            progress.sequences += settings.batch_size
            with torch.no_grad():
                scores = distributed.gather_rows(context, task.scores(output.detach(), batch))
            recent.add(scores)
            for name, value in scores.items():
                progress.row_totals[name] = progress.row_totals.get(name, 0.0) + float(value.sum())
            progress.row_sequences += settings.batch_size
            progress.row_steps += 1
            progress.row_grad_norm += grad_norm

            at_end = progress.step == settings.steps
            evaluation = None
            if (settings.eval_every and progress.step % settings.eval_every == 0) or at_end:
                evaluation = evaluate(model, task, context)
            if progress.solved_step is None and task.solved(recent.values, evaluation):
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
            if (
                progress.step % settings.checkpoint_every == 0
                or improved
                or finished
                or interrupted
            ):
                save_checkpoint(
                    run_dir,
                    task,
                    model,
                    optimizer,
                    carried,
                    recent,
                    progress,
                    config,
                    context,
                    improved,
                )
            log.step()
            if interrupted and not finished:
                log.close(config.task)
                log.message(f"interrupted after step {progress.step}; continue with --resume")
                raise KeyboardInterrupt
        # Still under the stop request: a signal now cannot turn a finished run into a failure.
        log.close(config.task)
        if evaluation is None and latest is not None:  # resumed a finished run: its test metrics
            evaluation = evaluate(model, task, context)
    return {
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


# ---- the pieces of a step ------------------------------------------------------------------


def make_optimizer(model: torch.nn.Module, settings: OptimConfig) -> torch.optim.Optimizer:
    """SGD (with ``momentum``, possibly 0) or Adam over the model's parameters."""
    if settings.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=settings.lr,
            momentum=settings.momentum,
            weight_decay=settings.weight_decay,
        )
    return torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)


def learning_rate(settings: OptimConfig, step: int, steps: int) -> float:
    r"""The learning rate of step ``step`` (0-based) of ``steps``.

    Linear warm-up over ``warmup_steps``: :math:`\eta (s + 1) / w`; then ``constant``
    :math:`\eta`, ``linear`` :math:`\eta (1 - p)` or ``cosine``
    :math:`\tfrac{\eta}{2} (1 + \cos \pi p)`, with :math:`p = (s - w) / (S - w)`.
    """
    warmup = settings.warmup_steps
    if step < warmup:
        return settings.lr * (step + 1) / warmup
    if settings.schedule == "constant":
        return settings.lr
    fraction = (step - warmup) / max(1, steps - warmup)
    if settings.schedule == "linear":
        return settings.lr * (1 - fraction)
    return settings.lr * 0.5 * (1 + math.cos(math.pi * fraction))


def clip_gradients(model: torch.nn.Module, settings: OptimConfig) -> float:
    """Clip each gradient entry to ``clip_value``, then the global norm to ``clip_norm`` (each if
    set); returns the global gradient norm before norm clipping."""
    parameters = [p for p in model.parameters() if p.grad is not None]
    if settings.clip_value:
        torch.nn.utils.clip_grad_value_(parameters, settings.clip_value)
    return float(torch.nn.utils.clip_grad_norm_(parameters, settings.clip_norm or math.inf))


def continue_state(state, reset: Tensor | None):
    """The state a stream batch starts from: the carried ``state`` with the rows where ``reset``
    zeroed; ``None`` (zeros) for a batch that does not continue a stream."""
    if state is None or reset is None or bool(reset.all()):
        return None
    keep = (~reset).to(_first(state).dtype).view(1, -1, 1)  # (1, B, 1)
    return tuple(s * keep for s in state) if isinstance(state, tuple) else state * keep


def detach(state):
    """The state cut from the graph (truncated backpropagation at the batch boundary)."""
    if state is None:
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def _first(state) -> Tensor:
    return state[0] if isinstance(state, tuple) else state


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


# ---- run directory and checkpoints ---------------------------------------------------------


def check_run_directory(
    run_dir: Path,
    config: Config,
    resume: bool,
    lock: checkpoint.RunLock | None = None,
    vocabulary=None,
) -> Path | None:
    """Check that training may write to ``run_dir``, taking ``lock`` (if given) first; return
    the checkpoint to resume from.

    A new run needs a missing or empty directory. A resumed run needs the run's
    ``config.json`` to match ``config`` (up to :data:`RESUMABLE`), its ``vocab.json`` (if any) to
    equal ``vocabulary`` and its ``metrics.csv`` to be readable; it continues from the latest
    checkpoint, or from step 0 if none was written yet. The lock is taken only where a run
    may be: never in a directory that is neither empty nor a run's.
    """
    config_path = run_dir / "config.json"
    if not resume:
        if run_dir.exists() and not run_dir.is_dir():
            raise CheckpointError(
                f"output directory {str(run_dir)!r} is a file; choose another --out"
            )
        is_run = config_path.exists() or (run_dir / checkpoint.LOCK_NAME).exists()
        if lock is not None and (is_run or not _contents(run_dir)):
            lock.acquire()
        if _contents(run_dir):
            raise CheckpointError(
                f"output directory {str(run_dir)!r} is not empty; pass --resume to continue the "
                "run in it, or choose another --out"
            )
        return None
    if not config_path.exists():
        raise CheckpointError(f"nothing to resume in {str(run_dir)!r}: it has no config.json")
    if lock is not None:
        lock.acquire()
    saved = Config.from_dict(
        checkpoint.read_json(config_path, "run configuration"), str(config_path)
    )
    differences = config.differences(saved, ignore=RESUMABLE)
    if differences:
        raise CheckpointError(
            f"the run in {str(run_dir)!r} was made with other settings ({'; '.join(differences[:4])}); "
            "resume it with its own settings, or choose another --out"
        )
    vocabulary_path = run_dir / "vocab.json"
    if vocabulary_path.exists():
        if vocabulary != checkpoint.read_json(vocabulary_path, "vocabulary"):
            raise CheckpointError(
                f"the task's vocabulary differs from the one saved in {str(vocabulary_path)!r} "
                "(has the text changed?)"
            )
    check_metrics(run_dir / "metrics.csv")
    return checkpoint.latest(run_dir / "checkpoints")


def _contents(directory: Path) -> list[str]:
    """The entries of ``directory`` (none if it does not exist) but its lock file."""
    if not directory.is_dir():
        return []
    return [path.name for path in directory.iterdir() if path.name != checkpoint.LOCK_NAME]


def _broadcast_checked(context, check):
    """Run ``check`` on rank 0 and give its result, or raise its error, on every process."""
    outcome = None
    if context.is_main:
        try:
            outcome = ("ok", check())
        except ValueError as error:
            outcome = (type(error).__name__, str(error))
    outcome = distributed.broadcast_object(context, outcome)
    if outcome[0] != "ok":
        raise (CheckpointError if outcome[0] == "CheckpointError" else ValueError)(outcome[1])
    return outcome[1]


def save_checkpoint(
    run_dir, task, model, optimizer, carried, recent, progress, config, context, improved: bool
) -> None:
    """Write a checkpoint of the state after ``progress.step`` steps, record it as the best if the
    test loss ``improved``, and prune old ones. Rank 0 writes; every process contributes its
    carried state and RNG state."""
    tensors: dict[str, Tensor] = {}
    states = () if carried is None else (carried if isinstance(carried, tuple) else (carried,))
    for index, state in enumerate(states):  # each (L * D, b, H): rows of this process
        tensors[f"carry.{index}"] = distributed.gather_along(context, state, dim=1).cpu()
    rng = distributed.gather_objects(context, _rng_state(context.device))
    if not context.is_main:
        return
    tensors.update(checkpoint.model_tensors(model))
    optimizer_tensors, optimizer_settings = checkpoint.optimizer_tensors(optimizer)
    tensors.update(optimizer_tensors)
    tensors.update({f"recent.{name}": value for name, value in recent.values.items()})
    info = {
        "step": progress.step,
        "config": config.to_dict(),
        "io": dataclasses.asdict(task.io),
        "progress": dataclasses.asdict(progress),
        "optimizer": optimizer_settings,
        "carried": None
        if carried is None
        else ("tuple" if isinstance(carried, tuple) else "tensor"),
        "world_size": context.world_size,
        "rng": rng,
    }
    directory = run_dir / "checkpoints"
    path = checkpoint.save(directory, checkpoint.step_name(progress.step), tensors, info)
    if improved:
        record = {"checkpoint": path.name, "step": progress.step, "loss": progress.best_loss}
        checkpoint.write_json(directory / "best.json", record)
    best = None
    if progress.best_step is not None:
        best = directory / f"{checkpoint.step_name(progress.best_step)}.json"
    checkpoint.prune(directory, config.train.keep_last, keep=best)


def restore(path: Path, model, optimizer, recent: Window, config: Config, context):
    """Load the checkpoint ``path`` into the model, optimiser and window; return the progress
    and this process's rows of the carried state."""
    tensors, info = checkpoint.load(path)  # the record checked whole (schema, digest, fields)
    source = repr(str(path))
    saved = checkpoint.read_config(info, path)
    progress = Progress(**info["progress"])
    optimizer_settings, carried_kind, rng = info["optimizer"], info["carried"], info["rng"]
    differences = config.differences(saved, ignore=RESUMABLE)
    if differences:
        raise CheckpointError(
            f"checkpoint {source} belongs to a run with other settings: {'; '.join(differences[:4])}"
        )
    _check_window(tensors, recent.size, f"checkpoint {source}")
    if progress.step > config.train.steps:
        raise CheckpointError(
            f"steps ({config.train.steps}) is below the step of checkpoint {source} "
            f"({progress.step}; the run's target is {saved.train.steps} steps): resume with at "
            f"least {progress.step} steps; nothing was changed"
        )
    checkpoint.load_model(model, tensors, source)
    checkpoint.load_optimizer(optimizer, tensors, optimizer_settings, source)
    recent.values = {
        k.removeprefix("recent."): v for k, v in tensors.items() if k.startswith("recent.")
    }
    carried = None
    if carried_kind is not None:
        count = sum(1 for name in tensors if name.startswith("carry."))
        states = []
        for index in range(count):
            state = tensors[f"carry.{index}"]  # (L * D, B, H), all processes' rows
            start, stop = shard_range(state.shape[1], context.rank, context.world_size)
            states.append(state[:, start:stop].to(context.device))
        carried = tuple(states) if carried_kind == "tuple" else states[0]
    if len(rng) == context.world_size:
        _set_rng_state(rng[context.rank], context.device, f"checkpoint {source}")
    elif context.is_main:
        warnings.warn(
            f"the run was trained with {len(rng)} processes and resumes with "
            f"{context.world_size}: random streams (dropout) start from the seed again, so the "
            "result will not be bit-identical to an uninterrupted run",
            stacklevel=2,
        )
    return progress, carried


def _rng_state(device: torch.device) -> dict:
    state = {"torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}
    if device.type == "cuda":
        cuda = torch.cuda.get_rng_state(device).numpy().tobytes()
        state["cuda"] = base64.b64encode(cuda).decode()
    return state


def _check_window(tensors, window: int, source: str) -> None:
    """The recent scores of a checkpoint fit the task's window."""
    for name, value in tensors.items():
        if name.startswith("recent.") and value.shape[0] > window:
            raise CheckpointError(
                f"{source} is corrupt: recent: {name} holds {value.shape[0]} scores; the "
                f"task's window is {window}"
            )


def _set_rng_state(state: dict, device: torch.device, source: str) -> None:
    torch.set_rng_state(checkpoint.decode_rng(state["torch"], source, "rng.torch"))
    if device.type == "cuda" and "cuda" in state:
        try:
            cuda = checkpoint.decode_rng(state["cuda"], source, "rng.cuda")
            torch.cuda.set_rng_state(cuda, device)
        except RuntimeError as error:
            raise CheckpointError(f"{source} is corrupt: rng.cuda: {error}") from None
