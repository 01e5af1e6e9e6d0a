"""How many threads carousel's CPU work uses, and how the thread pools share the cores.

Three pools could run carousel's work on the CPU:

- PyTorch's intra-op pool (OpenMP): torch operations, the ``torch-native`` and ``reference``
  backends, everything the layers do around a kernel.
- The BLAS pool of SciPy's OpenBLAS: the GEMMs inside the ``numba`` kernels (Numba's ``np.dot``
  calls SciPy's BLAS). NumPy's own OpenBLAS is limited alike.
- Numba's parallel pool: never started. The kernels are serial ``@njit`` functions (no
  ``parallel=True``); their parallelism comes from the BLAS calls they make.

The policy: a kernel and a torch operation never run at the same time (the kernels are called
synchronously from the thread that runs the layer), so each pool may use every core carousel is
given, and both are given the same number ``N``. ``N`` is ``CAROUSEL_NUM_THREADS`` if that
environment variable is set, else PyTorch's own setting (``torch.get_num_threads()``, by default the
number of physical cores). ``CAROUSEL_NUM_THREADS`` is applied to PyTorch's pool when carousel is
imported, and the BLAS pools are limited to ``N`` when the numba backend first runs; otherwise
PyTorch's pool is changed only when :func:`set_num_threads` is called. BLAS calls on small matrices (a recurrent step at small batch
and width) run on one thread anyway: OpenBLAS does not split them.

Limiting the BLAS pools needs ``threadpoolctl`` (installed with ``carousel-lstm[numba]``); without
it they keep OpenBLAS's default (all cores, or ``OPENBLAS_NUM_THREADS``).
"""

from __future__ import annotations

import importlib.util
import os

import torch

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
