r"""The sLSTM (Beck et al. 2024) in one pair of compiled kernels: forward, and backward through time.

The equations are those of :func:`carousel.cells.slstm.slstm_step` (see :mod:`carousel.cells.slstm`),
per step and cell, with packed rows ``(i, f, g, o)`` of ``H`` each:

.. math::
    net_t &= W_{ih} x_t + b + W_{hh} h_{t-1} \qquad (W_{hh} \text{ block-diagonal, mask applied}) \\
    \ell_t &= \log\sigma(\tilde f_t) \text{ or } \tilde f_t, \qquad
    a_t = \ell_t + m_{t-1}, \qquad m_t = \max(a_t, \tilde\imath_t)
    \quad (m_t = \tilde\imath_t \text{ if } n_{t-1} = 0) \\
    i'_t &= e^{\tilde\imath_t - m_t}, \quad f'_t = e^{a_t - m_t} \;(0 \text{ if } n_{t-1} = 0),
    \quad z_t = \varphi(\tilde z_t), \quad o_t = \sigma(\tilde o_t) \\
    c_t &= f'_t c_{t-1} + i'_t z_t, \quad n_t = f'_t n_{t-1} + i'_t, \quad
    h_t = o_t\, \psi(c_t / n_t)

Structure as in :mod:`.lstm`: the input projections of all steps in one GEMM; per step one
recurrent GEMM and one fused pointwise pass; per step backward one pointwise pass and one GEMM for
:math:`\partial h_{t-1}`; weight gradients as large GEMMs after the loop. The recurrent GEMM is the
dense ``(B, H) x (H, 4H)`` product, or, with ``num_heads > 1`` and zeros outside the diagonal
blocks (what the layer's mask gives), one ``(B, D) x (D, 4D)`` product per head (:func:`_heads`);
the weight gradient then covers the diagonal blocks only (the rest is masked out).

:math:`\log\sigma(x) = \min(x, 0) - \log(1 + e^{-|x|})` is computed with the vectorisable
:func:`~carousel.kernels.numba_cpu.common.exp` and :func:`log1p_unit` (a series for
:math:`\log(1 + u)`, :math:`0 \le u \le 1`), so the pointwise loops call no libm function.

Shapes: ``T`` steps, ``B`` batch, ``I`` input, ``H`` cells, ``G = 4H`` packed rows. Arrays are
C-contiguous; ``bias`` may be ``(0,)``. Everything saved for the backward pass is indexed by time
position (see :mod:`.lstm`).
"""

from __future__ import annotations

import numpy as np

from carousel.cells import ACTIVATIONS, CellSpec
from carousel.kernels.numba_cpu.blas import (
    head_blocks,
    head_count,
    head_matmul,
    head_matmul_backward,
    input_gradients,
    input_projection,
    row_bias,
    sequence_gemm,
)
from carousel.kernels.numba_cpu.common import (
    activate,
    activation_table,
    add_output_error,
    derivatives,
    exp,
    kernel,
    log1p_unit,
    scratch,
    time_index,
    time_major,
)
from carousel.kernels.numba_cpu.masks import restart, stop_at_resets

# Fields of the configuration vector.
GATE_ACTIVATION, CANDIDATE_ACTIVATION, OUTPUT_ACTIVATION, EXP_FORGET, NUM_HEADS = 0, 1, 2, 3, 4
CONFIG_SIZE = 5
IDENTITY = ACTIVATIONS["identity"].code


def slstm_config(spec: CellSpec, hidden_size: int) -> np.ndarray:
    """The int64 configuration vector of ``spec`` (activations, exponential forget gate, heads)."""
    config = np.zeros(CONFIG_SIZE, dtype=np.int64)
    config[GATE_ACTIVATION] = ACTIVATIONS[spec.gate_activation].code
    config[CANDIDATE_ACTIVATION] = ACTIVATIONS[spec.candidate_activation].code
    config[OUTPUT_ACTIVATION] = ACTIVATIONS[spec.output_activation].code
    config[EXP_FORGET] = int(spec.forget_activation == "exp")
    config[NUM_HEADS] = spec.num_heads
    return config


