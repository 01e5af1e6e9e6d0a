r"""The GRU (Cho et al. 2014, ``torch.nn.GRU``'s form) as a compiled forward pass and its backward through time.

.. math::
    r_t &= \sigma(W_r x_t + b_{ir} + R_r h_{t-1} + b_{hr}), \quad
    u_t = \sigma(W_z x_t + b_{iz} + R_z h_{t-1} + b_{hz}) \\
    a_t &= R_n h_{t-1} + b_{hn}, \quad n_t = \phi(W_n x_t + b_{in} + r_t \odot a_t), \quad
    h_t = (1 - u_t) \odot n_t + u_t \odot h_{t-1}

(:math:`u` is the update gate, ``z`` in torch's names.) Backward, per step, with
:math:`\delta = \partial L / \partial h_t`:

.. math::
    \partial net_n &= \delta (1 - u) \phi'(n), \quad
    \partial net_u = \delta (h_{t-1} - n)\, \sigma'(u), \quad
    \partial net_r = \partial net_n\, a\, \sigma'(r) \\
    \partial h_{t-1} &= \delta u + [\partial net_r, \partial net_u, r\, \partial net_n] R

With ``layer_norm`` the two projections are normalised before their biases
(:mod:`.layer_norm`); the recurrent mask multiplies :math:`h_{t-1}` where :math:`R` reads it, the
candidate mask multiplies :math:`n` where it enters :math:`h_t`, zoneout mixes :math:`h_{t-1}`
into :math:`h_t` and resets put ``h0`` back before a step (:mod:`.masks`).

Shapes: ``T`` steps, ``B`` batch, ``I`` input, ``H`` hidden; packed rows ``(r, z, n)``, ``3H``.
``config`` is ``(gate activation code, candidate activation code)`` as int64; optional biases are
passed as ``(0,)`` arrays, absent normalisations and masks as ``(0, 0)`` (zoneout ``(0, 0, 0)``).
"""

from __future__ import annotations

import numpy as np

from carousel.cells import ACTIVATIONS, CellSpec
from carousel.kernels.numba_cpu.blas import (
    input_gradients,
    matmul,
    project_into,
    row_bias,
)
from carousel.kernels.numba_cpu.common import (
    activate,
    activation_table,
    derivatives,
    kernel,
    scratch,
    time_index,
    time_major,
)
from carousel.kernels.numba_cpu.layer_norm import normalize, normalize_backward
from carousel.kernels.numba_cpu.masks import restart, stop_at_resets


def gru_config(spec: CellSpec, hidden_size: int) -> np.ndarray:
    """The int64 configuration vector of a GRU kernel: the two activation codes."""
    return np.array(
        [ACTIVATIONS[spec.gate_activation].code, ACTIVATIONS[spec.candidate_activation].code],
        dtype=np.int64,
    )


@kernel
def _activation_table(config, hidden, dtype):
    """The activation table of the packed rows: gates ``r, u``, then the candidate ``n``."""
    codes = np.full(3 * hidden, config[0])
    codes[2 * hidden :] = config[1]
    return activation_table(codes, dtype)


