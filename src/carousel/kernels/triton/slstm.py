r"""The sLSTM (Beck et al. 2024) as a pair of Triton pointwise kernels, one step each way.

The equations are those of :func:`carousel.cells.slstm.slstm_step` (see
:mod:`carousel.cells.slstm`), per row and cell, with packed rows ``(i, f, g, o)`` of ``H`` each,
:math:`a` the input projection and :math:`net = h_{t-1} W_{hh}^T` the recurrent GEMM (cuBLAS,
before the kernel; with ``num_heads > 1`` the layer's mask has made :math:`W_{hh}` block-diagonal,
so the dense product is the per-head one):

.. math::
    \tilde\imath, \tilde f, \tilde z, \tilde o &= a + net, \qquad
    \ell = \log\sigma(\tilde f) \text{ or } \tilde f, \qquad c_a = \ell + m_{t-1} \\
    m_t &= \max(c_a, \tilde\imath) \quad (\tilde\imath \text{ if } n_{t-1} = 0), \qquad
    i' = e^{\tilde\imath - m_t}, \quad f' = e^{c_a - m_t} \;(0 \text{ if } n_{t-1} = 0) \\
    c_t &= f' c_{t-1} + i' \varphi(\tilde z), \quad n_t = f' n_{t-1} + i', \quad
    h_t = \sigma(\tilde o)\, \psi(c_t / n_t)

:math:`\log\sigma(x) = \min(x, 0) - \log(1 + e^{-|x|})`, its slope :math:`\sigma(-x)`.
Backward, with :math:`\delta h, \delta c, \delta n, \delta m` the errors reaching
:math:`h_t, c_t, n_t, m_t`, :math:`r = c_t / n_t` and :math:`w` the share of the maximum that
went to :math:`c_a` (1, 0, or 1/2 at a tie as ``torch.maximum``; 0 for an empty memory):

.. math::
    \delta r &= \delta h\, o\, \psi'(r) / n_t, \quad \delta c_t = \delta c + \delta r, \quad
    \delta n_t = \delta n - \delta r\, r, \quad
    \delta m_t = \delta m - \delta c_t\, c_t - \delta n_t\, n_t \\
    \partial \tilde\imath &= (\delta c_t z + \delta n_t)\, i' + (1 - w)\, \delta m_t, \quad
    \delta c_a = (\delta c_t c_{t-1} + \delta n_t n_{t-1})\, f' + w\, \delta m_t, \quad
    \partial \tilde f = \delta c_a\, \ell' \\
    \partial \tilde z &= \delta c_t\, i' \varphi'(z), \quad
    \partial \tilde o = \delta h\, \psi(r)\, \sigma'(o), \quad
    \delta c_{t-1} = \delta c_t f', \quad \delta n_{t-1} = \delta n_t f', \quad
    \delta m_{t-1} = \delta c_a

The recurrent source is :math:`h` (``R = H``), the cell buffer :math:`[c, n, m]` (``C = 3H``,
the state's order), ``saved`` :math:`[i', f', z, o, w, \ell']` (``A = 6H``). A program covers
``BLOCK_B`` rows x ``BLOCK_H`` cells. Buffers as described in :mod:`.plan`.
"""

from __future__ import annotations

import triton
import triton.language as tl

from carousel.cells import CellSpec
from carousel.kernels.triton.common import activate, code, derivative, load, step_active, unit_tile
from carousel.kernels.triton.plan import FamilyPlan, unit_plan

__all__ = ["plan", "slstm_backward_step", "slstm_forward_step"]


