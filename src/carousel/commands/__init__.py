"""Subcommands of the ``carousel`` command line, one module each (see :mod:`carousel.cli`)."""

import argparse
import sys
from pathlib import Path

DEVICES = ("cpu", "cuda", "cuda:N", "auto")
"""What ``--device`` takes (``cuda``: the process's GPU; ``auto``: a GPU if there is one)."""


def positive_int(text: str) -> int:
    """An ``argparse`` type: a positive integer, or a usage error naming the value."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text}")
    return value


def summary(docstring: str) -> str:
    """The first paragraph of a command module's docstring without its ``carousel NAME``
    head, as the command's description: ``"``carousel demo``: the 1997 LSTM ..."`` ->
    ``"the 1997 LSTM ..."``."""
    return docstring.split("\n\n")[0].split(": ", 1)[1]


def add_command(subparsers, run, help: str, description: str | None = None, **options):
    """Register the command whose ``run(args)`` is ``run``, named after ``run``'s module (as
    :mod:`carousel.cli` finds it): ``options`` go to ``add_parser``; the description is the
    :func:`summary` of the module's docstring unless given."""
    module = sys.modules[run.__module__]
    if description is None:
        description = summary(module.__doc__)
    name = run.__module__.rsplit(".", 1)[1]
    parser = subparsers.add_parser(name, help=help, description=description, **options)
    parser.set_defaults(func=run)
    return parser


def add_out_argument(parser, default: Path | None, help: str, **options) -> None:
    """``--out``: the directory the command writes into, a ``Path``."""
    parser.add_argument("--out", type=Path, default=default, help=help, **options)


def add_seed_argument(parser, what: str, default: int | None = 0) -> None:
    """``--seed``: the integer seed of ``what``."""
    parser.add_argument("--seed", type=int, default=default, help=f"seed of {what}")


def add_run_arguments(parser, what: str = "the run directory") -> None:
    """The arguments that name a checkpoint of a run: its directory ``DIR`` (``what`` it must
    be) and ``--checkpoint``."""
    parser.add_argument("run_dir", metavar="DIR", help=what)
    parser.add_argument(
        "--checkpoint",
        default="latest",
        metavar="WHICH",
        help="latest (default), best, or the path of a checkpoint's .json",
    )


def add_device_argument(parser, default: str) -> None:
    """``--device``: one of :data:`DEVICES`, ``default`` unless given."""
    names = [f"{name} (default)" if name == default else name for name in DEVICES]
    parser.add_argument("--device", default=default, help=f"{', '.join(names[:-1])} or {names[-1]}")
