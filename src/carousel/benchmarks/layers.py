"""The layer benchmark behind ``carousel bench``: every backend against ``torch.nn`` and the
reference loop, in one process, at one thread and at the default number of threads.

For every cell and shape ``(B, T, I, H)`` of the grid it builds the layer once per backend (same
weights), then repeats, interleaved, a forward pass under ``torch.no_grad()`` and a forward plus
backward pass (a fixed random upstream gradient for the output) on every backend and thread count
in turn, and reports medians (:func:`carousel.benchmarks.harness.measure`). The thread count is
set with :func:`carousel.set_num_threads`, so ``torch.nn`` and the kernels always run on the
same number of threads. The reference loop is timed at the first thread count only.

Achieved GFLOP/s count the GEMM work of forward and backward, :math:`2 T B G (3 I + 3 R)` for
``G`` packed rows and ``R`` recurrent inputs, and are compared with the fp32 GEMM throughput of
this machine measured in the same run at the same thread count (``torch.mm``, 2048^3). The GEMM
floor (:mod:`carousel.benchmarks.floor`) is the time of the same products alone on one thread,
measured after each shape's interleaved runs: ``torch.nn``'s one-thread time over it bounds the
one-thread speed-up that any kernel doing these products with this BLAS could reach.
:func:`compile_times` measures first-call (compile) times per family and dtype with an empty
Numba cache and start-up times with a warm one, each in a fresh process.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from carousel.benchmarks.floor import gemm_floor
from carousel.benchmarks.harness import Runner, gemm_peak, measure, ms, ratio

GRID = ((1, 1000, 2, 8), (1, 100, 8, 32), (16, 100, 32, 64), (32, 100, 32, 128))
GRID += ((64, 100, 128, 256), (32, 200, 256, 512))
CELLS = ("vanilla", "1997", "1997-b2", "peephole", "cifg", "gru", "elman")
CELL_OPTIONS = {"1997-b2": ("1997", {"block_size": 2})}
"""Cells of the grid that are a variant with options: label -> (variant, options)."""
TORCH_CLASSES = {"vanilla": torch.nn.LSTM, "gru": torch.nn.GRU, "elman": torch.nn.RNN}


def options_for(cell: str, options: dict[str, object]) -> dict[str, object]:
    """The entries of ``options`` that the variant ``cell`` takes."""
    from carousel.cells import VARIANTS

    return {k: v for k, v in options.items() if k in VARIANTS[cell].options}


def cell_spec(cell: str, options: dict[str, object] | None = None):
    """The spec a cell label of the grid names (a variant, or an entry of :data:`CELL_OPTIONS`),
    with the entries of ``options`` that its variant takes (:func:`options_for`)."""
    from carousel.cells import make_spec

    variant, fixed = CELL_OPTIONS.get(cell, (cell, {}))
    return make_spec(variant, **{**options_for(variant, options or {}), **fixed})


def runners(
    cell, shape, dtype, reference: bool, thread_counts=(None,), options=None
) -> list[Runner]:
    """One :class:`Runner` per backend (numba, torch.nn where it has the cell, auto) and thread
    count, plus the reference loop at the first count, with the same weights, input and upstream
    gradient. Runner names are ``backend@threads``; ``options`` as :func:`cell_spec` takes them."""
    import carousel

    batch, steps, inputs, hidden = shape
    torch.manual_seed(0)
    spec = cell_spec(cell, options)
    ours = carousel.nn.Recurrent(inputs, hidden, variant=spec, backend="numba", dtype=dtype)
    layers = {"numba": ours}
    if cell in TORCH_CLASSES:
        theirs = TORCH_CLASSES[cell](inputs, hidden, dtype=dtype)
        ours.load_state_dict(theirs.state_dict())
        layers["torch.nn"] = theirs
    layers["auto"] = carousel.nn.Recurrent(inputs, hidden, variant=spec, dtype=dtype)
    layers["auto"].load_state_dict(ours.state_dict())
    x = torch.randn(steps, batch, inputs, dtype=dtype, requires_grad=True)
    upstream = torch.randn(steps, batch, spec.output_size(hidden), dtype=dtype)
    timed = [
        Runner(f"{name}@{n}", layer, x, upstream, n)
        for n in thread_counts
        for name, layer in layers.items()
    ]
    if reference:
        slow = carousel.nn.Recurrent(inputs, hidden, variant=spec, backend="reference", dtype=dtype)
        slow.load_state_dict(ours.state_dict())
        timed.append(Runner(f"reference@{thread_counts[0]}", slow, x, upstream, thread_counts[0]))
    return timed


def gemm_flops(spec, shape) -> float:
    """GEMM work of one forward + backward: 2 T B G (3 I + 3 R)."""
    batch, steps, inputs, hidden = shape
    rows, recurrent = spec.num_gate_rows(hidden), spec.recurrent_size(hidden)
    return 2.0 * steps * batch * rows * (3 * inputs + 3 * recurrent)


def _auto_choice(spec, shape, dtype, num_threads) -> str:
    import carousel
    from carousel import kernels

    if num_threads is not None:
        carousel.set_num_threads(num_threads)
    batch, steps, inputs, hidden = shape
    work = kernels.Workload(
        spec=spec,
        device=torch.device("cpu"),
        dtype=dtype,
        steps=steps,
        batch=batch,
        input_size=inputs,
        hidden_size=hidden,
        proj_size=0,
        num_layers=1,
        num_directions=1,
        has_lengths=False,
    )
    return kernels.select("auto", work).name


def benchmark(
    cells, shapes, dtype, seconds, reference, thread_counts=(None,), log=print, cell_options=None
) -> tuple[list[dict], dict]:
    """Time every cell and shape at every thread count; ``cell_options`` (a dict) go to the cells
    that take them (:func:`options_for`).

    Returns one row per (cell, shape) and the GEMM peak in GFLOP/s per thread count. A row holds,
    per thread count ``n``, the medians ``row[n]["numba"]`` (forward+backward),
    ``row[n]["numba_forward"]``, the same for ``"torch"`` (``None`` without a torch.nn cell) and
    ``"auto"``, the backend ``auto`` picks, and ``"vs_vanilla"``; ``row["reference"]`` is the
    reference loop's forward+backward at the first count, ``row["floor"]`` the GEMM floor on one
    thread (:func:`~carousel.benchmarks.floor.gemm_floor`).
    """
    thread_counts = tuple(thread_counts)
    peaks = {n: gemm_peak(dtype, num_threads=n) for n in thread_counts}
    rows, vanilla = [], {}
    for shape in shapes:
        for cell in cells:
            timed = runners(cell, shape, dtype, reference, thread_counts, cell_options)
            measure(timed, seconds)
            backward = {r.name: statistics.median(r.backward_times) for r in timed}
            forward = {r.name: statistics.median(r.forward_times) for r in timed}
            spec = cell_spec(cell, cell_options)
            row = {
                "cell": cell,
                "shape": shape,
                "flops": gemm_flops(spec, shape),
                "floor": gemm_floor(spec, shape, dtype, seconds),
                "reference": backward.get(f"reference@{thread_counts[0]}"),
                "repeats": len(timed[0].backward_times),
            }
            for n in thread_counts:
                times = {k: backward.get(f"{k}@{n}") for k in ("numba", "torch.nn", "auto")}
                if cell == "vanilla":
                    vanilla[shape, n] = times["numba"]
                best = min(t for k, t in times.items() if t is not None and k != "auto")
                row[n] = {
                    "numba": times["numba"],
                    "numba_forward": forward[f"numba@{n}"],
                    "torch": times["torch.nn"],
                    "torch_forward": forward.get(f"torch.nn@{n}"),
                    "auto": times["auto"],
                    "auto_choice": _auto_choice(spec, shape, dtype, n),
                    "auto_over_best": times["auto"] / best,
                    "vs_vanilla": times["numba"] / vanilla[shape, n]
                    if (shape, n) in vanilla
                    else None,
                }
            rows.append(row)
            log(line(row, peaks, thread_counts))
    return rows, peaks


def _over(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b is not None else None


def table_header(thread_counts) -> str:
    """The header of :func:`line`'s table for these thread counts (first and last are compared)."""
    one, many = thread_counts[0], thread_counts[-1]
    columns = ["cell", "BxTxIxH"]
    for n in (one, many) if one != many else (one,):
        columns += [f"numba ms ({n})", f"torch.nn ms ({n})", f"speed-up ({n})"]
    if one != many:
        columns += [f"numba {one}->{many}", f"torch.nn {one}->{many}"]
    columns += [
        f"time / vanilla ({many})",
        f"speed-up fwd ({many})",
        f"GFLOP/s ({many})",
        f"of GEMM peak ({many})",
        f"GEMMs alone ms ({one})",
        f"numba over GEMMs ({one})",
        f"torch.nn over GEMMs ({one})",
        f"vs reference ({one})",
        f"auto picks ({many}, time / best)",
    ]
    align = ["---", "---"] + ["--:"] * (len(columns) - 3) + ["---"]
    return "| " + " | ".join(columns) + " |\n|" + "|".join(align) + "|"


