r"""The GRU (``torch.nn.GRU``'s form) as a pair of Triton pointwise kernels, one step each way.

With :math:`a_t` the input projection :math:`W_{ih} x_t + b_{ih}` and :math:`net` the recurrent
GEMM :math:`h_{t-1} W_{hh}^T` (cuBLAS, before the kernel):

.. math::
    r &= \sigma(a_r + net_r + b_{hr}), \quad u = \sigma(a_z + net_z + b_{hz}), \quad
    m = net_n + b_{hn} \\
    n &= \phi(a_n + r \odot m), \quad h_t = (1 - u) \odot (\kappa \odot n) + u \odot h_{t-1}

(:math:`u` is torch's ``z``; :math:`\kappa` the candidate dropout's mask, 1 without it; with
``layer_norm`` :math:`net` is the normalised GEMM, see :mod:`.options`.) Backward, with
:math:`\delta` the error at :math:`h_t`:

.. math::
    \partial a_n &= \delta (1 - u) \kappa \phi'(n), \quad
    \partial a_z = \delta (h_{t-1} - \kappa n)\, \sigma'(u), \quad
    \partial a_r = \partial a_n\, m\, \sigma'(r) \\
    \partial net &= [\partial a_r, \partial a_z, r\, \partial a_n], \quad
    \delta h_{t-1} = \delta u + \partial net\, W_{hh}

``saved`` holds :math:`r, u, n, m` (``A = 4H``); the kernel writes :math:`\partial a` into
``d_net``, :math:`\partial net` into ``d_recurrent`` and :math:`\delta u` into ``d_source``; the
GEMM :math:`\partial net\, W_{hh}` is added on cuBLAS after it. A program covers ``BLOCK_B``
rows x ``BLOCK_H`` units. Buffers as described in :mod:`.plan`. The equations are
:func:`.pointwise.gru_cell` and :func:`.pointwise.gru_cell_backward`, which level 2's kernels call
too.
"""

from __future__ import annotations

import triton
import triton.language as tl

from carousel.cells import CellSpec
from carousel.kernels.triton.common import code, load, step_active, unit_tile
from carousel.kernels.triton.plan import FamilyPlan, unit_plan
from carousel.kernels.triton.pointwise import gru_cell, gru_cell_backward

__all__ = ["gru_backward_step", "gru_forward_step", "plan"]


@triton.jit(do_not_specialize=["step"])
def gru_forward_step(
    gates_x, net, source, source_next, cell, cell_next, saved, y_out, peephole, bias_hh,
    lengths, step, batch, hidden, candidate_mask,
    GATE: tl.constexpr, CANDIDATE: tl.constexpr, HAS_BIAS_HH: tl.constexpr,
    CANDIDATE_DROP: tl.constexpr, HAS_LENGTHS: tl.constexpr, COMPUTE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):  # fmt: skip
    """One GRU step after its recurrent GEMM: ``source_next`` (:math:`h_t`) and ``saved``."""
    rows, units, mask = unit_tile(batch, hidden, BLOCK_B, BLOCK_H)
    active = step_active(lengths, rows, batch, step, HAS_LENGTHS)
    packed = rows * 3 * hidden + units
    net_r = load(net + packed, mask, COMPUTE)
    net_z = load(net + packed + hidden, mask, COMPUTE)
    recurrent_n = load(net + packed + 2 * hidden, mask, COMPUTE)
    if HAS_BIAS_HH:
        net_r += load(bias_hh + units, units < hidden, COMPUTE)
        net_z += load(bias_hh + hidden + units, units < hidden, COMPUTE)
        recurrent_n += load(bias_hh + 2 * hidden + units, units < hidden, COMPUTE)
    kept = rows * 4 * hidden + units
    # m stored first: ptxas then needs fewer registers (32 rather than 40 a thread on sm80)
    tl.store(saved + kept + 3 * hidden, recurrent_n, mask=mask)
    a_r = load(gates_x + packed, mask, COMPUTE)
    a_z = load(gates_x + packed + hidden, mask, COMPUTE)
    a_n = load(gates_x + packed + 2 * hidden, mask, COMPUTE)
    h_prev = load(source + rows * hidden + units, mask, COMPUTE)
    drop = h_prev
    if CANDIDATE_DROP:
        drop = load(candidate_mask + rows * hidden + units, mask, COMPUTE)
    reset, update, new, h = gru_cell(
        net_r, net_z, recurrent_n, a_r, a_z, a_n, h_prev, drop, GATE, CANDIDATE, CANDIDATE_DROP
    )
    tl.store(source_next + rows * hidden + units, tl.where(active, h, h_prev), mask=mask)
    tl.store(saved + kept, reset, mask=mask)
    tl.store(saved + kept + hidden, update, mask=mask)
    tl.store(saved + kept + 2 * hidden, new, mask=mask)


