"""The backend registry and the selection point; see :mod:`carousel.kernels` for the backends.

Each backend module registers itself here on import (:func:`register`), with its own cost model
next to its code; :func:`select` picks one per call.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from carousel.cells import CellSpec


@dataclass(frozen=True)
class Workload:
    """What a backend is asked to run: the cell, the stack's shape and the data's.

    ``needs_grad`` says whether autograd will backpropagate through the call (training) or not
    (inference under ``torch.no_grad()``); backends rank differently for the two. ``context`` is
    :func:`graph_context` of the call: ``None`` in plain eager execution. ``masks`` names the
    :class:`~carousel.cells.regularizers.Masks` fields the call passes (regularisers, resets).
    """

    spec: CellSpec
    device: torch.device
    dtype: torch.dtype
    steps: int
    batch: int
    input_size: int
    hidden_size: int
    proj_size: int
    num_layers: int
    num_directions: int
    has_lengths: bool
    needs_grad: bool = True
    context: str | None = None
    masks: frozenset[str] = frozenset()

    @property
    def features(self) -> frozenset[str]:
        """What the call needs beyond a plain cell: its masks, and ``"layer_norm"``."""
        return self.masks | ({"layer_norm"} if self.spec.layer_norm else set())


@dataclass(frozen=True)
class Backend:
    """A registered backend.

    Attributes:
        name: registry key, the value of a layer's ``backend=``.
        description: one line for ``carousel backends`` and error messages.
        run_direction: ``(spec, x, state, weights, lengths, reverse) -> (output, state)``, see
            :func:`carousel.kernels.reference.run_direction`; or ``None``.
        run_stack: see :func:`carousel.kernels.torch_native.run_stack`; or ``None``.
        run_directions: optional, with ``run_direction``: ``(spec, x, states, weights, lengths)
            -> [(output, state)]``, both directions of a bidirectional layer in one call (one
            ``state`` and ``weights`` per direction, forward first), so that a backend can run
            them in parallel; see :func:`carousel.kernels.numba_cpu.autograd.run_directions`.
        run_layers: optional, with ``run_direction``: ``(spec, x, states, weights, lengths,
            dropout) -> (output, [state per layer])`` or ``None``, a whole unidirectional stack
            without masks in one call (one ``state`` and ``weights`` per layer, ``dropout``
            between layers, 0 outside training), so that a backend can overlap the layers; it
            returns ``None``, having run and drawn nothing, where it declines; see
            :func:`carousel.kernels.numba_cpu.wavefront.run_layers`.
        unsupported: ``workload -> None`` when it can run it, else the reason it cannot.
        cost: ``workload -> float``, the expected time in arbitrary units (``"auto"`` takes the least).
        length_generic: whether a graph that ``torch.jit.trace`` records of it holds for other
            sequence lengths (a fused operator) or only for the traced one (a Python loop).
        features: the :attr:`Workload.features` it implements (layer normalisation, the
            :class:`~carousel.cells.regularizers.Masks` fields its ``run_direction`` applies,
            passed as ``masks=``); a call needing another is not given to it.
    """

    name: str
    description: str
    unsupported: Callable[[Workload], str | None]
    cost: Callable[[Workload], float]
    run_direction: Callable | None = None
    run_stack: Callable | None = None
    run_directions: Callable | None = None
    run_layers: Callable | None = None
    length_generic: bool = False
    features: frozenset[str] = frozenset()

    def refuses(self, work: Workload) -> str | None:
        """``None`` if it can run ``work``: it implements the features and ``unsupported`` agrees."""
        missing = work.features - self.features
        if missing:
            return f"the {self.name} backend does not implement {', '.join(sorted(missing))}"
        return self.unsupported(work)


BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Add ``backend`` to the registry (replacing one of the same name)."""
    if (backend.run_direction is None) == (backend.run_stack is None):
        raise ValueError("a backend provides exactly one of run_direction and run_stack")
    BACKENDS[backend.name] = backend
    return backend


def graph_context(tensor: Tensor) -> str | None:
    """``None`` in plain eager execution on ordinary tensors, else what is capturing or wrapping the call.

    Cheap (no tensor values are read), and safe to call while ``torch.compile`` traces.
    """
    if torch.compiler.is_compiling():
        return "torch.compile or torch.export captures the graph"
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return "torch.jit records the graph"
    if torch._C._functorch.peek_interpreter_stack() is not None:
        return "a torch.func transform (grad, vmap, jacrev, ...) is active"
    if type(tensor) not in (Tensor, torch.nn.Parameter) or _dispatch_mode_active():
        return "the tensors are traced or wrapped (a tensor subclass or a dispatch mode)"
    return None


def _dispatch_mode_active() -> bool:
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    return _get_current_dispatch_mode() is not None


def check_backend_name(name: str) -> None:
    """Raise ``ValueError`` if ``name`` is neither ``"auto"`` nor a registered backend."""
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {sorted(BACKENDS)}; got {name!r}")


def select(name: str, work: Workload) -> Backend:
    """The backend that runs ``work``: the one named, or for ``"auto"`` the cheapest supported.

    A named backend that could run the layer but not in this call's context (see the module
    docstring) hands the call to the cheapest backend that can.

    Raises:
        ValueError: the named backend is unknown or cannot run this layer (with the reason).
    """
    if name == "auto":
        name = os.environ.get("CAROUSEL_BACKEND", "auto")
    check_backend_name(name)
    if name != "auto":
        backend = BACKENDS[name]
        reason = backend.refuses(work)
        if reason is None:
            return backend
        if work.context is None or backend.refuses(replace(work, context=None)) is not None:
            raise ValueError(f"backend {name!r} cannot run this layer: {reason}")
    best, best_cost = None, float("inf")
    for backend in BACKENDS.values():  # a plain loop: torch.compile traces it without a break
        if backend.refuses(work) is None and backend.cost(work) < best_cost:
            best, best_cost = backend, backend.cost(work)
    return best
