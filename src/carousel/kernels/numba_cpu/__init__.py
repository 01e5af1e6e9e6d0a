"""The ``numba`` backend: fused CPU kernels with hand-written backpropagation through time.

One forward kernel and one backward kernel per family (:mod:`.lstm` covers every LSTM variant
through runtime flags, :mod:`.gru`, :mod:`.elman`, :mod:`.slstm`), compiled by Numba for float32
and float64 and cached on disk. Their structure (input projections of all steps as one GEMM, per step one
recurrent GEMM and one fused pointwise pass, per step backward one pointwise pass and one GEMM,
weight gradients as large GEMMs after the loop) is described in each module. The kernels are plain
``@njit`` functions on NumPy arrays, so compiled training loops can call them directly;
:mod:`.autograd` wraps them in one ``torch.autograd.Function`` for the layers.

This module registers the backend and holds its table of families (:data:`FAMILIES`); Numba is
imported on the first run.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from functools import cache, cached_property

import torch

from carousel.kernels.registry import Backend, register


@dataclass(frozen=True)
class FamilyKernels:
    """How the backend calls one family's kernels: ``config``, ``forward`` and ``backward`` are the
    functions ``{name}_config``, ``{name}_forward`` and ``{name}_backward`` of the module
    ``carousel.kernels.numba_cpu.{name}``, imported (and Numba with it) on first use.

    The forward kernel is ``forward(config, *inputs, lengths, reverse, keep)`` where ``inputs`` is
    ``(x, *states, *weights, *masks)``: ``states`` are ``state_slots`` tensors (an LSTM always
    passes ``h, c, gates``, the last one ``(B, 0)`` without gate feedback), ``weights`` are the
    :class:`~carousel.cells.CellWeights` fields named in ``weight_fields`` and ``masks`` the
    :class:`~carousel.cells.regularizers.Masks` fields named in ``mask_fields`` (in the dtype of
    ``x``; ``reset`` as 0/1), in that order. An absent one is a zero-size placeholder of its
    ``*_ndims``. It returns ``num_outputs`` arrays (``output`` and the final states) followed by
    its saved arrays; the ones at ``saved`` are handed to the backward kernel.

    The backward kernel is ``backward(config, *(inputs[k] for k in backward_inputs), lengths,
    reverse, *saved, *grad_outputs, need_input_grad, workspace)`` and returns one gradient per
    input but the masks. ``workspace_factor`` times ``T * B * G`` elements of scratch serve it.
    With ``forward_workspace`` the forward kernel takes a trailing ``workspace`` too, ``T * B *
    G`` elements for the input projections it reads only during its run (one thread's scratch
    serves its forward and backward calls in turn, :func:`.shards.workspace`).
    """

    name: str
    state_slots: int
    weight_fields: tuple[str, ...]
    num_outputs: int
    saved: tuple[int, ...]
    backward_inputs: tuple[int, ...]
    workspace_factor: int
    mask_fields: tuple[str, ...] = ()
    forward_workspace: bool = False

    @cached_property
    def weight_ndims(self) -> tuple[int, ...]:
        """The dimensions of each weight in ``weight_fields``: 1 for the biases, 2 for the rest."""
        return tuple(1 if name.startswith("bias") else 2 for name in self.weight_fields)

    @cached_property
    def mask_ndims(self) -> tuple[int, ...]:
        """The dimensions of each mask in ``mask_fields``: 3 for zoneout's ``(T, B, W)``, 2 for
        the per-sequence ``(B, W)`` ones and ``reset`` ``(T, B)``."""
        return tuple(3 if name.startswith("zoneout") else 2 for name in self.mask_fields)

    @cached_property
    def mask_batch_axes(self) -> tuple[int, ...]:
        """The batch axis of each mask in ``mask_fields``: 0 for the per-sequence ``(B, W)`` ones
        (``recurrent``, ``candidate``), 1 for the time-indexed ``(T, B, ...)`` ones (zoneout's,
        ``reset``); batch shards slice each mask there."""
        return tuple(0 if name in ("recurrent", "candidate") else 1 for name in self.mask_fields)

    def _function(self, kind: str):
        module = importlib.import_module(f"carousel.kernels.numba_cpu.{self.name}")
        return getattr(module, f"{self.name}_{kind}")

    @cached_property
    def config(self):
        """``config(spec, hidden_size) -> int64 array``: the runtime flags of the variant."""
        return self._function("config")

    @cached_property
    def forward(self):
        """The forward kernel."""
        return self._function("forward")

    @cached_property
    def backward(self):
        """The backward kernel."""
        return self._function("backward")


FAMILIES = {
    "lstm": FamilyKernels(
        "lstm",
        state_slots=3,
        weight_fields=(
            "weight_ih",
            "bias",
            "weight_hh",
            "weight_peephole",
            "weight_hr",
            "layer_norm_ih",
            "layer_norm_hh",
            "layer_norm_cell",
        ),
        num_outputs=4,
        saved=(4, 5, 6, 7, 8, 9),
        backward_inputs=(0, 4, *range(6, 17)),
        workspace_factor=1,
        mask_fields=("recurrent", "candidate", "zoneout_cell", "zoneout_hidden", "reset"),
    ),
    "gru": FamilyKernels(
        "gru",
        state_slots=1,
        weight_fields=(
            "weight_ih",
            "bias",
            "weight_hh",
            "bias_hh",
            "layer_norm_ih",
            "layer_norm_hh",
        ),
        num_outputs=2,
        saved=(2, 3, 4, 5, 6),
        backward_inputs=(0, 2, 4, 6, 7, 8, 9, 10, 11),
        workspace_factor=2,
        mask_fields=("recurrent", "candidate", "zoneout_hidden", "reset"),
        forward_workspace=True,
    ),
    "elman": FamilyKernels(
        "elman",
        state_slots=1,
        weight_fields=("weight_ih", "bias", "weight_hh"),
        num_outputs=2,
        saved=(2, 3),
        backward_inputs=(0, 2, 4),
        workspace_factor=1,
        forward_workspace=True,
    ),
    "slstm": FamilyKernels(
        "slstm",
        state_slots=4,
        weight_fields=("weight_ih", "bias", "weight_hh"),
        num_outputs=5,
        saved=(5, 6, 7, 8),
        backward_inputs=(0, 5, 7, 8),
        workspace_factor=1,
        mask_fields=("reset",),
    ),
}
"""The families the kernels run, with how to call them; a new family is one module with its three
kernels and one record here."""


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
    missing = work.masks - set(FAMILIES[work.spec.family].mask_fields)
    if missing:
        return f"the numba {work.spec.family} kernel has no {', '.join(sorted(missing))} masks"
    return None


TORCH_LSTM_WIDTH = {True: (1024, 64 * 256), False: (256, None)}
"""Batch x hidden sizes ``[low, high)`` (``None``: no upper end) where ``auto`` runs the stock
float32 LSTM on ``torch.nn.LSTM``'s fused operator (oneDNN) instead of the kernels, for training
(``True``) and inference (``False``).

