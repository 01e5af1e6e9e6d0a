"""What a run carries from one step to the next (:class:`RunState`), saved in every checkpoint.

The state is the model, its optimiser, the carried hidden state of stream tasks, the window of
recent training scores the task's success criterion reads, and the :class:`Progress` counters
(steps, sequences, time, the best and the solved step, the scores of the next metrics row). With
torch's random number generator state (every process's), that is all a checkpoint holds: a run
restored from one (:meth:`RunState.restore`) continues exactly where the saved one
(:meth:`RunState.save`) stood. The learning rate needs no state: it is a function of the step.
"""

from __future__ import annotations

import base64
import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from carousel.tasks import ModelIO
from carousel.tasks.base import shard_range
from carousel.train import checkpoint, distributed
from carousel.train.checkpoint import CheckpointError
from carousel.train.config import Config
from carousel.train.distributed import Context
from carousel.train.run_dir import RESUMABLE
from carousel.train.schema import decode_rng


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


@dataclass
class RunState:
    """All that changes from one training step to the next.

    Attributes:
        model: the network (the module itself, not its DDP wrapper).
        optimizer: the optimiser of its parameters.
        recent: the scores of the latest training sequences (the task's ``window``).
        progress: counters, best and solved steps, the scores of the next metrics row.
        carried: for stream tasks, the hidden state the next batch continues (this process's
            rows, each ``(L * D, b, H)``); ``None`` otherwise.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    recent: Window
    progress: Progress = field(default_factory=Progress)
    carried: Tensor | tuple[Tensor, ...] | None = None

    def save(
        self, run_dir: Path, config: Config, io: ModelIO, context: Context, improved: bool
    ) -> None:
        """Write a checkpoint of the state after ``progress.step`` steps of the run ``config``
        (a model for ``io``), record it as the best if the test loss ``improved``, and prune old
        ones. Rank 0 writes; every process contributes its carried state and RNG state."""
        progress, carried = self.progress, self.carried
        tensors: dict[str, Tensor] = {}
        states = () if carried is None else (carried if isinstance(carried, tuple) else (carried,))
        for index, state in enumerate(states):  # each (L * D, b, H): rows of this process
            tensors[f"carry.{index}"] = distributed.gather_along(context, state, dim=1).cpu()
        rng = distributed.gather_objects(context, _rng_state(context.device))
        if not context.is_main:
            return
        tensors.update(checkpoint.model_tensors(self.model))
        optimizer_tensors, optimizer_settings = checkpoint.optimizer_tensors(self.optimizer)
        tensors.update(optimizer_tensors)
        tensors.update({f"recent.{name}": value for name, value in self.recent.values.items()})
        info = {
            "step": progress.step,
            "config": config.to_dict(),
            "io": dataclasses.asdict(io),
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

    def restore(self, path: Path, config: Config, context: Context) -> None:
        """Continue from the checkpoint ``path``: its weights, optimiser state, recent scores,
        progress, this process's rows of the carried state and its RNG state.

        Every part of the checkpoint is checked before any is used.

        Raises:
            CheckpointError: a corrupt checkpoint, one of a run with other settings (up to
                :data:`~carousel.train.run_dir.RESUMABLE`), or one past ``config.train.steps``.
        """
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
        _check_window(tensors, self.recent.size, f"checkpoint {source}")
        if progress.step > config.train.steps:
            raise CheckpointError(
                f"steps ({config.train.steps}) is below the step of checkpoint {source} "
                f"({progress.step}; the run's target is {saved.train.steps} steps): resume with at "
                f"least {progress.step} steps; nothing was changed"
            )
        checkpoint.load_model(self.model, tensors, source)
        checkpoint.load_optimizer(self.optimizer, tensors, optimizer_settings, source)
        self.recent.values = {
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
        self.progress, self.carried = progress, carried


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
    torch.set_rng_state(decode_rng(state["torch"], source, "rng.torch"))
    if device.type == "cuda" and "cuda" in state:
        try:
            cuda = decode_rng(state["cuda"], source, "rng.cuda")
            torch.cuda.set_rng_state(cuda, device)
        except RuntimeError as error:
            raise CheckpointError(f"{source} is corrupt: rng.cuda: {error}") from None
