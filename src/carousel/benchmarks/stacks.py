"""Stacked layers at small batch (``carousel bench --layers``): the numba backend's wavefront
over the layers (:mod:`carousel.kernels.numba_cpu.wavefront`) against its sequential path (the
layers one after another) and ``torch.nn``, at one thread and at ``N``, in one process.

For every cell, shape ``(B, T, I, H)`` and layer count it builds the stack once per backend (same
weights) and times, interleaved (:func:`carousel.benchmarks.harness.measure`), a forward pass
under ``torch.no_grad()`` and a forward plus backward pass with a fixed random upstream gradient
for: the numba layer with the wavefront off (``wavefront.MAX_CHUNKS = 1``) at one thread and at
``N``, with it on at ``N`` (it never runs at one thread; the bench turns it on for its runs,
:data:`~carousel.kernels.numba_cpu.wavefront.ENABLED`, whatever the default), and ``torch.nn`` at one thread and at
``N`` where it has the cell. *ideal* is the wavefront's bound on ``N`` threads (:func:`ideal`):
``L K`` chunk-times of work in ``K + L - 1`` waves, a wave of ``a`` chunks taking ``ceil(a / N)``
chunk-times; what it does not reach is the per-chunk cost of the kernel calls and the meetings
of the threads. The per-chunk cost alone is measured by running the same chunks one after
another on one thread (*chunked (1) over sequential (1)*); *projected, L idle cores* is the
bound with ``L`` threads over that cost (taken as at least 1), a projection for a machine with a
free core per layer, not a measurement.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

from carousel.benchmarks.harness import Runner, measure, ms, ratio

GRID = ((1, 500, 32, 64), (4, 200, 64, 128), (1, 400, 128, 256))
CELLS = ("vanilla", "gru")
LAYERS = (2, 3)


_CHUNK_COUNT = None  # wavefront.chunk_count as the library defines it


@dataclass
class StackRunner(Runner):
    """A :class:`Runner` that sets the wavefront's chunk limit before each call (1: off), or
    with ``serial_chunks`` makes it run that many chunks even on one thread (one after another:
    the per-chunk cost alone, without the overlap)."""

    max_chunks: int = 0
    serial_chunks: int = 0

    def use_threads(self) -> None:
        global _CHUNK_COUNT
        from carousel.kernels.numba_cpu import wavefront

        super().use_threads()
        _CHUNK_COUNT = _CHUNK_COUNT or wavefront.chunk_count
        wavefront.MAX_CHUNKS = self.max_chunks
        count = self.serial_chunks
        wavefront.chunk_count = (lambda *_: count) if count else _CHUNK_COUNT


def runners(cell, shape, num_layers, dtype, many: int) -> list[Runner]:
    """The runners of one (cell, shape, layer count); names ``kind@threads``."""
    import carousel
    from carousel.benchmarks.layers import TORCH_CLASSES
    from carousel.kernels.numba_cpu import wavefront

    batch, steps, inputs, hidden = shape
    torch.manual_seed(0)
    ours = carousel.nn.Recurrent(
        inputs, hidden, num_layers, variant=cell, backend="numba", dtype=dtype
    )
    x = torch.randn(steps, batch, inputs, dtype=dtype, requires_grad=True)
    upstream = torch.randn(steps, batch, ours.spec.output_size(hidden), dtype=dtype)
    default = wavefront.MAX_CHUNKS
    chunks = _chunks(shape, num_layers, cell, many)
    timed = [
        StackRunner("sequential@1", ours, x, upstream, 1, max_chunks=1),
        StackRunner("chunked@1", ours, x, upstream, 1, max_chunks=default, serial_chunks=chunks),
        StackRunner(f"sequential@{many}", ours, x, upstream, many, max_chunks=1),
        StackRunner(f"wavefront@{many}", ours, x, upstream, many, max_chunks=default),
    ]
    if cell in TORCH_CLASSES:
        theirs = TORCH_CLASSES[cell](inputs, hidden, num_layers, dtype=dtype)
        theirs.load_state_dict(ours.state_dict())
        timed += [Runner(f"torch.nn@{n}", theirs, x, upstream, n) for n in (1, many)]
    return timed


def _chunks(shape, num_layers, cell, many: int) -> int:
    """The chunk count the wavefront takes for this stack at ``many`` threads."""
    from carousel.cells import make_spec
    from carousel.kernels.numba_cpu import wavefront

    batch, steps, inputs, hidden = shape
    spec = make_spec(cell)
    rows, recurrent = spec.num_gate_rows(hidden), spec.recurrent_size(hidden)
    widths = [inputs] + [spec.output_size(hidden)] * (num_layers - 1)
    works = [steps * batch * rows * (width + recurrent) for width in widths]
    return wavefront.chunk_count(steps, batch, works, many)


def ideal(num_layers: int, chunks: int, num_threads: int) -> float:
    """The wavefront's best speed-up over the sequential path: ``L K`` chunk-times over the sum,
    over the ``K + L - 1`` waves, of ``ceil(active chunks / N)`` (equal chunks, free meetings)."""
    waves = range(chunks + num_layers - 1)
    active = [min(num_layers, w + 1, chunks, chunks + num_layers - 1 - w) for w in waves]
    return num_layers * chunks / sum(-(-a // num_threads) for a in active)


def benchmark(cells, shapes, layer_counts, dtype, seconds, many: int, log=print) -> list[dict]:
    """Time every cell, shape and layer count; one row each, with the medians by runner name."""
    from carousel.kernels.numba_cpu import wavefront

    default, rows = wavefront.MAX_CHUNKS, []
    enabled, wavefront.ENABLED = wavefront.ENABLED, True  # measured whether on by default or not
    try:
        for shape in shapes:
            for num_layers in layer_counts:
                for cell in cells:
                    timed = runners(cell, shape, num_layers, dtype, many)
                    measure(timed, seconds)
                    _restore(default)
                    row = {
                        "cell": cell,
                        "shape": shape,
                        "layers": num_layers,
                        "many": many,
                        "chunks": _chunks(shape, num_layers, cell, many),
                        "backward": {r.name: statistics.median(r.backward_times) for r in timed},
                        "forward": {r.name: statistics.median(r.forward_times) for r in timed},
                        "repeats": len(timed[0].backward_times),
                    }
                    rows.append(row)
                    log(line(row))
    finally:
        _restore(default)
        wavefront.ENABLED = enabled
    return rows


def _restore(max_chunks: int) -> None:
    from carousel.kernels.numba_cpu import wavefront

    wavefront.MAX_CHUNKS = max_chunks
    if _CHUNK_COUNT is not None:
        wavefront.chunk_count = _CHUNK_COUNT


def table_header(many: int) -> str:
    """The header of :func:`line`'s table."""
    columns = [
        "cell",
        "BxTxIxH",
        "L",
        f"chunks ({many})",
        "sequential ms (1)",
        f"sequential ms ({many})",
        f"wavefront ms ({many})",
        f"wavefront vs sequential ({many})",
        f"wavefront ({many}) vs sequential (1)",
        "ideal",
        f"fwd: wavefront vs sequential ({many})",
        "chunked (1) over sequential (1)",
        "projected, L idle cores",
        "torch.nn ms (1)",
        f"torch.nn ms ({many})",
        f"wavefront ({many}) vs best torch.nn",
    ]
    align = ["---", "---"] + ["--:"] * (len(columns) - 2)
    return "| " + " | ".join(columns) + " |\n|" + "|".join(align) + "|"


