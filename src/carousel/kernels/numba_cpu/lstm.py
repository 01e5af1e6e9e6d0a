r"""Every LSTM variant in one pair of compiled kernels: the forward pass and its backward through time.

An int64 configuration vector (:mod:`.lstm_config`) selects the variant; absent gates read ones,
which is exact. The equations of :func:`carousel.cells.lstm.lstm_step`, with ``k(j) = j // S`` the
block of cell ``j`` (``S`` cells per block):

.. math::
    net_t &= W_{ih} x_t + b + W_{hh} [h_{t-1}, \gamma_{t-1}] \qquad
        (\gamma: \text{fed-back gate activations, if any}) \\
    i, f &= \sigma(net_{i,f} + p_{i,f} \odot c_{t-1}), \quad z = g(net_g) \\
    c_t &= f_{k(j)} c_{t-1} + i_{k(j)} z, \quad o = \sigma(net_o + p_o \odot c_t), \quad
    y_t = o_{k(j)} h(c_t), \quad h_t = y_t \text{ or } W_{hr} y_t

:func:`lstm_backward` runs the chain rule back through them (with ``truncate_gradient`` only the
cell state carries error back, as the reference's ``detach()``).

Shapes: ``T`` steps, ``B`` batch, ``I`` input, ``H`` cells, ``K = H / S`` gate units, ``P`` output
width (``proj_size`` or ``H``), ``F`` fed-back gate width, ``R = P + F``, ``G`` packed rows. Optional
arrays have a zero-length axis (``bias`` ``(0,)``, ``weight_peephole``, ``weight_hr`` ``(0, 0)``,
``feedback0`` ``(B, 0)``), so each dtype compiles once; saved arrays are indexed by time position.
Compiled callers pass ``reverse``, ``keep``, ``need_input_grad`` as runtime booleans.
"""

from __future__ import annotations

import numpy as np

from carousel.kernels.numba_cpu.blas import (
    gemm,
    input_gradients,
    input_projection,
    matmul,
)
from carousel.kernels.numba_cpu.common import (
    activate,
    block_sums,
    derivatives,
    expand,
    kernel,
    scratch,
    time_index,
    time_major,
)
from carousel.kernels.numba_cpu.lstm_config import (
    BLOCK_SIZE,
    COUPLED,
    FEED_F,
    FEED_I,
    FEED_O,
    PEEP_F,
    PEEP_I,
    PEEP_O,
    ROW_G,
    ROW_O,
    TRUNCATE,
    activation_tables,
    gate_reads,
    lstm_config,
    peephole_row,
)

__all__ = ["lstm_backward", "lstm_config", "lstm_forward"]


