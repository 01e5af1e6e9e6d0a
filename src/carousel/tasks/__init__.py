"""Tasks: seeded generators or datasets of ``(x, y, mask)`` with their loss, metrics and success
criterion. The interface is :class:`~carousel.tasks.base.Task` (see :mod:`carousel.tasks.base`).

=============  ===============================================================================
``adding``     the adding problem, experiment 4 of Hochreiter & Schmidhuber (1997); target at the end
``charlm``     character-level language modelling of a text file; a target per step, stateful
=============  ===============================================================================
"""

from __future__ import annotations

from carousel.tasks.adding import AddingTask
from carousel.tasks.base import Batch, ModelIO, Task, generator, options_from_dict
from carousel.tasks.charlm import CharLMTask

TASKS: dict[str, type[Task]] = {}
"""Registered tasks by name, the ``TASK`` of ``carousel train TASK``."""


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: register a :class:`Task` subclass under its ``name``."""
    if not cls.name or cls.name in TASKS:
        raise ValueError(f"a task needs a new, non-empty name; got {cls.name!r}")
    TASKS[cls.name] = cls
    return cls


for _task in (AddingTask, CharLMTask):
    register_task(_task)


def build_task(name: str, options: dict | None = None, seed: int = 0) -> Task:
    """The registered task ``name`` with ``options`` (a dict of its option fields) and ``seed``."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; the tasks are {sorted(TASKS)}")
    cls = TASKS[name]
    return cls(options_from_dict(cls.Options, options or {}, f"task {name!r}"), seed)


__all__ = [
    "TASKS",
    "AddingTask",
    "Batch",
    "CharLMTask",
    "ModelIO",
    "Task",
    "build_task",
    "generator",
    "register_task",
]
