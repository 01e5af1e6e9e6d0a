r"""The Elman network (``torch.nn.RNN``) as a compiled forward pass and its backward through time.

.. math::
    h_t = \phi(W x_t + b + R h_{t-1}), \qquad
    \partial net_t = (\partial L / \partial h_t)\, \phi'(h_t), \qquad
    \partial h_{t-1} \mathrel{+}= \partial net_t\, R

Shapes: ``T`` steps, ``B`` batch, ``I`` input, ``H`` hidden. ``config`` is ``(activation code,)``
as int64; ``bias`` (the sum of torch's two biases) is ``(0,)`` when absent.
"""

from __future__ import annotations

import numpy as np

from carousel.cells import ACTIVATIONS, CellSpec
from carousel.kernels.numba_cpu.blas import (
    input_gradients,
    matmul,
    project_into,
    row_bias,
    sequence_gemm,
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


def elman_config(spec: CellSpec, hidden_size: int) -> np.ndarray:
    """The int64 configuration vector of an Elman kernel: the activation code."""
    return np.array([ACTIVATIONS[spec.candidate_activation].code], dtype=np.int64)


@kernel
def elman_forward(config, x, h0, weight_ih, bias, weight_hh, lengths, reverse, keep, workspace):
    """Run one direction of one Elman layer over a padded batch.

    Args:
        config: ``(1,)`` int64 from :func:`elman_config`.
        x: ``(T, B, I)``; h0: ``(B, H)``; weight_ih: ``(H, I)``; bias: ``(H,)`` or ``(0,)``;
        weight_hh: ``(H, H)``; lengths: ``(B,)`` int64 in ``[1, T]``; reverse, keep: as in
            :func:`carousel.kernels.numba_cpu.lstm.lstm_forward`.
        workspace: 1-D scratch of the dtype for the ``(T, B, H)`` input projections, reused
            across calls; length 0 to allocate.

    Returns:
        ``output (T, B, H)``, ``h_n (B, H)`` and the saved ``source (T, B, H)``
        (:math:`h_{t-1}`) and ``last (B, H)`` (each sequence's last :math:`h_t`, a copy): the
        backward pass reads :math:`h_t` from them, never from the output or ``h_n``, which the
        caller may change in place before it runs. Without ``keep`` both have a zero axis.
    """
    steps, batch, _ = x.shape
    hidden = h0.shape[1]
    table = activation_table(np.full(hidden, config[0]), x.dtype)
    dtype = x.dtype

    gates_x = project_into(x, weight_ih, workspace)  # (T, B, H)
    bias_row = row_bias(bias, hidden, dtype, True)
    weight_hh_t = np.ascontiguousarray(weight_hh.T)  # (H, H)
    output = time_major(steps, batch, hidden, dtype, lengths)
    h = h0.copy()
    net = np.empty((batch, hidden), dtype)
    act = np.empty(hidden, dtype)
    source_at = time_major(steps if keep else 0, batch, hidden, dtype, lengths)

    for t in range(steps):
        matmul(h, weight_hh_t, net)  # (B, H)
        for b in range(batch):
            if t >= lengths[b]:
                continue
            tau = time_index(t, lengths[b], reverse)
            for j in range(hidden):
                act[j] = net[b, j] + gates_x[tau, b, j] + bias_row[j]
            activate(act, table, 0, hidden)
            for j in range(hidden):
                if keep:
                    source_at[tau, b, j] = h[b, j]
                h[b, j] = act[j]
                output[tau, b, j] = act[j]
    last = h.copy() if keep else np.zeros((0, hidden), dtype)
    return output, h, source_at, last


@kernel
def elman_backward(
    config,
    x,
    weight_ih,
    weight_hh,
    lengths,
    reverse,
    source_at,
    last,
    d_output,
    d_h_n,
    need_input_grad,
    workspace,
):
    """Backpropagation through time for :func:`elman_forward` (``source_at`` and ``last`` are its
    saved results: :math:`h_t` is the source of the next step, or ``last`` at a sequence's end).

    ``workspace`` (1-D, the dtype) holds the ``(T, B, H)`` gradient buffer when it has room for
    it; pass length 0 to allocate.

    Returns:
        ``d_x (T, B, I)`` (or ``(0, 0, 0)``), ``d_h0 (B, H)``, ``d_weight_ih (H, I)``,
        ``d_bias (H,)``, ``d_weight_hh (H, H)``.
    """
    steps, batch, _ = x.shape
    hidden = d_h_n.shape[1]
    table = activation_table(np.full(hidden, config[0]), x.dtype)
    dtype = x.dtype

    d_h = d_h_n.copy()
    d_net_at = scratch(workspace, 0, steps, batch, hidden, dtype, lengths)
    d_net = np.zeros((batch, hidden), dtype)
    d_source = np.empty((batch, hidden), dtype)
    act = np.empty(hidden, dtype)
    slope = np.empty(hidden, dtype)
    for t in range(steps - 1, -1, -1):
        for b in range(batch):
            if t >= lengths[b]:
                continue
            tau = time_index(t, lengths[b], reverse)
            if t + 1 < lengths[b]:
                h_t = source_at[time_index(t + 1, lengths[b], reverse), b]
            else:
                h_t = last[b]
            for j in range(hidden):
                act[j] = h_t[j]
            derivatives(act, table, 0, hidden, slope)
            for j in range(hidden):
                d_net[b, j] = (d_h[b, j] + d_output[tau, b, j]) * slope[j]
                d_net_at[tau, b, j] = d_net[b, j]
        matmul(d_net, weight_hh, d_source)  # (B, H)
        for b in range(batch):
            if t < lengths[b]:
                for j in range(hidden):
                    d_h[b, j] = d_source[b, j]

    d_x, d_weight_ih, d_bias = input_gradients(x, weight_ih, d_net_at, need_input_grad)
    flat = steps * batch
    d_weight_hh = np.empty((hidden, hidden), dtype)
    sources = source_at.reshape((flat, hidden))
    sequence_gemm(
        d_net_at.reshape((flat, hidden)), sources, d_weight_hh, True, False, 0.0
    )  # (H, H)
    return d_x, d_h, d_weight_ih, d_bias, d_weight_hh
