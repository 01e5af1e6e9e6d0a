r"""The persistent kernels (level 2) of the GRU and the Elman network: the whole loop in one launch.

Programs as in :mod:`.persistent_lstm`: ``BLOCK_B`` rows x all units, :math:`W_{hh}`'s gate blocks
on chip as ``(BLOCK_H, BLOCK_H)`` tiles, :math:`h` in registers; per step one ``tl.dot`` per gate
block, then level 1's pointwise step (:func:`.pointwise.gru_cell`, :func:`.pointwise.elman_cell`;
same ``saved`` layout). Backward, from the last step: the pointwise chain rule, then the error reaching
:math:`h_{t-1}` as :math:`\delta u + \sum_{gate} \partial net_{gate} W_{gate}` (GRU, with
:math:`\partial net_n = r\, \partial a_n`) or :math:`\partial a_t W_{hh}` (Elman). Buffers and the
pointer walk as in :mod:`.persistent_lstm`; the GRU also writes ``d_recurrent (T, B, 3H)``.
"""

from __future__ import annotations

import triton.language as tl

from carousel.cells import CellSpec
from carousel.kernels.triton.common import COMPUTE_TYPES, code, load
from carousel.kernels.triton.persistent_common import (
    jit_loop,
    matmul,
    row_tile,
    step_mask,
    weight_tile,
)
from carousel.kernels.triton.pointwise import (
    elman_cell,
    elman_cell_backward,
    gru_cell,
    gru_cell_backward,
)

__all__ = [
    "elman_persistent_backward",
    "elman_persistent_forward",
    "gru_persistent_backward",
    "gru_persistent_forward",
    "plan",
]


@jit_loop
def gru_persistent_forward(
    gates_x, source, cell, saved, y, weight_hh, weight_hr, peephole, bias_hh, lengths, steps,
    batch, hidden,
    GATE: tl.constexpr, CANDIDATE: tl.constexpr, HAS_BIAS_HH: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, COMPUTE: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):  # fmt: skip
    """All GRU steps of ``BLOCK_B`` rows: ``source[1:]`` (:math:`h_t`) and ``saved``
    (:math:`r, u, n, m`)."""
    rows, units, mask, length = row_tile(lengths, batch, hidden, BLOCK_B, BLOCK_H, HAS_LENGTHS)
    at = rows * hidden + units
    packed = rows * 3 * hidden + units
    kept = rows * 4 * hidden + units
    w_r = weight_tile(weight_hh, 0, hidden, hidden, True, BLOCK_H, BLOCK_H, COMPUTE)
    w_z = weight_tile(weight_hh, hidden, hidden, hidden, True, BLOCK_H, BLOCK_H, COMPUTE)
    w_n = weight_tile(weight_hh, 2 * hidden, hidden, hidden, True, BLOCK_H, BLOCK_H, COMPUTE)
    if HAS_BIAS_HH:
        b_r = load(bias_hh + units, units < hidden, COMPUTE)
        b_z = load(bias_hh + hidden + units, units < hidden, COMPUTE)
        b_n = load(bias_hh + 2 * hidden + units, units < hidden, COMPUTE)
    h = load(source + at, mask, COMPUTE)
    step_gates = gates_x
    step_saved = saved
    step_source = source + batch * hidden
    for t in range(steps):
        keep = step_mask(length, rows, mask, t, HAS_LENGTHS)
        net_r = matmul(h, w_r)
        net_z = matmul(h, w_z)
        recurrent_n = matmul(h, w_n)
        if HAS_BIAS_HH:
            net_r += b_r
            net_z += b_z
            recurrent_n += b_n
        a_r = load(step_gates + packed, mask, COMPUTE)
        a_z = load(step_gates + packed + hidden, mask, COMPUTE)
        a_n = load(step_gates + packed + 2 * hidden, mask, COMPUTE)
        reset, update, new, h_new = gru_cell(
            net_r, net_z, recurrent_n, a_r, a_z, a_n, h, h, GATE, CANDIDATE, False
        )
        h = tl.where(keep, h_new, h)
        tl.store(step_source + at, h, mask=mask)
        tl.store(step_saved + kept, reset, mask=mask)
        tl.store(step_saved + kept + hidden, update, mask=mask)
        tl.store(step_saved + kept + 2 * hidden, new, mask=mask)
        tl.store(step_saved + kept + 3 * hidden, recurrent_n, mask=mask)
        step_gates += batch * 3 * hidden
        step_saved += batch * 4 * hidden
        step_source += batch * hidden