@kernel
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
    r"""Run one direction of one LSTM layer over a padded batch.

    Args:
        config: ``(CONFIG_SIZE,)`` int64 from :func:`lstm_config`.
        x: ``(T, B, I)`` time-major input.
        h0, c0, feedback0: ``(B, P)``, ``(B, H)``, ``(B, F)`` initial state.
        weight_ih: ``(G, I)``; bias: ``(G,)``; weight_hh: ``(G, R)``; weight_peephole:
            ``(peephole gates, H)``; weight_hr: ``(P, H)`` (optional ones zero-length).
        lengths: ``(B,)`` int64 in ``[1, T]``; reverse: each sequence from its last step.
        keep: save what :func:`lstm_backward` needs.

    Returns:
        ``output (T, B, P)`` (zeros past each length), ``h_n (B, P)``, ``c_n (B, H)``,
        ``feedback_n (B, F)``, and the saved arrays: ``gates (T, B, G)`` (activations; the
        input projections at padded positions), ``cell_prev (T, B, H)`` (:math:`c_{t-1}`),
        ``source (T, B, R)`` (:math:`[h_{t-1}, \gamma_{t-1}]`), ``y (T, B, H)`` (before the
        projection); without ``keep`` the last three have ``T = 0``.
    """
    steps, batch, _ = x.shape
    hidden, out_size, feedback_size = c0.shape[1], h0.shape[1], feedback0.shape[1]
    source_size = out_size + feedback_size
    rows = weight_ih.shape[0]
    project = weight_hr.shape[0] > 0
    block = config[BLOCK_SIZE]
    units = hidden // block
    row_g, row_o = config[ROW_G], config[ROW_O]
    peep_i, peep_f, peep_o = config[PEEP_I], config[PEEP_F], config[PEEP_O]
    feed_i, feed_f, feed_o = config[FEED_I], config[FEED_F], config[FEED_O]
    coupled = config[COUPLED] == 1
    read_i, read_f, read_o = gate_reads(config, rows, units)
    gate_table, output_table = activation_tables(config, rows, hidden, x.dtype)
    early_rows = row_o if peep_o >= 0 else rows  # rows that do not wait for c_t
    dtype = x.dtype

    # the input projections; each row turns into that step's activations, saved for backward
    gates = input_projection(x, weight_ih, bias)  # (T, B, G)
    weight_hh_t = np.ascontiguousarray(weight_hh.T)  # (R, G)
    weight_hr_t = np.ascontiguousarray(weight_hr.T)  # (H, P)
    peephole_i = peephole_row(weight_peephole, peep_i, hidden)
    peephole_f = peephole_row(weight_peephole, peep_f, hidden)
    peephole_o = peephole_row(weight_peephole, peep_o, hidden)
    output = time_major(steps, batch, out_size, dtype, lengths)
    source = np.empty((batch, source_size), dtype)  # [h, gates] of the last step
    source[:, :out_size] = h0
    source[:, out_size:] = feedback0
    cell = c0.copy()  # (B, H)
    net = np.empty((batch, rows), dtype)  # recurrent part of the net inputs
    cell_y = np.empty((batch, hidden), dtype)  # o * h(c_t), before the projection
    projected = np.empty((batch, out_size), dtype)

    # One row's activations (see _gate_reads) and views of its blocks, per gate unit and per cell.
    act = np.ones(rows + 2 * units, dtype)
    act_i, act_f = act[read_i : read_i + units], act[read_f : read_f + units]
    act_g, act_o = act[row_g : row_g + hidden], act[read_o : read_o + units]
    complement = act[rows + units : rows + 2 * units]
    expanded = np.empty((4, hidden), dtype)
    h_c = expanded[3]
    cell_i = act_i if block == 1 else expanded[0]
    cell_f = act_f if block == 1 else expanded[1]
    cell_o = act_o if block == 1 else expanded[2]

    saved = steps if keep else 0
    cell_prev_at = time_major(saved, batch, hidden, dtype, lengths)
    source_at = time_major(saved, batch, source_size, dtype, lengths)
    y_at = time_major(saved if project else 0, batch, hidden, dtype, lengths)

    for t in range(steps):
        matmul(source, weight_hh_t, net)  # (B, G) recurrent part
        for b in range(batch):
            if t >= lengths[b]:
                continue
            tau = time_index(t, lengths[b], reverse)
            for g in range(rows):
                act[g] = net[b, g] + gates[tau, b, g]
            if keep:
                for r in range(source_size):
                    source_at[tau, b, r] = source[b, r]
                for j in range(hidden):
                    cell_prev_at[tau, b, j] = cell[b, j]
            if peep_i >= 0 or peep_f >= 0:  # absent ones are zeros; block == 1 here
                for j in range(hidden):
                    act_i[j] += peephole_i[j] * cell[b, j]
                    act_f[j] += peephole_f[j] * cell[b, j]
            activate(act, gate_table, 0, early_rows)
            if coupled:
                for k in range(units):
                    complement[k] = 1.0 - act_i[k]
            if block > 1:
                expand(act_i, block, cell_i)
                expand(act_f, block, cell_f)
            for j in range(hidden):
                cell[b, j] = cell_f[j] * cell[b, j] + cell_i[j] * act_g[j]
            if peep_o >= 0:
                for j in range(hidden):
                    act_o[j] += peephole_o[j] * cell[b, j]
                activate(act, gate_table, row_o, rows)
            if block > 1:
                expand(act_o, block, cell_o)
            for j in range(hidden):
                h_c[j] = cell[b, j]
            activate(h_c, output_table, 0, hidden)
            for j in range(hidden):
                cell_y[b, j] = cell_o[j] * h_c[j]
            for g in range(rows):
                gates[tau, b, g] = act[g]
            if keep:
                if project:
                    for j in range(hidden):
                        y_at[tau, b, j] = cell_y[b, j]
            if not project:
                for j in range(hidden):
                    source[b, j] = cell_y[b, j]
                    output[tau, b, j] = cell_y[b, j]
            if feed_i >= 0:
                for k in range(units):
                    source[b, out_size + feed_i + k] = act_i[k]
            if feed_f >= 0:
                for k in range(units):
                    source[b, out_size + feed_f + k] = act_f[k]
            if feed_o >= 0:
                for k in range(units):
                    source[b, out_size + feed_o + k] = act_o[k]
        if project:
            matmul(cell_y, weight_hr_t, projected)  # (B, P)
            for b in range(batch):
                if t < lengths[b]:
                    tau = time_index(t, lengths[b], reverse)
                    for p in range(out_size):
                        source[b, p] = projected[b, p]
                        output[tau, b, p] = projected[b, p]

    h_n = source[:, :out_size].copy()
    feedback_n = source[:, out_size:].copy()
    return output, h_n, cell, feedback_n, gates, cell_prev_at, source_at, y_at


