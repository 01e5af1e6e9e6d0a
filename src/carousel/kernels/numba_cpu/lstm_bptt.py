r"""Backpropagation through time for every LSTM variant: the backward kernel of :mod:`.lstm`.

It walks the steps of :func:`~carousel.kernels.numba_cpu.lstm.lstm_forward` backwards, per step one
pointwise pass per sequence and one GEMM for the error reaching the recurrent source, and forms
the weight gradients as large GEMMs after the loop. Shapes and optional arrays as in :mod:`.lstm`.
"""

from __future__ import annotations

import numpy as np

from carousel.kernels.numba_cpu.blas import input_gradients, matmul, sequence_gemm
from carousel.kernels.numba_cpu.common import (
    activate,
    add_output_error,
    block_sums,
    derivatives,
    expand,
    kernel,
    scratch,
    time_index,
    time_major,
)
from carousel.kernels.numba_cpu.layer_norm import normalize, normalize_backward
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
    TRUNCATE,
    activation_tables,
    gate_reads,
    peephole_row,
)
from carousel.kernels.numba_cpu.masks import split_zoneout, stop_at_resets


@kernel
def lstm_backward(
    config,
    x,
    weight_ih,
    weight_hh,
    weight_peephole,
    weight_hr,
    norm_ih,
    norm_hh,
    norm_cell,
    recurrent_keep,
    candidate_keep,
    zoneout_cell,
    zoneout_hidden,
    reset,
    lengths,
    reverse,
    gates_at,
    cell_prev_at,
    source_at,
    y_at,
    norm_at,
    inverse_at,
    d_output,
    d_h_n,
    d_c_n,
    d_feedback_n,
    need_input_grad,
    workspace,
):
    r"""Backpropagation through time for :func:`~carousel.kernels.numba_cpu.lstm.lstm_forward`.

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
    truncated gradient drops the peephole terms of :math:`\delta c` and the last product. The
    options: the candidate mask :math:`m` scales :math:`z` wherever it appears above; the
    recurrent mask scales :math:`\delta h_{t-1}`; zoneout sends :math:`d\,\delta` of the error
    reaching :math:`c_t` and :math:`h_t` straight to :math:`c_{t-1}`, :math:`h_{t-1}` and the
    rest through the step; a reset stops the error before its step; layer normalisation runs
    :func:`~carousel.kernels.numba_cpu.layer_norm.normalize_backward` between
    :math:`\delta h'` and :math:`\delta c_t` (recomputing the cell's statistics), between
    :math:`\partial net` and the recurrent GEMM, and over the input projections after the loop.

    Args:
        config, x, weight_ih, weight_hh, weight_peephole, weight_hr, norm_ih, norm_hh, norm_cell,
            recurrent_keep, candidate_keep, zoneout_cell, zoneout_hidden, reset, lengths,
            reverse: as given to ``lstm_forward``.
        gates_at, cell_prev_at, source_at, y_at, norm_at, inverse_at: what it saved (``keep``).
        d_output: ``(T, B, P)`` upstream gradient of the output.
        d_h_n, d_c_n, d_feedback_n: ``(B, P)``, ``(B, H)``, ``(B, F)`` upstream gradients of the
            final state.
        need_input_grad: whether to compute the gradient of ``x``.
        workspace: 1-D scratch of the dtype for the ``(T, B, G)`` net-input gradients (and with
            ``layer_norm`` as many again for the recurrent ones), reused across calls to spare
            fresh memory; length 0 to allocate (see ``common.scratch``).

    Returns:
        ``d_x (T, B, I)`` (or ``(0, 0, 0)``), ``d_h0 (B, P)``, ``d_c0 (B, H)``,
        ``d_feedback0 (B, F)``, ``d_weight_ih (G, I)``, ``d_bias (G,)``, ``d_weight_hh (G, R)``,
        ``d_weight_peephole`` (its shape), ``d_weight_hr (P, H)`` (or ``(0, 0)``), and the
        gradients of ``norm_ih``, ``norm_hh``, ``norm_cell`` (their shapes).
    """
    steps, batch, _ = x.shape
    rows = weight_ih.shape[0]
    hidden, out_size = cell_prev_at.shape[2], d_h_n.shape[1]
    source_size = source_at.shape[2]
    feedback_size = source_size - out_size
    project = weight_hr.shape[0] > 0
    normalized = norm_ih.shape[0] > 0
    drop_recurrent, drop_candidate = recurrent_keep.shape[0] > 0, candidate_keep.shape[0] > 0
    zone_cell, zone_hidden = zoneout_cell.shape[0] > 0, zoneout_hidden.shape[0] > 0
    resets = reset.shape[0] > 0
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
    # with layer norm, the error of the recurrent projection differs from d_net: its own buffer
    d_recurrent_at = (
        scratch(workspace, steps * batch * rows, steps, batch, rows, dtype, lengths)
        if normalized
        else d_net_at
    )
    d_h_at = time_major(steps if project else 0, batch, out_size, dtype, lengths)
    d_net = np.zeros((batch, rows), dtype)
    d_y = np.empty((batch, hidden), dtype)  # through the projection
    d_source = np.empty((batch, source_size), dtype)
    d_y_of = d_y if project else d_h  # (B, H): dL/dy_t
    skip_h = np.zeros((batch, out_size if zone_hidden else 0), dtype)  # zoneout's direct errors
    skip_c = np.zeros((batch, hidden if zone_cell else 0), dtype)
    peephole_i = peephole_row(weight_peephole, peep_i, hidden)
    peephole_f = peephole_row(weight_peephole, peep_f, hidden)
    peephole_o = peephole_row(weight_peephole, peep_o, hidden)
    d_peephole = np.zeros(weight_peephole.shape)  # accumulated in float64
    d_peephole_i = peephole_row(d_peephole, peep_i, hidden)
    d_peephole_f = peephole_row(d_peephole, peep_f, hidden)
    d_peephole_o = peephole_row(d_peephole, peep_o, hidden)
    d_norm_ih = np.zeros(norm_ih.shape)  # accumulated in float64
    d_norm_hh = np.zeros(norm_hh.shape)
    d_norm_cell = np.zeros(norm_cell.shape)

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
    d_gates = d_row[:rows]
    # the fed-back gates' errors of one row; absent ones read the zero tail
    feedback_row = np.zeros(feedback_size + units, dtype)
    zeros = feedback_row[feedback_size:]
    d_fed_i = feedback_row[feed_i : feed_i + units] if feed_i >= 0 else zeros
    d_fed_f = feedback_row[feed_f : feed_f + units] if feed_f >= 0 else zeros
    d_fed_o = feedback_row[feed_o : feed_o + units] if feed_o >= 0 else zeros
    cells = np.empty((13, hidden), dtype)
    c_prev, h_c, slope_h, part_i, part_f = cells[3], cells[4], cells[5], cells[6], cells[7]
    part_o, fresh, shown, hat, ones = cells[8], cells[9], cells[10], cells[11], cells[12]
    ones[:] = 1.0
    cell_i = act_i if block == 1 else cells[0]
    cell_f = act_f if block == 1 else cells[1]
    cell_o = act_o if block == 1 else cells[2]

    inverse = 1.0  # the cell's normalisation, recomputed per row
    for t in range(steps - 1, -1, -1):
        add_output_error(t, d_output, lengths, reverse, d_h)
        if zone_hidden:  # h_t = d h_{t-1} + (1 - d) h~_t
            split_zoneout(t, zoneout_hidden, lengths, reverse, d_h, skip_h)
        if zone_cell:
            split_zoneout(t, zoneout_cell, lengths, reverse, d_c, skip_c)
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
            candidate_mask = candidate_keep[b] if drop_candidate else ones
            for j in range(hidden):  # c_t and h(c_t), recomputed exactly as the forward pass did
                c_prev[j] = cell_prev_at[tau, b, j]
                fresh[j] = cell_f[j] * c_prev[j] + cell_i[j] * act_g[j] * candidate_mask[j]
            if normalized:
                inverse = normalize(fresh, norm_cell, hat, h_c)
            else:
                for j in range(hidden):
                    h_c[j] = fresh[j]
            activate(h_c, output_table, 0, hidden)
            derivatives(h_c, output_table, 0, hidden, slope_h)
            for r in range(feedback_size):
                feedback_row[r] = d_feedback[b, r]

            # y = o h(c_t): the output gate
            for j in range(hidden):
                part_o[j] = d_y_of[b, j] * h_c[j]
                shown[j] = d_y_of[b, j] * cell_o[j] * slope_h[j]  # error of h's argument
            if normalized:  # h's argument is LN(c_t)
                normalize_backward(shown, hat, inverse, norm_cell, d_norm_cell, shown)
            if block == 1:
                for j in range(hidden):
                    d_row_o[j] = (part_o[j] + d_fed_o[j]) * slope_o[j]
            else:
                block_sums(part_o, block, d_row_o)
                for k in range(units):
                    d_row_o[k] = (d_row_o[k] + d_fed_o[k]) * slope_o[k]
            # c_t = f c_{t-1} + i m z, and o read c_t through p_o
            for j in range(hidden):
                d_cell = d_c[b, j] + shown[j] + peephole_flow * peephole_o[j] * d_row_o[j]
                d_row_g[j] = d_cell * cell_i[j] * candidate_mask[j] * slope_g[j]
                d_c[b, j] = d_cell * cell_f[j]
                part_i[j] = d_cell * act_g[j] * candidate_mask[j]
                part_f[j] = d_cell * c_prev[j]
            if peep_o >= 0:
                for j in range(hidden):
                    d_peephole_o[j] += d_row_o[j] * fresh[j]
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
            if zone_cell:
                for j in range(hidden):
                    d_c[b, j] += skip_c[b, j]
            if normalized:  # net = LN(W x) + b + LN(W_hh source): b's gradient is the shift's
                hats, inverses = norm_at[tau, b], inverse_at[tau, b]  # [0]: W x, [1]: W_hh source
                d_recurrent = d_recurrent_at[tau, b]
                normalize_backward(
                    d_gates, hats[0], inverses[0], norm_ih, d_norm_ih, d_net_at[tau, b]
                )
                normalize_backward(d_gates, hats[1], inverses[1], norm_hh, d_norm_hh, d_recurrent)
                for g in range(rows):
                    d_net[b, g] = d_recurrent[g]
            else:
                for g in range(rows):
                    d_net_at[tau, b, g] = d_gates[g]
                    d_net[b, g] = d_gates[g]

        # the recurrent source [m h_{t-1}, gamma_{t-1}]; cut by the truncated gradient
        if truncate:
            d_source[:] = 0.0
        else:
            matmul(d_net, weight_hh, d_source)  # (B, R)
        for b in range(batch):
            if t < lengths[b]:
                for p in range(out_size):
                    d_h[b, p] = d_source[b, p]
                    if drop_recurrent:
                        d_h[b, p] *= recurrent_keep[b, p]
                    if zone_hidden:
                        d_h[b, p] += skip_h[b, p]
                for r in range(feedback_size):
                    d_feedback[b, r] = d_source[b, out_size + r]
        if resets:  # no error crosses a reset
            stop_at_resets(t, reset, lengths, reverse, d_h)
            stop_at_resets(t, reset, lengths, reverse, d_c)
            stop_at_resets(t, reset, lengths, reverse, d_feedback)

    d_x, d_weight_ih, d_bias = input_gradients(x, weight_ih, d_net_at, need_input_grad)
    if normalized:
        d_bias = d_norm_ih[1].astype(dtype)
    flat = steps * batch
    d_weight_hh = np.empty((rows, source_size), dtype)
    sources = source_at.reshape((flat, source_size))
    sequence_gemm(
        d_recurrent_at.reshape((flat, rows)), sources, d_weight_hh, True, False, 0.0
    )  # (G, R)
    d_weight_hr = np.empty((out_size if project else 0, hidden if project else 0), dtype)
    if project:
        d_outputs = d_h_at.reshape((flat, out_size))
        sequence_gemm(
            d_outputs, y_at.reshape((flat, hidden)), d_weight_hr, True, False, 0.0
        )  # (P, H)
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
        d_norm_ih.astype(dtype),
        d_norm_hh.astype(dtype),
        d_norm_cell.astype(dtype),
    )