@triton.jit(do_not_specialize=["step"])
def gru_backward_step(
    saved, source, source_next, cell, cell_next, d_source, d_output, d_y, d_cell, d_net,
    d_recurrent, peephole, lengths, step, batch, hidden, candidate_mask,
    GATE: tl.constexpr, CANDIDATE: tl.constexpr, HAS_BIAS_HH: tl.constexpr,
    CANDIDATE_DROP: tl.constexpr, HAS_LENGTHS: tl.constexpr, COMPUTE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):  # fmt: skip
    """The chain rule back through one GRU step (equations in the module docstring); rows past
    their length write zeros into ``d_net``/``d_recurrent`` and keep ``d_source``."""
    rows, units, mask = unit_tile(batch, hidden, BLOCK_B, BLOCK_H)
    active = step_active(lengths, rows, batch, step, HAS_LENGTHS)
    kept = rows * 4 * hidden + units
    reset = load(saved + kept, mask, COMPUTE)
    update = load(saved + kept + hidden, mask, COMPUTE)
    new = load(saved + kept + 2 * hidden, mask, COMPUTE)
    recurrent_n = load(saved + kept + 3 * hidden, mask, COMPUTE)
    at = rows * hidden + units
    h_prev = load(source + at, mask, COMPUTE)
    d_later = load(d_source + at, mask, COMPUTE)
    delta = d_later + load(d_output + at, mask, COMPUTE)
    drop = delta
    if CANDIDATE_DROP:
        drop = load(candidate_mask + at, mask, COMPUTE)
    d_r, d_z, d_n = gru_cell_backward(
        delta, h_prev, reset, update, new, recurrent_n, drop, GATE, CANDIDATE, CANDIDATE_DROP
    )
    packed = rows * 3 * hidden + units
    tl.store(d_net + packed, tl.where(active, d_r, 0.0), mask=mask)
    tl.store(d_net + packed + hidden, tl.where(active, d_z, 0.0), mask=mask)
    tl.store(d_net + packed + 2 * hidden, tl.where(active, d_n, 0.0), mask=mask)
    tl.store(d_recurrent + packed, tl.where(active, d_r, 0.0), mask=mask)
    tl.store(d_recurrent + packed + hidden, tl.where(active, d_z, 0.0), mask=mask)
    tl.store(d_recurrent + packed + 2 * hidden, tl.where(active, d_n * reset, 0.0), mask=mask)
    tl.store(d_source + at, tl.where(active, delta * update, d_later), mask=mask)


def plan(
    spec: CellSpec, hidden: int, out_size: int, batch: int, dtype, project: bool, bias_hh: bool,
    features: frozenset[str] = frozenset(),
) -> FamilyPlan:  # fmt: skip
    """The sizes, grid and constexpr flags of the GRU kernels for one call; ``features``:
    ``candidate`` for the candidate dropout (layer normalisation is the loop's)."""
    constants = dict(
        GATE=code(spec.gate_activation),
        CANDIDATE=code(spec.candidate_activation),
        HAS_BIAS_HH=bias_hh,
        CANDIDATE_DROP="candidate" in features,
    )
    return unit_plan(
        gru_forward_step, gru_backward_step, hidden, batch, dtype, constants,
        gates=3, saved=4, recurrent_gradient=True, extras=("candidate_mask",),
    )  # fmt: skip
