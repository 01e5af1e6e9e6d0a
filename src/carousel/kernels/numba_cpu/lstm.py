r"""Every LSTM variant in one pair of compiled kernels: the forward pass and its backward through time.

The cell is chosen by an int64 configuration vector (:func:`lstm_config`), not by compiling a
kernel per variant: which gate blocks exist and where they start, peepholes, coupled input and
forget gates, memory blocks, gate feedback, activations and the truncated gradient are all runtime
flags. Absent gates read a vector of ones (:math:`i = 1`, :math:`f = 1`, :math:`o = 1`), which is
exact. The equations are those of :func:`carousel.cells.lstm.lstm_step`; with ``S`` cells per block,
``k(j) = j // S`` is the block of cell ``j``:

.. math::
    net_t &= W_{ih} x_t + b + W_{hh} [h_{t-1}, \gamma_{t-1}] \qquad
        (\gamma: \text{fed-back gate activations, if any}) \\
    i, f &= \sigma(net_{i,f} + p_{i,f} \odot c_{t-1}), \quad z = g(net_g) \\
    c_t &= f_{k(j)} c_{t-1} + i_{k(j)} z, \quad o = \sigma(net_o + p_o \odot c_t), \quad
    y_t = o_{k(j)} h(c_t), \quad h_t = y_t \text{ or } W_{hr} y_t

The backward pass runs the chain rule backwards through these lines, one fused pointwise pass per
step, then :math:`\partial h_{t-1}, \partial\gamma_{t-1} = \partial net_t\, W_{hh}` (one GEMM per
step); weight gradients are large GEMMs after the loop. With ``truncate_gradient`` the GEMM is
skipped and the peephole terms stop at the gates (only the cell state carries error back), which
is exactly what the reference computes with its ``detach()`` calls.

Shapes: ``T`` steps, ``B`` batch, ``I`` input, ``H`` cells, ``K = H / S`` gate units, ``P`` output
width (``proj_size`` or ``H``), ``F`` fed-back gate width, ``R = P + F``, ``G`` packed rows.
Arrays are C-contiguous; optional ones are passed with a zero-length axis (``bias`` ``(0,)``,
``weight_peephole`` and ``weight_hr`` ``(0, 0)``, ``feedback0`` ``(B, 0)``), so each dtype compiles
once. Everything saved for the backward pass is indexed by time position (the reverse direction
with lengths reads the steps of different sequences at different positions).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from carousel.cells import ACTIVATIONS, CellSpec
from carousel.kernels.numba_cpu.common import (
    activate,
    derivative,
    input_gradients,
    input_projection,
    time_index,
)

# Fields of the configuration vector.
GATE_ACTIVATION, CANDIDATE_ACTIVATION, OUTPUT_ACTIVATION = 0, 1, 2
BLOCK_SIZE = 3
ROW_I, ROW_F, ROW_G, ROW_O = 4, 5, 6, 7  # first packed row of each block, -1 if absent
PEEP_I, PEEP_F, PEEP_O = 8, 9, 10  # row of weight_peephole, -1 if none
FEED_I, FEED_F, FEED_O = 11, 12, 13  # offset within the fed-back gates, -1 if not fed back
COUPLED, TRUNCATE = 14, 15
CONFIG_SIZE = 16


def lstm_config(spec: CellSpec, hidden_size: int) -> np.ndarray:
    """The int64 configuration vector that selects ``spec``'s variant in the kernels."""
    config = np.full(CONFIG_SIZE, -1, dtype=np.int64)
    config[GATE_ACTIVATION] = ACTIVATIONS[spec.gate_activation].code
    config[CANDIDATE_ACTIVATION] = ACTIVATIONS[spec.candidate_activation].code
    config[OUTPUT_ACTIVATION] = ACTIVATIONS[spec.output_activation].code
    config[BLOCK_SIZE] = spec.block_size
    slices = spec.gate_slices(hidden_size)
    for gate, field in zip("ifgo", (ROW_I, ROW_F, ROW_G, ROW_O), strict=True):
        if gate in slices:
            config[field] = slices[gate].start
    for row, gate in enumerate(spec.peephole_gates):
        config[{"i": PEEP_I, "f": PEEP_F, "o": PEEP_O}[gate]] = row
    offset = 0
    for gate in spec.feedback_gates:
        config[{"i": FEED_I, "f": FEED_F, "o": FEED_O}[gate]] = offset
        offset += spec.gate_size(gate, hidden_size)
    config[COUPLED] = int(spec.coupled_input_forget)
    config[TRUNCATE] = int(spec.truncate_gradient)
    return config


