r"""The LSTM's persistent kernels (level 2): the whole time loop of one direction in one launch.

A program owns ``BLOCK_B`` batch rows and every unit of them (``BLOCK_H``: the hidden size padded
to a power of two >= 16), loads each gate's block of :math:`W_{hh}` once into a
``(BLOCK_H, BLOCK_H)`` tile, and keeps :math:`h` and :math:`c` in registers across the steps;
per step the recurrent product is one ``tl.dot`` per gate, followed by the pointwise step of
:mod:`.lstm` (the same equations, here with one cell per memory block):

.. math::
    i, f &= \sigma(a_{i,f} + h_{t-1} W_{i,f}^T + p_{i,f} \odot c_{t-1}), \quad
    z = g(a_g + h_{t-1} W_g^T) \\
    c_t &= f \odot c_{t-1} + i \odot z, \quad o = \sigma(a_o + h_{t-1} W_o^T + p_o \odot c_t),
    \quad h_t = o \odot h(c_t)

:func:`lstm_persistent_backward` runs the steps backwards with the chain rule of
:func:`.lstm.lstm_backward_step` and carries the error to :math:`h_{t-1}` as
:math:`\sum_{gate} \partial net_{gate} W_{gate}` (one ``tl.dot`` per gate; none under the truncated
gradient). Rows are independent, so programs never wait for each other.

Variants are the ``tl.constexpr`` flags of :mod:`.lstm` that cost nothing here: which gates exist,
coupled input and forget gates, peepholes, the activations, the truncated gradient, lengths.
With a projection (``PROJECT``) :math:`h_t = y_t W_{hr}^T` is one more ``tl.dot`` per step
(``BLOCK_P``: the projection's size padded like ``BLOCK_H``), and the error at :math:`y_t` is
:math:`\delta h_t W_{hr}`. Memory blocks of more than one cell and gate feedback stay on level 1
(:func:`.persistent.unsupported`).

Buffers are the loop's (:mod:`.loop`), whole: ``gates_x``, ``saved`` ``(T, B, G)``, ``source``
``(T + 1, B, P)`` (``P = H`` without a projection), ``cell`` ``(T + 1, B, H)``, ``y_out``
``(T, B, H)`` and ``d_h_out`` ``(T, B, P)`` with a projection; backward reads them from the last
step back (its pointers arrive at step ``T - 1``) and writes ``d_net (T, B, G)``, and the errors
reaching the initial state into ``d_source`` ``(B, P)`` and ``d_cell`` ``(B, H)``, which hold the
errors reaching the final state on entry. Pointers move by one step's slice per iteration
(64-bit pointer arithmetic: no int32 offset of ``t B G`` that could overflow).
"""

from __future__ import annotations

import triton.language as tl

from carousel.cells import CellSpec
from carousel.kernels.triton.common import COMPUTE_TYPES, activate, code, derivative, load
from carousel.kernels.triton.persistent_common import (
    jit_loop,
    matmul,
    padded,
    row_tile,
    step_mask,
    weight_tile,
)

__all__ = ["lstm_persistent_backward", "lstm_persistent_forward", "plan"]