@kernel
def gru_forward(
    config,
    x,
    h0,
    weight_ih,
    bias_ih,
    weight_hh,
    bias_hh,
    norm_ih,
    norm_hh,
    recurrent_keep,
    candidate_keep,
    zoneout_hidden,
    reset,
    lengths,
    reverse,
    keep,
    workspace,
):
    r"""Run one direction of one GRU layer over a padded batch.

    Args:
        config: ``(2,)`` int64 from :func:`gru_config`.
        x: ``(T, B, I)``; h0: ``(B, H)``.
        weight_ih: ``(3H, I)``; bias_ih: ``(3H,)`` or ``(0,)``.
        weight_hh: ``(3H, H)``; bias_hh: ``(3H,)`` or ``(0,)``.
        norm_ih, norm_hh: ``(2, 3H)`` gains and shifts of the normalisations, or ``(0, 0)``.
        recurrent_keep, candidate_keep: ``(B, H)`` masks of :math:`h_{t-1}` (where :math:`R`
            reads it) and of :math:`n`; zoneout_hidden: ``(T, B, H)`` weights of
            :math:`h_{t-1}` in :math:`h_t`; reset: ``(T, B)``, nonzero where ``h0`` comes back
            before that step (by time position; ``(0, 0)``/``(0, 0, 0)`` when unused).
        lengths: ``(B,)`` int64 in ``[1, T]``; reverse: run each sequence backwards.
        keep: save what :func:`gru_backward` needs.
        workspace: 1-D scratch of the dtype for the ``(T, B, 3H)`` input projections, reused
            across calls; length 0 to allocate.

    Returns:
        ``output (T, B, H)``, ``h_n (B, H)``, and the saved ``gates (T, B, 3H)`` (``r, u, n``),
        ``recurrent_n (T, B, H)`` (:math:`a_t`), ``source (T, B, H)`` (:math:`h_{t-1}`, unmasked),
        ``norm_at (T, B, 2, 3H)`` and ``inverse_at (T, B, 2)`` (the normalisations' values and
        :math:`1 / \sqrt{\sigma^2 + \epsilon}`; ``T = 0`` without ``layer_norm``).
    """
    steps, batch, _ = x.shape
    hidden = h0.shape[1]
    width = 3 * hidden
    has_bias_hh = bias_hh.shape[0] > 0
    normalized = norm_ih.shape[0] > 0
    drop_recurrent, drop_candidate = recurrent_keep.shape[0] > 0, candidate_keep.shape[0] > 0
    zone, resets = zoneout_hidden.shape[0] > 0, reset.shape[0] > 0
    table = _activation_table(config, hidden, x.dtype)
    dtype = x.dtype
    saved = steps if keep else 0

    norm_at = np.empty((saved if normalized else 0, batch, 2, width), dtype)
    inverse_at = np.empty((saved if normalized else 0, batch, 2), dtype)
    gates_x = project_into(x, weight_ih, workspace)  # (T, B, 3H)
    bias_x = row_bias(bias_ih, width, dtype, not normalized)  # added where a row is read
    # with layer norm the biases are folded into the shifts (b_ih of LN(W x), b_hh of LN(R h)),
    # and each step normalises its own row of the input projections where it reads them
    shifted_ih, shifted_hh = norm_ih.copy(), norm_hh.copy()
    if normalized:
        for g in range(bias_ih.shape[0]):
            shifted_ih[1, g] += bias_ih[g]
        for g in range(bias_hh.shape[0]):
            shifted_hh[1, g] += bias_hh[g]
    weight_hh_t = np.ascontiguousarray(weight_hh.T)  # (H, 3H)
    output = time_major(steps, batch, hidden, dtype, lengths)
    h = h0.copy()
    read = np.empty((batch, hidden), dtype) if drop_recurrent else h  # what R reads
    recurrent = np.empty((batch, width), dtype)
    act = np.empty(width, dtype)  # r, u, n of one row
    rows = np.ones((3, width), dtype)  # a mask of ones, LN scratch
    ones, hat, input_hat = rows[0, :hidden], rows[1], rows[2]
    gates_at = time_major(saved, batch, width, dtype, lengths)
    recurrent_n_at = time_major(saved, batch, hidden, dtype, lengths)
    source_at = time_major(saved, batch, hidden, dtype, lengths)

    for t in range(steps):
        if resets:
            restart(t, reset, lengths, reverse, h0, h, 0)
        if drop_recurrent:
            for b in range(batch):
                for j in range(hidden):
                    read[b, j] = h[b, j] * recurrent_keep[b, j]
        matmul(read, weight_hh_t, recurrent)  # (B, 3H)
        for b in range(batch):
            if t >= lengths[b]:
                continue
            tau = time_index(t, lengths[b], reverse)
            if normalized:
                row_hat = norm_at[tau, b, 1] if keep else hat
                inverse = normalize(recurrent[b], shifted_hh, row_hat, recurrent[b])
                row_hat = norm_at[tau, b, 0] if keep else input_hat
                inverse_input = normalize(gates_x[tau, b], shifted_ih, row_hat, gates_x[tau, b])
                if keep:
                    inverse_at[tau, b, 0] = inverse_input
                    inverse_at[tau, b, 1] = inverse
            elif has_bias_hh:
                for g in range(width):
                    recurrent[b, g] += bias_hh[g]
            if keep:
                for j in range(hidden):
                    source_at[tau, b, j] = h[b, j]
                    recurrent_n_at[tau, b, j] = recurrent[b, 2 * hidden + j]
            for g in range(2 * hidden):
                act[g] = recurrent[b, g] + gates_x[tau, b, g] + bias_x[g]
            activate(act, table, 0, 2 * hidden)  # r, u
            for j in range(hidden):
                act[2 * hidden + j] = (
                    gates_x[tau, b, 2 * hidden + j]
                    + bias_x[2 * hidden + j]
                    + act[j] * recurrent[b, 2 * hidden + j]
                )
            activate(act, table, 2 * hidden, width)  # n
            candidate_mask = candidate_keep[b] if drop_candidate else ones
            for j in range(hidden):
                update = act[hidden + j]
                fresh = (1.0 - update) * act[2 * hidden + j] * candidate_mask[j] + update * h[b, j]
                if zone:
                    kept = zoneout_hidden[tau, b, j]
                    h[b, j] = kept * h[b, j] + (1.0 - kept) * fresh
                else:
                    h[b, j] = fresh
                output[tau, b, j] = h[b, j]
            if keep:
                for g in range(width):
                    gates_at[tau, b, g] = act[g]
    return output, h, gates_at, recurrent_n_at, source_at, norm_at, inverse_at