def _over(times: dict, a: str, b: str) -> float | None:
    return times[a] / times[b] if a in times and b in times else None


def line(row: dict) -> str:
    """One row of the markdown table (see :func:`table_header`): times are forward+backward
    medians; ratios are the first time over the second (above 1: the wavefront is faster)."""
    b, t, i, h = row["shape"]
    n, layers, chunks = row["many"], row["layers"], row["chunks"]
    back, fwd = row["backward"], row["forward"]
    wave, seq = f"wavefront@{n}", f"sequential@{n}"
    torch_times = [back[k] for k in ("torch.nn@1", f"torch.nn@{n}") if k in back]
    bound = ideal(layers, chunks, n) if chunks > 1 else 1.0
    overhead = _over(back, "chunked@1", "sequential@1")
    projected = None
    if chunks > 1 and overhead is not None:  # a chunk cost below 1 is taken as noise
        projected = ideal(layers, chunks, layers) / max(1.0, overhead)
    cells = [
        row["cell"],
        f"{b}x{t}x{i}x{h}",
        str(layers),
        str(chunks) if chunks > 1 else "1 (off)",
        ms(back["sequential@1"]),
        ms(back[seq]),
        ms(back[wave]),
        ratio(_over(back, seq, wave)),
        ratio(_over(back, "sequential@1", wave)),
        ratio(bound),
        ratio(_over(fwd, seq, wave)),
        ratio(_over(back, "chunked@1", "sequential@1")),
        ratio(projected),
        ms(back.get("torch.nn@1")),
        ms(back.get(f"torch.nn@{n}")),
        ratio(min(torch_times) / back[wave] if torch_times else None),
    ]
    return "| " + " | ".join(cells) + " |"