@triton.jit(do_not_specialize=["step"])
def slstm_forward_step(
    gates_x, net, source, source_next, cell, cell_next, saved, y_out, peephole, bias_hh,
    lengths, step, batch, hidden,
    GATE: tl.constexpr, CANDIDATE: tl.constexpr, OUTPUT: tl.constexpr, EXP_FORGET: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, COMPUTE: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):  # fmt: skip
    """One sLSTM step after its recurrent GEMM: :math:`h_t` into ``source_next``,
    :math:`c_t, n_t, m_t` into ``cell_next`` and what the backward step needs into ``saved``."""
    rows, units, mask = unit_tile(batch, hidden, BLOCK_B, BLOCK_H)
    active = step_active(lengths, rows, batch, step, HAS_LENGTHS)
    packed = rows * 4 * hidden + units
    i_net = load(gates_x + packed, mask, COMPUTE)
    i_net += load(net + packed, mask, COMPUTE)
    f_net = load(gates_x + packed + hidden, mask, COMPUTE)
    f_net += load(net + packed + hidden, mask, COMPUTE)
    z_net = load(gates_x + packed + 2 * hidden, mask, COMPUTE)
    z_net += load(net + packed + 2 * hidden, mask, COMPUTE)
    o_net = load(gates_x + packed + 3 * hidden, mask, COMPUTE)
    o_net += load(net + packed + 3 * hidden, mask, COMPUTE)
    state = rows * 3 * hidden + units
    c_prev = load(cell + state, mask, COMPUTE)
    n_prev = tl.load(cell + state + hidden, mask=mask, other=1.0).to(COMPUTE)
    m_prev = load(cell + state + 2 * hidden, mask, COMPUTE)
    h_prev = load(source + rows * hidden + units, mask, COMPUTE)

    if EXP_FORGET:
        log_forget = f_net
        slope = tl.zeros_like(f_net) + 1.0
    else:  # log sigmoid(x) = min(x, 0) - log(1 + e^-|x|); its slope sigmoid(-x)
        decay = tl.exp(-tl.abs(f_net))
        log_forget = tl.minimum(f_net, 0.0) - tl.log(1.0 + decay)
        slope = tl.where(f_net >= 0.0, decay, 1.0) / (1.0 + decay)
    empty = n_prev == 0.0  # an empty memory: its log-normaliser is -inf
    carried = log_forget + m_prev
    m = tl.where(empty, i_net, tl.maximum(carried, i_net))
    share = tl.where(carried > i_net, 1.0, tl.where(carried == i_net, 0.5, 0.0))
    share = tl.where(empty, 0.0, share).to(COMPUTE)
    input_gate = tl.exp(i_net - m)
    forget_gate = tl.where(empty, 0.0, tl.exp(tl.where(empty, m, carried) - m))
    z = activate(z_net, CANDIDATE)
    o = activate(o_net, GATE)
    c = forget_gate * c_prev + input_gate * z
    n = forget_gate * n_prev + input_gate
    h = o * activate(c / n, OUTPUT)

    tl.store(source_next + rows * hidden + units, tl.where(active, h, h_prev), mask=mask)
    tl.store(cell_next + state, tl.where(active, c, c_prev), mask=mask)
    tl.store(cell_next + state + hidden, tl.where(active, n, n_prev), mask=mask)
    tl.store(cell_next + state + 2 * hidden, tl.where(active, m, m_prev), mask=mask)
    kept = rows * 6 * hidden + units
    tl.store(saved + kept, input_gate, mask=mask)
    tl.store(saved + kept + hidden, forget_gate, mask=mask)
    tl.store(saved + kept + 2 * hidden, z, mask=mask)
    tl.store(saved + kept + 3 * hidden, o, mask=mask)
    tl.store(saved + kept + 4 * hidden, share, mask=mask)
    tl.store(saved + kept + 5 * hidden, slope, mask=mask)


