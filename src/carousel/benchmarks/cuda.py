r"""The GPU benchmark behind ``carousel bench --device cuda``: every cell on the triton backend
against ``torch.nn`` (cuDNN), cuDNN's vanilla LSTM, the reference loop and FlashRNN, in one process.

For every cell and shape ``(B, T, I, H)`` it builds the layer once per contender (same weights),
then repeats, interleaved, a forward pass under ``torch.no_grad()`` and a forward plus backward
pass (a fixed random upstream gradient for the output), each timed from a ``torch.cuda.synchronize``
to the next, and reports medians. The columns answer the GPU targets: every variant
within 1.5x of cuDNN's vanilla LSTM (``/ cuDNN LSTM``), at least 20x faster than the reference
loop (``vs reference``), and bfloat16 faster than float32 (run it once per ``--dtype``).

The triton backend runs twice where its level 2 (the persistent kernels,
:mod:`carousel.kernels.triton.persistent`) covers the call: the ``triton`` columns are level 1
(``CAROUSEL_TRITON_LEVEL=1`` around its calls), the ``level 2`` columns the persistent kernels on
the same layer, and ``level 1 / level 2`` their ratio (above 1: level 2 is faster); empty where
level 2 does not run the call (see ``persistent.unsupported``).

cuDNN runs in the layer's dtype; the triton backend and the reference loop compute a float16 or
bfloat16 layer in float32 (see :mod:`carousel.nn.precision`). FlashRNN (``pip install flashrnn``,
compiled on first use, compute capability >= 8.0) runs the stock LSTM, GRU and Elman cells where
it installs; its column stays empty otherwise, with the reason printed once.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from dataclasses import dataclass, field

import torch

GRID = ((64, 100, 256, 512), (16, 100, 32, 64))
"""The shapes: the issue's target shape first, then a small one where launch overheads dominate."""

TORCH_CLASSES = {"vanilla": torch.nn.LSTM, "gru": torch.nn.GRU, "elman": torch.nn.RNN}
FLASHRNN_FUNCTIONS = {"vanilla": ("lstm", 4), "gru": ("gru", 3), "elman": ("elman", 1)}


def _synchronized(function) -> float:
    """Wall time of ``function()`` including the GPU work it queued."""
    synchronize = torch.cuda.synchronize if torch.cuda.is_available() else lambda: None
    synchronize()
    start = time.perf_counter()
    function()
    synchronize()
    return time.perf_counter() - start


@dataclass
class Contender:
    """One implementation of a cell at one shape: its forward and forward+backward calls."""

    name: str
    forward: object  # () -> None, under no_grad
    forward_backward: object  # () -> None
    forward_times: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def measure_once(self) -> None:
        self.forward_times.append(_synchronized(self.forward))
        self.times.append(_synchronized(self.forward_backward))


@contextlib.contextmanager
def _triton_level(level: str | None):
    """Run the triton backend at ``level`` (``CAROUSEL_TRITON_LEVEL``) inside; ``None``: as set."""
    from carousel.kernels.triton.persistent import LEVEL_VARIABLE

    before = os.environ.get(LEVEL_VARIABLE)
    if level is not None:
        os.environ[LEVEL_VARIABLE] = level
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(LEVEL_VARIABLE, None)
        else:
            os.environ[LEVEL_VARIABLE] = before


def _layer_contender(name, layer, x, upstream, level=None) -> Contender:
    def forward():
        with torch.no_grad(), _triton_level(level):
            layer(x)

    def forward_backward():
        layer.zero_grad(set_to_none=True)
        x.grad = None
        with _triton_level(level):
            layer(x)[0].backward(upstream)

    return Contender(name, forward, forward_backward)


