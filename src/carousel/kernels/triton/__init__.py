r"""The ``triton`` backend: every cell family on CUDA, one fused pointwise kernel per step.

Design (level 1; see docs/gpu.md): the input projections of all steps are one GEMM
before the loop; per step the recurrent GEMM runs on cuBLAS (``torch.mm`` into a preallocated
buffer) and one Triton kernel does the rest of the step (gates, cell state, output, the state held
past each sequence's length); backward mirrors it, one Triton kernel and one cuBLAS GEMM per step,
and the weight gradients are large GEMMs after the loop. Each family has one pair of pointwise
kernels (:mod:`.lstm` covers every LSTM variant through ``tl.constexpr`` flags, :mod:`.slstm`,
:mod:`.gru`, :mod:`.elman`); :mod:`.loop` is the time loop shared by all, :mod:`.autograd` the
``torch.autograd.Function`` and ``run_direction``. Computed in float32 (float16 and bfloat16
layers are cast up by the layer, as for every backend) or float64.

Level 2 (:mod:`.persistent`): where the recurrent weights fit on chip (LSTM and GRU up to 64
units in float32, Elman up to 64; the LSTM variants with one cell a block and no gate feedback,
projected or not), one persistent kernel runs a direction's whole time loop, forward and backward,
in one launch each, with ``tl.dot`` for the recurrent products (:mod:`.persistent_lstm`,
:mod:`.persistent_units`). ``auto`` picks it where it applies; ``CAROUSEL_TRITON_LEVEL`` (``1``,
``2``) forces a level.

Where it runs:

- CUDA tensors on a GPU of compute capability 8.0 or newer (Ampere, Hopper, ...), with triton
  installed (``pip install 'carousel-lstm[gpu]'``). ``auto`` picks it there for every cell it
  runs that torch's cuDNN operators cannot run; for the stock cells (``torch.nn.LSTM``/``GRU``/
  ``RNN``) ``torch-native`` (cuDNN) stays cheaper in the cost model.
- CPU tensors, only under Triton's interpreter: with ``TRITON_INTERPRET=1`` set in the environment
  before the kernels are first imported, a layer that names ``backend="triton"`` runs the same
  kernels, interpreted by NumPy. This is how the test suite checks them without a GPU; it is slow
  and ``auto`` never picks it (its cost on the CPU is infinite).

What the kernels compute is a whitelist (:mod:`.coverage`): the LSTM variants, the sLSTM, GRU and
Elman with every option the reference backend has for them (the regularisers, resets and layer
normalisation included, :mod:`.options`), float32/float64/float16/bfloat16.
Anything else (a family without kernels here, a cell or layer option the kernels do not know,
triton missing, another device, a graph capture or ``torch.func`` transform) is reported by
:func:`unsupported` with the reason, and handed over or refused by the registry.

Adding a family: a module ``carousel.kernels.triton.{name}`` with a forward and a backward
pointwise kernel taking the buffers listed in :mod:`.plan`, and a ``plan(...)`` function; then its
name in :data:`.coverage.FAMILIES`. A new LSTM option is a new ``tl.constexpr`` flag in
:mod:`.lstm`'s two kernels and in its ``plan``, and its values in :data:`.coverage.SPEC_VALUES`.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from functools import cache, cached_property

import torch

from carousel.kernels.registry import Backend, register
from carousel.kernels.triton import coverage

INTERPRET_VARIABLE = "TRITON_INTERPRET"
MIN_CAPABILITY = (8, 0)
"""Compute capability the kernels are written for (``sm80``: Ampere and newer)."""


@dataclass(frozen=True)
class FamilyKernels:
    """A family's kernel module ``carousel.kernels.triton.{name}``, imported (and triton with it)
    on first use; :attr:`plan` is its ``plan(spec, hidden, out_size, batch, dtype, project,
    bias_hh)`` returning a :class:`~carousel.kernels.triton.plan.FamilyPlan`."""

    name: str

    @cached_property
    def plan(self):
        """The family's ``plan`` function."""
        return importlib.import_module(f"carousel.kernels.triton.{self.name}").plan


FAMILIES = {name: FamilyKernels(name) for name in coverage.FAMILIES}
"""The families the kernels run; a new family is one module and one entry in
:data:`.coverage.FAMILIES`."""


@cache
def missing_dependency() -> str | None:
    """``None`` if triton can be imported, else what is missing."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install 'carousel-lstm[gpu]')"
    return None


def interpreter_requested() -> bool:
    """Whether ``TRITON_INTERPRET`` asks for Triton's interpreter (``1``, ``true``, ``on``)."""
    return os.environ.get(INTERPRET_VARIABLE, "").strip().lower() in ("1", "true", "on", "yes")


def kernels_interpreted() -> bool | None:
    """Whether the kernels were built for the interpreter (``None``: not imported yet). Triton
    decides when a kernel is defined, so this is fixed by the environment at first import."""
    common = sys.modules.get("carousel.kernels.triton.common")
    return None if common is None else common.INTERPRETED


def _device_reason(device: torch.device) -> str | None:
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available to torch"
        capability = torch.cuda.get_device_capability(device)
        if capability < MIN_CAPABILITY:
            return (
                f"the triton kernels need compute capability {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]}"
                f" or newer; {device} has {capability[0]}.{capability[1]}"
            )
        return None
    if device.type == "cpu":
        if not interpreter_requested():
            return (
                "the triton kernels run on CUDA tensors; CPU tensors only under Triton's "
                f"interpreter ({INTERPRET_VARIABLE}=1 set before the kernels are first imported)"
            )
        if kernels_interpreted() is False:
            return (
                f"{INTERPRET_VARIABLE}=1 was set after the triton kernels were imported for the "
                "GPU; set it before the first import to run them on CPU tensors"
            )
        return None
    return f"the triton kernels run on CUDA tensors; got device {device}"


def unsupported(work) -> str | None:
    """Why the kernels cannot run ``work`` (a :class:`carousel.kernels.Workload`), or ``None``."""
    reason = missing_dependency()
    if reason is not None:
        return reason
    reason = _device_reason(work.device)
    if reason is not None:
        return reason
    reason = coverage.unsupported_call(work)
    if reason is not None:
        return reason
    if work.context is not None:
        return f"the triton kernels read tensor memory directly, which they cannot while {work.context}"
    return None


def cost(work) -> float:
    """Expected time in the registry's units (steps x layers x directions).

    Twice ``torch-native``'s: on a GPU cuDNN's fused stock cells are expected to be faster (not
    measured yet), so ``auto`` keeps them there and runs every other cell here, far below the
    reference loop. Infinite on the CPU: the interpreter is for tests, never chosen by ``auto``.
    """
    if work.device.type != "cuda":
        return float("inf")
    return 2.0 * work.steps * work.num_layers * work.num_directions


def run_direction(spec, x, state, weights, lengths=None, reverse=False, masks=None):
    """Run one direction of one layer; see :func:`carousel.kernels.triton.autograd.run_direction`."""
    from carousel.kernels.triton.autograd import run_direction as run

    return run(spec, x, state, weights, lengths, reverse, masks)


register(
    Backend(
        name="triton",
        description="Triton pointwise kernels + cuBLAS GEMMs on CUDA, hand-written BPTT; every cell",
        unsupported=unsupported,
        cost=cost,
        run_direction=run_direction,
        features=coverage.FEATURES,
    )
)
