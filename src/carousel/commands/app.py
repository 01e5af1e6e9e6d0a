"""``carousel app NAME``: an LSTM on real data against its baseline (see
:mod:`carousel.applications`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from carousel.cells.options import CELL_OPTIONS, REGULARIZER_OPTIONS
from carousel.commands import add_command, add_out_argument, add_seed_argument, positive_int


def add_parser(subparsers) -> None:
    """Register ``carousel app``."""
    from carousel.applications import APPLICATIONS

    parser = add_command(
        subparsers,
        run,
        "LSTMs on real data (language model, tagger, classifier, forecaster, seq2seq) vs baselines",
        description="Train an LSTM on real data that ships with Python, score it and its baselines "
        "on a held-out test set, and write the table, plots and the saved run.",
    )
    parser.add_argument("name", choices=[*APPLICATIONS, "all"], help="the application, or all")
    add_out_argument(parser, None, "output directory (default: runs/app/NAME)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of seconds on a slice")
    add_seed_argument(parser, "the data order and weights", None)
    parser.add_argument("--steps", type=positive_int, default=None, help="optimiser steps")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="FILE",
        help="charlm: a UTF-8 text file to model instead of Python's documentation",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no table")
    regularizers = parser.add_argument_group(
        "regularisers of the recurrent layers (docs/regularizers.md; default: none)"
    )
    regularizers.add_argument(
        "--layer-norm", action="store_true", default=None, help=CELL_OPTIONS["layer_norm"].help
    )
    for name, cell_option in REGULARIZER_OPTIONS.items():
        kind = cell_option.type[0] if isinstance(cell_option.type, tuple) else cell_option.type
        regularizers.add_argument(
            "--" + name.replace("_", "-"), type=kind, default=None, help=cell_option.help
        )


def run(args: argparse.Namespace) -> None:
    """Run one application, or all of them one after the other."""
    from carousel.applications import APPLICATIONS, get
    from carousel.applications.runner import run_application
    from carousel.cli import UsageError

    if args.data is not None and args.name != "charlm":
        raise UsageError(f"--data applies to the charlm application only; got {args.name}")
    task_options = {"text": str(args.data)} if args.data is not None else None
    model_options = {
        name: getattr(args, name)
        for name in ("layer_norm", *REGULARIZER_OPTIONS)
        if getattr(args, name) is not None
    }
    names = APPLICATIONS if args.name == "all" else (args.name,)
    base = args.out or Path("runs/app")
    for name in names:
        out = base / name if args.name == "all" or args.out is None else base
        run_application(
            get(name), out, quick=args.quick, seed=args.seed, steps=args.steps,
            task_options=task_options, model_options=model_options, quiet=args.quiet,
        )  # fmt: skip
