"""``carousel bench``: time the backends against ``torch.nn`` and the reference loop, in one process.

For every cell and shape ``(B, T, I, H)`` of the grid it builds the layer once per backend (same
weights), then repeats, interleaved, a forward pass under ``torch.no_grad()`` and a forward plus
backward pass (a fixed random upstream gradient for the output) on every backend in turn, and
reports medians. Interleaving spreads whatever else the machine is doing over all backends alike;
medians ignore the outliers. The reference loop is timed after the others, not interleaved (see
:func:`_measure`). Achieved GFLOP/s count the GEMM work of forward and backward,
:math:`2 T B G (3 I + 3 R)` for ``G`` packed rows and ``R`` recurrent inputs, and are compared with
the fp32 GEMM throughput of this machine measured in the same run (``torch.mm``, 2048^3).

``--compile`` adds first-call (compile) times per family and dtype with an empty Numba cache and
start-up times with a warm one, each measured in a fresh process. ``--output FILE`` writes the
report into ``FILE`` between the markers ``<!-- bench:start -->`` and ``<!-- bench:end -->``
(``--block`` names another pair; appended if missing), so the prose around it stays.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

GRID = ((1, 1000, 2, 8), (1, 100, 8, 32), (16, 100, 32, 64), (32, 100, 32, 128))
GRID += ((64, 100, 128, 256), (32, 200, 256, 512))
CELLS = ("vanilla", "1997", "peephole", "cifg", "gru", "elman")
TORCH_CLASSES = {"vanilla": torch.nn.LSTM, "gru": torch.nn.GRU, "elman": torch.nn.RNN}


def add_parser(subparsers) -> None:
    """Register ``carousel bench``."""
    parser = subparsers.add_parser(
        "bench", help="time the numba kernels against torch.nn and the reference loop"
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
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
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
    parser.add_argument("--output", type=Path, help="write the report into this markdown file")
    parser.add_argument(
        "--block", default="bench", help="name of the marked block it replaces (default: bench)"
    )
    parser.set_defaults(func=run)


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
    unknown = [c for c in cells if c not in VARIANTS]
    if not cells or unknown:
        raise ValueError(f"--cells must name variants from {sorted(VARIANTS)}; got {text!r}")
    return cells


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


def options_for(cell: str, options: dict[str, object]) -> dict[str, object]:
    """The entries of ``options`` that the variant ``cell`` takes."""
    from carousel.cells import VARIANTS

    factory = VARIANTS[cell]
    accepted = factory.__code__.co_varnames[: factory.__code__.co_kwonlyargcount]
    return {k: v for k, v in options.items() if k in accepted}


# ---- timing ------------------------------------------------------------------------------------


@dataclass
class Runner:
    """One backend's layer and its two timed calls."""

    name: str
    layer: torch.nn.Module
    x: torch.Tensor
    upstream: torch.Tensor
    forward_times: list[float] = field(default_factory=list)
    backward_times: list[float] = field(default_factory=list)

    def forward(self) -> float:
        start = time.perf_counter()
        with torch.no_grad():
            self.layer(self.x)
        return time.perf_counter() - start

    def forward_backward(self) -> float:
        self.layer.zero_grad(set_to_none=True)
        self.x.grad = None
        start = time.perf_counter()
        output, _ = self.layer(self.x)
        output.backward(self.upstream)
        return time.perf_counter() - start


