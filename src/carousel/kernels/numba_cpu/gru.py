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

Shapes: ``T`` steps, ``B`` batch, ``I`` input, ``H`` hidden; packed rows ``(r, z, n)``, ``3H``.
``config`` is ``(gate activation code, candidate activation code)`` as int64; optional biases are
passed as ``(0,)`` arrays.
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


def gru_config(spec: CellSpec, hidden_size: int) -> np.ndarray:
    """The int64 configuration vector of a GRU kernel: the two activation codes."""
    return np.array(
        [ACTIVATIONS[spec.gate_activation].code, ACTIVATIONS[spec.candidate_activation].code],
        dtype=np.int64,
    )


@njit(cache=True)
def gru_forward(config, x, h0, weight_ih, bias_ih, weight_hh, bias_hh, lengths, reverse, keep):
    """Run one direction of one GRU layer over a padded batch.

    Args:
        config: ``(2,)`` int64 from :func:`gru_config`.
        x: ``(T, B, I)``; h0: ``(B, H)``.
        weight_ih: ``(3H, I)``; bias_ih: ``(3H,)`` or ``(0,)``.
        weight_hh: ``(3H, H)``; bias_hh: ``(3H,)`` or ``(0,)``.
        lengths: ``(B,)`` int64 in ``[1, T]``; reverse: run each sequence backwards.
        keep: save what :func:`gru_backward` needs.

    Returns:
        ``output (T, B, H)``, ``h_n (B, H)``, and the saved ``gates (T, B, 3H)`` (``r, u, n``),
        ``recurrent_n (T, B, H)`` (:math:`a_t`) and ``source (T, B, H)`` (:math:`h_{t-1}`).
    """
    steps, batch, _ = x.shape
    hidden = h0.shape[1]
    gate_code, candidate_code = config[0], config[1]
    has_bias_hh = bias_hh.shape[0] > 0
    dtype = x.dtype

    gates_x = input_projection(x, weight_ih, bias_ih)  # (T, B, 3H)
    weight_hh_t = np.ascontiguousarray(weight_hh.T)  # (H, 3H)
    output = np.zeros((steps, batch, hidden), dtype)
    h = h0.copy()
    recurrent = np.empty((batch, 3 * hidden), dtype)
    saved = steps if keep else 0
    gates_at = np.zeros((saved, batch, 3 * hidden), dtype)
    recurrent_n_at = np.zeros((saved, batch, hidden), dtype)
    source_at = np.zeros((saved, batch, hidden), dtype)

    for t in range(steps):
        np.dot(h, weight_hh_t, recurrent)  # (B, 3H)
        for b in range(batch):
            if t >= lengths[b]:
                continue
            tau = time_index(t, lengths[b], reverse)
            rec, gx, h_b = recurrent[b], gates_x[tau, b], h[b]
            if has_bias_hh:
                for g in range(3 * hidden):
                    rec[g] += bias_hh[g]
            if keep:
                source_at[tau, b] = h_b
                recurrent_n_at[tau, b] = rec[2 * hidden :]
            for g in range(2 * hidden):
                rec[g] += gx[g]
            activate(rec[: 2 * hidden], gate_code)  # r, u
            for j in range(hidden):
                rec[2 * hidden + j] = gx[2 * hidden + j] + rec[j] * rec[2 * hidden + j]
            activate(rec[2 * hidden :], candidate_code)  # n
            for j in range(hidden):
                update = rec[hidden + j]
                h_b[j] = (1.0 - update) * rec[2 * hidden + j] + update * h_b[j]
            output[tau, b] = h_b
            if keep:
                gates_at[tau, b] = rec
    return output, h, gates_at, recurrent_n_at, source_at


@njit(cache=True)
def gru_backward(
    config,
    x,
    weight_ih,
    weight_hh,
    lengths,
    reverse,
    gates_at,
    recurrent_n_at,
    source_at,
    d_output,
    d_h_n,
    need_input_grad,
):
    """Backpropagation through time for :func:`gru_forward`.

    Returns:
        ``d_x (T, B, I)`` (or ``(0, 0, 0)``), ``d_h0 (B, H)``, ``d_weight_ih (3H, I)``,
        ``d_bias_ih (3H,)``, ``d_weight_hh (3H, H)``, ``d_bias_hh (3H,)``.
    """
    steps, batch, _ = x.shape
    hidden = d_h_n.shape[1]
    gate_code, candidate_code = config[0], config[1]
    dtype = x.dtype

    d_h = d_h_n.copy()
    d_net_at = np.zeros((steps, batch, 3 * hidden), dtype)  # of the input projection
    d_recurrent_at = np.zeros((steps, batch, 3 * hidden), dtype)  # of R h + b_hh
    d_recurrent = np.zeros((batch, 3 * hidden), dtype)
    d_source = np.empty((batch, hidden), dtype)

    for t in range(steps - 1, -1, -1):
        for b in range(batch):
            if t >= lengths[b]:
                continue
            tau = time_index(t, lengths[b], reverse)
            gates, a, h_prev = gates_at[tau, b], recurrent_n_at[tau, b], source_at[tau, b]
            d_h_b, d_net, d_rec = d_h[b], d_net_at[tau, b], d_recurrent[b]
            upstream = d_output[tau, b]
            for j in range(hidden):
                delta = d_h_b[j] + upstream[j]
                reset, update, new = gates[j], gates[hidden + j], gates[2 * hidden + j]
                d_new = delta * (1.0 - update) * derivative(new, candidate_code)
                d_update = delta * (h_prev[j] - new) * derivative(update, gate_code)
                d_reset = d_new * a[j] * derivative(reset, gate_code)
                d_net[j] = d_reset
                d_net[hidden + j] = d_update
                d_net[2 * hidden + j] = d_new
                d_rec[j] = d_reset
                d_rec[hidden + j] = d_update
                d_rec[2 * hidden + j] = d_new * reset
                d_h_b[j] = delta * update
            d_recurrent_at[tau, b] = d_rec
        np.dot(d_recurrent, weight_hh, d_source)  # (B, H)
        for b in range(batch):
            if t < lengths[b]:
                d_h[b] += d_source[b]

    d_x, d_weight_ih, d_bias_ih = input_gradients(x, weight_ih, d_net_at, need_input_grad)
    _, d_weight_hh, d_bias_hh = input_gradients(source_at, weight_hh, d_recurrent_at, False)
    return d_x, d_h, d_weight_ih, d_bias_ih, d_weight_hh, d_bias_hh
