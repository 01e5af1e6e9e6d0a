r"""Each family's pointwise step and its chain rule, once: ``@triton.jit`` functions on tiles that
both levels' kernels call, level 1's per-step kernels (:mod:`.lstm`, :mod:`.gru`, :mod:`.elman`)
and level 2's persistent ones (:mod:`.persistent_lstm`, :mod:`.persistent_units`).

The kernels load (or, on level 2, compute with ``tl.dot``) the net inputs, call these functions,
and store what they return; Triton inlines a jit function into its caller, so the sharing costs
nothing at run time. The equations are in the docstrings of :mod:`.lstm`, :mod:`.gru` and
:mod:`.elman`. Arguments of absent gates, peepholes and masks are placeholders (any tile; a
``tl.constexpr`` flag keeps them from being read). Rows past their length: the LSTM's chain rule
zeroes their :math:`\partial net` (``active``); the kernels keep their states and do the rest of
the masking.

Level 1's LSTM tiles are 3-d, ``(BLOCK_B, BLOCK_K, 1)`` for a gate and ``(BLOCK_B, BLOCK_K,
LANES)`` for a memory block's cells, and a gate's sum over its block is a sum over the last axis;
level 2's are 2-d with one cell a block (``BLOCKED`` false: :func:`block_sum` is the identity).
"""

from __future__ import annotations

import triton
import triton.language as tl

from carousel.kernels.triton.common import activate, derivative, load
from carousel.kernels.triton.persistent_common import matmul

__all__ = [
    "block_sum",
    "elman_cell",
    "elman_cell_backward",
    "gru_cell",
    "gru_cell_backward",
    "lstm_cell",
    "lstm_cell_backward",
    "net_input",
]


@triton.jit
def block_sum(x, BLOCKED: tl.constexpr):
    """The sum over each memory block's cells: the last axis of a ``(BLOCK_B, BLOCK_K, LANES)``
    tile if ``BLOCKED`` (level 1), else ``x`` itself (one cell a block, level 2's 2-d tiles)."""
    if BLOCKED:
        total = tl.sum(x, axis=2, keep_dims=True)
    else:
        total = x
    return total


@triton.jit
def net_input(gates, net, h, w, row, mask, COMPUTE: tl.constexpr, DOT: tl.constexpr):
    """A gate block's net input :math:`a + h_{t-1} W^T`: the input projection at ``gates + row``
    plus the recurrent product, read at ``net + row`` (level 1, where cuBLAS computed it) or
    computed as ``h @ w`` (``DOT``, level 2's on-chip tile)."""
    total = load(gates + row, mask, COMPUTE)
    if DOT:
        total += matmul(h, w)
    else:
        total += load(net + row, mask, COMPUTE)
    return total


@triton.jit
def _gate(
    gates, net, h, w, row, c, p, saved, mask, GATE: tl.constexpr, PEEP: tl.constexpr,
    DOT: tl.constexpr, BLOCKED: tl.constexpr, COMPUTE: tl.constexpr,
):  # fmt: skip
    r"""An LSTM gate, :math:`\sigma(net + p \odot c)` (the peephole term with ``PEEP``), written
    into its packed row ``row`` of ``saved``."""
    total = net_input(gates, net, h, w, row, mask, COMPUTE, DOT)
    if PEEP:
        total += block_sum(p * c, BLOCKED)
    gate = activate(total, GATE)
    tl.store(saved + row, gate, mask=mask)
    return gate


