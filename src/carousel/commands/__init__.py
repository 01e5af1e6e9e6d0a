"""Subcommands of the ``carousel`` command line, one module each (see :mod:`carousel.cli`)."""

import argparse

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