def line(row: dict, peaks: dict, thread_counts) -> str:
    """One row of the markdown table (see :func:`table_header`)."""
    b, t, i, h = row["shape"]
    one, many = thread_counts[0], thread_counts[-1]
    cells = [row["cell"], f"{b}x{t}x{i}x{h}"]
    for n in (one, many) if one != many else (one,):
        cells += [
            ms(row[n]["numba"]),
            ms(row[n]["torch"]),
            ratio(_over(row[n]["torch"], row[n]["numba"])),
        ]
    if one != many:
        cells += [
            ratio(_over(row[one]["numba"], row[many]["numba"])),
            ratio(_over(row[one]["torch"], row[many]["torch"])),
        ]
    last = row[many]
    gflops = row["flops"] / last["numba"] / 1e9
    cells += [
        ratio(last["vs_vanilla"]),
        ratio(_over(last["torch_forward"], last["numba_forward"])),
        f"{gflops:.1f}",
        f"{100 * gflops / peaks[many]:.0f}%",
        ms(row["floor"]),
        ratio(_over(row[one]["numba"], row["floor"])),
        ratio(_over(row[one]["torch"], row["floor"])),
        ratio(_over(row["reference"], row[one]["numba"])),
        f"{last['auto_choice']} ({last['auto_over_best']:.2f})",
    ]
    return "| " + " | ".join(cells) + " |"


_FIRST_CALL = """
import json, sys, time
import torch, carousel
results = {}
for variant in ("vanilla", "gru", "elman"):
    for dtype in (torch.float32, torch.float64):
        layer = carousel.nn.Recurrent(3, 8, variant=variant, backend="numba", dtype=dtype)
        x = torch.randn(5, 2, 3, dtype=dtype, requires_grad=True)
        start = time.perf_counter()
        layer(x)[0].sum().backward()
        results[f"{variant} {str(dtype)[6:]}"] = time.perf_counter() - start
print(json.dumps(results))
"""


def compile_times(log=print) -> dict[str, dict[str, float]]:
    """First forward+backward per family and dtype: with an empty cache, then with a warm one."""
    source = str(Path(__file__).resolve().parents[2])
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": source}
        measured = {}
        for label in ("cold", "warm"):
            result = subprocess.run(
                [sys.executable, "-c", _FIRST_CALL], env=env, capture_output=True, text=True
            )
            if result.returncode != 0:
                raise RuntimeError(f"compile-time measurement failed:\n{result.stderr}")
            measured[label] = json.loads(result.stdout)
            log(
                f"{label} cache: " + ", ".join(f"{k} {v:.2f} s" for k, v in measured[label].items())
            )
    return measured
