"""The ``numba`` backend: fused CPU kernels with hand-written backpropagation through time.

One forward kernel and one backward kernel per family (:mod:`.lstm` covers every LSTM variant
through runtime flags, :mod:`.gru`, :mod:`.elman`, :mod:`.slstm`), compiled by Numba for float32 and float64 and
cached on disk. Their structure (input projections of all steps as one GEMM, per step one
recurrent GEMM and one fused pointwise pass, per step backward one pointwise pass and one GEMM,
weight gradients as large GEMMs after the loop) is described in each module. The kernels are plain
``@njit`` functions on NumPy arrays, so compiled training loops can call them directly;
:mod:`.autograd` wraps them as ``torch.autograd.Function`` s for the layers.

This module only describes the backend to the registry; Numba is imported on the first run.
"""

from __future__ import annotations

import importlib.util
from functools import cache

import torch

FAMILIES = ("lstm", "gru", "elman", "slstm")


@cache
def missing_dependency() -> str | None:
    """``None`` if Numba and SciPy (its BLAS) can be imported, else what is missing."""
    for module in ("numba", "scipy"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install 'carousel-lstm[numba]')"
    return None


def unsupported(work) -> str | None:
    """Why the kernels cannot run ``work`` (a :class:`carousel.kernels.Workload`), or ``None``."""
    reason = missing_dependency()
    if reason is not None:
        return reason
    if work.device.type != "cpu":
        return f"the numba kernels run on the CPU only; got device {work.device}"
    if work.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        return f"the numba kernels run in float32 or float64 (float16, bfloat16 through float32); got {work.dtype}"
    if work.spec.family not in FAMILIES:
        return f"no numba kernel for the {work.spec.family!r} family"
    if work.context is not None:
        return (
            f"the numba kernels read tensor memory directly, which they cannot while {work.context}"
        )
    return None


TORCH_LSTM_WIDTH = {True: 1024, False: 256}
"""Batch x hidden size from which ``auto`` runs the stock float32 LSTM on ``torch.nn.LSTM``'s fused
operator (oneDNN) instead of the kernels, for training (``True``) and inference (``False``).

From ``carousel bench`` (docs/performance.md): oneDNN's forward pass is faster from batch x hidden
= 16 x 64 on; for training the kernels win at batch 1 and are within 10 % of oneDNN above
(ahead at the largest shapes, behind at 16 x 64 and 32 x 128), so the switch sits there too."""


def cost(work) -> float:
    """Expected time relative to the ``torch-native`` backend's unit (steps x layers x directions).

    Half of it, so ``"auto"`` prefers the kernels, except for the stock LSTM in float32 at
    batch x hidden sizes where oneDNN's fused LSTM was measured faster (:data:`TORCH_LSTM_WIDTH`).
    Torch has no fused GRU or RNN on the CPU, and no fused cell at all for the other variants.
    """
    scale = work.steps * work.num_layers * work.num_directions
    if (
        work.spec.family == "lstm"
        and work.dtype == torch.float32
        and work.batch * work.hidden_size >= TORCH_LSTM_WIDTH[work.needs_grad]
    ):
        return 2.0 * scale
    return 0.5 * scale


def run_direction(spec, x, state, weights, lengths=None, reverse=False):
    """Run one direction of one layer; see :func:`carousel.kernels.numba_cpu.autograd.run_direction`."""
    from carousel.kernels.numba_cpu.autograd import run_direction as run

    return run(spec, x, state, weights, lengths, reverse)
