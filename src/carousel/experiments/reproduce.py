"""Run an experiment's trials and set the results beside the paper's.

:func:`reproduce` runs ``trials`` trials of every selected row (:mod:`.suite`) under one
configuration, in parallel processes, and writes to the output directory:

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

import csv
import functools
import json
import math
import multiprocessing
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from carousel.experiments.suite import Experiment, PaperResult, experiment
from carousel.experiments.trial import run_faithful, run_trainer
from carousel.tasks import build_task

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
            ``resume``).
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
    out_dir.mkdir(parents=True, exist_ok=True)
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


def summarise(row: Experiment, config: str, results: list[dict]) -> dict:
    """One row's line of ``results.csv``: ours beside the paper's."""
    solved = [r["sequences"] for r in results if r["solved"]]
    mean = statistics.mean(solved) if solved else math.nan
    wrong = [r["test"].get("wrong", math.nan) for r in results]
    loss = [r["test"].get("loss", math.nan) for r in results]
    summary = {
        "row": row.name,
        "title": row.title,
        "config": config,
        "trials": len(results),
        "success_pct": 100.0 * len(solved) / len(results) if results else math.nan,
        "sequences_mean": mean,
        "sequences_min": min(solved) if solved else math.nan,
        "sequences_max": max(solved) if solved else math.nan,
        "test_wrong_mean": statistics.mean(wrong) if wrong else math.nan,
        "test_size": results[0]["test_size"] if results else 0,
        "test_loss_mean": statistics.mean(loss) if loss else math.nan,
        "weights": results[0]["weights"] if results else 0,
        "seconds_total": sum(r["seconds"] for r in results),
        **paper_columns(row.paper, mean if solved else math.nan),
        "target": row.target,
    }
    for name, value in (row.paper.milestones if row.paper else {}).items():
        ours = [r["milestones"][name] for r in results if name in r["milestones"]]
        summary[f"{name}_mean"] = statistics.mean(ours) if ours else math.nan
        summary[f"paper_{name}_mean"] = value
    return summary


def paper_columns(paper: PaperResult | None, mean: float) -> dict:
    """The paper's columns of a row's summary, and ours / paper (empty beyond the paper)."""
    if paper is None:
        return dict.fromkeys(
            ("paper_trials", "paper_success_pct", "paper_sequences_mean", "paper_weights",
             "paper_test", "ratio_to_paper"),
        )  # fmt: skip
    return {
        "paper_trials": paper.trials,
        "paper_success_pct": paper.success,
        "paper_sequences_mean": paper.sequences,
        "paper_weights": paper.weights,
        "paper_test": paper.test,
        "ratio_to_paper": mean / paper.sequences,
    }


TRIAL_FIELDS = ["row", "config", "trial", "seed", "budget", "solved", "sequences", "milestones",
                "test", "test_size", "weights", "seconds"]  # fmt: skip
"""The columns of ``trials.csv``; ``milestones`` and ``test`` are JSON objects, ``budget`` is
empty where the row's own budget applied."""


class TrialWriter:
    """Appends trials to ``trials.csv`` as they finish, flushed line by line.

    A new file is created exclusively (a run started meanwhile in the same directory is not
    overwritten); ``append=True`` continues an existing one.
    """

    def __init__(self, path: Path, append: bool = False) -> None:
        self.path, self.append = Path(path), append

    def __enter__(self) -> TrialWriter:
        try:
            self.file = open(self.path, "a" if self.append else "x", newline="")
        except FileExistsError:
            raise ValueError(
                f"{str(self.path)!r} appeared while starting; choose another out_dir"
            ) from None
        self.writer = csv.DictWriter(self.file, fieldnames=TRIAL_FIELDS)
        if not self.append:
            self.writer.writeheader()
            self.file.flush()
        return self

    def write(self, result: dict) -> None:
        """One trial's line."""
        line = {name: result[name] for name in TRIAL_FIELDS}
        line["milestones"] = json.dumps(result["milestones"])
        line["test"] = json.dumps(result["test"])
        line["budget"] = "" if result["budget"] is None else result["budget"]
        self.writer.writerow(line)
        self.file.flush()

    def __exit__(self, *exc) -> None:
        self.file.close()


