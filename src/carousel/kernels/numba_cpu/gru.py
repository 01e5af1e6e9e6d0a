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

from carousel.cells import ACTIVATIONS, CellSpec
from carousel.kernels.numba_cpu.blas import (
    input_gradients,
    input_projection,
    matmul,
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
    has_bias_hh = bias_hh.shape[0] > 0
    table = _activation_table(config, hidden, x.dtype)
    dtype = x.dtype

    gates_x = input_projection(x, weight_ih, bias_ih)  # (T, B, 3H)
    weight_hh_t = np.ascontiguousarray(weight_hh.T)  # (H, 3H)
    output = time_major(steps, batch, hidden, dtype, lengths)
    h = h0.copy()
    recurrent = np.empty((batch, 3 * hidden), dtype)
    act = np.empty(3 * hidden, dtype)  # r, u, n of one row
    saved = steps if keep else 0
    gates_at = time_major(saved, batch, 3 * hidden, dtype, lengths)
    recurrent_n_at = time_major(saved, batch, hidden, dtype, lengths)
    source_at = time_major(saved, batch, hidden, dtype, lengths)

    for t in range(steps):
        matmul(h, weight_hh_t, recurrent)  # (B, 3H)
        for b in range(batch):
            if t >= lengths[b]:
                continue
            tau = time_index(t, lengths[b], reverse)
            if has_bias_hh:
                for g in range(3 * hidden):
                    recurrent[b, g] += bias_hh[g]
            if keep:
                for j in range(hidden):
                    source_at[tau, b, j] = h[b, j]
                    recurrent_n_at[tau, b, j] = recurrent[b, 2 * hidden + j]
            for g in range(2 * hidden):
                act[g] = recurrent[b, g] + gates_x[tau, b, g]
            activate(act, table, 0, 2 * hidden)  # r, u
            for j in range(hidden):
                act[2 * hidden + j] = (
                    gates_x[tau, b, 2 * hidden + j] + act[j] * recurrent[b, 2 * hidden + j]
                )
            activate(act, table, 2 * hidden, 3 * hidden)  # n
            for j in range(hidden):
                update = act[hidden + j]
                h[b, j] = (1.0 - update) * act[2 * hidden + j] + update * h[b, j]
                output[tau, b, j] = h[b, j]
            if keep:
                for g in range(3 * hidden):
                    gates_at[tau, b, g] = act[g]
    return output, h, gates_at, recurrent_n_at, source_at


@kernel
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
    workspace,
):
    """Backpropagation through time for :func:`gru_forward`.

    ``workspace`` (1-D, the dtype) holds the two ``(T, B, 3H)`` gradient buffers when it has room
    for them (``2 T B 3H``); pass length 0 to allocate. The other arguments are those of
    :func:`gru_forward`, its saved arrays, and the upstream gradients.

    Returns:
        ``d_x (T, B, I)`` (or ``(0, 0, 0)``), ``d_h0 (B, H)``, ``d_weight_ih (3H, I)``,
        ``d_bias_ih (3H,)``, ``d_weight_hh (3H, H)``, ``d_bias_hh (3H,)``.
    """
    steps, batch, _ = x.shape
    hidden = d_h_n.shape[1]
    table = _activation_table(config, hidden, x.dtype)
    dtype = x.dtype

    d_h = d_h_n.copy()
    width = 3 * hidden
    d_net_at = scratch(workspace, 0, steps, batch, width, dtype, lengths)  # input projection
    d_recurrent_at = scratch(workspace, steps * batch * width, steps, batch, width, dtype, lengths)
    d_recurrent = np.zeros((batch, 3 * hidden), dtype)
    d_source = np.empty((batch, hidden), dtype)
    act = np.empty(3 * hidden, dtype)
    slope = np.empty(3 * hidden, dtype)

    for t in range(steps - 1, -1, -1):
        for b in range(batch):
            if t >= lengths[b]:
                continue
            tau = time_index(t, lengths[b], reverse)
            for g in range(3 * hidden):
                act[g] = gates_at[tau, b, g]
            derivatives(act, table, 0, 3 * hidden, slope)
            for j in range(hidden):
                delta = d_h[b, j] + d_output[tau, b, j]
                reset, update, new = act[j], act[hidden + j], act[2 * hidden + j]
                d_new = delta * (1.0 - update) * slope[2 * hidden + j]
                d_update = delta * (source_at[tau, b, j] - new) * slope[hidden + j]
                d_reset = d_new * recurrent_n_at[tau, b, j] * slope[j]
                d_net_at[tau, b, j] = d_reset
                d_net_at[tau, b, hidden + j] = d_update
                d_net_at[tau, b, 2 * hidden + j] = d_new
                d_recurrent[b, j] = d_reset
                d_recurrent[b, hidden + j] = d_update
                d_recurrent[b, 2 * hidden + j] = d_new * reset
                d_h[b, j] = delta * update
            for g in range(3 * hidden):
                d_recurrent_at[tau, b, g] = d_recurrent[b, g]
        matmul(d_recurrent, weight_hh, d_source)  # (B, H)
        for b in range(batch):
            if t < lengths[b]:
                for j in range(hidden):
                    d_h[b, j] += d_source[b, j]

    d_x, d_weight_ih, d_bias_ih = input_gradients(x, weight_ih, d_net_at, need_input_grad)
    _, d_weight_hh, d_bias_hh = input_gradients(source_at, weight_hh, d_recurrent_at, False)
    return d_x, d_h, d_weight_ih, d_bias_ih, d_weight_hh, d_bias_hh