@triton.jit
def lstm_cell(
    gates_gate, gates_cell, net_gate, net_cell, h, w_i, w_f, w_g, w_o, c_prev, p_i, p_f, p_o,
    drop, one, saved_gate, saved_cell, gate_mask, cell_mask, row_i, row_f, row_g, row_o,
    GATE: tl.constexpr, CANDIDATE: tl.constexpr, HAS_I: tl.constexpr, HAS_F: tl.constexpr,
    HAS_O: tl.constexpr, COUPLED: tl.constexpr, PEEP_I: tl.constexpr, PEEP_F: tl.constexpr,
    PEEP_O: tl.constexpr, CANDIDATE_DROP: tl.constexpr, DOT: tl.constexpr,
    BLOCKED: tl.constexpr, COMPUTE: tl.constexpr,
):  # fmt: skip
    r"""The LSTM step (:mod:`.lstm`'s equations) to :math:`i, f, c_t, o`, gate by gate: each
    block's net input from :func:`net_input` (``gates_*``, ``net_*``: a row's pointers at the
    gates' and the cells' columns of ``gates_x`` and of level 1's ``net``; ``h`` and the tiles
    ``w_*`` with ``DOT``), peepholes ``p_*``, the candidate dropout's mask ``drop``
    (``CANDIDATE_DROP``), ``one`` for an absent gate, CIFG :math:`f = 1 - i`. Writes the
    activations into the packed rows ``row_*`` of ``saved`` (``saved_gate``/``saved_cell``,
    masks ``gate_mask``/``cell_mask``) as it computes them. :math:`y_t = o\, h(c_t)` (or of
    :math:`\mathrm{LN}(c_t)`) is the caller's."""
    input_gate = one
    forget_gate = one
    output_gate = one
    if HAS_I:
        input_gate = _gate(
            gates_gate, net_gate, h, w_i, row_i, c_prev, p_i, saved_gate, gate_mask, GATE,
            PEEP_I >= 0, DOT, BLOCKED, COMPUTE,
        )  # fmt: skip
    if HAS_F:
        forget_gate = _gate(
            gates_gate, net_gate, h, w_f, row_f, c_prev, p_f, saved_gate, gate_mask, GATE,
            PEEP_F >= 0, DOT, BLOCKED, COMPUTE,
        )  # fmt: skip
    elif COUPLED:
        forget_gate = 1.0 - input_gate
    net_z = net_input(gates_cell, net_cell, h, w_g, row_g, cell_mask, COMPUTE, DOT)
    candidate = activate(net_z, CANDIDATE)
    tl.store(saved_cell + row_g, candidate, mask=cell_mask)
    written = candidate
    if CANDIDATE_DROP:  # the candidate dropout's mask, where z enters c
        written = candidate * drop
    c = forget_gate * c_prev + input_gate * written
    if HAS_O:
        output_gate = _gate(
            gates_gate, net_gate, h, w_o, row_o, c, p_o, saved_gate, gate_mask, GATE, PEEP_O >= 0,
            DOT, BLOCKED, COMPUTE,
        )  # fmt: skip
    return input_gate, forget_gate, c, output_gate


@triton.jit
def lstm_cell_backward(
    d_c, dy, squashed, input_gate, forget_gate, candidate, output_gate, c_prev, drop, fed_i,
    fed_f, fed_o, p_i, p_f, p_o, active, d_net_gate, d_net_cell, gate_mask, cell_mask, row_i,
    row_f, row_g, row_o,
    GATE: tl.constexpr, CANDIDATE: tl.constexpr, HAS_I: tl.constexpr, HAS_F: tl.constexpr,
    HAS_O: tl.constexpr, COUPLED: tl.constexpr, PEEP_I: tl.constexpr, PEEP_F: tl.constexpr,
    PEEP_O: tl.constexpr, TRUNCATE: tl.constexpr, CANDIDATE_DROP: tl.constexpr,
    FEEDBACK: tl.constexpr, BLOCKED: tl.constexpr,
):  # fmt: skip
    r"""The chain rule back through :func:`lstm_cell` (the equations of
    :func:`.lstm.lstm_backward_step`) from ``d_c``, the error at :math:`c_t` from :math:`y_t`
    and from later steps (without the output gate's peephole term, added here), and ``dy``, the
    error at :math:`y_t`; ``squashed`` is :math:`h(c_t)` (of :math:`\mathrm{LN}(c_t)`),
    ``drop`` the candidate dropout's mask :math:`\kappa` (``CANDIDATE_DROP``), ``fed_*`` the
    errors at fed-back gates (``FEEDBACK``).
    ``TRUNCATE`` drops the peephole terms of :math:`\delta c`.

    Writes :math:`\partial net` into the packed rows of ``d_net`` (pointers and masks as
    :func:`lstm_cell`'s ``saved``) and returns :math:`\partial net_{i,f,g,o}` (placeholders for
    absent gates), zero where ``active`` is false (rows past their length), and
    :math:`\delta c_{t-1}` (to be kept only where ``active``)."""
    written, slope = candidate, derivative(candidate, CANDIDATE)
    if CANDIDATE_DROP:
        written, slope = candidate * drop, slope * drop
    d_o = output_gate
    d_i = input_gate
    if HAS_O:
        d_o = block_sum(dy * squashed, BLOCKED)
        if FEEDBACK:
            d_o += fed_o
        d_o = tl.where(active, d_o * derivative(output_gate, GATE), 0.0)
        tl.store(d_net_gate + row_o, d_o, mask=gate_mask)
        if PEEP_O >= 0:
            if not TRUNCATE:
                d_c += p_o * d_o
    d_z = tl.where(active, d_c * input_gate * slope, 0.0)
    tl.store(d_net_cell + row_g, d_z, mask=cell_mask)
    d_c_prev = d_c * forget_gate
    d_f = block_sum(d_c * c_prev, BLOCKED)
    if FEEDBACK:
        d_f += fed_f
    if HAS_I:
        d_i = block_sum(d_c * written, BLOCKED)
        if FEEDBACK:
            d_i += fed_i
        if COUPLED:
            d_i -= d_f
        d_i = tl.where(active, d_i * derivative(input_gate, GATE), 0.0)
        tl.store(d_net_gate + row_i, d_i, mask=gate_mask)
        if PEEP_I >= 0:
            if not TRUNCATE:
                d_c_prev += p_i * d_i
    if HAS_F:
        d_f = tl.where(active, d_f * derivative(forget_gate, GATE), 0.0)
        tl.store(d_net_gate + row_f, d_f, mask=gate_mask)
        if PEEP_F >= 0:
            if not TRUNCATE:
                d_c_prev += p_f * d_f
    return d_i, d_f, d_z, d_o, d_c_prev


