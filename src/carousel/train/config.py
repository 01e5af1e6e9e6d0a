"""The configuration of a training run: four dataclasses, one comment (``help``) per field.

A run's configuration is a :class:`Config`: the task's name and options, and the
:class:`ModelConfig`, :class:`OptimConfig` and :class:`TrainConfig` sections. It is saved as
``config.json`` in the run directory and can be read from a TOML (or JSON) file of the same
shape::

    task = "adding"
    [task_options]
    length = 100
    [model]
    variant = "1997"
    hidden_size = 4
    block_size = 2
    [optim]
    optimizer = "sgd"
    lr = 0.5
    [train]
    batch_size = 1     # online training, as in 1997

Every field is also a command-line option of ``carousel train`` (``hidden_size`` ->
``--hidden-size``); ``carousel train --help`` lists them with their help.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from carousel.cells.options import CELL_OPTIONS, REGULARIZER_OPTIONS
from carousel.options import option, options_from_dict


def _with_cell_options(cls: type) -> type:
    """Give ``cls`` (before it becomes a dataclass) a field per keyword option of the cell
    variants, :data:`~carousel.cells.options.CELL_OPTIONS`, and per regulariser of the layers,
    :data:`~carousel.cells.options.REGULARIZER_OPTIONS`; ``None``: the default (none)."""
    for name, cell_option in {**CELL_OPTIONS, **REGULARIZER_OPTIONS}.items():
        cls.__annotations__[name] = cell_option.annotation
        setattr(cls, name, option(None, cell_option.help))
    return cls


@dataclass
@_with_cell_options
class ModelConfig:
    """The recurrent layer under the task's head (see :func:`carousel.models.build`).

    After the fields below come the cell options, one field per entry of
    :data:`~carousel.cells.options.CELL_OPTIONS` (``block_size``, ``peepholes``,
    ``gate_activation``, ``layer_norm``, ...), each ``None`` (the variant's default) unless set,
    then the regularisers of :data:`~carousel.cells.options.REGULARIZER_OPTIONS`
    (``recurrent_dropout``, ``candidate_dropout``, ``zoneout``, ``weight_drop``).
    """

    variant: str = option(
        "vanilla", "cell variant (carousel info lists them), e.g. vanilla, 1997, gru"
    )
    hidden_size: int = option(64, "cells (units) per layer and direction", minimum=1)
    num_layers: int = option(1, "stacked recurrent layers", minimum=1)
    bidirectional: bool = option(False, "read sequences both ways (classifier, regressor, tagger)")
    dropout: float = option(0.0, "dropout on non-recurrent edges: inputs, between layers, outputs")
    proj_size: int = option(0, "LSTM projection of h to this width (0: none)", minimum=0)
    embedding_size: int = option(
        0, "token embedding width (0: hidden_size, or proj width if tied)", minimum=0
    )
    tie_weights: bool = option(False, "language models: share the embedding with the decoder")
    init: str = option(
        "", 'initialisers after torch\'s default, e.g. "forget_bias(1.0)" or "chrono(100)"'
    )
    backend: str = option("auto", "kernel backend: auto, or a name from carousel info")


@dataclass
class OptimConfig:
    """The optimiser, its learning-rate schedule and gradient clipping."""

    optimizer: str = option(
        "adam",
        "sgd (plain or with momentum; with batch_size 1: online, as in 1997) or adam",
        choices=("sgd", "adam"),
    )
    lr: float = option(1e-3, "peak learning rate", minimum=0)
    momentum: float = option(0.0, "SGD momentum", minimum=0)
    weight_decay: float = option(0.0, "L2 weight decay", minimum=0)
    schedule: str = option(
        "constant",
        "learning rate after warm-up: constant, linear or cosine decay to 0",
        choices=("constant", "linear", "cosine"),
    )
    warmup_steps: int = option(0, "steps of linear warm-up from 0 to lr", minimum=0)
    clip_norm: float = option(0.0, "clip the gradient's global L2 norm to this (0: off)", minimum=0)
    clip_value: float = option(0.0, "clip every gradient entry to [-v, v] (0: off)", minimum=0)


@dataclass
class TrainConfig:
    """The loop: length, batches, seeding, evaluation, checkpoints, stopping, device."""

    steps: int = option(1000, "optimiser steps (one batch each) to train for", minimum=1)
    batch_size: int = option(32, "sequences per step, over all processes (1: online)", minimum=1)
    seed: int = option(0, "seed of the data, the initial weights and dropout")
    eval_every: int = option(
        100, "evaluate on the task's test set every N steps (0: at the end)", minimum=0
    )
    log_every: int = option(10, "write training metrics every N steps", minimum=1)
    checkpoint_every: int = option(
        100, "write a checkpoint every N steps (and at the end)", minimum=1
    )
    keep_last: int = option(3, "latest checkpoints kept (the best one is kept too)", minimum=1)
    stop_when_solved: bool = option(True, "stop once the task's success criterion holds")
    device: str = option("auto", "cpu, cuda, cuda:N, or auto (cuda if available)")
    threads: int = option(
        0,
        "CPU threads per process for torch and the kernels (0: as set, see CAROUSEL_NUM_THREADS)",
        minimum=0,
    )


SECTIONS = {"model": ModelConfig, "optim": OptimConfig, "train": TrainConfig}


@dataclass
class Config:
    """A whole run: ``task`` and ``task_options`` (a dict of the task's option fields), and the
    three sections."""

    task: str
    task_options: dict = field(default_factory=dict)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        from carousel.tasks import TASKS

        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; the tasks are {sorted(TASKS)}")
        # Every option of the task, defaults filled in, so that configurations compare equal.
        options = options_from_dict(
            TASKS[self.task].Options, self.task_options, f"task {self.task!r}"
        )
        self.task_options = dataclasses.asdict(options)
        self.check()

    def check(self) -> None:
        """Raise ``ValueError``/``TypeError`` for settings of the wrong type, out of range, or
        that do not go together (task and model combinations are checked when the task and the
        model are built)."""
        for name, section in SECTIONS.items():
            value = getattr(self, name)
            if not isinstance(value, section):
                raise TypeError(f"{name} must be a {section.__name__}; got {type(value).__name__}")
            options_from_dict(section, dataclasses.asdict(value), f"[{name}]")  # types, choices
            for declared in dataclasses.fields(section):  # least values, in the fields' metadata
                least, setting = declared.metadata.get("minimum"), getattr(value, declared.name)
                if least is not None and setting < least:
                    bound = f"at least {least}" if least else ">= 0"
                    raise ValueError(f"{declared.name} must be {bound}; got {setting}")
        if not 0 <= self.model.dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1); got {self.model.dropout}")
        if self.optim.optimizer == "adam" and self.optim.momentum:
            raise ValueError("momentum applies to optimizer sgd; adam has its own moment estimates")
        if self.optim.warmup_steps >= self.train.steps and self.optim.warmup_steps:
            raise ValueError(
                f"warmup_steps ({self.optim.warmup_steps}) must be fewer than steps ({self.train.steps})"
            )

    def to_dict(self) -> dict:
        """The configuration as plain JSON-able data (what ``config.json`` holds)."""
        return {
            "task": self.task,
            "task_options": dict(self.task_options),
            **{name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS},
        }

    @classmethod
    def from_dict(cls, data: dict, where: str = "the configuration") -> Config:
        """The inverse of :meth:`to_dict`; unknown keys and wrong types raise with their name."""
        from carousel.tasks import TASKS

        if not isinstance(data, dict):
            raise ValueError(f"{where} must be a table of settings")
        unknown = sorted(set(data) - {"task", "task_options", *SECTIONS})
        if unknown:
            raise ValueError(
                f"unknown section(s) {unknown} in {where}; known: task, task_options, {', '.join(SECTIONS)}"
            )
        task = data.get("task")
        if not isinstance(task, str):
            raise ValueError(f'{where} must name a task (task = "..."); got {task!r}')
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r} in {where}; the tasks are {sorted(TASKS)}")
        task_options = data.get("task_options", {})
        if not isinstance(task_options, dict):
            raise ValueError(f"[task_options] in {where} must be a table; got {task_options!r}")
        sections = {}
        for name, section in SECTIONS.items():
            values = data.get(name, {})
            if not isinstance(values, dict):
                raise ValueError(f"[{name}] in {where} must be a table; got {values!r}")
            sections[name] = options_from_dict(section, values, f"[{name}]")
        return cls(task=task, task_options=task_options, **sections)

    def differences(self, other: Config, ignore: tuple[str, ...] = ()) -> list[str]:
        """``"section.name: mine != other's"`` for every differing setting not in ``ignore``."""
        mine, theirs = _flatten(self.to_dict()), _flatten(other.to_dict())
        return [
            f"{key}: {mine.get(key)!r} != {theirs.get(key)!r}"
            for key in sorted(set(mine) | set(theirs))
            if key not in ignore and mine.get(key) != theirs.get(key)
        ]


def _flatten(data: dict) -> dict:
    flat = {"task": data["task"]}
    for section in ("task_options", *SECTIONS):
        for key, value in data[section].items():
            flat[f"{section}.{key}"] = value
    return flat


def read_config_file(path: str | Path) -> dict:
    """The settings in a ``.toml`` or ``.json`` file, as nested dicts (not yet validated)."""
    path = Path(path)
    if path.suffix not in (".toml", ".json"):
        raise ValueError(f"config file must end in .toml or .json; got {str(path)!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"cannot read config file {str(path)!r}: {error.strerror}") from None
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"config file {str(path)!r} is not valid JSON: {error}") from None
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {error}") from None


__all__ = [
    "SECTIONS",
    "Config",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "read_config_file",
]
