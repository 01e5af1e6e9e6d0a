"""The ``carousel`` command line (also ``python -m carousel``).

Each subcommand lives in its own module under :mod:`carousel.commands` and exposes
``add_parser(subparsers)``, which registers its arguments and sets ``func`` to the function that
runs it (:func:`carousel.commands.add_command`). Errors the user can fix (:class:`UsageError`, ``ValueError``, ``TypeError``) are printed
as one line and exit with status 2, without a traceback; so are mistakes in the command line
itself, with a suggestion for a misspelt command, choice or option (usage: ``--help`` only).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys

COMMANDS = ["info", "demo", "reproduce", "train", "eval", "sample", "gradflow", "inspect"]
COMMANDS += ["app", "calculator", "bench"]
"""Subcommand modules in :mod:`carousel.commands`, in the order ``--help`` lists them."""


class UsageError(Exception):
    """A mistake in the command line or its inputs; printed without a traceback."""


def did_you_mean(word: str, candidates) -> str:
    """``" (did you mean 'X'?)"`` for the candidate closest to ``word``, or ``""`` if none is
    close."""
    close = difflib.get_close_matches(word, [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, ``PROG: error: MESSAGE``, with a
    suggestion for a misspelt choice or option; the usage is printed by ``--help`` only."""

    def error(self, message: str):
        """Print the one-line error and exit with status 2."""
        if "did you mean" not in message:
            message += f" (see '{self.prog} --help')"
        self.exit(2, f"{self.prog}: error: {message}\n")

    def _check_value(self, action, value):
        # argparse's check of ``choices``, with the closest choice suggested instead of the list
        if action.choices is not None and value not in action.choices:
            raise argparse.ArgumentError(
                action, f"invalid choice: {value!r}{did_you_mean(value, action.choices)}"
            )

    def unrecognized(self, extras: list[str]):
        """Exit with the error for the arguments in ``extras`` that this parser does not know,
        suggesting the closest option for a misspelt one."""
        options = [option for action in self._actions for option in action.option_strings]
        hint = ""
        for extra in extras:
            if extra.startswith("-"):
                hint = did_you_mean(extra.split("=", 1)[0], options)
                if hint:
                    break
        self.error(f"unrecognized arguments: {' '.join(extras)}{hint}")


def build_parser() -> argparse.ArgumentParser:
    """The parser with every subcommand registered."""
    from carousel import __version__

    parser = Parser(
        prog="carousel",
        description="The LSTM family of Hochreiter & Schmidhuber (1997), on PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"carousel {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"carousel.commands.{name}").add_parser(subparsers)
    parser.commands = subparsers.choices  # name -> the subcommand's parser
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand; returns the exit status."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        parser.commands[args.command].unrecognized(extras)
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
