"""The layer benchmark behind ``carousel bench``: every backend against ``torch.nn`` and the
reference loop, in one process.

For every cell and shape ``(B, T, I, H)`` of the grid it builds the layer once per backend (same
weights), then repeats, interleaved, a forward pass under ``torch.no_grad()`` and a forward plus
backward pass (a fixed random upstream gradient for the output) on every backend in turn, and
reports medians (:func:`carousel.benchmarks.harness.measure`). Achieved GFLOP/s count the GEMM
work of forward and backward, :math:`2 T B G (3 I + 3 R)` for ``G`` packed rows and ``R``
recurrent inputs, and are compared with the fp32 GEMM throughput of this machine measured in the
same run (``torch.mm``, 2048^3). :func:`compile_times` measures first-call (compile) times per
family and dtype with an empty Numba cache and start-up times with a warm one, each in a fresh
process.
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

from carousel.benchmarks.harness import Runner, gemm_peak, measure, ms, ratio

GRID = ((1, 1000, 2, 8), (1, 100, 8, 32), (16, 100, 32, 64), (32, 100, 32, 128))
GRID += ((64, 100, 128, 256), (32, 200, 256, 512))
CELLS = ("vanilla", "1997", "peephole", "cifg", "gru", "elman")
TORCH_CLASSES = {"vanilla": torch.nn.LSTM, "gru": torch.nn.GRU, "elman": torch.nn.RNN}


def runners(cell, shape, dtype, reference: bool, options=None) -> list[Runner]:
    """One :class:`Runner` per backend (numba, torch.nn where it has the cell, auto, reference),
    with the same weights, input and upstream gradient."""
    import carousel

    batch, steps, inputs, hidden = shape
    options = options or {}
    torch.manual_seed(0)
    ours = carousel.nn.Recurrent(
        inputs, hidden, variant=cell, backend="numba", dtype=dtype, **options
    )
    layers = {"numba": ours}
    if cell in TORCH_CLASSES:
        theirs = TORCH_CLASSES[cell](inputs, hidden, dtype=dtype)
        ours.load_state_dict(theirs.state_dict())
        layers["torch.nn"] = theirs
    layers["auto"] = carousel.nn.Recurrent(inputs, hidden, variant=cell, dtype=dtype, **options)
    if reference:
        layers["reference"] = carousel.nn.Recurrent(
            inputs, hidden, variant=cell, backend="reference", dtype=dtype, **options
        )
    for name in ("auto", "reference"):
        if name in layers:
            layers[name].load_state_dict(ours.state_dict())
    x = torch.randn(steps, batch, inputs, dtype=dtype, requires_grad=True)
    upstream = torch.randn(steps, batch, ours.spec.output_size(hidden), dtype=dtype)
    return [Runner(name, layer, x, upstream) for name, layer in layers.items()]


def gemm_flops(spec, shape) -> float:
    """GEMM work of one forward + backward: 2 T B G (3 I + 3 R)."""
    batch, steps, inputs, hidden = shape
    rows, recurrent = spec.num_gate_rows(hidden), spec.recurrent_size(hidden)
    return 2.0 * steps * batch * rows * (3 * inputs + 3 * recurrent)


def options_for(cell: str, options: dict[str, object]) -> dict[str, object]:
    """The entries of ``options`` that the variant ``cell`` takes."""
    from carousel.cells import VARIANTS

    return {k: v for k, v in options.items() if k in VARIANTS[cell].options}


def benchmark(
    cells, shapes, dtype, seconds, reference, log=print, cell_options=None
) -> tuple[list[dict], float]:
    """Time every cell and shape; returns one row per pair and the GEMM peak in GFLOP/s.

    ``cell_options`` (a dict) go to the cells that take them (:func:`options_for`)."""
    from carousel import kernels
    from carousel.cells import make_spec

    peak = gemm_peak(dtype)
    rows, vanilla = [], {}
    for shape in shapes:
        for cell in cells:
            options = options_for(cell, cell_options or {})
            timed = runners(cell, shape, dtype, reference, options)
            measure(timed, seconds)
            median = {r.name: statistics.median(r.backward_times) for r in timed}
            forward = {r.name: statistics.median(r.forward_times) for r in timed}
            spec = make_spec(cell, **options)
            chosen = kernels.select(
                "auto",
                kernels.Workload(
                    spec=spec,
                    device=torch.device("cpu"),
                    dtype=dtype,
                    steps=shape[1],
                    batch=shape[0],
                    input_size=shape[2],
                    hidden_size=shape[3],
                    proj_size=0,
                    num_layers=1,
                    num_directions=1,
                    has_lengths=False,
                ),
            ).name
            best = min(v for k, v in median.items() if k != "auto")
            if cell == "vanilla":
                vanilla[shape] = median["numba"]
            row = {
                "cell": cell,
                "shape": shape,
                "numba_forward": forward["numba"],
                "numba": median["numba"],
                "torch_forward": forward.get("torch.nn"),
                "torch": median.get("torch.nn"),
                "reference": median.get("reference"),
                "auto": median["auto"],
                "auto_choice": chosen,
                "auto_over_best": median["auto"] / best,
                "vs_vanilla": median["numba"] / vanilla[shape] if shape in vanilla else None,
                "gflops": gemm_flops(spec, shape) / median["numba"] / 1e9,
                "repeats": len(timed[0].backward_times),
            }
            rows.append(row)
            log(line(row, peak))
    return rows, peak


def line(row: dict, peak: float) -> str:
    """One row of the markdown table."""
    b, t, i, h = row["shape"]
    torch_ratio = row["torch"] / row["numba"] if row["torch"] else None
    reference_ratio = row["reference"] / row["numba"] if row["reference"] else None
    torch_forward = (
        row["torch_forward"] / row["numba_forward"] if row["torch_forward"] is not None else None
    )
    cells = [
        row["cell"],
        f"{b}x{t}x{i}x{h}",
        ms(row["numba_forward"]),
        ms(row["numba"]),
        ms(row["torch"]),
        ratio(torch_ratio),
        ratio(torch_forward),
        ms(row["reference"]),
        ratio(reference_ratio),
        ratio(row["vs_vanilla"]),
        f"{row['gflops']:.1f}",
        f"{100 * row['gflops'] / peak:.0f}%",
        f"{row['auto_choice']} ({row['auto_over_best']:.2f})",
    ]
    return "| " + " | ".join(cells) + " |"


TABLE_HEADER = (
    "| cell | BxTxIxH | numba fwd ms | numba fwd+bwd ms | torch.nn fwd+bwd ms | speed-up fwd+bwd "
    "| speed-up fwd | reference fwd+bwd ms | vs reference | time / vanilla | GFLOP/s | of GEMM peak "
    "| auto picks (time / best) |\n"
    "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"
)


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
