"""``carousel info``: versions, threads, backends and the registered cells."""

from __future__ import annotations

import argparse

import torch

from carousel import __version__
from carousel.cells import VARIANTS, make_spec
from carousel.commands import add_command
from carousel.kernels import BACKENDS


def add_parser(subparsers) -> None:
    """Register ``carousel info``."""
    add_command(
        subparsers,
        run,
        "show versions, backends and cell variants",
        description="Print the versions of carousel and torch, the thread count, the kernel "
        "backends and the registered cell variants with their sources.",
    )


def run(args: argparse.Namespace) -> None:
    """Print what this installation offers."""
    print(
        f"carousel {__version__}, torch {torch.__version__}, {torch.get_num_threads()} torch threads"
    )
    print("backends:")
    for backend in BACKENDS.values():
        print(f"  {backend.name:13s} {backend.description}")
    print("cells (variant=):")
    for name in VARIANTS:
        spec = make_spec(name)
        print(f"  {name:9s} {spec.family:6s} {spec.reference}")