@jit_loop
def gru_persistent_backward(
    saved, source, cell, d_output, d_source, d_cell, d_net, d_recurrent, d_h_out, weight_hh,
    weight_hr, peephole, lengths, steps, batch, hidden,
    GATE: tl.constexpr, CANDIDATE: tl.constexpr, HAS_BIAS_HH: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, COMPUTE: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):  # fmt: skip
    """Backpropagation through all GRU steps of ``BLOCK_B`` rows (equations in :mod:`.gru`);
    ``saved``, ``source`` (:math:`h_{t-1}`), ``d_output``, ``d_net`` and ``d_recurrent`` point at
    step ``T - 1``."""
    rows, units, mask, length = row_tile(lengths, batch, hidden, BLOCK_B, BLOCK_H, HAS_LENGTHS)
    at = rows * hidden + units
    packed = rows * 3 * hidden + units
    kept = rows * 4 * hidden + units
    w_r = weight_tile(weight_hh, 0, hidden, hidden, False, BLOCK_H, BLOCK_H, COMPUTE)
    w_z = weight_tile(weight_hh, hidden, hidden, hidden, False, BLOCK_H, BLOCK_H, COMPUTE)
    w_n = weight_tile(weight_hh, 2 * hidden, hidden, hidden, False, BLOCK_H, BLOCK_H, COMPUTE)
    d_h = load(d_source + at, mask, COMPUTE)
    step_saved = saved
    step_source = source
    step_d_output = d_output
    step_d_net = d_net
    step_d_recurrent = d_recurrent
    for s in range(steps):
        keep = step_mask(length, rows, mask, steps - 1 - s, HAS_LENGTHS)
        reset = load(step_saved + kept, mask, COMPUTE)
        update = load(step_saved + kept + hidden, mask, COMPUTE)
        new = load(step_saved + kept + 2 * hidden, mask, COMPUTE)
        recurrent_n = load(step_saved + kept + 3 * hidden, mask, COMPUTE)
        h_prev = load(step_source + at, mask, COMPUTE)
        delta = d_h + load(step_d_output + at, mask, COMPUTE)
        d_r, d_z, d_n = gru_cell_backward(
            delta, h_prev, reset, update, new, recurrent_n, delta, GATE, CANDIDATE, False
        )
        d_z = tl.where(keep, d_z, 0.0)
        d_r = tl.where(keep, d_r, 0.0)
        d_n = tl.where(keep, d_n, 0.0)
        d_recurrent_n = d_n * reset
        tl.store(step_d_net + packed, d_r, mask=mask)
        tl.store(step_d_net + packed + hidden, d_z, mask=mask)
        tl.store(step_d_net + packed + 2 * hidden, d_n, mask=mask)
        tl.store(step_d_recurrent + packed, d_r, mask=mask)
        tl.store(step_d_recurrent + packed + hidden, d_z, mask=mask)
        tl.store(step_d_recurrent + packed + 2 * hidden, d_recurrent_n, mask=mask)
        d_h = tl.where(keep, delta * update, d_h)
        d_h += matmul(d_r, w_r)
        d_h += matmul(d_z, w_z)
        d_h += matmul(d_recurrent_n, w_n)
        step_saved -= batch * 4 * hidden
        step_source -= batch * hidden
        step_d_output -= batch * hidden
        step_d_net -= batch * 3 * hidden
        step_d_recurrent -= batch * 3 * hidden
    tl.store(d_source + at, d_h, mask=mask)


@jit_loop
def elman_persistent_forward(
    gates_x, source, cell, saved, y, weight_hh, weight_hr, peephole, bias_hh, lengths, steps,
    batch, hidden,
    CANDIDATE: tl.constexpr, HAS_LENGTHS: tl.constexpr, COMPUTE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """All Elman steps of ``BLOCK_B`` rows: :math:`h_t = \\phi(a_t + h_{t-1} W_{hh}^T)` into
    ``source[1:]``."""
    rows, units, mask, length = row_tile(lengths, batch, hidden, BLOCK_B, BLOCK_H, HAS_LENGTHS)
    at = rows * hidden + units
    weight = weight_tile(weight_hh, 0, hidden, hidden, True, BLOCK_H, BLOCK_H, COMPUTE)
    h = load(source + at, mask, COMPUTE)
    step_gates = gates_x
    step_source = source + batch * hidden
    for t in range(steps):
        keep = step_mask(length, rows, mask, t, HAS_LENGTHS)
        total = load(step_gates + at, mask, COMPUTE) + matmul(h, weight)
        h = tl.where(keep, elman_cell(total, CANDIDATE), h)
        tl.store(step_source + at, h, mask=mask)
        step_gates += batch * hidden
        step_source += batch * hidden


@jit_loop
def elman_persistent_backward(
    saved, source, cell, d_output, d_source, d_cell, d_net, d_recurrent, d_h_out, weight_hh,
    weight_hr, peephole, lengths, steps, batch, hidden,
    CANDIDATE: tl.constexpr, HAS_LENGTHS: tl.constexpr, COMPUTE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """Backpropagation through all Elman steps of ``BLOCK_B`` rows; ``source`` points at
    :math:`h_{T-1}` (step ``T - 1``'s input), :math:`h_t` is one slice on."""
    rows, units, mask, length = row_tile(lengths, batch, hidden, BLOCK_B, BLOCK_H, HAS_LENGTHS)
    at = rows * hidden + units
    weight = weight_tile(weight_hh, 0, hidden, hidden, False, BLOCK_H, BLOCK_H, COMPUTE)
    d_h = load(d_source + at, mask, COMPUTE)
    step_source = source
    step_d_output = d_output
    step_d_net = d_net
    for s in range(steps):
        keep = step_mask(length, rows, mask, steps - 1 - s, HAS_LENGTHS)
        delta = d_h + load(step_d_output + at, mask, COMPUTE)
        h = load(step_source + batch * hidden + at, mask, COMPUTE)
        d_a = tl.where(keep, elman_cell_backward(delta, h, CANDIDATE), 0.0)
        tl.store(step_d_net + at, d_a, mask=mask)
        d_h = tl.where(keep, 0.0, d_h) + matmul(d_a, weight)
        step_source -= batch * hidden
        step_d_output -= batch * hidden
        step_d_net -= batch * hidden
    tl.store(d_source + at, d_h, mask=mask)


def plan(
    spec: CellSpec, hidden: int, out_size: int, dtype, project: bool, bias_hh: bool
) -> tuple[tuple[int, ...], dict]:
    """The runtime arguments and constexpr flags of the GRU's or Elman's persistent kernels."""
    if spec.family == "gru":
        constants = dict(
            GATE=code(spec.gate_activation),
            CANDIDATE=code(spec.candidate_activation),
            HAS_BIAS_HH=bias_hh,
        )
    else:
        constants = {"CANDIDATE": code(spec.candidate_activation)}
    return (), {**constants, "COMPUTE": COMPUTE_TYPES[dtype]}
