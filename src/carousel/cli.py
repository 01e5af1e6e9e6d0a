"""The ``carousel`` command line (also ``python -m carousel``).

Each subcommand lives in its own module under :mod:`carousel.commands` and exposes
``add_parser(subparsers)``, which registers its arguments and sets ``func`` to the function that
runs it. Errors the user can fix (:class:`UsageError`, ``ValueError``, ``TypeError``) are printed
as one line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ["info", "demo", "reproduce", "train", "eval", "sample", "gradflow", "inspect"]
COMMANDS += ["app", "calculator", "bench"]
"""Subcommand modules in :mod:`carousel.commands`, in the order ``--help`` lists them."""


class UsageError(Exception):
    """A mistake in the command line or its inputs; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    """The parser with every subcommand registered."""
    from carousel import __version__

    parser = argparse.ArgumentParser(
        prog="carousel",
        description="The LSTM family of Hochreiter & Schmidhuber (1997), on PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"carousel {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"carousel.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except (UsageError, ValueError, TypeError) as error:
        print(f"carousel {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"carousel {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0 if status is None else int(status)


if __name__ == "__main__":
    sys.exit(main())