def _flashrnn_contender(cell, shape, dtype, device) -> Contender | str:
    """FlashRNN's fused CUDA kernel for a stock cell, or the reason it cannot run."""
    if cell not in FLASHRNN_FUNCTIONS:
        return "FlashRNN has no such cell"
    try:
        from flashrnn import flashrnn
    except Exception as error:  # not installed, or no CUDA toolkit to build it
        return f"flashrnn not available ({type(error).__name__}: {error})"
    function, gates = FLASHRNN_FUNCTIONS[cell]
    batch, steps, _, hidden = shape
    name = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
    if dtype not in name:
        return f"FlashRNN has no {dtype}"
    options = dict(device=device, dtype=dtype)
    wx = torch.randn(batch, steps, gates, 1, hidden, requires_grad=True, **options)
    recurrent = (torch.randn(gates, 1, hidden, hidden, **options) / hidden**0.5).requires_grad_()
    bias = torch.zeros(gates, 1, hidden, requires_grad=True, **options)

    def run():
        return flashrnn(wx, recurrent, bias, function=function, dtype=name[dtype])[0]

    def forward():
        with torch.no_grad():
            run()

    def forward_backward():
        run().float().sum().backward()

    try:
        forward_backward()
    except Exception as error:
        return f"flashrnn failed ({type(error).__name__}: {error})"
    return Contender("flashrnn", forward, forward_backward)


def contenders(cell, shape, dtype, reference: bool, device="cuda", log=print):
    """The triton layer, torch.nn where it has the cell, cuDNN's vanilla LSTM, the reference
    loop and FlashRNN, with the same weights, input and upstream gradient."""
    import carousel

    batch, steps, inputs, hidden = shape
    torch.manual_seed(0)
    options = dict(device=device, dtype=dtype)
    ours = carousel.nn.Recurrent(inputs, hidden, variant=cell, backend="triton", **options)
    x = torch.randn(steps, batch, inputs, requires_grad=True, **options)
    upstream = torch.randn(steps, batch, ours.spec.output_size(hidden), **options)
    result = [_layer_contender("triton", ours, x, upstream, level="1")]
    if _runs_level_two(ours.spec, hidden, dtype):
        result.append(_layer_contender("level 2", ours, x, upstream, level="2"))
    if cell in TORCH_CLASSES:
        theirs = TORCH_CLASSES[cell](inputs, hidden, **options)
        ours.load_state_dict(theirs.state_dict())
        result.append(_layer_contender("torch.nn", theirs, x, upstream))
    lstm = torch.nn.LSTM(inputs, hidden, **options)
    result.append(
        _layer_contender("cuDNN LSTM", lstm, x, torch.randn(steps, batch, hidden, **options))
    )
    if reference:
        loop = carousel.nn.Recurrent(inputs, hidden, variant=cell, backend="reference", **options)
        loop.load_state_dict(ours.state_dict())
        result.append(_layer_contender("reference", loop, x, upstream))
    flash = _flashrnn_contender(cell, shape, dtype, device)
    if isinstance(flash, str):
        log(f"<!-- {cell} {shape}: {flash} -->")
    else:
        result.append(flash)
    return result


def _runs_level_two(spec, hidden: int, dtype: torch.dtype) -> bool:
    """Whether the persistent kernels run this cell (float16/bfloat16 are computed in float32)."""
    from carousel.kernels.triton import persistent

    compute = torch.float64 if dtype == torch.float64 else torch.float32
    return persistent.unsupported(spec, hidden, compute, False) is None


def measure(group: list[Contender], seconds: float) -> None:
    """Warm up (compiles the kernels), then time the contenders interleaved; the reference loop
    on its own after them."""
    fast = [c for c in group if c.name != "reference"]
    for part in (fast, [c for c in group if c.name == "reference"]):
        slowest = 0.0
        for contender in part:
            contender.forward(), contender.forward_backward()
            slowest = max(slowest, _synchronized(contender.forward_backward))
        repeats = int(min(25, max(3, seconds / max(slowest, 1e-6))))
        for _ in range(repeats):
            for contender in part:
                contender.measure_once()


TABLE_HEADER = (
    "| cell | BxTxIxH | dtype | triton fwd ms | triton fwd+bwd ms | torch.nn (cuDNN) fwd+bwd ms "
    "| / cuDNN same cell | / cuDNN LSTM | reference fwd+bwd ms | vs reference | FlashRNN fwd+bwd ms "
    "| level 2 fwd ms | level 2 fwd+bwd ms | level 1 / level 2 | auto picks |\n"
    "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"
)
"""The ``triton`` columns are level 1 (per-step kernels), ``level 2`` the persistent kernels."""


def _ms(value):
    return "" if value is None else f"{value * 1e3:.3g}"


def _ratio(value):
    return "" if value is None else f"{value:.2f}x"