@kernel
def gru_backward(
    config,
    x,
    weight_ih,
    weight_hh,
    norm_ih,
    norm_hh,
    recurrent_keep,
    candidate_keep,
    zoneout_hidden,
    reset,
    lengths,
    reverse,
    gates_at,
    recurrent_n_at,
    source_at,
    norm_at,
    inverse_at,
    d_output,
    d_h_n,
    need_input_grad,
    workspace,
):
    r"""Backpropagation through time for :func:`gru_forward`.

    ``workspace`` (1-D, the dtype) holds the two ``(T, B, 3H)`` gradient buffers when it has room
    for them (``2 T B 3H``); pass length 0 to allocate. The other arguments are those of
    :func:`gru_forward`, its saved arrays, and the upstream gradients. With zoneout weight
    :math:`d` the error :math:`\delta` reaching :math:`h_t` goes :math:`d \delta` straight to
    :math:`h_{t-1}` and :math:`(1 - d) \delta` through the step; with the candidate mask
    :math:`m`, :math:`n` reads :math:`m n` in the equations of the module docstring.

    Returns:
        ``d_x (T, B, I)`` (or ``(0, 0, 0)``), ``d_h0 (B, H)``, ``d_weight_ih (3H, I)``,
        ``d_bias_ih (3H,)``, ``d_weight_hh (3H, H)``, ``d_bias_hh (3H,)``, and the gradients of
        ``norm_ih`` and ``norm_hh`` (their shapes).
    """
    steps, batch, _ = x.shape
    hidden = d_h_n.shape[1]
    normalized = norm_ih.shape[0] > 0
    drop_recurrent, drop_candidate = recurrent_keep.shape[0] > 0, candidate_keep.shape[0] > 0
    zone, resets = zoneout_hidden.shape[0] > 0, reset.shape[0] > 0
    table = _activation_table(config, hidden, x.dtype)
    dtype = x.dtype

    d_h = d_h_n.copy()
    width = 3 * hidden
    d_net_at = scratch(workspace, 0, steps, batch, width, dtype, lengths)  # input projection
    d_recurrent_at = scratch(workspace, steps * batch * width, steps, batch, width, dtype, lengths)
    d_recurrent = np.zeros((batch, width), dtype)
    d_source = np.empty((batch, hidden), dtype)
    act = np.empty(width, dtype)
    slope = np.empty(width, dtype)
    ones = np.ones(hidden, dtype)
    d_norm_ih = np.zeros(norm_ih.shape)  # accumulated in float64
    d_norm_hh = np.zeros(norm_hh.shape)

    for t in range(steps - 1, -1, -1):
        for b in range(batch):
            if t >= lengths[b]:
                continue
            tau = time_index(t, lengths[b], reverse)
            for g in range(width):
                act[g] = gates_at[tau, b, g]
            derivatives(act, table, 0, width, slope)
            candidate_mask = candidate_keep[b] if drop_candidate else ones
            for j in range(hidden):
                delta = d_h[b, j] + d_output[tau, b, j]
                kept = zoneout_hidden[tau, b, j] if zone else dtype.type(0.0)
                through = (1.0 - kept) * delta
                reset_gate, update, new = act[j], act[hidden + j], act[2 * hidden + j]
                d_new = through * (1.0 - update) * candidate_mask[j] * slope[2 * hidden + j]
                written = new * candidate_mask[j]
                d_update = through * (source_at[tau, b, j] - written) * slope[hidden + j]
                d_reset = d_new * recurrent_n_at[tau, b, j] * slope[j]
                d_net_at[tau, b, j] = d_reset
                d_net_at[tau, b, hidden + j] = d_update
                d_net_at[tau, b, 2 * hidden + j] = d_new
                d_recurrent[b, j] = d_reset
                d_recurrent[b, hidden + j] = d_update
                d_recurrent[b, 2 * hidden + j] = d_new * reset_gate
                d_h[b, j] = through * update + kept * delta
            if normalized:  # R h was normalised before b_hh was added: b_hh's gradient is
                normalize_backward(  # the shift's, accumulated in d_norm_hh[1]
                    d_recurrent[b],
                    norm_at[tau, b, 1],
                    inverse_at[tau, b, 1],
                    norm_hh,
                    d_norm_hh,
                    d_recurrent[b],
                )
            for g in range(width):
                d_recurrent_at[tau, b, g] = d_recurrent[b, g]
            if normalized:  # gates_x = LN(W x) + b_ih: b_ih's gradient is the shift's
                normalize_backward(
                    d_net_at[tau, b],
                    norm_at[tau, b, 0],
                    inverse_at[tau, b, 0],
                    norm_ih,
                    d_norm_ih,
                    d_net_at[tau, b],
                )
        matmul(d_recurrent, weight_hh, d_source)  # (B, H)
        for b in range(batch):
            if t < lengths[b]:
                for j in range(hidden):
                    if drop_recurrent:
                        d_h[b, j] += d_source[b, j] * recurrent_keep[b, j]
                    else:
                        d_h[b, j] += d_source[b, j]
        if resets:  # no error crosses a reset
            stop_at_resets(t, reset, lengths, reverse, d_h)

    d_x, d_weight_ih, d_bias_ih = input_gradients(x, weight_ih, d_net_at, need_input_grad)
    sources = source_at
    if drop_recurrent:  # R read the masked h
        sources = np.empty(source_at.shape, dtype)
        for t in range(steps):
            for b in range(batch):
                for j in range(hidden):
                    sources[t, b, j] = source_at[t, b, j] * recurrent_keep[b, j]
    _, d_weight_hh, d_bias_hh = input_gradients(sources, weight_hh, d_recurrent_at, False)
    if normalized:
        d_bias_ih = d_norm_ih[1].astype(dtype)
        d_bias_hh = d_norm_hh[1].astype(dtype)
    return (
        d_x,
        d_h,
        d_weight_ih,
        d_bias_ih,
        d_weight_hh,
        d_bias_hh,
        d_norm_ih.astype(dtype),
        d_norm_hh.astype(dtype),
    )
