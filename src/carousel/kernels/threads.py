"""How many threads carousel's CPU work uses, and how the thread pools share the cores.

One number ``N`` governs everything: ``CAROUSEL_NUM_THREADS`` if that environment variable is set,
else PyTorch's own setting (``torch.get_num_threads()``, by default the number of physical cores);
:func:`set_num_threads` changes it at any time. Four pools could run carousel's work:

- PyTorch's intra-op pool (OpenMP): torch operations, the ``torch-native`` and ``reference``
  backends, everything the layers do around a kernel. ``N`` threads.
- MKL, which the ``numba`` kernels' GEMMs call (:mod:`carousel.kernels.numba_cpu.blas`): its
  threads *are* PyTorch's OpenMP pool. A GEMM called from an unsharded kernel may use it; small
  ones (below ``PARALLEL_WORK`` for a step's GEMMs, ``SEQUENCE_PARALLEL_WORK`` for those over the
  whole sequence) and every GEMM of a sharded call run on the calling thread only
  (``MKL_Set_Num_Threads_Local``).
- The shard pool (:func:`run_parallel`): ``N - 1`` Python worker threads that, with the calling
  thread, run the batch shards (or directions) of one ``numba`` call, each a compiled kernel that
  released the GIL, each with single-threaded GEMMs. The calling thread waits for them, so
  PyTorch's pool has nothing to run meanwhile: at most ``N`` threads compute at any time. The
  workers block on a queue between calls (no spinning), and a call synchronises them once per
  pass (forward, backward), never per step, so a busy machine delays a shard, not every step.
- The BLAS pools that threadpoolctl can see (SciPy's and NumPy's OpenBLAS, used only by the
  fallback when PyTorch has no MKL): limited to ``N`` threads; without MKL the kernels do not
  shard (OpenBLAS has no per-thread setting, so shards would multiply its threads).
- Numba's parallel pool: never started (the kernels are serial ``@njit`` functions).

``CAROUSEL_NUM_THREADS`` is applied to PyTorch's pool when carousel is imported, and the BLAS pools
are limited to ``N`` when the numba backend first runs; otherwise PyTorch's pool is changed only
when :func:`set_num_threads` is called. Limiting the BLAS pools needs ``threadpoolctl``
(installed with ``carousel-lstm[numba]``).
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

Result = TypeVar("Result")

ENVIRONMENT_VARIABLE = "CAROUSEL_NUM_THREADS"

_requested: int | None = None


def _check(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int; got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int; got {value}")
    return value


def _from_environment() -> int | None:
    text = os.environ.get(ENVIRONMENT_VARIABLE)
    if text is None or text.strip() == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(
            f"{ENVIRONMENT_VARIABLE} must be a positive integer; got {text!r}"
        ) from None
    return _check(value, ENVIRONMENT_VARIABLE)


def get_num_threads() -> int:
    """The number of threads each pool uses: set by :func:`set_num_threads`, else
    ``CAROUSEL_NUM_THREADS``, else ``torch.get_num_threads()``."""
    if _requested is not None:
        return _requested
    from_environment = _from_environment()
    return from_environment if from_environment is not None else torch.get_num_threads()


def set_num_threads(num_threads: int) -> None:
    """Use ``num_threads`` threads in PyTorch's pool and in the BLAS pools of the numba kernels.

    Raises:
        TypeError, ValueError: ``num_threads`` is not a positive int.
    """
    global _requested
    _requested = _check(num_threads, "num_threads")
    torch.set_num_threads(num_threads)
    limit_blas(num_threads)


def limit_blas(num_threads: int | None = None) -> bool:
    """Limit the BLAS pools loaded in this process to ``num_threads`` (default :func:`get_num_threads`).

    Returns ``False`` when ``threadpoolctl`` is not installed (nothing is changed).
    """
    if importlib.util.find_spec("threadpoolctl") is None:
        return False
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=num_threads or get_num_threads(), user_api="blas")
    return True


def apply_policy() -> None:
    """Apply the policy once the numba kernels' BLAS is loaded (called by the numba backend)."""
    from_environment = _from_environment() if _requested is None else None
    if from_environment is not None:
        torch.set_num_threads(from_environment)
    limit_blas()


def apply_environment() -> None:
    """Give PyTorch's pool ``CAROUSEL_NUM_THREADS`` threads, if it is set (on import of carousel;
    :func:`set_num_threads` overrides it later)."""
    from_environment = _from_environment()
    if from_environment is not None and _requested is None:
        torch.set_num_threads(from_environment)


_pool: ThreadPoolExecutor | None = None
_pool_workers = 0
_pool_lock = threading.Lock()


def _forget_pool() -> None:
    """After ``fork`` the child has none of the parent's worker threads: start afresh."""
    global _pool, _pool_workers, _pool_lock
    _pool, _pool_workers, _pool_lock = None, 0, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def _executor(workers: int) -> ThreadPoolExecutor:
    """The shard pool with ``workers`` worker threads (replaced when the count changes)."""
    global _pool, _pool_workers
    with _pool_lock:
        if _pool is None or _pool_workers != workers:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(workers, thread_name_prefix="carousel-shard")
            _pool_workers = workers
        return _pool


class _Tasks:
    """Tasks handed out one at a time to whichever thread asks first; results kept in order."""

    def __init__(self, tasks: Sequence[Callable[[], Result]]):
        self.tasks = tasks
        self.results: list = [None] * len(tasks)
        self.errors: list[BaseException] = []
        self.taken = self.finished = 0
        self.changed = threading.Condition()

    def work(self) -> None:
        """Run tasks until none is left to take (each task runs once over all threads)."""
        while True:
            with self.changed:
                if self.taken == len(self.tasks):
                    return
                index, self.taken = self.taken, self.taken + 1
            try:
                self.results[index] = self.tasks[index]()
            except BaseException as error:  # raised again by run_parallel in the calling thread
                self.errors.append(error)
            with self.changed:
                self.finished += 1
                self.changed.notify_all()

    def wait(self) -> None:
        """Block (no spinning) until every task has finished."""
        with self.changed:
            self.changed.wait_for(lambda: self.finished == len(self.tasks))


def run_parallel(tasks: Sequence[Callable[[], Result]]) -> list[Result]:
    """Run every task (a callable without arguments) once, concurrently; their results in order.

    Up to ``get_num_threads() - 1`` worker threads of the shard pool (started on first use) and
    the calling thread take the tasks one at a time, each the next one not yet taken, until
    none is left; the calling thread then waits for the tasks still running. A worker that the
    operating system is slow to wake (a busy machine) simply takes fewer tasks, or none: nobody
    waits for a worker to start, so a call is never much slower than running its tasks one after
    another in the calling thread. Tasks that should overlap must release the GIL (compiled
    ``nogil`` kernels do). The first exception raised by a task is raised again once every task
    has finished.
    """
    if len(tasks) <= 1:
        return [task() for task in tasks]
    queue = _Tasks(tasks)
    pool = _executor(max(1, get_num_threads() - 1))
    for _ in range(min(len(tasks), get_num_threads()) - 1):
        pool.submit(queue.work)
    queue.work()
    queue.wait()
    if queue.errors:
        raise queue.errors[0]
    return queue.results
