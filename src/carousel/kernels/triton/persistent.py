r"""Level 2 of the triton backend: persistent kernels that run a direction's whole time loop in one
launch, for hidden sizes whose recurrent weights fit on chip.

Level 1 (:mod:`.loop`) launches a cuBLAS GEMM and a Triton kernel per step, so a short step costs
the launches, not the arithmetic. Here one forward and one backward launch cover all steps: a
program owns ``BLOCK_B`` (16) batch rows, loads its cell's :math:`W_{hh}` once, one
``(BLOCK_H, BLOCK_H)`` tile per gate block, and keeps the recurrent state in registers; per step it
does the recurrent product with ``tl.dot`` and the family's pointwise step
(:mod:`.persistent_lstm`, :mod:`.persistent_units`). Batch rows are independent, so programs never
synchronise: ``ceil(B / 16)`` programs run side by side, each through all ``T`` steps. The
backward kernel walks the steps back, writes each step's :math:`\partial net`, and carries the
error to :math:`h_{t-1}` with ``tl.dot`` on the same tiles; the weight gradients stay large GEMMs
after the loop (level 1's, :func:`.loop._weight_gradients`), and the input projection stays one GEMM before
it (:mod:`.autograd`). The buffers are level 1's (:class:`.loop.Forward`): both levels compute
the same numbers, up to the order of the sums in the recurrent product.

**The on-chip budget** (:data:`ON_CHIP_BYTES`, 64 KiB, and :data:`MAX_BLOCK_H`, 64): the weight
tiles of one kernel, ``(gate blocks + 1 with a projection) x BLOCK_H x BLOCK_P x`` the element
size, at most 64 KiB, and a tile side ``BLOCK_H`` (the hidden size padded to a power of two >= 16,
as ``tl.dot`` on sm80/sm90 needs operands of at least 16 in every dimension; ``BLOCK_P`` likewise
the projection's size, ``BLOCK_H`` without one) of at most 64. Why: an SM of sm80 (A100) and sm90
(H100) has 256 KiB of registers (64 K 32-bit registers, at most 255 a thread) and 164 / 228 KiB
of shared memory, and a program of 8 warps (256 threads) holding 64 KiB of weights spends 64
registers a thread on them. A float32 ``tl.dot`` in ``ieee`` precision does not use the tensor
cores (they multiply float32 as TF32 only), so Triton computes it with FMAs in a layout that
spreads a tile's rows over each thread's registers: what ptxas reports for sm80/sm90 (with
lengths, in the number of registers a thread and bytes spilled, forward / backward) sets the
limits. LSTM float32 ``H = 64``: 255 (60-76 bytes spilled) / 176-184; ``H = 32``: 150 / 102;
``H = 64`` projected to 32: 255 (8-16 bytes spilled) / 186-190. GRU float32 ``H = 64``: 248-250
/ 184-190. Elman float32 ``H = 64``: 174 / 80; ``H = 128`` (64 KiB, within the bytes) spills
5.7 KB in the forward kernel, hence the tile limit. float64: LSTM ``H = 32`` 186-194 / 178-190,
Elman ``H = 64`` 102 / 118. Shared memory (operands staged for ``tl.dot``) stays under 124 KiB
(LSTM ``H = 64`` backward), within both GPUs' limits. Programs of at least 16 KiB of weights run
8 warps, smaller ones 4. What fits:

======  ===========  ==========  ==========
cell    gate blocks  float32     float64
======  ===========  ==========  ==========
LSTM    4 (3 for     H <= 64     H <= 32
        NIG/NFG/NOG)
GRU     3            H <= 64     H <= 32
Elman   1            H <= 64     H <= 64
======  ===========  ==========  ==========

What level 2 runs (:func:`unsupported` says why not otherwise): the LSTM variants with one cell per
memory block and no gate feedback (vanilla, peephole, NIG, NFG, NOG, NIAF, NOAF, NP, CIFG, any
activations, the truncated gradient), with or without a projection (``proj_size``: one more tile,
``(BLOCK_H, BLOCK_P)``, of :math:`W_{hr}`, and the recurrent tiles ``(BLOCK_P, BLOCK_H)``), the
GRU, Elman; float32 and float64 (float16 and bfloat16 layers reach the backend as float32);
lengths (rows past their length keep their state) and both directions, as level 1; the weight
drop (the layer masks the weights before the kernels see them). Everything else runs on level 1:
recurrent and candidate dropout, zoneout, resets and layer normalisation (:mod:`.options`; any
field of :class:`~.options.Options` in use sends a call there) among them.

**Choosing the level**: ``CAROUSEL_TRITON_LEVEL`` (:data:`LEVEL_VARIABLE`), read at each call:
``auto`` (or unset) runs level 2 where it applies and level 1 otherwise; ``1`` always level 1;
``2`` level 2, and a call level 2 does not run raises ``ValueError`` with the reason (for tests
and benchmarks, never a silent fall-back). Its GPU speed is not measured yet.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import triton
from torch import Tensor

from carousel.cells import CellSpec
from carousel.kernels.triton import coverage, persistent_lstm, persistent_units
from carousel.kernels.triton.loop import GRADIENTS, Call, Forward, _weight_gradients
from carousel.kernels.triton.options import Options
from carousel.kernels.triton.persistent_common import padded
from carousel.kernels.triton.plan import FamilyPlan

LEVEL_VARIABLE = "CAROUSEL_TRITON_LEVEL"
"""Environment variable choosing the level: ``auto`` (default), ``1`` or ``2``."""

LEVELS = ("auto", "1", "2")

ON_CHIP_BYTES = 64 * 1024
"""The most bytes of recurrent weight tiles a persistent kernel holds (see the module docstring)."""

MAX_BLOCK_H = 64
"""The largest tile side: at 128 a float32 ``tl.dot`` in FMAs spills (see the module docstring)."""

BLOCK_B = 16
"""Batch rows per program: the smallest ``tl.dot`` tile, so that as many programs as possible share
a batch (a persistent program is bound by its step's latency, not by arithmetic)."""

KERNELS = {
    "lstm": (persistent_lstm, "lstm_persistent_forward", "lstm_persistent_backward"),
    "gru": (persistent_units, "gru_persistent_forward", "gru_persistent_backward"),
    "elman": (persistent_units, "elman_persistent_forward", "elman_persistent_backward"),
}
"""The families with persistent kernels: their module and kernel names."""


def weight_bytes(spec: CellSpec, hidden: int, out_size: int, dtype: torch.dtype) -> int:
    """Bytes of the weight tiles a persistent kernel of ``spec`` holds on chip: a
    ``(BLOCK_H, BLOCK_P)`` tile per gate block of :math:`W_{hh}` and, with a projection
    (``out_size < hidden``), one of :math:`W_{hr}`."""
    blocks = spec.num_gate_rows(hidden) // hidden  # LSTM: 3 or 4, GRU: 3, Elman: 1
    blocks += out_size != hidden
    tile = padded(hidden) * padded(out_size)
    return blocks * tile * torch.empty(0, dtype=dtype).element_size()


SPEC_FIELDS = frozenset(
    {
        "family", "variant", "gates", "gate_activation", "candidate_activation",
        "output_activation", "peepholes", "coupled_input_forget", "gate_feedback", "block_size",
        "truncate_gradient", "num_biases", "cell_bias", "num_heads", "forget_activation",
        "reference",
    }
)  # fmt: skip
"""The :class:`~carousel.cells.CellSpec` fields the persistent kernels know (``gate_feedback`` and
``block_size`` only at one value, see :func:`unsupported`); any other field, e.g.
``layer_norm``, only at its default."""


def _options_reason(spec: CellSpec, options: Options | None) -> str | None:
    """The cell option or call option (masks, resets, layer norm) the persistent kernels do not
    implement, or ``None``; every field of ``options`` counts, so a new one is refused too."""
    for field in dataclasses.fields(spec):
        value = getattr(spec, field.name)
        if field.name not in SPEC_FIELDS and not coverage._at_default(field, value):
            return f"the cell option {field.name}={value!r} is not in the persistent kernels"
    if options is not None:
        for field in dataclasses.fields(options):
            value = getattr(options, field.name)
            if value is not None and value is not False:
                return f"the call's {field.name} is not in the persistent kernels (level 1 runs it)"
    return None


def unsupported(
    spec: CellSpec, hidden: int, dtype: torch.dtype, project: bool, out_size: int | None = None,
    options: Options | None = None,
) -> str | None:  # fmt: skip
    """Why the persistent kernels do not run this call (``dtype`` the compute dtype, float32 or
    float64; ``out_size`` the projection's size, ``hidden`` without one; ``options`` the call's
    masks, resets and layer normalisation), or ``None``."""
    out_size = hidden if out_size is None or not project else out_size
    if spec.family not in KERNELS:
        return f"no persistent kernel for the {spec.family!r} family (variant {spec.variant!r})"
    reason = _options_reason(spec, options)
    if reason is not None:
        return reason
    if project and spec.family != "lstm":
        return f"projections (proj_size > 0) of the {spec.family!r} family"
    if spec.family == "lstm":
        if spec.block_size != 1:
            return f"memory blocks of {spec.block_size} cells (the persistent LSTM has 1 a block)"
        if spec.feedback_gates:
            return f"gate feedback ({spec.gate_feedback!r}) is not in the persistent LSTM"
    if padded(hidden) > MAX_BLOCK_H:
        return (
            f"hidden size {hidden} (padded to {padded(hidden)}) is over the persistent kernels' "
            f"tile limit of {MAX_BLOCK_H}"
        )
    needed = weight_bytes(spec, hidden, out_size, dtype)
    if needed > ON_CHIP_BYTES:
        return (
            f"the recurrent weights need {needed} bytes on chip (hidden size {hidden} padded to "
            f"{padded(hidden)}, {dtype}); the budget is {ON_CHIP_BYTES}"
        )
    return None


def requested_level() -> str:
    """The level :data:`LEVEL_VARIABLE` asks for: ``auto``, ``1`` or ``2``."""
    value = os.environ.get(LEVEL_VARIABLE, "").strip().lower() or "auto"
    if value not in LEVELS:
        raise ValueError(
            f"{LEVEL_VARIABLE} must be one of {', '.join(LEVELS)} (or unset); got {value!r}"
        )
    return value


def choose_level(
    spec: CellSpec, hidden: int, dtype: torch.dtype, project: bool, out_size: int | None = None,
    options: Options | None = None,
) -> int:  # fmt: skip
    """1 or 2 for this call, by :func:`requested_level` and :func:`unsupported`; raises
    ``ValueError`` if level 2 is asked for and cannot run the call."""
    requested = requested_level()
    if requested == "1":
        return 1
    reason = unsupported(spec, hidden, dtype, project, out_size, options)
    if reason is None:
        return 2
    if requested == "2":
        raise ValueError(f"{LEVEL_VARIABLE}=2 asks for the persistent kernels, but: {reason}")
    return 1


def plan(
    level_one: FamilyPlan, spec: CellSpec, hidden: int, out_size: int, batch: int, dtype,
    project: bool, bias_hh: bool,
) -> FamilyPlan:  # fmt: skip
    """``level_one`` (the family's level-1 plan, for the buffer sizes) turned into the persistent
    kernels' plan: one program per ``BLOCK_B`` rows, ``BLOCK_H`` units, 4 or 8 warps."""
    module, forward, backward = KERNELS[spec.family]
    runtime, constants = module.plan(spec, hidden, out_size, dtype, project, bias_hh)
    block_h = padded(hidden)
    warps = 8 if weight_bytes(spec, hidden, out_size, dtype) >= 16 * 1024 else 4
    return dataclasses.replace(
        level_one,
        grid=(triton.cdiv(batch, BLOCK_B),),
        runtime=runtime,
        constants={**constants, "BLOCK_B": BLOCK_B, "BLOCK_H": block_h, "num_warps": warps},
        forward=getattr(module, forward),
        backward=getattr(module, backward),
        level=2,
    )


def forward(
    call: Call,
    gates_x: Tensor,
    source0: Tensor,
    cell0: Tensor,
    weight_hh: Tensor,
    weight_peephole: Tensor | None,
    weight_hr: Tensor | None,
    bias_hh: Tensor | None,
    norm_hh: Tensor | None = None,
    norm_cell: Tensor | None = None,
) -> Forward:
    """:func:`.loop.forward`'s contract in one launch (no layer normalisation: ``norm_hh`` and
    ``norm_cell`` are ``None``, see :func:`unsupported`)."""
    if norm_hh is not None or norm_cell is not None:  # unreachable past choose_level
        raise ValueError("the persistent kernels do not implement layer normalisation")
    plan = call.plan
    steps, batch, _ = gates_x.shape
    empty = gates_x.new_empty
    source = empty(steps + 1, batch, plan.source_size)
    source[0] = source0
    cell = empty(steps + 1, batch, plan.cell_size)
    cell[0] = cell0
    saved = empty(steps, batch, plan.saved_size)
    y = empty(steps, batch, call.hidden) if call.project else empty(0)
    placeholder = source
    if steps > 0:
        plan.forward[plan.grid](
            gates_x, source, cell, saved, y if call.project else placeholder,
            weight_hh.contiguous(), placeholder if weight_hr is None else weight_hr.contiguous(),
            placeholder if weight_peephole is None else weight_peephole,
            placeholder if bias_hh is None else bias_hh,
            placeholder if call.lengths is None else call.lengths,
            steps, batch, call.hidden, *plan.runtime, **call.constants(),
        )  # fmt: skip
    output = source[1:, :, : call.out_size]
    output = output.clone() if call.active is None else output * call.active
    return Forward(
        output, source[steps].clone(), cell[steps].clone(), source, cell, saved, y,
        source[:steps], cell[:steps], cell[1:], None, None, None,
    )  # fmt: skip


def backward(
    call: Call,
    saved: Forward,
    weight_hh: Tensor,
    weight_peephole: Tensor | None,
    weight_hr: Tensor | None,
    d_output: Tensor,
    d_source_n: Tensor,
    d_cell_n: Tensor,
    wanted: frozenset[str] = frozenset(GRADIENTS),
    norm_hh: Tensor | None = None,
    norm_cell: Tensor | None = None,
) -> dict[str, Tensor | None]:
    """:func:`.loop.backward`'s contract: the loop in one launch, then the weight gradients."""
    plan = call.plan
    steps, batch, _ = d_output.shape
    d_output = d_output.contiguous()
    if call.active is not None:  # outputs past a length are constant zeros
        d_output = d_output * call.active
    d_source = d_source_n.contiguous().clone()  # in: error reaching source[T]; out: source[0]
    d_cell = d_cell_n.contiguous().clone()
    d_net = d_output.new_empty(steps, batch, plan.rows)
    d_recurrent = d_output.new_empty(steps, batch, plan.rows) if plan.recurrent_gradient else d_net
    d_h = d_output.new_empty(steps, batch, call.out_size) if call.project else None
    placeholder = d_source
    if steps > 0:
        last = steps - 1
        plan.backward[plan.grid](
            saved.saved[last], saved.source[last], saved.cell[last], d_output[last], d_source,
            d_cell, d_net[last], d_recurrent[last], placeholder if d_h is None else d_h[last],
            weight_hh.contiguous(), placeholder if weight_hr is None else weight_hr.contiguous(),
            placeholder if weight_peephole is None else weight_peephole,
            placeholder if call.lengths is None else call.lengths,
            steps, batch, call.hidden, *plan.runtime, **call.constants(),
        )  # fmt: skip
    grads = {"gates_x": d_net, "source0": d_source, "cell0": d_cell}
    grads |= _weight_gradients(
        call, saved, wanted, d_net, d_recurrent, d_recurrent, d_h, None, weight_peephole
    )  # level 1's GEMMs and reductions after the loop
    return grads
