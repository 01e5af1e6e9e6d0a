r"""The Elman network (``torch.nn.RNN``) as a pair of Triton pointwise kernels, one step each way.

.. math::
    h_t = \phi(a_t + net), \qquad \partial a_t = \delta\, \phi'(h_t), \qquad
    \delta h_{t-1} = \partial a_t\, W_{hh}

with :math:`a_t = W_{ih} x_t + b` the input projection, :math:`net = h_{t-1} W_{hh}^T` the
recurrent GEMM (cuBLAS, before the forward kernel) and :math:`\delta` the error at :math:`h_t`;
the backward GEMM runs on cuBLAS after the backward kernel. Nothing is saved beside the outputs
(``A = 0``): :math:`\phi'` is read from :math:`h_t`. Buffers as described in :mod:`.plan`.
"""

from __future__ import annotations

import triton
import triton.language as tl

from carousel.cells import CellSpec
from carousel.kernels.triton.common import activate, code, derivative, load, step_active, unit_tile
from carousel.kernels.triton.plan import FamilyPlan, unit_plan

__all__ = ["elman_backward_step", "elman_forward_step", "plan"]


@triton.jit(do_not_specialize=["step"])
def elman_forward_step(
    gates_x, net, source, source_next, cell, cell_next, saved, y_out, peephole, bias_hh,
    lengths, step, batch, hidden,
    CANDIDATE: tl.constexpr, HAS_LENGTHS: tl.constexpr, COMPUTE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """One Elman step after its recurrent GEMM: :math:`h_t` into ``source_next``."""
    rows, units, mask = unit_tile(batch, hidden, BLOCK_B, BLOCK_H)
    at = rows * hidden + units
    active = step_active(lengths, rows, batch, step, HAS_LENGTHS)
    total = load(gates_x + at, mask, COMPUTE)
    total += load(net + at, mask, COMPUTE)
    h_prev = load(source + at, mask, COMPUTE)
    tl.store(source_next + at, tl.where(active, activate(total, CANDIDATE), h_prev), mask=mask)


@triton.jit(do_not_specialize=["step"])
def elman_backward_step(
    saved, source, source_next, cell, cell_next, d_source, d_output, d_y, d_cell, d_net,
    d_recurrent, peephole, lengths, step, batch, hidden,
    CANDIDATE: tl.constexpr, HAS_LENGTHS: tl.constexpr, COMPUTE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """:math:`\\partial a_t` into ``d_net`` (zero at rows past their length)."""
    rows, units, mask = unit_tile(batch, hidden, BLOCK_B, BLOCK_H)
    at = rows * hidden + units
    active = step_active(lengths, rows, batch, step, HAS_LENGTHS)
    delta = load(d_source + at, mask, COMPUTE)
    delta += load(d_output + at, mask, COMPUTE)
    h = load(source_next + at, mask, COMPUTE)
    tl.store(d_net + at, tl.where(active, delta * derivative(h, CANDIDATE), 0.0), mask=mask)


def plan(
    spec: CellSpec, hidden: int, out_size: int, batch: int, dtype, project: bool, bias_hh: bool,
    features: frozenset[str] = frozenset(),
) -> FamilyPlan:  # fmt: skip
    """The sizes, grid and constexpr flags of the Elman kernels for one call (no ``features``
    apply to the Elman cell; its resets are the loop's)."""
    constants = {"CANDIDATE": code(spec.candidate_activation)}
    return unit_plan(
        elman_forward_step, elman_backward_step, hidden, batch, dtype, constants, gates=1
    )
