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
from carousel.kernels.triton.common import (
    COMPUTE_TYPES,
    TILE,
    activate,
    code,
    derivative,
    step_active,
    tile,
)
from carousel.kernels.triton.plan import FamilyPlan

__all__ = ["elman_backward_step", "elman_forward_step", "plan"]


@triton.jit
def _tile(batch, hidden, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)[:, None]
    units = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)[None, :]
    return rows, rows * hidden + units, (rows < batch) & (units < hidden)


@triton.jit(do_not_specialize=["step"])
def elman_forward_step(
    gates_x, net, source, source_next, cell, cell_next, saved, y_out, peephole, bias_hh,
    lengths, step, batch, hidden,
    CANDIDATE: tl.constexpr, HAS_LENGTHS: tl.constexpr, COMPUTE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """One Elman step after its recurrent GEMM: :math:`h_t` into ``source_next``."""
    rows, at, mask = _tile(batch, hidden, BLOCK_B, BLOCK_H)
    active = step_active(lengths, rows, batch, step, HAS_LENGTHS)
    total = tl.load(gates_x + at, mask=mask, other=0.0).to(COMPUTE)
    total += tl.load(net + at, mask=mask, other=0.0).to(COMPUTE)
    h_prev = tl.load(source + at, mask=mask, other=0.0).to(COMPUTE)
    tl.store(source_next + at, tl.where(active, activate(total, CANDIDATE), h_prev), mask=mask)


@triton.jit(do_not_specialize=["step"])
def elman_backward_step(
    saved, source, source_next, cell, cell_next, d_source, d_output, d_y, d_cell, d_net,
    d_recurrent, peephole, lengths, step, batch, hidden,
    CANDIDATE: tl.constexpr, HAS_LENGTHS: tl.constexpr, COMPUTE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """:math:`\\partial a_t` into ``d_net`` (zero at rows past their length)."""
    rows, at, mask = _tile(batch, hidden, BLOCK_B, BLOCK_H)
    active = step_active(lengths, rows, batch, step, HAS_LENGTHS)
    delta = tl.load(d_source + at, mask=mask, other=0.0).to(COMPUTE)
    delta += tl.load(d_output + at, mask=mask, other=0.0).to(COMPUTE)
    h = tl.load(source_next + at, mask=mask, other=0.0).to(COMPUTE)
    tl.store(d_net + at, tl.where(active, delta * derivative(h, CANDIDATE), 0.0), mask=mask)


def plan(
    spec: CellSpec, hidden: int, out_size: int, batch: int, dtype, project: bool, bias_hh: bool
) -> FamilyPlan:
    """The sizes, grid and constexpr flags of the Elman kernels for one call."""
    block_h = tile(hidden, 128)
    block_b = tile(batch, max(1, TILE // block_h))
    return FamilyPlan(
        rows=hidden,
        source_size=hidden,
        cell_size=0,
        saved_size=0,
        recurrent_gradient=False,
        grid=(triton.cdiv(batch, block_b), triton.cdiv(hidden, block_h)),
        runtime=(),
        constants=dict(
            CANDIDATE=code(spec.candidate_activation),
            COMPUTE=COMPUTE_TYPES[dtype],
            BLOCK_B=block_b,
            BLOCK_H=block_h,
        ),
        forward=elman_forward_step,
        backward=elman_backward_step,
    )
