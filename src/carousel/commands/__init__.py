"""Subcommands of the ``carousel`` command line, one module each (see :mod:`carousel.cli`)."""

import argparse


def positive_int(text: str) -> int:
    """An ``argparse`` type: a positive integer, or a usage error naming the value."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text}")
    return value