@jit_loop
def lstm_persistent_forward(
    gates_x, source, cell, saved, y_out, weight_hh, weight_hr, peephole, bias_hh, lengths, steps,
    batch, hidden,
    out_size, rows_g, row_i, row_f, row_g, row_o,
    GATE: tl.constexpr, CANDIDATE: tl.constexpr, OUTPUT: tl.constexpr, HAS_I: tl.constexpr,
    HAS_F: tl.constexpr, HAS_O: tl.constexpr, COUPLED: tl.constexpr, PEEP_I: tl.constexpr,
    PEEP_F: tl.constexpr, PEEP_O: tl.constexpr, PROJECT: tl.constexpr, TRUNCATE: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, COMPUTE: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """All ``steps`` LSTM steps of ``BLOCK_B`` rows: writes ``source[1:]`` (:math:`h_t`),
    ``cell[1:]`` (:math:`c_t`), the activations into ``saved`` and, with ``PROJECT``,
    :math:`y_t` into ``y_out`` (zero at held rows) and :math:`h_t = y_t W_{hr}^T`; rows past
    their length keep their state."""
    rows, units, mask, length = row_tile(lengths, batch, hidden, BLOCK_B, BLOCK_H, HAS_LENGTHS)
    outs = tl.arange(0, BLOCK_P)[None, :]
    out_mask = (rows < batch) & (outs < out_size)
    at = rows * hidden + units  # (BLOCK_B, BLOCK_H) in a (B, H) buffer
    at_out = rows * out_size + outs  # (BLOCK_B, BLOCK_P) in a (B, P) buffer
    packed = rows * rows_g + units  # in a (B, G) buffer, plus the gate's first row
    h = load(source + at_out, out_mask, COMPUTE)
    c = load(cell + at, mask, COMPUTE)
    w_g = weight_tile(weight_hh, row_g, hidden, out_size, True, BLOCK_H, BLOCK_P, COMPUTE)
    if HAS_I:
        w_i = weight_tile(weight_hh, row_i, hidden, out_size, True, BLOCK_H, BLOCK_P, COMPUTE)
    if HAS_F:
        w_f = weight_tile(weight_hh, row_f, hidden, out_size, True, BLOCK_H, BLOCK_P, COMPUTE)
    if HAS_O:
        w_o = weight_tile(weight_hh, row_o, hidden, out_size, True, BLOCK_H, BLOCK_P, COMPUTE)
    if PROJECT:
        w_r = weight_tile(weight_hr, 0, out_size, hidden, True, BLOCK_P, BLOCK_H, COMPUTE)
    if PEEP_I >= 0:
        p_i = load(peephole + PEEP_I * hidden + units, units < hidden, COMPUTE)
    if PEEP_F >= 0:
        p_f = load(peephole + PEEP_F * hidden + units, units < hidden, COMPUTE)
    if PEEP_O >= 0:
        p_o = load(peephole + PEEP_O * hidden + units, units < hidden, COMPUTE)
    one = tl.full([BLOCK_B, BLOCK_H], 1.0, COMPUTE)
    step_gates = gates_x
    step_saved = saved
    step_source = source + batch * out_size  # source[t + 1]
    step_cell = cell + batch * hidden
    step_y = y_out
    for t in range(steps):
        keep = step_mask(length, rows, mask, t, HAS_LENGTHS)
        input_gate = one
        forget_gate = one
        output_gate = one
        if HAS_I:
            net_i = load(step_gates + packed + row_i, mask, COMPUTE) + matmul(h, w_i)
            if PEEP_I >= 0:
                net_i += p_i * c
            input_gate = activate(net_i, GATE)
            tl.store(step_saved + packed + row_i, input_gate, mask=mask)
        if HAS_F:
            net_f = load(step_gates + packed + row_f, mask, COMPUTE) + matmul(h, w_f)
            if PEEP_F >= 0:
                net_f += p_f * c
            forget_gate = activate(net_f, GATE)
            tl.store(step_saved + packed + row_f, forget_gate, mask=mask)
        elif COUPLED:
            forget_gate = 1.0 - input_gate
        net_z = load(step_gates + packed + row_g, mask, COMPUTE) + matmul(h, w_g)
        candidate = activate(net_z, CANDIDATE)
        tl.store(step_saved + packed + row_g, candidate, mask=mask)
        c_new = forget_gate * c + input_gate * candidate
        if HAS_O:
            net_o = load(step_gates + packed + row_o, mask, COMPUTE) + matmul(h, w_o)
            if PEEP_O >= 0:
                net_o += p_o * c_new
            output_gate = activate(net_o, GATE)
            tl.store(step_saved + packed + row_o, output_gate, mask=mask)
        y = output_gate * activate(c_new, OUTPUT)
        c = tl.where(keep, c_new, c)  # padded units stay zero, held rows keep their state
        if PROJECT:  # y at held rows is zero (adds nothing to the gradient of W_hr)
            y = tl.where(keep, y, 0.0)
            tl.store(step_y + at, y, mask=mask)
            h = tl.where(step_mask(length, rows, out_mask, t, HAS_LENGTHS), matmul(y, w_r), h)
            step_y += batch * hidden
        else:
            h = tl.where(keep, y, h)
        tl.store(step_cell + at, c, mask=mask)
        tl.store(step_source + at_out, h, mask=out_mask)
        step_gates += batch * rows_g
        step_saved += batch * rows_g
        step_source += batch * out_size
        step_cell += batch * hidden


@jit_loop
def lstm_persistent_backward(
    saved, source, cell, d_output, d_source, d_cell, d_net, d_recurrent, d_h_out, weight_hh,
    weight_hr, peephole, lengths, steps, batch, hidden,
    out_size, rows_g, row_i, row_f, row_g, row_o,
    GATE: tl.constexpr, CANDIDATE: tl.constexpr, OUTPUT: tl.constexpr, HAS_I: tl.constexpr,
    HAS_F: tl.constexpr, HAS_O: tl.constexpr, COUPLED: tl.constexpr, PEEP_I: tl.constexpr,
    PEEP_F: tl.constexpr, PEEP_O: tl.constexpr, PROJECT: tl.constexpr, TRUNCATE: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, COMPUTE: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    r"""Backpropagation through all steps of ``BLOCK_B`` rows, from the last.

    ``saved``, ``cell`` (:math:`c_{t-1}`; :math:`c_t` one slice on), ``d_output``, ``d_net`` and
    ``d_h_out`` point at step ``T - 1``. With :math:`\delta h` the error at :math:`h_t`, the error
    at :math:`y_t` is :math:`\delta h` (or :math:`\delta h\, W_{hr}` with ``PROJECT``, which also
    writes :math:`\delta h` into ``d_h_out`` for the gradient of :math:`W_{hr}`); then the
    equations of :func:`.lstm.lstm_backward_step` with one cell per block, and
    :math:`\delta h_{t-1} = \sum_{gate} \partial net_{gate} W_{gate}` (only the error held at
    rows past their length under ``TRUNCATE``). ``d_net`` is zero at those rows.
    """
    rows, units, mask, length = row_tile(lengths, batch, hidden, BLOCK_B, BLOCK_H, HAS_LENGTHS)
    outs = tl.arange(0, BLOCK_P)[None, :]
    out_mask = (rows < batch) & (outs < out_size)
    at = rows * hidden + units
    at_out = rows * out_size + outs
    packed = rows * rows_g + units
    d_h = load(d_source + at_out, out_mask, COMPUTE)  # the error reaching h_t from later steps
    d_c = load(d_cell + at, mask, COMPUTE)  # the error reaching c_t from later steps
    if not TRUNCATE:
        w_g = weight_tile(weight_hh, row_g, hidden, out_size, False, BLOCK_H, BLOCK_P, COMPUTE)
        if HAS_I:
            w_i = weight_tile(weight_hh, row_i, hidden, out_size, False, BLOCK_H, BLOCK_P, COMPUTE)
        if HAS_F:
            w_f = weight_tile(weight_hh, row_f, hidden, out_size, False, BLOCK_H, BLOCK_P, COMPUTE)
        if HAS_O:
            w_o = weight_tile(weight_hh, row_o, hidden, out_size, False, BLOCK_H, BLOCK_P, COMPUTE)
    if PROJECT:
        w_r = weight_tile(weight_hr, 0, out_size, hidden, False, BLOCK_P, BLOCK_H, COMPUTE)
    if PEEP_I >= 0:
        p_i = load(peephole + PEEP_I * hidden + units, units < hidden, COMPUTE)
    if PEEP_F >= 0:
        p_f = load(peephole + PEEP_F * hidden + units, units < hidden, COMPUTE)
    if PEEP_O >= 0:
        p_o = load(peephole + PEEP_O * hidden + units, units < hidden, COMPUTE)
    one = tl.full([BLOCK_B, BLOCK_H], 1.0, COMPUTE)
    step_saved = saved
    step_cell = cell
    step_d_output = d_output
    step_d_net = d_net
    step_d_h = d_h_out
    for s in range(steps):
        step = steps - 1 - s
        keep = step_mask(length, rows, mask, step, HAS_LENGTHS)
        c_prev = load(step_cell + at, mask, COMPUTE)
        c = load(step_cell + batch * hidden + at, mask, COMPUTE)
        input_gate = one
        forget_gate = one
        output_gate = one
        if HAS_I:
            input_gate = load(step_saved + packed + row_i, mask, COMPUTE)
        if HAS_F:
            forget_gate = load(step_saved + packed + row_f, mask, COMPUTE)
        elif COUPLED:
            forget_gate = 1.0 - input_gate
        if HAS_O:
            output_gate = load(step_saved + packed + row_o, mask, COMPUTE)
        candidate = load(step_saved + packed + row_g, mask, COMPUTE)
        squashed = activate(c, OUTPUT)
        current = d_h + load(step_d_output + at_out, out_mask, COMPUTE)  # the error at h_t
        if PROJECT:
            tl.store(step_d_h + at_out, current, mask=out_mask)
            dy = matmul(current, w_r)
            step_d_h -= batch * out_size
        else:
            dy = current
        d_c_t = d_c + dy * output_gate * derivative(squashed, OUTPUT)
        if HAS_O:
            d_o = tl.where(keep, dy * squashed * derivative(output_gate, GATE), 0.0)
            tl.store(step_d_net + packed + row_o, d_o, mask=mask)
            if PEEP_O >= 0:
                if not TRUNCATE:
                    d_c_t += p_o * d_o
        d_z = tl.where(keep, d_c_t * input_gate * derivative(candidate, CANDIDATE), 0.0)
        tl.store(step_d_net + packed + row_g, d_z, mask=mask)
        d_c_prev = d_c_t * forget_gate
        d_f = d_c_t * c_prev
        if HAS_I:
            d_i = d_c_t * candidate
            if COUPLED:
                d_i -= d_f
            d_i = tl.where(keep, d_i * derivative(input_gate, GATE), 0.0)
            tl.store(step_d_net + packed + row_i, d_i, mask=mask)
            if PEEP_I >= 0:
                if not TRUNCATE:
                    d_c_prev += p_i * d_i
        if HAS_F:
            d_f = tl.where(keep, d_f * derivative(forget_gate, GATE), 0.0)
            tl.store(step_d_net + packed + row_f, d_f, mask=mask)
            if PEEP_F >= 0:
                if not TRUNCATE:
                    d_c_prev += p_f * d_f
        d_c = tl.where(keep, d_c_prev, d_c)
        # held rows pass their error on unchanged
        d_h = tl.where(step_mask(length, rows, out_mask, step, HAS_LENGTHS), 0.0, d_h)
        if not TRUNCATE:
            d_h += matmul(d_z, w_g)
            if HAS_I:
                d_h += matmul(d_i, w_i)
            if HAS_F:
                d_h += matmul(d_f, w_f)
            if HAS_O:
                d_h += matmul(d_o, w_o)
        step_saved -= batch * rows_g
        step_cell -= batch * hidden
        step_d_output -= batch * out_size
        step_d_net -= batch * rows_g
    tl.store(d_source + at_out, d_h, mask=out_mask)
    tl.store(d_cell + at, d_c, mask=mask)


def plan(
    spec: CellSpec, hidden: int, out_size: int, dtype, project: bool, bias_hh: bool
) -> tuple[tuple[int, ...], dict]:
    """The runtime arguments (after ``steps, batch, hidden``) and constexpr flags of ``spec``'s
    persistent kernels; ``BLOCK_B`` and ``BLOCK_H`` are added by :mod:`.persistent`."""
    slices = spec.gate_slices(hidden)
    peephole_row = {gate: row for row, gate in enumerate(spec.peephole_gates)}
    runtime = (
        out_size,
        spec.num_gate_rows(hidden),
        *(slices[g].start if g in slices else -1 for g in "ifgo"),
    )
    constants = dict(
        GATE=code(spec.gate_activation),
        CANDIDATE=code(spec.candidate_activation),
        OUTPUT=code(spec.output_activation),
        HAS_I="i" in spec.gates,
        HAS_F="f" in spec.gates,
        HAS_O="o" in spec.gates,
        COUPLED=spec.coupled_input_forget,
        PEEP_I=peephole_row.get("i", -1),
        PEEP_F=peephole_row.get("f", -1),
        PEEP_O=peephole_row.get("o", -1),
        PROJECT=project,
        TRUNCATE=spec.truncate_gradient,
        COMPUTE=COMPUTE_TYPES[dtype],
        BLOCK_P=padded(out_size),
    )
    return runtime, constants