@triton.jit(do_not_specialize=["step"])
def slstm_backward_step(
    saved, source, source_next, cell, cell_next, d_source, d_output, d_y, d_cell, d_net,
    d_recurrent, peephole, lengths, step, batch, hidden,
    GATE: tl.constexpr, CANDIDATE: tl.constexpr, OUTPUT: tl.constexpr, EXP_FORGET: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, COMPUTE: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):  # fmt: skip
    """The chain rule back through one sLSTM step (equations in the module docstring): the
    net-input errors into ``d_net`` (zero at rows past their length) and the errors reaching
    :math:`c_{t-1}, n_{t-1}, m_{t-1}` into ``d_cell`` (unchanged past a row's length)."""
    rows, units, mask = unit_tile(batch, hidden, BLOCK_B, BLOCK_H)
    active = step_active(lengths, rows, batch, step, HAS_LENGTHS)
    kept = rows * 6 * hidden + units
    input_gate = load(saved + kept, mask, COMPUTE)
    forget_gate = load(saved + kept + hidden, mask, COMPUTE)
    z = load(saved + kept + 2 * hidden, mask, COMPUTE)
    o = load(saved + kept + 3 * hidden, mask, COMPUTE)
    share = load(saved + kept + 4 * hidden, mask, COMPUTE)
    slope = load(saved + kept + 5 * hidden, mask, COMPUTE)
    state = rows * 3 * hidden + units
    c_prev = load(cell + state, mask, COMPUTE)
    n_prev = tl.load(cell + state + hidden, mask=mask, other=1.0).to(COMPUTE)
    c = load(cell_next + state, mask, COMPUTE)
    n = tl.load(cell_next + state + hidden, mask=mask, other=1.0).to(COMPUTE)
    d_c_later = load(d_cell + state, mask, COMPUTE)
    d_n_later = load(d_cell + state + hidden, mask, COMPUTE)
    d_m_later = load(d_cell + state + 2 * hidden, mask, COMPUTE)
    at = rows * hidden + units
    d_h = load(d_source + at, mask, COMPUTE)
    d_h += load(d_output + at, mask, COMPUTE)

    ratio = c / n
    squashed = activate(ratio, OUTPUT)
    d_ratio = d_h * o * derivative(squashed, OUTPUT) / n  # dL/d(c/n) / n
    d_c = d_c_later + d_ratio
    d_n = d_n_later - d_ratio * ratio
    d_m = d_m_later - d_c * c - d_n * n
    d_carried = (d_c * c_prev + d_n * n_prev) * forget_gate + share * d_m
    d_i = (d_c * z + d_n) * input_gate + (1.0 - share) * d_m
    d_f = d_carried * slope
    d_z = d_c * input_gate * derivative(z, CANDIDATE)
    d_o = d_h * squashed * derivative(o, GATE)

    packed = rows * 4 * hidden + units
    tl.store(d_net + packed, tl.where(active, d_i, 0.0), mask=mask)
    tl.store(d_net + packed + hidden, tl.where(active, d_f, 0.0), mask=mask)
    tl.store(d_net + packed + 2 * hidden, tl.where(active, d_z, 0.0), mask=mask)
    tl.store(d_net + packed + 3 * hidden, tl.where(active, d_o, 0.0), mask=mask)
    tl.store(d_cell + state, tl.where(active, d_c * forget_gate, d_c_later), mask=mask)
    tl.store(d_cell + state + hidden, tl.where(active, d_n * forget_gate, d_n_later), mask=mask)
    tl.store(d_cell + state + 2 * hidden, tl.where(active, d_carried, d_m_later), mask=mask)


def plan(
    spec: CellSpec, hidden: int, out_size: int, batch: int, dtype, project: bool, bias_hh: bool,
    features: frozenset[str] = frozenset(),
) -> FamilyPlan:  # fmt: skip
    """The sizes, grid and constexpr flags of the sLSTM kernels for one call (no ``features``
    apply to the sLSTM; its resets are the loop's)."""
    constants = dict(
        GATE=code(spec.gate_activation),
        CANDIDATE=code(spec.candidate_activation),
        OUTPUT=code(spec.output_activation),
        EXP_FORGET=spec.forget_activation == "exp",
    )
    return unit_plan(
        slstm_forward_step, slstm_backward_step, hidden, batch, dtype, constants,
        gates=4, cells=3, saved=6,
    )  # fmt: skip