@kernel
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
    source_at,
    y_at,
    d_output,
    d_h_n,
    d_c_n,
    d_feedback_n,
    need_input_grad,
    workspace,
):
    r"""Backpropagation through time for :func:`lstm_forward`.

    Per step and sequence, with :math:`\delta y` the error at :math:`y_t` and :math:`\delta c`
    the error reaching :math:`c_t` from step :math:`t + 1` (each gate sum runs over its block):

    .. math::
        \partial net_o &= \big(\textstyle\sum \delta y\, h(c_t) + \delta\gamma_o\big)\, \sigma'(o) \\
        \delta c_t &= \delta c + \delta y\, o\, h'(c_t) + p_o\, \partial net_o \\
        \partial net_g &= \delta c_t\, i\, g'(z), \quad
        \partial net_i = \big(\textstyle\sum \delta c_t z + \delta\gamma_i\big)\, \sigma'(i), \quad
        \partial net_f = \big(\textstyle\sum \delta c_t c_{t-1} + \delta\gamma_f\big)\, \sigma'(f) \\
        \delta c_{t-1} &= \delta c_t f + p_i\, \partial net_i + p_f\, \partial net_f, \quad
        [\delta h_{t-1}, \delta\gamma_{t-1}] = \partial net\, W_{hh}

    (coupled gates: :math:`\partial net_i` uses :math:`\sum \delta c_t (z - c_{t-1})`). The
    truncated gradient drops the peephole terms of :math:`\delta c` and the last product.

    Args:
        config, x, weight_ih, weight_hh, weight_peephole, weight_hr, lengths, reverse: as given to
            :func:`lstm_forward`.
        gates_at, cell_prev_at, source_at, y_at: what it saved (``keep=True``).
        d_output: ``(T, B, P)`` upstream gradient of the output.
        d_h_n, d_c_n, d_feedback_n: ``(B, P)``, ``(B, H)``, ``(B, F)`` upstream gradients of the
            final state.
        need_input_grad: whether to compute the gradient of ``x``.
        workspace: 1-D scratch of the dtype for the ``(T, B, G)`` net-input gradients, reused
            across calls to spare fresh memory; length 0 to allocate (see ``common.scratch``).

    Returns:
        ``d_x (T, B, I)`` (or ``(0, 0, 0)``), ``d_h0 (B, P)``, ``d_c0 (B, H)``,
        ``d_feedback0 (B, F)``, ``d_weight_ih (G, I)``, ``d_bias (G,)``, ``d_weight_hh (G, R)``,
        ``d_weight_peephole`` (its shape), ``d_weight_hr (P, H)`` (or ``(0, 0)``).
    """
    steps, batch, _ = x.shape
    rows = weight_ih.shape[0]
    hidden, out_size = cell_prev_at.shape[2], d_h_n.shape[1]
    source_size = source_at.shape[2]
    feedback_size = source_size - out_size
    project = weight_hr.shape[0] > 0
    block = config[BLOCK_SIZE]
    units = hidden // block
    row_g = config[ROW_G]
    peep_i, peep_f, peep_o = config[PEEP_I], config[PEEP_F], config[PEEP_O]
    feed_i, feed_f, feed_o = config[FEED_I], config[FEED_F], config[FEED_O]
    coupled = config[COUPLED] == 1
    truncate = config[TRUNCATE] == 1
    read_i, read_f, read_o = gate_reads(config, rows, units)
    gate_table, output_table = activation_tables(config, rows, hidden, x.dtype)
    dtype = x.dtype
    # 0/1 factors that replace branches: f = 1 - i, and error flowing through the peepholes
    coupling = dtype.type(1.0) if coupled else dtype.type(0.0)
    peephole_flow = dtype.type(0.0) if truncate else dtype.type(1.0)

    d_h = d_h_n.copy()  # dL/dh_t arriving from later steps (B, P)
    d_c = d_c_n.copy()  # dL/dc_t arriving from later steps (B, H)
    d_feedback = d_feedback_n.copy()  # dL/dgamma_t arriving from later steps (B, F)
    d_net_at = scratch(workspace, 0, steps, batch, rows, dtype, lengths)
    d_h_at = time_major(steps if project else 0, batch, out_size, dtype, lengths)
    d_net = np.zeros((batch, rows), dtype)
    d_y = np.empty((batch, hidden), dtype)  # through the projection
    d_source = np.empty((batch, source_size), dtype)
    d_y_of = d_y if project else d_h  # (B, H): dL/dy_t
    peephole_i = peephole_row(weight_peephole, peep_i, hidden)
    peephole_f = peephole_row(weight_peephole, peep_f, hidden)
    peephole_o = peephole_row(weight_peephole, peep_o, hidden)
    d_peephole = np.zeros(weight_peephole.shape)  # accumulated in float64
    d_peephole_i = peephole_row(d_peephole, peep_i, hidden)
    d_peephole_f = peephole_row(d_peephole, peep_f, hidden)
    d_peephole_o = peephole_row(d_peephole, peep_o, hidden)

    # One row's activations, their slopes and the net-input gradients, laid out as in
    # lstm_forward (absent gates read ones and write into the unused tail); views of the blocks.
    act = np.ones(rows + 2 * units, dtype)
    slope = np.zeros(rows + 2 * units, dtype)
    d_row = np.zeros(rows + 2 * units, dtype)
    act_i, act_f = act[read_i : read_i + units], act[read_f : read_f + units]
    act_g, act_o = act[row_g : row_g + hidden], act[read_o : read_o + units]
    complement = act[rows + units : rows + 2 * units]
    slope_i, slope_f = slope[read_i : read_i + units], slope[read_f : read_f + units]
    slope_g, slope_o = slope[row_g : row_g + hidden], slope[read_o : read_o + units]
    d_row_i, d_row_f = d_row[read_i : read_i + units], d_row[read_f : read_f + units]
    d_row_g, d_row_o = d_row[row_g : row_g + hidden], d_row[read_o : read_o + units]
    # the fed-back gates' errors of one row; absent ones read the zero tail
    feedback_row = np.zeros(feedback_size + units, dtype)
    zeros = feedback_row[feedback_size:]
    d_fed_i = feedback_row[feed_i : feed_i + units] if feed_i >= 0 else zeros
    d_fed_f = feedback_row[feed_f : feed_f + units] if feed_f >= 0 else zeros
    d_fed_o = feedback_row[feed_o : feed_o + units] if feed_o >= 0 else zeros
    cells = np.empty((9, hidden), dtype)
    c_prev, h_c, slope_h, part_i, part_f = cells[3], cells[4], cells[5], cells[6], cells[7]
    part_o = cells[8]
    cell_i = act_i if block == 1 else cells[0]
    cell_f = act_f if block == 1 else cells[1]
    cell_o = act_o if block == 1 else cells[2]

    for t in range(steps - 1, -1, -1):
        for b in range(batch):
            if t < lengths[b]:
                tau = time_index(t, lengths[b], reverse)
                for p in range(out_size):
                    d_h[b, p] += d_output[tau, b, p]
        if project:
            matmul(d_h, weight_hr, d_y)  # (B, H)
            for b in range(batch):
                if t < lengths[b]:
                    tau = time_index(t, lengths[b], reverse)
                    for p in range(out_size):
                        d_h_at[tau, b, p] = d_h[b, p]
        for b in range(batch):
            if t >= lengths[b]:
                continue
            tau = time_index(t, lengths[b], reverse)
            for g in range(rows):
                act[g] = gates_at[tau, b, g]
            if coupled:
                for k in range(units):
                    complement[k] = 1.0 - act_i[k]
            derivatives(act, gate_table, 0, rows, slope)
            if block > 1:
                expand(act_i, block, cell_i)
                expand(act_f, block, cell_f)
                expand(act_o, block, cell_o)
            for j in range(hidden):  # c_t and h(c_t), recomputed exactly as the forward pass did
                c_prev[j] = cell_prev_at[tau, b, j]
                h_c[j] = cell_f[j] * c_prev[j] + cell_i[j] * act_g[j]
            activate(h_c, output_table, 0, hidden)
            derivatives(h_c, output_table, 0, hidden, slope_h)
            for r in range(feedback_size):
                feedback_row[r] = d_feedback[b, r]

            # y = o h(c_t): the output gate
            for j in range(hidden):
                part_o[j] = d_y_of[b, j] * h_c[j]
            if block == 1:
                for j in range(hidden):
                    d_row_o[j] = (part_o[j] + d_fed_o[j]) * slope_o[j]
            else:
                block_sums(part_o, block, d_row_o)
                for k in range(units):
                    d_row_o[k] = (d_row_o[k] + d_fed_o[k]) * slope_o[k]
            # c_t = f c_{t-1} + i z, and o read c_t through p_o
            for j in range(hidden):
                d_cell = (
                    d_c[b, j]
                    + d_y_of[b, j] * cell_o[j] * slope_h[j]
                    + peephole_flow * peephole_o[j] * d_row_o[j]
                )
                d_row_g[j] = d_cell * cell_i[j] * slope_g[j]
                d_c[b, j] = d_cell * cell_f[j]
                part_i[j] = d_cell * act_g[j]
                part_f[j] = d_cell * c_prev[j]
            if peep_o >= 0:
                for j in range(hidden):
                    cell_t = cell_f[j] * c_prev[j] + cell_i[j] * act_g[j]
                    d_peephole_o[j] += d_row_o[j] * cell_t
            # the input and forget gates
            if block == 1:
                for j in range(hidden):
                    d_forget = part_f[j] + d_fed_f[j]
                    d_input = part_i[j] + d_fed_i[j] - coupling * d_forget
                    d_row_i[j] = d_input * slope_i[j]
                    d_row_f[j] = d_forget * slope_f[j]
            else:
                block_sums(part_i, block, part_i[:units])
                block_sums(part_f, block, part_f[:units])
                for k in range(units):
                    d_forget = part_f[k] + d_fed_f[k]
                    d_input = part_i[k] + d_fed_i[k] - coupling * d_forget
                    d_row_i[k] = d_input * slope_i[k]
                    d_row_f[k] = d_forget * slope_f[k]
            if peep_i >= 0 or peep_f >= 0:  # i, f read c_{t-1} (block == 1)
                for j in range(hidden):
                    d_peephole_i[j] += d_row_i[j] * c_prev[j]
                    d_peephole_f[j] += d_row_f[j] * c_prev[j]
                    d_c[b, j] += peephole_flow * (
                        peephole_i[j] * d_row_i[j] + peephole_f[j] * d_row_f[j]
                    )
            for g in range(rows):
                d_net[b, g] = d_row[g]
                d_net_at[tau, b, g] = d_row[g]

        # the recurrent source [h_{t-1}, gamma_{t-1}]; cut by the truncated gradient
        if truncate:
            d_source[:] = 0.0
        else:
            matmul(d_net, weight_hh, d_source)  # (B, R)
        for b in range(batch):
            if t < lengths[b]:
                for p in range(out_size):
                    d_h[b, p] = d_source[b, p]
                for r in range(feedback_size):
                    d_feedback[b, r] = d_source[b, out_size + r]

    d_x, d_weight_ih, d_bias = input_gradients(x, weight_ih, d_net_at, need_input_grad)
    flat = steps * batch
    d_weight_hh = np.empty((rows, source_size), dtype)
    sources = source_at.reshape((flat, source_size))
    gemm(d_net_at.reshape((flat, rows)), sources, d_weight_hh, True, False, 0.0)  # (G, R)
    d_weight_hr = np.empty((out_size if project else 0, hidden if project else 0), dtype)
    if project:
        d_outputs = d_h_at.reshape((flat, out_size))
        gemm(d_outputs, y_at.reshape((flat, hidden)), d_weight_hr, True, False, 0.0)  # (P, H)
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
