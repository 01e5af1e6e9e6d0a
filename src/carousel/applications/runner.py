"""Running an application: train the LSTM, score it and its baselines on the held-out test set,
write the table.

An application is a module of :mod:`carousel.applications` that defines:

- ``NAME`` (the command-line name) and ``TITLE`` (one line);
- ``METRICS``: the :class:`Metric` s of its table, in order;
- ``config(quick: bool) -> Config``: the LSTM's training run (``quick``: a smoke run of seconds
  on a small slice of the data, for tests and ``--quick``);
- ``report(task, model, out_dir: Path, quiet: bool) -> Report``: the trained model's and the
  baselines' test metrics, plus whatever the application shows (samples, a plot), written
  under ``out_dir``.

:func:`run_application` trains into ``OUT/run`` with :func:`carousel.train.train` (progress
bar, checkpoints, the vocabulary saved with the run), loads the checkpoint with the best
validation loss, calls ``report`` and writes ``OUT/results.md``, ``results.csv`` and
``results.json``. The test set (``task.test_batches()``) is never seen by training or by model
selection; baselines are fitted on the training split only.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch

from carousel.tasks import Task, build_task
from carousel.train import Config, train
from carousel.train.checkpoint import load_trained_model, read_json
from carousel.train.distributed import Context
from carousel.train.loop import evaluate


@dataclass(frozen=True)
class Metric:
    """A column of an application's table.

    Attributes:
        name: the key in each row's metrics.
        label: the column heading.
        higher_is_better: the direction in which a model beats another.
        digits: decimals shown.
    """

    name: str
    label: str
    higher_is_better: bool
    digits: int = 4


@dataclass
class Report:
    """What an application measured.

    Attributes:
        rows: model name -> metric name -> value, the trained LSTM(s) first (``NaN`` or
            absent: not applicable).
        ours: how many of the first rows are carousel's models; each is compared with every
            later row (the baselines).
        notes: markdown lines shown under the table (sample outputs, settings of baselines).
        files: files written under the output directory, relative to it.
    """

    rows: dict[str, dict[str, float]]
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    ours: int = 1


def test_metrics(model: torch.nn.Module, task: Task) -> dict[str, float]:
    """The task's metrics for ``model`` on its held-out test set, ``task.test_batches()``."""
    device = next(model.parameters()).device
    return evaluate(model, task, Context(device=device), task.test_batches())


def run_settings(out_dir: Path, task: Task, default: Config) -> Config:
    """The configuration of the runner's run in ``out_dir/run`` (with its ``--steps``, ``--seed``
    and task options), or if there is none (``report`` called on its own) ``default`` with the
    options and the seed of ``task``."""
    path = Path(out_dir) / "run" / "config.json"
    if path.exists():
        return Config.from_dict(read_json(path, "run configuration"), str(path))
    default.train.seed = task.seed
    default.task_options = dataclasses.asdict(task.options)
    return default


def train_another(
    settings: Config, task: Task, run_dir: Path, quiet: bool
) -> tuple[torch.nn.Module, dict, float]:
    """Train a further model of an application (e.g. on the other reading order or series)
    with ``settings`` on ``task`` into ``run_dir``: ``(its best-validation model, the training
    summary with ``best_step``, the seconds it took)``."""
    started = time.perf_counter()
    summary = train(settings, run_dir, quiet=quiet, task=task)
    seconds = time.perf_counter() - started
    _, model, info = load_trained_model(run_dir, "best")
    return model, {**summary, "best_step": info["step"]}, seconds


def comparisons(
    metrics: list[Metric], rows: dict[str, dict[str, float]], ours: int = 1
) -> list[str]:
    """One line per model of ours (the first ``ours`` rows), baseline (the later rows) and
    metric: does the model beat the baseline?"""
    names, lines = list(rows), []
    for model in names[:ours]:
        for metric in metrics:
            mine = rows[model].get(metric.name, math.nan)
            for other in names[ours:]:
                theirs = rows[other].get(metric.name, math.nan)
                if math.isnan(mine) or math.isnan(theirs):
                    continue
                better = mine > theirs if metric.higher_is_better else mine < theirs
                verb = "beats" if better else "does not beat"
                lines.append(
                    f"{model} {verb} {other} on {metric.label}: {mine:.{metric.digits}f} vs "
                    f"{theirs:.{metric.digits}f}"
                )
    return lines


