"""Run an experiment's trials and set the results beside the paper's.

:func:`reproduce` runs ``trials`` trials of every selected row (:mod:`.suite`) under one
configuration, in parallel processes, and writes to the output directory (the tables and the plot
come from :mod:`.report`):

- ``trials.csv``: one line per trial (row, trial, seed, budget, solved, sequences, milestones,
  test metrics, weights, seconds), appended as each trial finishes, so an interrupted run keeps
  its finished trials and ``resume=True`` (``carousel reproduce --resume``) runs only the rest;
- ``results.csv`` and ``results.md``: one line per row, the paper's numbers beside ours;
- ``results.png``: sequences to success per trial against the paper's mean (log scale).

Configurations (:data:`CONFIGS`): ``faithful`` (the 1997 network and online learning rule,
:func:`~carousel.experiments.trial.run_faithful`), ``modern`` (forget-gate LSTM, Adam,
minibatches, clipping, chrono initialisation over the row's longest sequence), ``elman`` and ``gru`` (those cells trained like
``modern``), ``slstm`` (the sLSTM of Beck et al. 2024, 4 heads, trained and initialised like
``modern``: chrono over the paper's initialisation), all through carousel's training loop
(:func:`~carousel.experiments.trial.run_trainer`).

Trial ``k`` under seed ``s`` uses seed ``1000 s + k`` for its data and its weights, so a trial
is reproduced by its number alone, whatever else runs.
"""

from __future__ import annotations

import functools
import multiprocessing
import time
from collections.abc import Sequence
from pathlib import Path

from carousel.experiments.report import (
    TrialWriter,
    read_trials,
    summarise,
    write_results,
)
from carousel.experiments.suite import Experiment, experiment
from carousel.experiments.trial import run_faithful, run_trainer
from carousel.tasks import build_task
from carousel.train.run_dir import RunLock

CONFIGS = ("faithful", "modern", "elman", "gru", "slstm")
"""The configurations ``carousel reproduce --config`` takes."""

MODERN = {
    "modern": {"variant": "vanilla"},  # and chrono initialisation: see modern_init
    "elman": {"variant": "elman"},
    "gru": {"variant": "gru"},
    "slstm": {"variant": "slstm", "num_heads": 4},  # chrono initialisation too, as modern
}
"""The layer of each trained configuration (fields of :class:`~carousel.train.ModelConfig`)."""
MODERN_OPTIM = {"optimizer": "adam", "clip_norm": 1.0}
"""The optimiser of the trained configurations (learning rate and schedule: the row's
:class:`~carousel.experiments.suite.Trained`)."""
QUICK_TRIALS = 2


def modern_init(row: Experiment) -> str:
    r"""The ``modern`` configuration's initialiser for ``row``: chrono initialisation (Tallec &
    Ollivier 2018; forget-gate biases :math:`\log U[1, T_{max} - 1]`, input-gate biases their
    negatives) with :math:`T_{max}` the longest sequence of the row's test set, so the cells'
    forgetting times cover every lag the task can have (unless the row's
    :class:`~carousel.experiments.suite.Trained` names another initialiser)."""
    task = build_task(row.task, row.options, seed=0)
    longest = max(batch.mask.shape[1] for batch in task.eval_batches())
    return f"chrono({max(longest, 3)})"


def trained_budget(row: Experiment) -> int:
    """The most training sequences of a trained configuration's trial on ``row``: the row's
    :class:`~carousel.experiments.suite.Trained` budget, else the paper's mean (plus the
    success window where the paper does not count it, experiment 2), else the row's budget."""
    if row.trained.budget or row.paper is None:
        return row.trained.budget or row.budget
    task = build_task(row.task, row.options, seed=0)
    uncounted = task.window if getattr(task, "count_before_window", False) else 0
    return int(row.paper.sequences) + uncounted


def trial_seed(seed: int, trial: int) -> int:
    """The seed of trial ``trial`` (data and weights) under the run's ``seed``."""
    return 1000 * seed + trial


def run_trial(
    name: str, config: str, trial: int, seed: int, budget: int | None = None, progress=None
) -> dict:
    """One trial of row ``name`` under ``config``; a JSON-ready dict (see ``trials.csv``) whose
    ``budget`` is the one asked for (``None``: the row's own). ``progress``, if given, is called
    with the number of training sequences seen so far, every chunk or step."""
    row = experiment(name)
    trial_s = trial_seed(seed, trial)
    if config == "faithful":
        task = build_task(row.task, row.options, seed=trial_s)
        result = run_faithful(
            task, row.faithful, seed=trial_s, budget=budget or row.budget,
            eval_every=row.eval_every, chunk=row.chunk, progress=progress,
        )  # fmt: skip
    else:
        trained = row.trained
        limit = budget or trained_budget(row)
        model = {**MODERN[config], "hidden_size": trained.hidden}
        if config in ("modern", "slstm"):
            model["init"] = trained.init or modern_init(row)
        result = run_trainer(
            row.task, {**row.options, **trained.task_options}, model=model,
            optim={**MODERN_OPTIM, "lr": trained.lr, "schedule": trained.schedule},
            batch_size=trained.batch, seed=trial_s, budget=limit,
            eval_every=trained.eval_every or row.eval_every or limit // 5, progress=progress,
        )  # fmt: skip
    return {
        "row": name, "config": config, "trial": trial, "seed": trial_s, "budget": budget,
        **result.to_dict(),
    }  # fmt: skip


REPORT_SECONDS = 1.0
"""How often a worker process reports the sequences its trial has seen."""
_reports = None  # a worker's queue to the parent process


