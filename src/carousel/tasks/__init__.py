"""Tasks: seeded generators or datasets of ``(x, y, mask)`` with their loss, metrics and success
criterion. The interface is :class:`~carousel.tasks.base.Task` (see :mod:`carousel.tasks.base`).

==================  ==========================================================================
``adding``          the adding problem, experiment 4 of Hochreiter & Schmidhuber (1997); target at
                    the end
``addition_text``   written addition "357+68" -> "425" as sequence to sequence (encoder-decoder);
                    tested on longer operands than trained on
``calculator``      the pocket calculator of the ECE 417 LSTM lecture; a target per step, scored
                    where something is printed
``charlm``          character-level language modelling of a text file; a target per step, stateful
``delayed_xor``     the strongly delayed XOR of two bits far apart in a noisy sequence (the paper's
                    section 6); target at the end
``digits``          scikit-learn's 8x8 handwritten digits read as a sequence (rows: 8 steps, or
                    pixels: 64); a class at the end
``forecast``        statsmodels' sunspots (yearly) or CO2 (monthly/weekly) series: the next K values
                    from the last H, scored on rolling origins of a held-out tail
``longlag``         experiment 2 (2a, 2b, 2c): long time lags, noise-free and with distractors
``modular_arithmetic``  modular arithmetic without brackets, or parity (the xLSTM paper's state
                    tracking); trained short, tested longer; a class at the end
``multiplication``  the multiplication problem, experiment 5; target at the end
``pytokens``        the token type (:mod:`tokenize`) of every character of standard-library Python
                    source; a tag per step
``reber``           the (embedded) Reber grammar, experiment 1; the next symbol at every step
``temporal_order``  the temporal order problem, experiment 6 (6a, 6b); a class at the end
``two_sequence``    the two-sequence problem, experiment 3 (3a, 3b, 3c); a class at the end
==================  ==========================================================================
"""

from __future__ import annotations

from carousel.options import options_from_dict
from carousel.tasks.adding import AddingTask
from carousel.tasks.addition_text import AdditionTextTask
from carousel.tasks.base import Batch, ModelIO, Task, generator
from carousel.tasks.calculator import CalculatorTask
from carousel.tasks.charlm import CharLMTask
from carousel.tasks.delayed_xor import DelayedXorTask
from carousel.tasks.digits import DigitsTask
from carousel.tasks.forecast import ForecastTask
from carousel.tasks.longlag import LongLagTask
from carousel.tasks.modular_arithmetic import ModularArithmeticTask
from carousel.tasks.multiplication import MultiplicationTask
from carousel.tasks.pytokens import PyTokensTask
from carousel.tasks.reber import ReberTask
from carousel.tasks.temporal_order import TemporalOrderTask
from carousel.tasks.two_sequence import TwoSequenceTask

TASKS: dict[str, type[Task]] = {}
"""Registered tasks by name, the ``TASK`` of ``carousel train TASK``."""


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: register a :class:`Task` subclass under its ``name``."""
    if not cls.name or cls.name in TASKS:
        raise ValueError(f"a task needs a new, non-empty name; got {cls.name!r}")
    TASKS[cls.name] = cls
    return cls


for _task in (
    AddingTask,
    AdditionTextTask,
    CalculatorTask,
    CharLMTask,
    DelayedXorTask,
    DigitsTask,
    ForecastTask,
    LongLagTask,
    ModularArithmeticTask,
    MultiplicationTask,
    PyTokensTask,
    ReberTask,
    TemporalOrderTask,
    TwoSequenceTask,
):
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
    "AdditionTextTask",
    "Batch",
    "CalculatorTask",
    "CharLMTask",
    "DelayedXorTask",
    "DigitsTask",
    "ForecastTask",
    "LongLagTask",
    "ModelIO",
    "ModularArithmeticTask",
    "MultiplicationTask",
    "PyTokensTask",
    "ReberTask",
    "Task",
    "TemporalOrderTask",
    "TwoSequenceTask",
    "build_task",
    "generator",
    "register_task",
]