@njit(cache=True)
def _gate(values, row, units, ones):
    """The ``units`` activations of the block starting at ``row``, or ones if it is absent."""
    return values[row : row + units] if row >= 0 else ones


@njit(cache=True)
def lstm_forward(
    config,
    x,
    h0,
    c0,
    feedback0,
    weight_ih,
    bias,
    weight_hh,
    weight_peephole,
    weight_hr,
    lengths,
    reverse,
    keep,
):
    """Run one direction of one LSTM layer over a padded batch.

    Args:
        config: ``(CONFIG_SIZE,)`` int64 from :func:`lstm_config`.
        x: ``(T, B, I)`` time-major input.
        h0, c0, feedback0: ``(B, P)``, ``(B, H)``, ``(B, F)`` initial state.
        weight_ih: ``(G, I)``; bias: ``(G,)`` or ``(0,)``; weight_hh: ``(G, R)``.
        weight_peephole: ``(number of peephole gates, H)`` or ``(0, 0)``.
        weight_hr: ``(P, H)`` or ``(0, 0)`` without projection.
        lengths: ``(B,)`` int64 in ``[1, T]``.
        reverse: run each sequence from its last valid step to its first.
        keep: save what :func:`lstm_backward` needs (otherwise those arrays have ``T = 0``).

    Returns:
        ``output (T, B, P)`` (zeros past each length), ``h_n (B, P)``, ``c_n (B, H)``,
        ``feedback_n (B, F)``, and the saved tensors: ``gates (T, B, G)`` (activations),
        ``cell_prev (T, B, H)`` (:math:`c_{t-1}`), ``cell_output (T, B, H)`` (:math:`h(c_t)`),
        ``source (T, B, R)`` (:math:`[h_{t-1}, \\gamma_{t-1}]`), ``y (T, B, H)`` (before the
        projection; ``T = 0`` without one).
    """
    steps, batch, _ = x.shape
    hidden, out_size, feedback_size = c0.shape[1], h0.shape[1], feedback0.shape[1]
    rows = weight_ih.shape[0]
    project = weight_hr.shape[0] > 0
    gate_code, candidate_code = config[GATE_ACTIVATION], config[CANDIDATE_ACTIVATION]
    output_code = config[OUTPUT_ACTIVATION]
    block = config[BLOCK_SIZE]
    units = hidden // block
    row_i, row_f, row_g, row_o = config[ROW_I], config[ROW_F], config[ROW_G], config[ROW_O]
    peep_i, peep_f, peep_o = config[PEEP_I], config[PEEP_F], config[PEEP_O]
    feed_i, feed_f, feed_o = config[FEED_I], config[FEED_F], config[FEED_O]
    coupled = config[COUPLED] == 1
    dtype = x.dtype

    gates_x = input_projection(x, weight_ih, bias)  # (T, B, G)
    weight_hh_t = np.ascontiguousarray(weight_hh.T)  # (R, G)
    weight_hr_t = np.ascontiguousarray(weight_hr.T)  # (H, P)

    output = np.zeros((steps, batch, out_size), dtype)
    source = np.empty((batch, out_size + feedback_size), dtype)  # [h, gates] of the last step
    source[:, :out_size] = h0
    source[:, out_size:] = feedback0
    cell = c0.copy()  # (B, H)
    net = np.empty((batch, rows), dtype)  # net inputs, then activations, of this step
    cell_output = np.empty((batch, hidden), dtype)  # h(c_t)
    cell_y = np.empty((batch, hidden), dtype)  # o * h(c_t), before the projection
    projected = np.empty((batch, out_size), dtype)
    ones = np.ones(units, dtype)
    coupled_forget = np.empty(units, dtype)

    saved = steps if keep else 0
    gates_at = np.zeros((saved, batch, rows), dtype)
    cell_prev_at = np.zeros((saved, batch, hidden), dtype)
    cell_output_at = np.zeros((saved, batch, hidden), dtype)
    source_at = np.zeros((saved, batch, out_size + feedback_size), dtype)
    y_at = np.zeros((saved if project else 0, batch, hidden), dtype)

    for t in range(steps):
        np.dot(source, weight_hh_t, net)  # (B, G) recurrent part
        for b in range(batch):
            if t >= lengths[b]:
                continue
            tau = time_index(t, lengths[b], reverse)
            net_b, c, gx = net[b], cell[b], gates_x[tau, b]
            for g in range(rows):
                net_b[g] += gx[g]
            if keep:
                source_at[tau, b] = source[b]
                cell_prev_at[tau, b] = c
            if peep_i >= 0:
                for j in range(hidden):
                    net_b[row_i + j] += weight_peephole[peep_i, j] * c[j]
            if peep_f >= 0:
                for j in range(hidden):
                    net_b[row_f + j] += weight_peephole[peep_f, j] * c[j]
            if row_i >= 0:
                activate(net_b[row_i : row_i + units], gate_code)
            if row_f >= 0:
                activate(net_b[row_f : row_f + units], gate_code)
            z = net_b[row_g : row_g + hidden]
            activate(z, candidate_code)
            input_gate = _gate(net_b, row_i, units, ones)
            forget_gate = _gate(net_b, row_f, units, ones)
            if coupled:
                for k in range(units):
                    coupled_forget[k] = 1.0 - input_gate[k]
                forget_gate = coupled_forget
            if block == 1:
                for j in range(hidden):
                    c[j] = forget_gate[j] * c[j] + input_gate[j] * z[j]
            else:
                for j in range(hidden):
                    c[j] = forget_gate[j // block] * c[j] + input_gate[j // block] * z[j]
            if row_o >= 0:
                if peep_o >= 0:
                    for j in range(hidden):
                        net_b[row_o + j] += weight_peephole[peep_o, j] * c[j]
                activate(net_b[row_o : row_o + units], gate_code)
            output_gate = _gate(net_b, row_o, units, ones)
            h_c, y = cell_output[b], cell_y[b]
            h_c[:] = c
            activate(h_c, output_code)
            for j in range(hidden):
                y[j] = output_gate[j // block] * h_c[j]
            if keep:
                gates_at[tau, b] = net_b
                cell_output_at[tau, b] = h_c
                if project:
                    y_at[tau, b] = y
            if not project:
                source[b, :out_size] = y
                output[tau, b] = y
            if feed_i >= 0:
                source[b, out_size + feed_i : out_size + feed_i + units] = input_gate
            if feed_f >= 0:
                source[b, out_size + feed_f : out_size + feed_f + units] = forget_gate
            if feed_o >= 0:
                source[b, out_size + feed_o : out_size + feed_o + units] = output_gate
        if project:
            np.dot(cell_y, weight_hr_t, projected)  # (B, P)
            for b in range(batch):
                if t < lengths[b]:
                    source[b, :out_size] = projected[b]
                    output[time_index(t, lengths[b], reverse), b] = projected[b]

    h_n = source[:, :out_size].copy()
    feedback_n = source[:, out_size:].copy()
    return (
        output,
        h_n,
        cell,
        feedback_n,
        gates_at,
        cell_prev_at,
        cell_output_at,
        source_at,
        y_at,
    )


@njit(cache=True)
def lstm_backward(
    config,
    x,
    weight_ih,
    weight_hh,
    weight_peephole,
    weight_hr,
    lengths,
    reverse,
    gates_at,
    cell_prev_at,
    cell_output_at,
    source_at,
    y_at,
    d_output,
    d_h_n,
    d_c_n,
    d_feedback_n,
    need_input_grad,
):
    """Backpropagation through time for :func:`lstm_forward`.

    Args:
        config, x, weight_ih, weight_hh, weight_peephole, weight_hr, lengths, reverse: as given to
            :func:`lstm_forward`.
        gates_at, cell_prev_at, cell_output_at, source_at, y_at: what it saved (``keep=True``).
        d_output: ``(T, B, P)`` upstream gradient of the output.
        d_h_n, d_c_n, d_feedback_n: ``(B, P)``, ``(B, H)``, ``(B, F)`` upstream gradients of the
            final state.
        need_input_grad: whether to compute the gradient of ``x``.

    Returns:
        ``d_x (T, B, I)`` (or ``(0, 0, 0)``), ``d_h0 (B, P)``, ``d_c0 (B, H)``,
        ``d_feedback0 (B, F)``, ``d_weight_ih (G, I)``, ``d_bias (G,)``, ``d_weight_hh (G, R)``,
        ``d_weight_peephole`` (its shape), ``d_weight_hr (P, H)`` (or ``(0, 0)``).
    """
    steps, batch, _ = x.shape
    rows = weight_ih.shape[0]
    hidden, out_size = cell_prev_at.shape[2], d_h_n.shape[1]
    source_size = source_at.shape[2]
    project = weight_hr.shape[0] > 0
    gate_code, candidate_code = config[GATE_ACTIVATION], config[CANDIDATE_ACTIVATION]
    output_code = config[OUTPUT_ACTIVATION]
    block = config[BLOCK_SIZE]
    units = hidden // block
    row_i, row_f, row_g, row_o = config[ROW_I], config[ROW_F], config[ROW_G], config[ROW_O]
    peep_i, peep_f, peep_o = config[PEEP_I], config[PEEP_F], config[PEEP_O]
    feed_i, feed_f, feed_o = config[FEED_I], config[FEED_F], config[FEED_O]
    coupled = config[COUPLED] == 1
    truncate = config[TRUNCATE] == 1
    dtype = x.dtype

    d_h = d_h_n.copy()  # dL/dh_t arriving from later steps (B, P)
    d_c = d_c_n.copy()  # dL/dc_t arriving from later steps (B, H)
    d_feedback = d_feedback_n.copy()  # dL/dgamma_t arriving from later steps (B, F)
    d_net_at = np.zeros((steps, batch, rows), dtype)
    d_h_at = np.zeros((steps if project else 0, batch, out_size), dtype)
    d_net = np.zeros((batch, rows), dtype)
    d_y = np.empty((batch, hidden), dtype)
    d_source = np.empty((batch, source_size), dtype)
    d_cell = np.empty(hidden, dtype)  # dL/dc_t of this step, all paths
    d_peephole = np.zeros(weight_peephole.shape)  # accumulated in float64
    ones = np.ones(units, dtype)
    coupled_forget = np.empty(units, dtype)

    for t in range(steps - 1, -1, -1):
        for b in range(batch):
            if t < lengths[b]:
                d_h[b] += d_output[time_index(t, lengths[b], reverse), b]
        if project:
            np.dot(d_h, weight_hr, d_y)  # (B, H)
            for b in range(batch):
                if t < lengths[b]:
                    d_h_at[time_index(t, lengths[b], reverse), b] = d_h[b]
        for b in range(batch):
            if t >= lengths[b]:
                continue
            tau = time_index(t, lengths[b], reverse)
            gates, c_prev, h_c = gates_at[tau, b], cell_prev_at[tau, b], cell_output_at[tau, b]
            d_y_b = d_y[b] if project else d_h[b]
            d_net_b, d_c_b, d_fb = d_net[b], d_c[b], d_feedback[b]
            input_gate = _gate(gates, row_i, units, ones)
            forget_gate = _gate(gates, row_f, units, ones)
            output_gate = _gate(gates, row_o, units, ones)
            z = gates[row_g : row_g + hidden]
            if coupled:
                for k in range(units):
                    coupled_forget[k] = 1.0 - input_gate[k]
                forget_gate = coupled_forget

            if row_o >= 0:  # y = o h(c): the output gate's net input
                for k in range(units):
                    d_o = d_fb[feed_o + k] if feed_o >= 0 else 0.0
                    for j in range(k * block, (k + 1) * block):
                        d_o += d_y_b[j] * h_c[j]
                    d_net_b[row_o + k] = d_o * derivative(output_gate[k], gate_code)
            for j in range(hidden):
                d_cell[j] = d_c_b[j] + d_y_b[j] * output_gate[j // block] * derivative(
                    h_c[j], output_code
                )
            if peep_o >= 0:  # o read c_t through p_o (block == 1 with peepholes)
                for j in range(hidden):
                    d_o = d_net_b[row_o + j]
                    cell_t = forget_gate[j] * c_prev[j] + input_gate[j] * z[j]
                    d_peephole[peep_o, j] += d_o * cell_t
                    if not truncate:
                        d_cell[j] += weight_peephole[peep_o, j] * d_o

            # c_t = f c_{t-1} + i z
            for j in range(hidden):
                d_net_b[row_g + j] = (
                    d_cell[j] * input_gate[j // block] * derivative(z[j], candidate_code)
                )
                d_c_b[j] = d_cell[j] * forget_gate[j // block]
            for k in range(units):
                d_i = d_fb[feed_i + k] if feed_i >= 0 else 0.0
                d_f = d_fb[feed_f + k] if feed_f >= 0 else 0.0
                for j in range(k * block, (k + 1) * block):
                    d_i += d_cell[j] * z[j]
                    d_f += d_cell[j] * c_prev[j]
                if coupled:  # f = 1 - i
                    d_i -= d_f
                if row_i >= 0:
                    d_net_b[row_i + k] = d_i * derivative(input_gate[k], gate_code)
                if row_f >= 0:
                    d_net_b[row_f + k] = d_f * derivative(forget_gate[k], gate_code)
            if peep_i >= 0:  # i read c_{t-1} through p_i
                for j in range(hidden):
                    d_peephole[peep_i, j] += d_net_b[row_i + j] * c_prev[j]
                    if not truncate:
                        d_c_b[j] += weight_peephole[peep_i, j] * d_net_b[row_i + j]
            if peep_f >= 0:
                for j in range(hidden):
                    d_peephole[peep_f, j] += d_net_b[row_f + j] * c_prev[j]
                    if not truncate:
                        d_c_b[j] += weight_peephole[peep_f, j] * d_net_b[row_f + j]
            d_net_at[tau, b] = d_net_b

        # the recurrent source [h_{t-1}, gamma_{t-1}]; cut by the truncated gradient
        if not truncate:
            np.dot(d_net, weight_hh, d_source)  # (B, R)
        for b in range(batch):
            if t < lengths[b]:
                if truncate:
                    d_h[b] = 0.0
                    d_feedback[b] = 0.0
                else:
                    d_h[b] = d_source[b, :out_size]
                    d_feedback[b] = d_source[b, out_size:]

    d_x, d_weight_ih, d_bias = input_gradients(x, weight_ih, d_net_at, need_input_grad)
    flat = steps * batch
    d_weight_hh = np.dot(
        d_net_at.reshape((flat, rows)).T, source_at.reshape((flat, source_size))
    )  # (G, R)
    if project:
        d_weight_hr = np.dot(
            d_h_at.reshape((flat, out_size)).T, y_at.reshape((flat, hidden))
        )  # (P, H)
    else:
        d_weight_hr = np.zeros((0, 0), dtype)
    return (
        d_x,
        d_h,
        d_c,
        d_feedback,
        d_weight_ih,
        d_bias,
        d_weight_hh,
        d_peephole.astype(dtype),
        d_weight_hr,
    )