@contextmanager
def _no_collector():
    """Collect garbage once, then not while timing (as ``timeit`` does): otherwise a collection
    caused by one backend's many small tensors lands in another backend's time."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _runners(cell, shape, dtype, reference: bool, options=None) -> list[Runner]:
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


def _measure(runners: list[Runner], seconds: float) -> None:
    """Time the fast backends interleaved, then the reference loop on its own.

    The reference loop churns through thousands of small tensors per call; timed right after it,
    the next backend's call was measured up to five times slower than alone, so it is kept out of
    the interleaving.
    """
    fast = [r for r in runners if r.name != "reference"]
    for group in (fast, [r for r in runners if r.name == "reference"]):
        slowest = 0.0
        for runner in group:
            runner.forward(), runner.forward_backward()  # first calls load or compile the kernels
            slowest = max(slowest, runner.forward() + runner.forward_backward())
        repeats = int(min(25, max(3, seconds / max(slowest, 1e-6))))
        with _no_collector():
            for _ in range(repeats):
                for runner in group:
                    runner.forward_times.append(runner.forward())
                    runner.backward_times.append(runner.forward_backward())


def _gemm_flops(spec, shape) -> float:
    """GEMM work of one forward + backward: 2 T B G (3 I + 3 R)."""
    batch, steps, inputs, hidden = shape
    rows, recurrent = spec.num_gate_rows(hidden), spec.recurrent_size(hidden)
    return 2.0 * steps * batch * rows * (3 * inputs + 3 * recurrent)


def gemm_peak(dtype=torch.float32, size: int = 2048) -> float:
    """This machine's GEMM throughput in GFLOP/s: median of ``torch.mm`` on ``size``^3."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    out = torch.empty(size, size, dtype=dtype)
    times = []
    for _ in range(7):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times[2:]) / 1e9


# ---- report ------------------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1e3:.3g}"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


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
            runners = _runners(cell, shape, dtype, reference, options)
            _measure(runners, seconds)
            median = {r.name: statistics.median(r.backward_times) for r in runners}
            forward = {r.name: statistics.median(r.forward_times) for r in runners}
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
                "gflops": _gemm_flops(spec, shape) / median["numba"] / 1e9,
                "repeats": len(runners[0].backward_times),
            }
            rows.append(row)
            log(_line(row, peak))
    return rows, peak


def _line(row: dict, peak: float) -> str:
    b, t, i, h = row["shape"]
    torch_ratio = row["torch"] / row["numba"] if row["torch"] else None
    reference_ratio = row["reference"] / row["numba"] if row["reference"] else None
    torch_forward = (
        row["torch_forward"] / row["numba_forward"] if row["torch_forward"] is not None else None
    )
    cells = [
        row["cell"],
        f"{b}x{t}x{i}x{h}",
        _ms(row["numba_forward"]),
        _ms(row["numba"]),
        _ms(row["torch"]),
        _ratio(torch_ratio),
        _ratio(torch_forward),
        _ms(row["reference"]),
        _ratio(reference_ratio),
        _ratio(row["vs_vanilla"]),
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


# ---- compile and start-up times ------------------------------------------------------------------

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


# ---- the command -------------------------------------------------------------------------------


def _machine() -> str:
    import numba
    import numpy

    from carousel import get_num_threads
    from carousel.kernels.numba_cpu.common import BLAS

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    variable = os.environ.get("CAROUSEL_NUM_THREADS")
    return (
        f"{model}, {os.cpu_count()} logical CPUs; Python {platform.python_version()}, "
        f"torch {torch.__version__}, numba {numba.__version__}, numpy {numpy.__version__}; "
        f"kernel BLAS: {BLAS}; threads: carousel {get_num_threads()}"
        + (f" (CAROUSEL_NUM_THREADS={variable})" if variable else "")
        + f", torch {torch.get_num_threads()}"
    )


def run(args: argparse.Namespace) -> None:
    """Run the benchmark and print (and optionally write) the report."""
    cells, shapes = _cells(args.cells), _shapes(args.grid)
    cell_options = _cell_options(args.cell_options)
    dtype = getattr(torch, args.dtype)
    from carousel.kernels import threads

    threads.apply_policy()
    command = "carousel bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else ""
    lines = [f"Machine: {_machine()}.", ""]
    if command:
        lines += [f"Command: `{command}` ({args.dtype}).", ""]
    print("\n".join(lines))
    print(TABLE_HEADER)
    rows, peak = benchmark(
        cells, shapes, dtype, args.seconds, not args.no_reference, cell_options=cell_options
    )
    lines += [
        f"fp32 GEMM peak measured in this run: {peak:.0f} GFLOP/s (torch.mm, 2048^3).",
        "",
        TABLE_HEADER,
        *(_line(row, peak) for row in rows),
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
        write_block(args.output, args.block, "\n".join(lines))
        print(f"wrote {args.output}")


def write_block(path: Path, name: str, report: str) -> None:
    """Put ``report`` between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``path``
    (appended, markers included, when they are missing)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else ""
    block = f"{start}\n{report}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text + ("\n" if text and not text.endswith("\n") else "") + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
