"""``carousel bench``: time the backends against ``torch.nn`` and the reference loop, in one process.

The benchmark itself is :mod:`carousel.benchmarks.layers`; this module parses the command line
and writes the report.

For every cell and shape ``(B, T, I, H)`` of the grid it builds the layer once per backend (same
weights), then repeats, interleaved, a forward pass under ``torch.no_grad()`` and a forward plus
backward pass (a fixed random upstream gradient for the output) on every backend and thread count
in turn (``--threads``, default one thread and :func:`carousel.get_num_threads`; torch.nn and the
kernels always at the same count), and reports medians. Interleaving spreads whatever else the
machine is doing over all backends alike; medians ignore the outliers. The reference loop is
timed after the others, not interleaved, at the first thread count. Achieved GFLOP/s count the
GEMM work of forward and backward, :math:`2 T B G (3 I + 3 R)` for ``G`` packed rows and ``R``
recurrent inputs, and are compared with the fp32 GEMM throughput of this machine measured in the
same run at the same thread count (``torch.mm``, 2048^3). The load average of the machine before
and after the run is part of the report: ratios from a busy machine say less than from an idle
one.

``--compile`` adds first-call (compile) times per family and dtype with an empty Numba cache and
start-up times with a warm one, each measured in a fresh process. ``--options`` times instead
the layer options (layer norm, the regularisers, resets) against the plain layer on the numba
backend, and the layer-norm cell against the reference loop (:mod:`carousel.benchmarks.options`).
``--layers 2,3`` times instead unidirectional stacks of that many layers at small batch: the numba
wavefront over the layers against its sequential path and torch.nn, at one thread and at the last
of ``--threads`` (:mod:`carousel.benchmarks.stacks`). ``--output FILE`` writes the
report into ``FILE`` between the markers ``<!-- bench:start -->`` and ``<!-- bench:end -->``
(``--block`` names another pair; appended if missing), so the prose around it stays.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from carousel.benchmarks.harness import machine, write_block
from carousel.benchmarks.layers import (
    CELL_OPTIONS,
    CELLS,
    GRID,
    benchmark,
    compile_times,
    line,
    table_header,
)
from carousel.commands import add_command


def add_parser(subparsers) -> None:
    """Register ``carousel bench``."""
    parser = add_command(
        subparsers,
        run,
        "time the numba kernels against torch.nn and the reference loop",
        description="Time forward and forward+backward of every backend against torch.nn and "
        "the reference loop, in one process, over a grid of shapes; print the table or write it "
        "into a markdown file.",
    )
    parser.add_argument(
        "--cells", default=",".join(CELLS), help="comma-separated variants (default: %(default)s)"
    )
    parser.add_argument(
        "--grid",
        default=",".join("x".join(map(str, shape)) for shape in GRID),
        help="comma-separated BxTxIxH shapes (default: the six of docs/performance.md)",
    )
    parser.add_argument(
        "--cell-options",
        default="",
        help="comma-separated KEY=VALUE cell options, given to the cells that take them "
        "(e.g. num_heads=4 for slstm)",
    )
    parser.add_argument(
        "--dtype", choices=("float32", "float64", "bfloat16", "float16"), default="float32"
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cpu: the numba kernels; cuda: the triton backend against cuDNN, the reference loop "
        "and FlashRNN (carousel.benchmarks.cuda; every variant it runs, its own grid by default)",
    )
    parser.add_argument(
        "--threads",
        help="comma-separated thread counts, compared first against last (default: 1 and "
        "carousel.get_num_threads())",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=1.5,
        help="time budget per backend and measurement; repetitions adapt to it (3 to 25)",
    )
    parser.add_argument(
        "--no-reference", action="store_true", help="skip the (slow) reference backend"
    )
    parser.add_argument(
        "--compile", action="store_true", help="also measure compile and cached start-up times"
    )
    parser.add_argument(
        "--options",
        action="store_true",
        help="time layer_norm, the regularisers and resets against the plain layer (LSTM, GRU "
        "and sLSTM cells of --cells, default vanilla, gru and slstm) instead",
    )
    parser.add_argument(
        "--layers",
        help="comma-separated layer counts (e.g. 2,3): time unidirectional stacks at small "
        "batch instead, the numba wavefront over the layers against its sequential path and "
        "torch.nn (cells vanilla and gru and carousel.benchmarks.stacks.GRID unless given)",
    )
    parser.add_argument("--output", type=Path, help="write the report into this markdown file")
    parser.add_argument(
        "--block",
        default=None,
        help="name of the marked block it replaces (default: bench, with --options bench-options)",
    )


def _shapes(text: str) -> list[tuple[int, int, int, int]]:
    shapes = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"--grid entries must look like 16x100x32x64 (BxTxIxH); got {item!r}")
        shapes.append(tuple(int(p) for p in parts))
    return shapes


def _cells(text: str) -> list[str]:
    from carousel.cells import VARIANTS

    cells = [c.strip() for c in text.split(",") if c.strip()]
    known = [*VARIANTS, *CELL_OPTIONS]
    unknown = [c for c in cells if c not in known]
    if not cells or unknown:
        raise ValueError(f"--cells must name variants from {sorted(known)}; got {text!r}")
    return cells


def _thread_counts(text: str | None) -> tuple[int, ...]:
    from carousel import get_num_threads

    if text is None:
        default = get_num_threads()
        return (1, default) if default > 1 else (1,)
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--threads must be positive integers such as 1,2; got {text!r}")
    return tuple(int(p) for p in parts)


def _load() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` shows them."""
    try:
        return ", ".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def _cell_options(text: str) -> dict[str, object]:
    """``"num_heads=4,forget_activation=exp"`` -> ``{"num_heads": 4, "forget_activation": "exp"}``."""
    import ast

    options: dict[str, object] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"--cell-options entries must look like num_heads=4; got {item!r}")
        try:
            options[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            options[key.strip()] = value.strip()
    return options


def run(args: argparse.Namespace) -> None:
    """Run the benchmark and print (and optionally write) the report."""
    if args.options:
        if args.device == "cuda":
            raise ValueError("--options times the numba kernels on the CPU; got --device cuda")
        _run_options(args)
        return
    if args.layers is not None:
        if args.device == "cuda":
            raise ValueError("--layers times the numba kernels on the CPU; got --device cuda")
        _run_stacks(args)
        return
    if args.device == "cuda":
        from carousel.benchmarks.cuda import run_command

        return run_command(args)
    cells, shapes = _cells(args.cells), _shapes(args.grid)
    counts = _thread_counts(args.threads)
    cell_options = _cell_options(args.cell_options)
    dtype = getattr(torch, args.dtype)
    from carousel.kernels import threads

    threads.apply_policy()
    command = "carousel bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else ""
    lines = [f"Machine: {machine()}.", ""]
    if command:
        lines += [f"Command: `{command}` ({args.dtype}).", ""]
    before = _load()
    print("\n".join(lines))
    print(table_header(counts))
    rows, peaks = benchmark(
        cells, shapes, dtype, args.seconds, not args.no_reference, counts, cell_options=cell_options
    )
    peak_text = ", ".join(f"{peaks[n]:.0f} GFLOP/s at {n} thread{'s' * (n > 1)}" for n in counts)
    lines += [
        f"Load average (1, 5, 15 min) before the run: {before}; after: {_load()} "
        f"({os.cpu_count()} logical CPUs).",
        "",
        f"fp32 GEMM peak measured in this run (torch.mm, 2048^3): {peak_text}.",
        "",
        "Forward+backward medians; thread counts in parentheses.",
        "",
        table_header(counts),
        *(line(row, peaks, counts) for row in rows),
        "",
    ]
    if args.compile:
        measured = compile_times()
        lines += ["| first forward+backward | " + " | ".join(measured["cold"]) + " |"]
        lines += ["|---|" + "--:|" * len(measured["cold"])]
        for label, values in measured.items():
            cells_ = " | ".join(f"{v:.2f} s" for v in values.values())
            lines += [f"| {label} cache | {cells_} |"]
        lines += [""]
    if args.output is not None:
        write_block(args.output, args.block or "bench", "\n".join(lines))
        print(f"wrote {args.output}")


def _run_options(args: argparse.Namespace) -> None:
    """``--options``: the cost of each layer option on the numba backend."""
    from carousel.benchmarks import options
    from carousel.cells import make_spec
    from carousel.kernels import threads

    given = args.cells != ",".join(CELLS)
    cells = _cells(args.cells) if given else list(options.CELLS)
    refused = [c for c in cells if make_spec(c).family not in ("lstm", "gru", "slstm")]
    if refused:
        raise ValueError(f"--options times LSTM, GRU and sLSTM cells; got {refused}")
    threads.apply_policy()
    lines = [f"Machine: {machine()}.", ""]
    if sys.argv[1:2] == ["bench"]:
        lines += [f"Command: `carousel bench {' '.join(sys.argv[2:])}` ({args.dtype}).", ""]
    print("\n".join(lines))
    print(options.TABLE_HEADER)
    rows = options.benchmark(
        cells, _shapes(args.grid), getattr(torch, args.dtype), args.seconds, not args.no_reference
    )
    lines += [options.TABLE_HEADER, *(options.line(row) for row in rows), ""]
    if args.output is not None:
        write_block(args.output, args.block or "bench-options", "\n".join(lines))
        print(f"wrote {args.output}")


def _run_stacks(args: argparse.Namespace) -> None:
    """``--layers``: stacked layers at small batch, the wavefront against the sequential path."""
    from carousel.benchmarks import stacks
    from carousel.kernels import threads

    parts = [p.strip() for p in args.layers.split(",") if p.strip()]
    if not parts or not all(p.isdigit() and int(p) >= 2 for p in parts):
        raise ValueError(
            f"--layers must be layer counts of 2 or more such as 2,3; got {args.layers!r}"
        )
    cells = _cells(args.cells) if args.cells != ",".join(CELLS) else list(stacks.CELLS)
    default_grid = ",".join("x".join(map(str, shape)) for shape in GRID)
    shapes = _shapes(args.grid) if args.grid != default_grid else list(stacks.GRID)
    many = _thread_counts(args.threads)[-1]
    if many < 2:
        raise ValueError(f"--layers compares one thread with more; got --threads {args.threads!r}")
    threads.apply_policy()
    lines = [f"Machine: {machine()}.", ""]
    if sys.argv[1:2] == ["bench"]:
        lines += [f"Command: `carousel bench {' '.join(sys.argv[2:])}` ({args.dtype}).", ""]
    before = _load()
    print("\n".join(lines))
    print(stacks.table_header(many))
    rows = stacks.benchmark(
        cells, shapes, [int(p) for p in parts], getattr(torch, args.dtype), args.seconds, many
    )
    lines += [
        f"Load average (1, 5, 15 min) before the run: {before}; after: {_load()} "
        f"({os.cpu_count()} logical CPUs).",
        "",
        "Forward+backward medians (one column forward only); thread counts in parentheses.",
        "",
        stacks.table_header(many),
        *(stacks.line(row) for row in rows),
        "",
    ]
    if args.output is not None:
        write_block(args.output, args.block or "bench-layers", "\n".join(lines))
        print(f"wrote {args.output}")