def markdown(title: str, metrics: list[Metric], report: Report) -> str:
    """The table (one row per model), the comparisons and the notes, as markdown."""
    lines = [f"## {title}", "", "| model | " + " | ".join(m.label for m in metrics) + " |"]
    lines.append("|---|" + "---:|" * len(metrics))
    for model, values in report.rows.items():
        cells = []
        for metric in metrics:
            value = values.get(metric.name, math.nan)
            cells.append("-" if math.isnan(value) else f"{value:.{metric.digits}f}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += ["", *(f"- {line}" for line in comparisons(metrics, report.rows, report.ours))]
    if report.notes:
        lines += ["", *report.notes]
    return "\n".join(lines) + "\n"


def run_application(
    application: ModuleType,
    out_dir: str | Path,
    *,
    quick: bool = False,
    seed: int | None = None,
    steps: int | None = None,
    task_options: dict | None = None,
    model_options: dict | None = None,
    quiet: bool = False,
) -> Report:
    """Train ``application``'s LSTM into ``out_dir/run``, score it and the baselines on the test
    set, write ``results.md``, ``results.csv``, ``results.json`` to ``out_dir``; return the
    :class:`Report`.

    Args:
        application: a module of :mod:`carousel.applications`.
        out_dir: a new or empty directory.
        quick: the application's smoke configuration.
        seed: overrides the configuration's seed.
        steps: overrides the configuration's number of optimiser steps.
        task_options: override options of the application's task (e.g. ``{"text": path}``
            for ``charlm``).
        model_options: set fields of the model configuration (:class:`~carousel.train.ModelConfig`,
            e.g. ``{"weight_drop": 0.25}``); ``ValueError`` for a field it does not have.
        quiet: no progress bar, nothing printed.

    Raises:
        ValueError: ``out_dir`` exists and is not empty, or bad settings.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"out_dir {str(out_dir)!r} exists and is not an empty directory")
    config: Config = application.config(quick)
    if seed is not None:
        config.train.seed = seed
    if steps is not None:
        config.train.steps = steps
        config.optim.warmup_steps = min(config.optim.warmup_steps, steps - 1)
    for name, value in (model_options or {}).items():
        if not hasattr(config.model, name):
            raise ValueError(f"model_options: the model configuration has no field {name!r}")
        setattr(config.model, name, value)
    if task_options:
        config = Config(
            task=config.task,
            task_options={**config.task_options, **task_options},
            model=config.model,
            optim=config.optim,
            train=config.train,
        )
    config.check()
    started = time.perf_counter()
    task = build_task(config.task, config.task_options, config.train.seed)
    summary = train(config, out_dir / "run", quiet=quiet, task=task)
    trained = time.perf_counter() - started
    _, model, info = load_trained_model(out_dir / "run", "best")
    report = application.report(task, model, out_dir, quiet)
    seconds = time.perf_counter() - started
    report.notes += [
        "",
        f"Trained {summary['step']:,} steps ({summary['sequences']:,} sequences) in "
        f"{trained:.0f} s; the checkpoint of step {info['step']:,} had the best validation loss. "
        f"Total time with baselines and evaluation: {seconds:.0f} s.",
    ]
    text = markdown(application.TITLE, application.METRICS, report)
    (out_dir / "results.md").write_text(text, encoding="utf-8")
    with open(out_dir / "results.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", *(metric.name for metric in application.METRICS)])
        for model_name, values in report.rows.items():
            writer.writerow(
                [model_name, *(values.get(metric.name, math.nan) for metric in application.METRICS)]
            )
    record = {
        "application": application.NAME,
        "config": config.to_dict(),
        "rows": report.rows,
        "train": {k: v for k, v in summary.items() if k != "evaluation"},
        "best_step": info["step"],
        "seconds": seconds,
        "files": report.files,
    }
    (out_dir / "results.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if not quiet:
        print(text, end="")
        written = ", ".join(["results.md", "results.csv", "results.json", *report.files])
        print(f"wrote {out_dir}/{{{written}}} and the run in {out_dir}/run")
    return report
