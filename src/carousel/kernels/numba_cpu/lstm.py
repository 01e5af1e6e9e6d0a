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

:func:`lstm_backward` (in :mod:`.lstm_bptt`) runs the chain rule back through them (with
``truncate_gradient`` only the cell state carries error back, as the reference's ``detach()``).

The options of :mod:`carousel.cells.regularizers` and ``layer_norm`` are inputs of the same
kernels: layer normalisation of both projections and of :math:`c_t` before :math:`h(\cdot)`
(:mod:`.layer_norm`), the recurrent mask on :math:`h_{t-1}` where :math:`W_{hh}` reads it, the
candidate mask on :math:`z`, zoneout's weights of the previous :math:`c` and :math:`h`, and the
resets, which put the initial state back before a step.

Shapes: ``T`` steps, ``B`` batch, ``I`` input, ``H`` cells, ``K = H / S`` gate units, ``P`` output
width (``proj_size`` or ``H``), ``F`` fed-back gate width, ``R = P + F``, ``G`` packed rows. Optional
arrays have a zero-length axis (``bias`` ``(0,)``, ``weight_peephole``, ``weight_hr``, the
normalisations and the masks ``(0, 0)``, zoneout ``(0, 0, 0)``, ``feedback0`` ``(B, 0)``), so
each dtype compiles once; saved arrays are indexed by time position. Compiled callers pass
``reverse``, ``keep``, ``need_input_grad`` as runtime booleans.
"""

from __future__ import annotations

import numpy as np

from carousel.kernels.numba_cpu.blas import input_projection, matmul, row_bias
from carousel.kernels.numba_cpu.common import activate, expand, kernel, time_index, time_major
from carousel.kernels.numba_cpu.layer_norm import normalize
from carousel.kernels.numba_cpu.lstm_bptt import lstm_backward
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
    activation_tables,
    gate_reads,
    lstm_config,
    peephole_row,
)
from carousel.kernels.numba_cpu.masks import restart, zoneout_update

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
    keep,
):
    r"""Run one direction of one LSTM layer over a padded batch.

    Args:
        config: ``(CONFIG_SIZE,)`` int64 from :func:`lstm_config`.
        x: ``(T, B, I)`` time-major input.
        h0, c0, feedback0: ``(B, P)``, ``(B, H)``, ``(B, F)`` initial state.
        weight_ih: ``(G, I)``; bias: ``(G,)``; weight_hh: ``(G, R)``; weight_peephole:
            ``(peephole gates, H)``; weight_hr: ``(P, H)`` (optional ones zero-length).
        norm_ih, norm_hh, norm_cell: ``(2, G)``, ``(2, G)``, ``(2, H)`` gains and shifts of the
            layer normalisations, or ``(0, 0)`` without ``layer_norm``.
        recurrent_keep: ``(B, P)`` mask of :math:`h_{t-1}` where ``weight_hh`` reads it;
            candidate_keep: ``(B, H)`` mask of :math:`z`; zoneout_cell, zoneout_hidden:
            ``(T, B, H)``, ``(T, B, P)`` weights of the previous :math:`c`, :math:`h`; reset:
            ``(T, B)``, nonzero where the state restarts from ``h0, c0, feedback0`` before that
            step (all by time position; ``(0, 0)``/``(0, 0, 0)`` when unused).
        lengths: ``(B,)`` int64 in ``[1, T]``; reverse: each sequence from its last step.
        keep: save what :func:`lstm_backward` needs.

    Returns:
        ``output (T, B, P)`` (zeros past each length), ``h_n (B, P)``, ``c_n (B, H)``,
        ``feedback_n (B, F)``, and the saved arrays: ``gates (T, B, G)`` (activations; the
        input projections without the bias at padded positions), ``cell_prev_at (T, B, H)`` (:math:`c_{t-1}`),
        ``source_at (T, B, R)`` (what ``weight_hh`` read: :math:`[m h_{t-1}, \gamma_{t-1}]`),
        ``y_at (T, B, H)`` (before the projection), ``norm_at (T, B, 2, G)`` (the normalised
        projections, input and recurrent) and ``inverse_at (T, B, 2)`` (their
        :math:`1 / \sqrt{\sigma^2 + \epsilon}`); without ``keep`` the saved ones but
        ``gates`` have ``T = 0``, and so do the last two without ``layer_norm``.
    """
    steps, batch, _ = x.shape
    hidden, out_size, feedback_size = c0.shape[1], h0.shape[1], feedback0.shape[1]
    source_size = out_size + feedback_size
    rows = weight_ih.shape[0]
    project = weight_hr.shape[0] > 0
    normalized = norm_ih.shape[0] > 0
    drop_recurrent, drop_candidate = recurrent_keep.shape[0] > 0, candidate_keep.shape[0] > 0
    zone_cell, zone_hidden = zoneout_cell.shape[0] > 0, zoneout_hidden.shape[0] > 0
    resets = reset.shape[0] > 0
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
    saved = steps if keep else 0

    # the input projections, without the bias (added where a row is read: a bias written into
    # every row first would cost a pass over (T, B, G)); each row turns into that step's
    # activations, saved for backward
    norm_at = np.empty((saved if normalized else 0, batch, 2, rows), dtype)
    inverse_at = np.empty((saved if normalized else 0, batch, 2), dtype)
    gates = input_projection(x, weight_ih)  # (T, B, G)
    bias_row = row_bias(bias, rows, dtype, not normalized)
    shifted_ih = norm_ih.copy()  # with layer norm, b folded into the shift of LN(W x)
    if normalized:
        for g in range(bias.shape[0]):
            shifted_ih[1, g] += bias[g]
    weight_hh_t = np.ascontiguousarray(weight_hh.T)  # (R, G)
    weight_hr_t = np.ascontiguousarray(weight_hr.T)  # (H, P)
    peephole_i = peephole_row(weight_peephole, peep_i, hidden)
    peephole_f = peephole_row(weight_peephole, peep_f, hidden)
    peephole_o = peephole_row(weight_peephole, peep_o, hidden)
    output = time_major(steps, batch, out_size, dtype, lengths)
    source = np.empty((batch, source_size), dtype)  # [h, gates] of the last step
    source[:, :out_size] = h0
    source[:, out_size:] = feedback0
    read = np.empty((batch, source_size), dtype) if drop_recurrent else source  # masked h
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
    fresh = np.empty((4, max(hidden, rows)), dtype)  # the new cell, a mask row, LN scratch
    written, ones, hat, input_hat = fresh[0, :hidden], fresh[1, :hidden], fresh[2], fresh[3]
    ones[:] = 1.0

    cell_prev_at = time_major(saved, batch, hidden, dtype, lengths)
    source_at = time_major(saved, batch, source_size, dtype, lengths)
    y_at = time_major(saved if project else 0, batch, hidden, dtype, lengths)

    for t in range(steps):
        if resets:  # the initial state back where a segment starts
            restart(t, reset, lengths, reverse, h0, source, 0)
            restart(t, reset, lengths, reverse, feedback0, source, out_size)
            restart(t, reset, lengths, reverse, c0, cell, 0)
        if drop_recurrent:
            for b in range(batch):
                for p in range(out_size):
                    read[b, p] = source[b, p] * recurrent_keep[b, p]
                for r in range(out_size, source_size):
                    read[b, r] = source[b, r]
        matmul(read, weight_hh_t, net)  # (B, G) recurrent part
        for b in range(batch):
            if t >= lengths[b]:
                continue
            tau = time_index(t, lengths[b], reverse)
            if normalized:  # act = LN(W x) + b + LN(W_hh source), the input's row read here
                row_hat = norm_at[tau, b, 1] if keep else hat[:rows]
                inverse = normalize(net[b], norm_hh, row_hat, net[b])
                row_hat = norm_at[tau, b, 0] if keep else input_hat[:rows]
                inverse_input = normalize(gates[tau, b], shifted_ih, row_hat, act[:rows])
                if keep:
                    inverse_at[tau, b, 0] = inverse_input
                    inverse_at[tau, b, 1] = inverse
                for g in range(rows):
                    act[g] += net[b, g]
            else:
                for g in range(rows):
                    act[g] = net[b, g] + gates[tau, b, g] + bias_row[g]
            if keep:
                for r in range(source_size):
                    source_at[tau, b, r] = read[b, r]
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
            candidate_mask = candidate_keep[b] if drop_candidate else ones
            for j in range(hidden):  # the new cell, before zoneout
                written[j] = cell_f[j] * cell[b, j] + cell_i[j] * act_g[j] * candidate_mask[j]
            if peep_o >= 0:
                for j in range(hidden):
                    act_o[j] += peephole_o[j] * written[j]
                activate(act, gate_table, row_o, rows)
            if block > 1:
                expand(act_o, block, cell_o)
            if normalized:
                normalize(written, norm_cell, hat[:hidden], h_c)
            else:
                for j in range(hidden):
                    h_c[j] = written[j]
            activate(h_c, output_table, 0, hidden)
            for j in range(hidden):
                cell_y[b, j] = cell_o[j] * h_c[j]
            if zone_cell:
                for j in range(hidden):
                    kept = zoneout_cell[tau, b, j]
                    cell[b, j] = kept * cell[b, j] + (1.0 - kept) * written[j]
            else:
                for j in range(hidden):
                    cell[b, j] = written[j]
            for g in range(rows):
                gates[tau, b, g] = act[g]
            if keep and project:
                for j in range(hidden):
                    y_at[tau, b, j] = cell_y[b, j]
            if not project:
                zoneout_update(source, cell_y, zoneout_hidden, tau, b, zone_hidden, output)
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
                    zoneout_update(source, projected, zoneout_hidden, tau, b, zone_hidden, output)

    h_n = source[:, :out_size].copy()
    feedback_n = source[:, out_size:].copy()
    return output, h_n, cell, feedback_n, gates, cell_prev_at, source_at, y_at, norm_at, inverse_at