@kernel
def _tables(config, hidden, dtype):
    """Activation tables: the packed rows (``g``: candidate, ``o``: gate; ``i``, ``f`` unused)
    and ``psi`` on ``c / n``."""
    codes = np.full(4 * hidden, IDENTITY)
    codes[2 * hidden : 3 * hidden] = config[CANDIDATE_ACTIVATION]
    codes[3 * hidden :] = config[GATE_ACTIVATION]
    gate_table = activation_table(codes, dtype)
    output_table = activation_table(np.full(hidden, config[OUTPUT_ACTIVATION]), dtype)
    return gate_table, output_table


@kernel
def slstm_forward(
    config, x, h0, c0, n0, m0, weight_ih, bias, weight_hh, reset, lengths, reverse, keep
):
    r"""Run one direction of one sLSTM layer over a padded batch.

    Args:
        config: ``(CONFIG_SIZE,)`` int64 from :func:`slstm_config`.
        x: ``(T, B, I)`` time-major input.
        h0, c0, n0, m0: ``(B, H)`` each, the initial state (``n0 = 0``: an empty memory).
        weight_ih: ``(G, I)``; bias: ``(G,)`` or ``(0,)``; weight_hh: ``(G, H)``, masked.
        reset: ``(T, B)`` nonzero where the state restarts from ``h0, c0, n0, m0`` before that
            time position, or ``(0, 0)`` (see :mod:`.masks`).
        lengths: ``(B,)`` int64 in ``[1, T]``.
        reverse: run each sequence from its last valid step to its first.
        keep: save what :func:`slstm_backward` needs (otherwise those arrays have ``T = 0``).

    Returns:
        ``output (T, B, H)`` (zeros past each length), ``h_n, c_n, n_n, m_n`` ``(B, H)``, and the
        saved arrays: ``gates (T, B, G)`` (:math:`i', f', z, o`; the input projections at padded
        positions), ``previous (T, B, 2H)`` (:math:`c_{t-1}, n_{t-1}`), ``source (T, B, H)``
        (:math:`h_{t-1}`), ``stabiliser (T, B, 2H)`` (the share :math:`w_t` of the error at
        :math:`m_t` that goes to :math:`a_t`: 1, 0, or 1/2 at a tie, 0 for an empty memory; and
        :math:`d\ell_t / d\tilde f_t`). Without ``keep`` the last four have ``T = 0``.
    """
    steps, batch, _ = x.shape
    hidden = c0.shape[1]
    rows = weight_ih.shape[0]
    dtype = x.dtype
    zero, half, one = dtype.type(0.0), dtype.type(0.5), dtype.type(1.0)
    exp_forget = config[EXP_FORGET] == 1
    identity_output = config[OUTPUT_ACTIVATION] == IDENTITY
    gate_table, output_table = _tables(config, hidden, dtype)

    gates = input_projection(x, weight_ih)  # (T, B, G); each row turns into activations
    bias_row = row_bias(bias, rows, dtype, True)
    heads = head_count(config[NUM_HEADS], weight_hh)
    size = hidden // heads
    weight_hh_t = np.ascontiguousarray(weight_hh.T) if heads == 1 else np.zeros((0, 0), dtype)
    blocks_t = head_blocks(weight_hh, heads, True)  # (heads, D, 4D)
    h_heads = np.empty((heads, batch, size), dtype)
    net_heads = np.empty((heads, batch, 4 * size), dtype)
    output = time_major(steps, batch, hidden, dtype, lengths)
    h = h0.copy()
    c = c0.copy()
    n = n0.copy()
    m = m0.copy()
    net = np.empty((batch, rows), dtype)
    act = np.empty(rows, dtype)
    ratio = np.empty(hidden, dtype)
    share = np.empty(hidden, dtype)
    slope = np.empty(hidden, dtype)

    saved = steps if keep else 0
    previous_at = time_major(saved, batch, 2 * hidden, dtype, lengths)
    source_at = time_major(saved, batch, hidden, dtype, lengths)
    stabiliser_at = time_major(saved, batch, 2 * hidden, dtype, lengths)

    resets = reset.shape[0] > 0
    for t in range(steps):
        if resets:  # the initial state back where a segment starts
            restart(t, reset, lengths, reverse, h0, h, 0)
            restart(t, reset, lengths, reverse, c0, c, 0)
            restart(t, reset, lengths, reverse, n0, n, 0)
            restart(t, reset, lengths, reverse, m0, m, 0)
        head_matmul(h, weight_hh_t, blocks_t, heads, h_heads, net_heads, net)  # (B, G), h_{t-1}
        for b in range(batch):
            if t >= lengths[b]:
                continue
            tau = time_index(t, lengths[b], reverse)
            for g in range(rows):
                act[g] = net[b, g] + gates[tau, b, g] + bias_row[g]
            if keep:
                for j in range(hidden):
                    source_at[tau, b, j] = h[b, j]
                    previous_at[tau, b, j] = c[b, j]
                    previous_at[tau, b, hidden + j] = n[b, j]
            activate(act, gate_table, 2 * hidden, rows)  # z and o
            for j in range(hidden):
                input_net = act[j]
                forget_net = act[hidden + j]
                if exp_forget:
                    log_forget = forget_net
                    slope[j] = one
                else:  # log sigmoid(x) = min(x, 0) - log(1 + e^-|x|); its slope sigmoid(-x)
                    decay = exp(-abs(forget_net))
                    log_forget = min(forget_net, zero) - log1p_unit(decay)
                    slope[j] = (decay if forget_net >= zero else one) / (one + decay)
                empty = n[b, j] == zero
                carried = log_forget + m[b, j]
                stabiliser = input_net if empty else max(carried, input_net)
                # the share of the error at m_t that goes to a_t: torch.maximum's convention
                weight = one if carried > input_net else zero
                weight = half if carried == input_net else weight
                share[j] = zero if empty else weight
                input_gate = exp(input_net - stabiliser)
                forget_gate = zero if empty else exp(carried - stabiliser)
                cell = forget_gate * c[b, j] + input_gate * act[2 * hidden + j]
                normaliser = forget_gate * n[b, j] + input_gate
                c[b, j] = cell
                n[b, j] = normaliser
                m[b, j] = stabiliser
                ratio[j] = cell / normaliser
                act[j] = input_gate
                act[hidden + j] = forget_gate
            if not identity_output:  # psi(c / n); the paper's psi is the identity
                activate(ratio, output_table, 0, hidden)
            for j in range(hidden):
                value = act[3 * hidden + j] * ratio[j]
                h[b, j] = value
                output[tau, b, j] = value
            for g in range(rows):
                gates[tau, b, g] = act[g]
            if keep:
                for j in range(hidden):
                    stabiliser_at[tau, b, j] = share[j]
                    stabiliser_at[tau, b, hidden + j] = slope[j]

    return output, h, c, n, m, gates, previous_at, source_at, stabiliser_at


