"""``carousel reproduce EXPERIMENT``: the 1997 paper's experiments, beside the paper's tables.

``EXPERIMENT`` is ``all``, an experiment of the paper (``1``, ``2a``, ``2b``, ``2c``, ``3a``,
``3b``, ``3c``, ``4``, ``5``, ``6a``, ``6b``; or ``reber``, ``adding``, ...), ``beyond`` (the
adding problem at T = 2000, 5000 and 10,000, which the paper did not run; 3 trials unless
``--trials``), or one row (``carousel reproduce --list`` lists them). The trials run in parallel
processes; the table is printed and written, with a CSV per trial and a plot, to ``--out``
(see :mod:`carousel.experiments.reproduce`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from carousel.commands import (
    add_command,
    add_out_argument,
    add_seed_argument,
    positive_int,
)
from carousel.experiments.report import markdown_table
from carousel.experiments.reproduce import CONFIGS, QUICK_TRIALS, reproduce
from carousel.experiments.suite import EXPERIMENTS, QUICK, select


def add_parser(subparsers) -> None:
    """Register ``carousel reproduce``."""
    parser = add_command(
        subparsers, run, "the 1997 paper's experiments, side by side with its tables"
    )
    parser.add_argument("experiment", nargs="?", help="all, an experiment (e.g. 4), or a row")
    parser.add_argument("--config", choices=CONFIGS, default="faithful", help="what to train")
    parser.add_argument("--trials", type=positive_int, default=None, help="trials per row")
    add_seed_argument(parser, "the trials' data and weights")
    add_out_argument(parser, None, "output directory (runs/reproduce/EXPERIMENT-CONFIG)")
    parser.add_argument(
        "--processes", type=positive_int, default=None, help="trials at once (default: the cores)"
    )
    parser.add_argument(
        "--budget", type=positive_int, default=None, help="most training sequences per trial"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: {QUICK_TRIALS} trials per row; with 'all', only the rows "
        + ", ".join(QUICK),
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the finished trials in --out's trials.csv and run only the missing ones",
    )
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> None:
    """Run the trials and print the table."""
    if args.list:
        for row in EXPERIMENTS.values():
            paper = row.paper
            source = (
                f"paper: {paper.sequences:,.0f} sequences, {paper.trials} trials"
                if paper
                else "not part of all"
            )
            print(f"{row.name:<16} {row.title} ({source})")
        return
    if not args.experiment:
        raise ValueError("name an EXPERIMENT (all, a group such as 4, or a row; see --list)")
    rows = select(args.experiment)
    if args.quick and args.experiment == "all":
        rows = [EXPERIMENTS[name] for name in QUICK]
    trials = args.trials or (
        QUICK_TRIALS if args.quick else max(row.paper.trials if row.paper else 3 for row in rows)
    )
    out = args.out or Path("runs/reproduce") / f"{args.experiment}-{args.config}"
    processes = args.processes or max(1, min(len(os.sched_getaffinity(0)), trials * len(rows)))
    summaries = reproduce(
        rows, args.config, trials=trials, seed=args.seed, out_dir=out, processes=processes,
        budget=args.budget, quiet=args.quiet, resume=args.resume,
    )  # fmt: skip
    print(markdown_table(summaries), end="")
    print(f"wrote {out}/results.md, results.csv, trials.csv and results.png")