def _start_worker(reports) -> None:
    global _reports
    _reports = reports


def _run_job(job: tuple) -> dict:
    from carousel import set_num_threads

    set_num_threads(1)
    last = [0.0, 0]  # time and count of the last report

    def report(seen: int, final: bool = False) -> None:
        last[1] = seen
        if _reports is not None and (final or time.monotonic() - last[0] >= REPORT_SECONDS):
            _reports.put((_key(job), seen))
            last[0] = time.monotonic()

    result = run_trial(*job, progress=report)
    report(last[1], final=True)
    return result


def reproduce(
    rows: Sequence[Experiment],
    config: str,
    *,
    trials: int,
    seed: int,
    out_dir: str | Path,
    processes: int = 1,
    budget: int | None = None,
    quiet: bool = False,
    resume: bool = False,
) -> list[dict]:
    """Run ``trials`` trials of each of ``rows`` under ``config`` and write the tables.

    Args:
        rows: the rows (:func:`carousel.experiments.suite.select`).
        config: one of :data:`CONFIGS`.
        trials: trials per row.
        seed: the run's seed (see :func:`trial_seed`).
        out_dir: where the tables go (created; existing result files are refused unless
            ``resume``), locked for this call: a second process gets a ``CheckpointError``
            naming the holder's pid.
        processes: trials run at once (each with one thread).
        budget: the most training sequences per trial instead of each row's own.
        quiet: no progress bar.
        resume: keep the trials already in ``out_dir/trials.csv`` (they must be trials of this
            run: the same rows, configuration, seeds and budget), run the missing ones and
            write the tables anew.

    Returns:
        One summary dict per row (the lines of ``results.csv``).
    """
    if config not in CONFIGS:
        raise ValueError(f"config must be one of {CONFIGS}; got {config!r}")
    if trials < 1 or processes < 1:
        raise ValueError(f"trials and processes must be >= 1; got {trials}, {processes}")
    out_dir = Path(out_dir)
    trials_path = out_dir / "trials.csv"
    with RunLock(out_dir):  # one process per out_dir (an OS lock, gone with the process)
        jobs = [(row.name, config, k, seed, budget) for row in rows for k in range(trials)]
        done: list[dict] = []
        if resume and trials_path.exists():
            done = read_trials(trials_path)
            wanted = {_key(job): job for job in jobs}
            strangers = [t for t in done if _result_key(t) not in wanted]
            if strangers:
                t = strangers[0]
                raise ValueError(
                    f"{str(trials_path)!r} holds trials of another run (e.g. row {t['row']}, config "
                    f"{t['config']}, trial {t['trial']}, seed {t['seed']}, budget {t['budget']}); "
                    "resume with that run's settings or choose another out_dir"
                )
        else:
            existing = [name for name in ("trials.csv", "results.md") if (out_dir / name).exists()]
            if existing:
                raise ValueError(
                    f"out_dir {str(out_dir)!r} already holds {', '.join(existing)}; choose another "
                    "or resume it (--resume)"
                )
        finished = {_result_key(t) for t in done}
        todo = [job for job in jobs if _key(job) not in finished]
        with TrialWriter(trials_path, append=bool(done)) as writer:
            results = done + _run_jobs(todo, processes, quiet, writer.write)
        order = {_key(job): index for index, job in enumerate(jobs)}
        results.sort(key=lambda r: order[_result_key(r)])
        summaries = [
            summarise(row, config, [r for r in results if r["row"] == row.name]) for row in rows
        ]
        write_results(out_dir, summaries, replace=resume)
        return summaries


def _key(job: tuple) -> tuple:
    name, config, trial, seed, budget = job
    return name, config, trial_seed(seed, trial), budget


def _result_key(result: dict) -> tuple:
    return result["row"], result["config"], result["seed"], result["budget"]


def _run_jobs(jobs: list[tuple], processes: int, quiet: bool, record) -> list[dict]:
    """Run ``jobs``, calling ``record(result)`` as each one finishes; the results in any order."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), unit="trial", disable=quiet, dynamic_ncols=True)
    sequences = tqdm(desc="sequences seen", unit="seq", unit_scale=True, disable=quiet,
                     dynamic_ncols=True, position=1)  # fmt: skip
    seen: dict[tuple, int] = {}  # per trial

    def saw(key: tuple, count: int) -> None:
        seen[key] = count
        sequences.update(sum(seen.values()) - sequences.n)

    results = []

    def done(result: dict) -> None:
        results.append(result)
        record(result)
        bar.set_postfix_str(
            f"{result['row']} #{result['trial']}: "
            f"{'solved' if result['solved'] else 'not solved'} after {result['sequences']:,}"
        )
        bar.update()

    if processes == 1 or len(jobs) <= 1:
        from carousel import get_num_threads, set_num_threads

        threads = get_num_threads()
        set_num_threads(1)  # one thread, as in the pool
        try:
            for job in jobs:
                done(run_trial(*job, progress=functools.partial(saw, _key(job))))
        finally:
            set_num_threads(threads)
    else:
        context = multiprocessing.get_context("spawn")
        reports = context.Queue()
        workers = min(processes, len(jobs))
        with context.Pool(workers, initializer=_start_worker, initargs=(reports,)) as pool:
            pending = pool.imap_unordered(_run_job, jobs)
            while len(results) < len(jobs):
                try:
                    done(pending.next(timeout=REPORT_SECONDS))
                except multiprocessing.TimeoutError:
                    pass
                while not reports.empty():
                    saw(*reports.get())
    sequences.close()
    bar.close()
    return results
