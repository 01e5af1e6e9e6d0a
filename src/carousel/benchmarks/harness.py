"""Timing machinery shared by the benchmark programs: interleaved repetitions with medians, the
machine's GEMM peak, a description of the machine, and writing a report into a markdown file.

Benchmarks are programs, not tests: they report ratios against ``torch.nn`` measured in the same
process, interleaved, so whatever else the machine does falls on every contender alike.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class Runner:
    """One backend's layer and its two timed calls, at ``num_threads`` threads (``None``: as set).

    The thread count is set (:func:`carousel.set_num_threads`, for torch and the kernels alike)
    before the clock starts, so runners at different counts can be interleaved.
    """

    name: str
    layer: torch.nn.Module
    x: torch.Tensor
    upstream: torch.Tensor
    num_threads: int | None = None
    forward_times: list[float] = field(default_factory=list)
    backward_times: list[float] = field(default_factory=list)

    def use_threads(self) -> None:
        """Switch to this runner's thread count (untimed)."""
        from carousel import get_num_threads, set_num_threads

        if self.num_threads is not None and get_num_threads() != self.num_threads:
            set_num_threads(self.num_threads)

    def forward(self) -> float:
        self.use_threads()
        start = time.perf_counter()
        with torch.no_grad():
            self.layer(self.x)
        return time.perf_counter() - start

    def forward_backward(self) -> float:
        self.use_threads()
        self.layer.zero_grad(set_to_none=True)
        self.x.grad = None
        start = time.perf_counter()
        output, _ = self.layer(self.x)
        output.backward(self.upstream)
        return time.perf_counter() - start


@contextmanager
def no_collector():
    """Collect garbage once, then not while timing (as ``timeit`` does): otherwise a collection
    caused by one backend's many small tensors lands in another backend's time."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def measure(runners: list[Runner], seconds: float) -> None:
    """Time the fast backends interleaved, then the reference loop on its own.

    Each repetition runs every runner once, starting one runner later than the repetition before
    (so no runner is always the first after a change of thread count). The reference loop churns
    through thousands of small tensors per call; timed right after it, the next backend's call
    was measured up to five times slower than alone, so it is kept out of the interleaving.
    """
    slow = [r for r in runners if r.name.split("@")[0] == "reference"]
    fast = [r for r in runners if r not in slow]
    for group in (fast, slow) if slow else (fast,):
        slowest = 0.0
        for runner in group:
            runner.forward(), runner.forward_backward()  # first calls load or compile the kernels
            slowest = max(slowest, runner.forward() + runner.forward_backward())
        repeats = int(min(25, max(3, seconds / max(slowest, 1e-6))))
        with no_collector():
            for repeat in range(repeats):
                first = repeat % len(group)
                for runner in group[first:] + group[:first]:
                    runner.forward_times.append(runner.forward())
                    runner.backward_times.append(runner.forward_backward())


def gemm_peak(dtype=torch.float32, size: int = 2048, num_threads: int | None = None) -> float:
    """This machine's GEMM throughput in GFLOP/s: median of ``torch.mm`` on ``size``^3, at
    ``num_threads`` threads (default: as set)."""
    if num_threads is not None:
        from carousel import set_num_threads

        set_num_threads(num_threads)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    out = torch.empty(size, size, dtype=dtype)
    times = []
    for _ in range(7):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times[2:]) / 1e9


def ms(seconds: float | None) -> str:
    """Seconds as milliseconds with three significant digits ("" for none)."""
    return "" if seconds is None else f"{seconds * 1e3:.3g}"


def ratio(value: float | None) -> str:
    """A ratio as ``1.23x`` ("" for none)."""
    return "" if value is None else f"{value:.2f}x"


def machine() -> str:
    """One line: CPU model and count, versions, the kernels' BLAS and the thread settings."""
    import numba
    import numpy

    from carousel import get_num_threads
    from carousel.kernels.numba_cpu.blas import BLAS

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
