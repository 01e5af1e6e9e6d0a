r"""Building blocks of the persistent kernels (:mod:`.persistent`): a program's rows, the on-chip
weight tiles, the recurrent product.

A program of a persistent kernel owns ``BLOCK_B`` batch rows x all ``BLOCK_H`` units (the hidden
size padded to a power of two >= 16): ``tl.dot`` on sm80/sm90 needs every dimension of its
operands to be at least 16, and compiled Triton needs powers of two. Padded units and rows are
masked on every load (zero) and store; the weight tiles are zero outside ``hidden``, so padded
units add nothing to a product.
"""

from __future__ import annotations

import triton
import triton.language as tl

from carousel.kernels.triton.common import load

jit_loop = triton.jit(do_not_specialize=["steps"])
"""``triton.jit`` for a kernel whose ``steps`` argument is a runtime loop bound: not specialised
(a value of 1 or a multiple of 16 would otherwise compile a kernel of its own)."""


@triton.jit
def matmul(a, b):
    """``a @ b`` by ``tl.dot`` in the operands' precision: ``ieee`` for float32 (no TF32, so the
    results match the reference backend's float32 GEMMs), float32 or float64 accumulation."""
    return tl.dot(a, b, input_precision="ieee")


@triton.jit
def row_tile(
    lengths, batch, hidden, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
):  # fmt: skip
    """This program's rows ``(BLOCK_B, 1)``, all units ``(1, BLOCK_H)``, the mask of real rows and
    units ``(BLOCK_B, BLOCK_H)``, and each row's length ``(BLOCK_B, 1)`` (the rows without
    lengths)."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)[:, None]
    units = tl.arange(0, BLOCK_H)[None, :]
    mask = (rows < batch) & (units < hidden)
    if HAS_LENGTHS:
        length = tl.load(lengths + rows, mask=rows < batch, other=0)
    else:
        length = rows
    return rows, units, mask, length


@triton.jit
def step_mask(length, rows, mask, step, HAS_LENGTHS: tl.constexpr):
    """``mask`` where processing step ``step`` is inside each row's sequence (``step < length``)."""
    if HAS_LENGTHS:
        keep = mask & (step < length)
    else:
        keep = mask
    return keep


@triton.jit
def weight_tile(
    weight, row, columns, TRANSPOSE: tl.constexpr, BLOCK_H: tl.constexpr, COMPUTE: tl.constexpr
):  # fmt: skip
    """Rows ``row .. row + columns`` of the row-major ``weight (G, columns)`` (one gate's block of
    :math:`W_{hh}`) as a zero-padded ``(BLOCK_H, BLOCK_H)`` tile: transposed (``[k, j] =
    W[row + j, k]``, for :math:`h W^T`) if ``TRANSPOSE``, else as stored (``[j, k]``, for
    :math:`\\partial net\\, W`)."""
    first = tl.arange(0, BLOCK_H)[:, None]
    second = tl.arange(0, BLOCK_H)[None, :]
    if TRANSPOSE:
        at = (row + second) * columns + first
    else:
        at = (row + first) * columns + second
    return load(weight + at, (first < columns) & (second < columns), COMPUTE)
