"""The kernels: one selection point between the reference loop and the fused backends.

A backend runs a recurrent stack for a :class:`Workload`. It provides either ``run_direction`` (one
direction of one layer; the layer does the stacking) or ``run_stack`` (all layers at once), says
which workloads it cannot run (``unsupported``) and how long it expects to take (``cost``, relative
units, used by ``"auto"``).

=================  ==========================================================================
``reference``      the per-step PyTorch loop with autograd; every cell and option; the spec
``torch-native``   ``torch._VF.lstm/gru/rnn_*``, what ``torch.nn`` runs; stock cells only
``numba``          fused CPU kernels with hand-written BPTT (:mod:`.numba_cpu`); every cell
``triton``         Triton pointwise kernels + cuBLAS on CUDA, hand-written BPTT (:mod:`.triton`)
=================  ==========================================================================

Each backend module registers itself in :mod:`carousel.kernels.registry` when it is imported
(importing this package imports all of them), with its own ``unsupported`` and ``cost``; adding a
backend is one module and one import line here. ``backend="auto"`` picks, per call, the supported backend of lowest ``cost``. The environment
variable ``CAROUSEL_BACKEND`` (a backend name) overrides ``"auto"`` everywhere, for debugging.

A backend that can run a layer may still be unable to run it in the call's *context*: the fused
kernels read tensor memory directly, so they cannot run under ``torch.func`` transforms, while
``torch.compile``/``torch.export`` capture the graph, while ``torch.jit.trace`` records, or on
tensor subclasses (:func:`graph_context` says which). Such a call is handed to the cheapest
backend that can run it, even when the layer names a backend; nothing is refused or computed
wrong because of the context.
"""

from __future__ import annotations

# Each backend module registers itself on import.
from carousel.kernels import numba_cpu, reference, torch_native, triton
from carousel.kernels.registry import (
    BACKENDS,
    Backend,
    Workload,
    check_backend_name,
    graph_context,
    register,
    select,
)

__all__ = [
    "BACKENDS",
    "Backend",
    "Workload",
    "check_backend_name",
    "graph_context",
    "numba_cpu",
    "reference",
    "register",
    "select",
    "torch_native",
    "triton",
]