@kernel
def slstm_backward(
    config,
    x,
    weight_ih,
    weight_hh,
    reset,
    lengths,
    reverse,
    gates_at,
    previous_at,
    source_at,
    stabiliser_at,
    d_output,
    d_h_n,
    d_c_n,
    d_n_n,
    d_m_n,
    need_input_grad,
    workspace,
):
    r"""Backpropagation through time for :func:`slstm_forward`.

    Per step and cell, with :math:`\delta h, \delta c, \delta n, \delta m` the errors reaching
    :math:`h_t, c_t, n_t, m_t` from the output and from step :math:`t + 1`, :math:`r = c_t / n_t`,
    and :math:`w` the saved share of the maximum:

    .. math::
        \partial net_o &= \delta h\, \psi(r)\, \sigma'(o), \qquad
        \delta r = \delta h\, o\, \psi'(r) \\
        \delta c_t &= \delta c + \delta r / n_t, \qquad \delta n_t = \delta n - \delta r\, r / n_t,
        \qquad \partial net_z = \delta c_t\, i'\, \varphi'(z) \\
        \delta m_t &= \delta m - \delta c_t\, c_t - \delta n_t\, n_t
            \quad (\text{through } i', f' \text{, which carry } e^{-m_t}) \\
        \partial net_i &= (\delta c_t z + \delta n_t)\, i' + (1 - w)\, \delta m_t, \qquad
        \delta a = (\delta c_t c_{t-1} + \delta n_t n_{t-1})\, f' + w\, \delta m_t \\
        \partial net_f &= \delta a\, \ell'(\tilde f), \quad \delta m_{t-1} = \delta a, \quad
        \delta c_{t-1} = \delta c_t f', \quad \delta n_{t-1} = \delta n_t f', \quad
        \delta h_{t-1} = \partial net\, W_{hh}

    Args:
        config, x, weight_ih, weight_hh, reset, lengths, reverse: as given to
            :func:`slstm_forward`; no error crosses a reset.
        gates_at, previous_at, source_at, stabiliser_at: what it saved (``keep=True``).
        d_output: ``(T, B, H)`` upstream gradient of the output.
        d_h_n, d_c_n, d_n_n, d_m_n: ``(B, H)`` upstream gradients of the final state.
        need_input_grad: whether to compute the gradient of ``x``.
        workspace: 1-D scratch of the dtype for the ``(T, B, G)`` net-input gradients
            (see ``common.scratch``).

    Returns:
        ``d_x (T, B, I)`` (or ``(0, 0, 0)``), ``d_h0, d_c0, d_n0, d_m0`` ``(B, H)``,
        ``d_weight_ih (G, I)``, ``d_bias (G,)``, ``d_weight_hh (G, H)``.
    """
    steps, batch, _ = x.shape
    rows = weight_ih.shape[0]
    hidden = d_c_n.shape[1]
    dtype = x.dtype
    one = dtype.type(1.0)
    identity_output = config[OUTPUT_ACTIVATION] == IDENTITY
    gate_table, output_table = _tables(config, hidden, dtype)

    heads = head_count(config[NUM_HEADS], weight_hh)
    size = hidden // heads
    blocks = head_blocks(weight_hh, heads, False)  # (heads, 4D, D)
    d_net_heads = np.empty((heads, batch, 4 * size), dtype)
    d_source_heads = np.empty((heads, batch, size), dtype)
    d_h = d_h_n.copy()
    d_c = d_c_n.copy()
    d_n = d_n_n.copy()
    d_m = d_m_n.copy()
    d_net_at = scratch(workspace, 0, steps, batch, rows, dtype, lengths)
    d_net = np.zeros((batch, rows), dtype)
    d_source = np.empty((batch, hidden), dtype)
    slope = np.zeros(rows, dtype)
    psi = np.empty(hidden, dtype)  # psi(c_t / n_t) when psi is not the identity
    psi_slope = np.ones(hidden, dtype)
    resets = reset.shape[0] > 0

    for t in range(steps - 1, -1, -1):
        add_output_error(t, d_output, lengths, reverse, d_h)
        for b in range(batch):
            if t >= lengths[b]:
                continue
            tau = time_index(t, lengths[b], reverse)
            act = gates_at[tau, b]  # (G,) i', f', z, o of this step
            derivatives(act, gate_table, 2 * hidden, rows, slope)
            if not identity_output:  # psi(c_t / n_t) and its slope, c_t and n_t recomputed
                for j in range(hidden):
                    cell = act[hidden + j] * previous_at[tau, b, j] + act[j] * act[2 * hidden + j]
                    normaliser = act[hidden + j] * previous_at[tau, b, hidden + j] + act[j]
                    psi[j] = cell / normaliser
                activate(psi, output_table, 0, hidden)
                derivatives(psi, output_table, 0, hidden, psi_slope)
            for j in range(hidden):
                input_gate, forget_gate = act[j], act[hidden + j]
                cell_input, output_gate = act[2 * hidden + j], act[3 * hidden + j]
                cell_prev = previous_at[tau, b, j]
                normaliser_prev = previous_at[tau, b, hidden + j]
                # c_t and n_t, recomputed exactly as the forward pass did
                cell = forget_gate * cell_prev + input_gate * cell_input
                normaliser = forget_gate * normaliser_prev + input_gate
                inverse = one / normaliser
                ratio = cell * inverse
                squashed = ratio if identity_output else psi[j]
                share = stabiliser_at[tau, b, j]
                d_hidden = d_h[b, j]
                d_ratio = d_hidden * output_gate * psi_slope[j] * inverse  # dL/d(c/n) / n
                d_cell = d_c[b, j] + d_ratio
                d_normaliser = d_n[b, j] - d_ratio * ratio
                d_stabiliser = d_m[b, j] - d_cell * cell - d_normaliser * normaliser
                d_carried = (
                    d_cell * cell_prev + d_normaliser * normaliser_prev
                ) * forget_gate + share * d_stabiliser
                d_input = (d_cell * cell_input + d_normaliser) * input_gate + (
                    one - share
                ) * d_stabiliser
                d_net[b, j] = d_input
                d_net[b, hidden + j] = d_carried * stabiliser_at[tau, b, hidden + j]
                d_net[b, 2 * hidden + j] = d_cell * input_gate * slope[2 * hidden + j]
                d_net[b, 3 * hidden + j] = d_hidden * squashed * slope[3 * hidden + j]
                d_c[b, j] = d_cell * forget_gate
                d_n[b, j] = d_normaliser * forget_gate
                d_m[b, j] = d_carried
            for g in range(rows):
                d_net_at[tau, b, g] = d_net[b, g]

        # (B, H): dL/dh_{t-1} through the recurrence
        head_matmul_backward(d_net, weight_hh, blocks, heads, d_net_heads, d_source_heads, d_source)
        for b in range(batch):
            if t < lengths[b]:
                for j in range(hidden):
                    d_h[b, j] = d_source[b, j]
        if resets:  # no error crosses a reset
            stop_at_resets(t, reset, lengths, reverse, d_h)
            stop_at_resets(t, reset, lengths, reverse, d_c)
            stop_at_resets(t, reset, lengths, reverse, d_n)
            stop_at_resets(t, reset, lengths, reverse, d_m)

    d_x, d_weight_ih, d_bias = input_gradients(x, weight_ih, d_net_at, need_input_grad)
    flat = steps * batch
    d_nets = d_net_at.reshape((flat, rows))
    sources = source_at.reshape((flat, hidden))
    if heads == 1:
        d_weight_hh = np.empty((rows, hidden), dtype)
        sequence_gemm(d_nets, sources, d_weight_hh, True, False, 0.0)  # (G, H)
    else:  # the diagonal blocks only; the rest is masked out (and zero in weight_hh)
        d_weight_hh = np.zeros((rows, hidden), dtype)
        d_net_head = np.empty((flat, 4 * size), dtype)
        source_head = np.empty((flat, size), dtype)
        d_block = np.empty((4 * size, size), dtype)
        for head in range(heads):
            for n in range(flat):
                for gate in range(4):
                    for k in range(size):
                        d_net_head[n, gate * size + k] = d_nets[n, gate * hidden + head * size + k]
                for j in range(size):
                    source_head[n, j] = sources[n, head * size + j]
            sequence_gemm(d_net_head, source_head, d_block, True, False, 0.0)  # (4D, D)
            for gate in range(4):
                for k in range(size):
                    for j in range(size):
                        row = gate * hidden + head * size + k
                        d_weight_hh[row, head * size + j] = d_block[gate * size + k, j]
    return d_x, d_h, d_c, d_n, d_m, d_weight_ih, d_bias, d_weight_hh
