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


def padded(size: int) -> int:
    """A tile side: ``size`` padded to a power of two, at least 16."""
    return max(16, triton.next_power_of_2(size))


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
    weight, row, rows, columns, TRANSPOSE: tl.constexpr, BLOCK_ROWS: tl.constexpr,
    BLOCK_COLUMNS: tl.constexpr, COMPUTE: tl.constexpr,
):  # fmt: skip
    """Rows ``row .. row + rows`` of the row-major ``weight (G, columns)`` (one gate's block of
    :math:`W_{hh}`, or :math:`W_{hr}`) as a zero-padded tile: transposed, ``(BLOCK_COLUMNS,
    BLOCK_ROWS)`` with ``[k, j] = W[row + j, k]`` (for :math:`h W^T`), if ``TRANSPOSE``; else as
    stored, ``(BLOCK_ROWS, BLOCK_COLUMNS)`` (for :math:`\\partial net\\, W`)."""
    if TRANSPOSE:
        k = tl.arange(0, BLOCK_COLUMNS)[:, None]
        j = tl.arange(0, BLOCK_ROWS)[None, :]
    else:
        j = tl.arange(0, BLOCK_ROWS)[:, None]
        k = tl.arange(0, BLOCK_COLUMNS)[None, :]
    return load(weight + (row + j) * columns + k, (j < rows) & (k < columns), COMPUTE)