def benchmark(cells, shapes, dtype, seconds, reference, device="cuda", log=print) -> list[str]:
    """Time every cell and shape on ``device``; returns the table's rows. (The tests run it on
    CPU tensors under Triton's interpreter: the same code path, no meaningful times.)"""
    from carousel import kernels
    from carousel.cells import make_spec

    rows = []
    for shape in shapes:
        for cell in cells:
            group = contenders(cell, shape, dtype, reference, device, log)
            measure(group, seconds)
            median = {c.name: statistics.median(c.times) for c in group}
            forward = statistics.median(group[0].forward_times)
            triton = median["triton"]
            level_two = next((c for c in group if c.name == "level 2"), None)
            two = None if level_two is None else median["level 2"]
            work = kernels.Workload(
                spec=make_spec(cell), device=torch.device(device), dtype=dtype, steps=shape[1],
                batch=shape[0], input_size=shape[2], hidden_size=shape[3], proj_size=0,
                num_layers=1, num_directions=1, has_lengths=False,
            )  # fmt: skip
            torch_time = median.get("torch.nn")
            reference_time = median.get("reference")
            cells_ = [
                cell,
                "x".join(map(str, shape)),
                str(dtype).removeprefix("torch."),
                _ms(forward),
                _ms(triton),
                _ms(torch_time),
                _ratio(triton / torch_time if torch_time else None),
                _ratio(triton / median["cuDNN LSTM"]),
                _ms(reference_time),
                _ratio(reference_time / triton if reference_time else None),
                _ms(median.get("flashrnn")),
                _ms(None if level_two is None else statistics.median(level_two.forward_times)),
                _ms(two),
                _ratio(None if two is None else triton / two),
                kernels.select("auto", work).name,
            ]
            rows.append("| " + " | ".join(cells_) + " |")
            log(rows[-1])
    return rows


def device_line() -> str:
    """One line: the GPU, its compute capability, and the versions that matter."""
    import triton

    name = torch.cuda.get_device_name()
    major, minor = torch.cuda.get_device_capability()
    return (
        f"{name} (compute capability {major}.{minor}); torch {torch.__version__} "
        f"(CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}), "
        f"triton {triton.__version__}; TF32 in cuDNN: {torch.backends.cudnn.allow_tf32}, "
        f"in cuBLAS: {torch.backends.cuda.matmul.allow_tf32}"
    )


def run_command(args) -> None:
    """``carousel bench --device cuda``: the options of :mod:`carousel.commands.bench`, with the
    CUDA grid and every variant the triton backend runs as defaults; prints the table, writes it with ``--output``."""
    import sys

    from carousel.benchmarks import layers
    from carousel.benchmarks.harness import write_block
    from carousel.cells import VARIANTS, make_spec
    from carousel.commands.bench import _cells, _shapes
    from carousel.kernels.triton import coverage

    if not torch.cuda.is_available():
        raise ValueError("--device cuda needs a CUDA device; torch.cuda.is_available() is False")
    default_cells = ",".join(layers.CELLS)
    default_grid = ",".join("x".join(map(str, shape)) for shape in layers.GRID)
    if getattr(args, "cell_options", ""):
        raise ValueError(
            f"--cell-options applies to --device cpu only; got {args.cell_options!r} with cuda"
        )
    runs = [name for name in VARIANTS if coverage.unsupported_spec(make_spec(name)) is None]
    cells = runs if args.cells == default_cells else _cells(args.cells)
    refused = {c: coverage.unsupported_spec(make_spec(c)) for c in cells}
    refused = {c: reason for c, reason in refused.items() if reason is not None}
    if refused:
        raise ValueError(f"--cells: {'; '.join(refused.values())}")
    shapes = list(GRID) if args.grid == default_grid else _shapes(args.grid)
    dtype = getattr(torch, args.dtype)
    command = "carousel bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else ""
    lines = [f"GPU: {device_line()}.", ""]
    if command:
        lines += [f"Command: `{command}`.", ""]
    print("\n".join(lines))
    print(TABLE_HEADER)
    rows = benchmark(cells, shapes, dtype, args.seconds, not args.no_reference)
    lines += [TABLE_HEADER, *rows, ""]
    if args.output is not None:
        write_block(args.output, args.block, "\n".join(lines))
        print(f"wrote {args.output}")