@triton.jit
def gru_cell(
    net_r, net_z, recurrent_n, a_r, a_z, a_n, h_prev, drop, GATE: tl.constexpr,
    CANDIDATE: tl.constexpr, CANDIDATE_DROP: tl.constexpr,
):  # fmt: skip
    r"""The GRU step (:mod:`.gru`'s equations) from the recurrent products (``bias_hh``
    included; ``recurrent_n`` is :math:`m`) and the input projections :math:`a_{r,z,n}`:
    returns :math:`r, u, n, h_t`; ``drop`` is the candidate dropout's mask (``CANDIDATE_DROP``)."""
    reset = activate(net_r + a_r, GATE)
    update = activate(net_z + a_z, GATE)
    new = activate(a_n + reset * recurrent_n, CANDIDATE)
    written = new
    if CANDIDATE_DROP:  # the candidate dropout's mask, where n enters h
        written = new * drop
    h = (1.0 - update) * written + update * h_prev
    return reset, update, new, h


@triton.jit
def gru_cell_backward(
    delta, h_prev, reset, update, new, recurrent_n, drop, GATE: tl.constexpr,
    CANDIDATE: tl.constexpr, CANDIDATE_DROP: tl.constexpr,
):  # fmt: skip
    r"""The chain rule back through :func:`gru_cell` from ``delta``, the error at :math:`h_t`:
    returns :math:`\partial a_r, \partial a_z, \partial a_n`. The error reaching
    :math:`h_{t-1}`, :math:`\delta u + \partial net\, W_{hh}` with
    :math:`\partial net_n = r\, \partial a_n`, is the caller's (it masks rows past their length
    there)."""
    written, slope = new, derivative(new, CANDIDATE)
    if CANDIDATE_DROP:
        written, slope = new * drop, slope * drop
    d_n = delta * (1.0 - update) * slope
    d_z = delta * (h_prev - written) * derivative(update, GATE)
    d_r = d_n * recurrent_n * derivative(reset, GATE)
    return d_r, d_z, d_n


@triton.jit
def elman_cell(total, CANDIDATE: tl.constexpr):
    r"""The Elman step :math:`h_t = \phi(a_t + net)` from ``total`` :math:`= a_t + net`."""
    return activate(total, CANDIDATE)


@triton.jit
def elman_cell_backward(delta, h, CANDIDATE: tl.constexpr):
    r""":math:`\partial a_t = \delta\, \phi'(h_t)`, the derivative read from :math:`h_t`."""
    return delta * derivative(h, CANDIDATE)