def read_trials(path: Path) -> list[dict]:
    """The trials of a ``trials.csv`` as :func:`run_trial` returned them."""
    try:
        with open(path, newline="") as file:
            reader = csv.DictReader(file)
            if reader.fieldnames != TRIAL_FIELDS:
                raise ValueError(f"columns {reader.fieldnames}, expected {TRIAL_FIELDS}")
            return [
                {
                    **line,
                    "trial": int(line["trial"]),
                    "seed": int(line["seed"]),
                    "budget": int(line["budget"]) if line["budget"] else None,
                    "solved": {"True": True, "False": False}[line["solved"]],
                    "sequences": int(line["sequences"]),
                    "milestones": json.loads(line["milestones"]),
                    "test": json.loads(line["test"]),
                    "test_size": int(line["test_size"]),
                    "weights": int(line["weights"]),
                    "seconds": float(line["seconds"]),
                }
                for line in reader
            ]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"cannot resume from {str(path)!r}: it is not a trials file ({error})"
        ) from None


def _number(value, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def markdown_table(summaries: list[dict]) -> str:
    """The results as a markdown table, the paper's numbers beside ours."""
    lines = [
        "| row | config | trials | solved % (paper) | sequences to success: mean [min, max] "
        "| paper mean | ours / paper | test (ours: mean wrong, MSE) | test (paper) "
        "| weights (paper) | time |",
        "|---|---|--:|--:|--:|--:|--:|--:|---|--:|--:|",
    ]
    for s in summaries:
        milestones = "".join(
            f"; {key[:-5]} {_number(s[key])} (paper {_number(s['paper_' + key])})"
            for key in s
            if key.endswith("_mean") and not key.startswith(("paper", "sequences", "test"))
        )
        lines.append(
            f"| {s['row']} | {s['config']} | {s['trials']} "
            f"| {_number(s['success_pct'])} ({_number(s['paper_success_pct'])}) "
            f"| {_number(s['sequences_mean'])} [{_number(s['sequences_min'])}, "
            f"{_number(s['sequences_max'])}]{milestones} "
            f"| {_number(s['paper_sequences_mean'])} | {_number(s['ratio_to_paper'], 2)} "
            f"| {_number(s['test_wrong_mean'], 1)} of {s['test_size']}, "
            f"{s['test_loss_mean']:.2g} | {s['paper_test'] or '-'} "
            f"| {s['weights']} ({s['paper_weights'] or '-'}) | {s['seconds_total']:.0f} s |"
        )
    return "\n".join(lines) + "\n"


def write_results(out_dir: Path, summaries: list[dict], replace: bool = False) -> None:
    """``results.csv``, ``results.md`` and (with matplotlib) ``results.png``; created
    exclusively unless ``replace`` (a resumed run writes its tables anew)."""
    fields = list(dict.fromkeys(key for s in summaries for key in s))
    mode = "w" if replace else "x"
    try:
        with open(out_dir / "results.csv", mode, newline="") as file:
            writer = csv.DictWriter(file, fieldnames=fields)
            writer.writeheader()
            writer.writerows(summaries)
        with open(out_dir / "results.md", mode) as file:
            file.write(markdown_table(summaries))
    except FileExistsError as error:
        raise ValueError(
            f"out_dir {str(out_dir)!r}: {error.filename} appeared while running"
        ) from None
    try:
        plot_results(out_dir / "trials.csv", out_dir / "results.png", summaries)
    except ImportError:
        pass


def plot_results(trials_csv: Path, path: Path, summaries: list[dict]) -> Path:
    """Sequences to success of each trial (dots; crosses: not solved within the budget) beside
    the paper's mean (a grey line), one column per row, log scale; the legend names only what
    is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    with open(trials_csv) as file:
        trials = list(csv.DictReader(file))
    figure, axes = plt.subplots(figsize=(max(5.5, 0.9 * len(summaries) + 2), 3.6))
    labelled = set()

    def label(text: str) -> str | None:  # each kind of mark once in the legend
        if text in labelled:
            return None
        labelled.add(text)
        return text

    for index, summary in enumerate(summaries):
        if summary["paper_sequences_mean"]:
            axes.hlines(summary["paper_sequences_mean"], index - 0.3, index + 0.3, color="0.6",
                        linewidth=4, label=label("paper (mean)"))  # fmt: skip
        mine = [t for t in trials if t["row"] == summary["row"]]
        for solved, marker, name in (
            ("True", "o", "ours: solved"),
            ("False", "x", "ours: not solved"),
        ):
            values = [int(t["sequences"]) for t in mine if t["solved"] == solved]
            if values:
                axes.scatter([index] * len(values), values, marker=marker, zorder=3,
                             color="C0" if solved == "True" else "C3", label=label(name))  # fmt: skip
    axes.set_xlim(-0.6, len(summaries) - 0.4)
    axes.set_yscale("log")
    axes.set_xticks(range(len(summaries)), [s["row"] for s in summaries], rotation=30, ha="right")
    axes.set_ylabel("training sequences")
    axes.set_title(f"{summaries[0]['config']}: sequences to success")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
