"""Reporting the trials of :mod:`carousel.experiments.reproduce`: one row's summary beside the
paper's numbers, the trials file (appended as trials finish, read back to resume), the markdown
and CSV tables and the plot of sequences to success against the paper's mean."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

from carousel.experiments.suite import Experiment, PaperResult


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