From ``carousel bench`` (docs/performance.md): oneDNN's forward pass is faster from batch x hidden
= 16 x 64 on; for training the kernels win at batch 1, lose at 16 x 64 and 32 x 128 on one thread,
and win from 64 x 256 on (1.02-1.22x in four runs, on one thread and on two, where the kernels
shard the batch; on two threads oneDNN still won at 16 x 64 and 32 x 128)."""


def cost(work) -> float:
    """Expected time relative to the ``torch-native`` backend's unit (steps x layers x directions).

    Half of it, so ``"auto"`` prefers the kernels, except for the stock LSTM in float32 at
    batch x hidden sizes where oneDNN's fused LSTM was measured faster (:data:`TORCH_LSTM_WIDTH`).
    Torch has no fused GRU or RNN on the CPU, and no fused cell at all for the other variants.
    """
    scale = work.steps * work.num_layers * work.num_directions
    low, high = TORCH_LSTM_WIDTH[work.needs_grad]
    width = work.batch * work.hidden_size
    if (
        work.spec.family == "lstm"
        and work.dtype == torch.float32
        and width >= low
        and (high is None or width < high)
    ):
        return 2.0 * scale
    return 0.5 * scale


def run_direction(spec, x, state, weights, lengths=None, reverse=False, masks=None):
    """Run one direction of one layer; see :func:`carousel.kernels.numba_cpu.autograd.run_direction`."""
    from carousel.kernels.numba_cpu.autograd import run_direction as run

    return run(spec, x, state, weights, lengths, reverse, masks)


def run_directions(spec, x, states, weights, lengths=None):
    """Both directions of one layer in parallel; see
    :func:`carousel.kernels.numba_cpu.autograd.run_directions`."""
    from carousel.kernels.numba_cpu.autograd import run_directions as run

    return run(spec, x, states, weights, lengths)


def run_layers(spec, x, states, weights, lengths=None, dropout=0.0):
    """A unidirectional stack over a wavefront of threads, or ``None`` where that does not pay;
    see :func:`carousel.kernels.numba_cpu.wavefront.run_layers`."""
    from carousel.kernels.numba_cpu.wavefront import run_layers as run

    return run(spec, x, states, weights, lengths, dropout)


register(
    Backend(
        name="numba",
        description="fused CPU kernels compiled with Numba, hand-written BPTT; every cell",
        unsupported=unsupported,
        cost=cost,
        run_direction=run_direction,
        features=frozenset({"layer_norm", *(f for k in FAMILIES.values() for f in k.mask_fields)}),
        run_directions=run_directions,
        run_layers=run_layers,
    )
)
