"""What a row of the 1997 paper's tables is, as carousel runs it: the paper's result
(:class:`PaperResult`), how the trained configurations train it (:class:`Trained`), and the row
itself (:class:`Experiment`); the rows are in :mod:`carousel.experiments.suite`."""

from __future__ import annotations

from dataclasses import dataclass, field

from carousel.experiments.faithful import Faithful


@dataclass(frozen=True)
class PaperResult:
    """What the paper reports for a row.

    Attributes:
        trials: trials it ran.
        success: percentage of successful trials (``None``: not reported).
        sequences: mean training sequences until the stopping rule held.
        weights: the network's weight count.
        test: the paper's test-set figure, as text (e.g. ``"1 wrong of 2560"``).
        milestones: mean sequences to intermediate milestones (experiment 3's ST1).
    """

    trials: int
    success: float | None
    sequences: float
    weights: int
    test: str = ""
    milestones: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Trained:
    """How the trained configurations (``modern``, ``elman``, ``gru``) train one row.

    The defaults are the same for every row; a row that sets others says so in
    ``docs/reproduction.md`` (they were chosen by a sweep on ``--seed 0``'s trials and are
    reported on ``--seed 1``'s, which the sweep did not see).

    Attributes:
        budget: the most training sequences per trial (0: the paper's mean for the row, see
            :func:`~carousel.experiments.reproduce.trained_budget`).
        batch: sequences per minibatch.
        lr: Adam's peak learning rate.
        hidden: cells (units) of the one recurrent layer.
        schedule: the learning rate over the budget: ``"constant"``, or ``"cosine"`` decay to 0
            at the end of the budget (:class:`~carousel.train.OptimConfig`).
        eval_every: score the task's test set every this many sequences (0: the row's
            ``eval_every``, else a fifth of the budget).
        init: the ``modern`` layer's initialiser (:class:`~carousel.train.ModelConfig`'s
            ``init``; empty: chrono initialisation over the row's longest test sequence).
        task_options: task options that differ from the faithful row's (e.g. a linear output
            unit for a regression target).
    """

    budget: int = 0
    batch: int = 16
    lr: float = 0.01
    hidden: int = 32
    schedule: str = "constant"
    eval_every: int = 0
    init: str = ""
    task_options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    """One row of the paper's tables, runnable.

    Attributes:
        name: the row's name, e.g. ``"4-T100"``.
        group: the paper's experiment, e.g. ``"4"``.
        title: one line saying what the row is.
        task, options: the carousel task and its options.
        faithful: the paper's network and learning rule.
        paper: the paper's result (``None``: a row beyond the paper).
        budget: the most training sequences per trial.
        eval_every: score the task's check set every this many sequences (rules that use it).
        chunk: sequences per compiled call (and granularity of evaluations).
        trained: how ``modern``, ``elman`` and ``gru`` train this row (:class:`Trained`).
        target: the row is one the reproduction must match (within 2x of the paper's mean).
        note: choices made where the paper is ambiguous.
    """

    name: str
    group: str
    title: str
    task: str
    options: dict
    faithful: Faithful
    paper: PaperResult | None
    budget: int
    eval_every: int = 0
    chunk: int = 100
    trained: Trained = field(default_factory=Trained)
    target: bool = False
    note: str = ""
