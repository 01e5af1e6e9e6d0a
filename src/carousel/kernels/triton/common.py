r"""Building blocks shared by the Triton kernels: activations, their derivatives, tile sizes.

Every activation of :mod:`carousel.cells.activations` is one branch of :func:`activate`, picked by
a ``tl.constexpr`` code, so a kernel compiles only the functions its cell uses. Derivatives are
written in terms of the output :math:`y = f(x)` (:func:`derivative`), so the forward kernels save
activations only, never net inputs:

================  ===================================  ====================================
code              :math:`f(x)`                         :math:`f'(x)` from :math:`y`
================  ===================================  ====================================
``sigmoid``       :math:`1 / (1 + e^{-x})`             :math:`y (1 - y)`
``hard_sigmoid``  :math:`\min(1, \max(0, x))`          1 if :math:`0 < y < 1` else 0
``tanh``          :math:`2 \sigma(2x) - 1`             :math:`1 - y^2`
``identity``      :math:`x`                            1
``relu``          :math:`\max(0, x)`                   1 if :math:`y > 0` else 0
``g1997``         :math:`4 \sigma(x) - 2`              :math:`(4 - y^2) / 4`
``h1997``         :math:`2 \sigma(x) - 1`              :math:`(1 - y^2) / 2`
================  ===================================  ====================================

``tanh`` through the sigmoid is exact to rounding (absolute error below :math:`10^{-15}` in
float64) and saturates correctly: :math:`e^{-x}` overflowing to infinity gives :math:`\sigma = 0`.

Tiles are powers of two, as compiled Triton requires of every ``tl.arange``; masks cover the
remainder. The pointwise kernels use no ``tl.dot``, so no tile needs to reach 16.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from carousel.cells.activations import ACTIVATIONS

SIGMOID: tl.constexpr = tl.constexpr(ACTIVATIONS["sigmoid"].code)
HARD_SIGMOID: tl.constexpr = tl.constexpr(ACTIVATIONS["hard_sigmoid"].code)
TANH: tl.constexpr = tl.constexpr(ACTIVATIONS["tanh"].code)
IDENTITY: tl.constexpr = tl.constexpr(ACTIVATIONS["identity"].code)
RELU: tl.constexpr = tl.constexpr(ACTIVATIONS["relu"].code)
G1997: tl.constexpr = tl.constexpr(ACTIVATIONS["g1997"].code)
H1997: tl.constexpr = tl.constexpr(ACTIVATIONS["h1997"].code)

TILE = 256
"""Elements per program of a pointwise kernel (rows x cells): enough work per program to hide
memory latency, and, at a batch of 64 and 512 cells, 128 programs for a GPU's ~130 SMs."""

COMPUTE_TYPES = {torch.float32: tl.float32, torch.float64: tl.float64}
"""The ``tl`` dtype a kernel computes in, by the dtype of its buffers (float16 and bfloat16 layers
reach the backend already cast to float32, see :mod:`carousel.nn.precision`)."""


def code(name: str) -> int:
    """The constexpr code of activation ``name``."""
    return ACTIVATIONS[name].code


def tile(count: int, limit: int) -> int:
    """The power of two covering ``count`` (at least 1), capped at ``limit`` (a power of two)."""
    return min(triton.next_power_of_2(max(count, 1)), limit)


@triton.jit
def sigmoid(x):
    """:math:`1 / (1 + e^{-x})` in the precision of ``x``."""
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def activate(x, CODE: tl.constexpr):
    """Apply the activation with code ``CODE`` elementwise (see the module docstring)."""
    if CODE == SIGMOID:
        y = sigmoid(x)
    elif CODE == HARD_SIGMOID:
        y = tl.minimum(tl.maximum(x, 0.0), 1.0)
    elif CODE == TANH:
        y = 2.0 * sigmoid(2.0 * x) - 1.0
    elif CODE == RELU:
        y = tl.maximum(x, 0.0)
    elif CODE == G1997:
        y = 4.0 * sigmoid(x) - 2.0
    elif CODE == H1997:
        y = 2.0 * sigmoid(x) - 1.0
    else:  # identity
        y = x
    return y


@triton.jit
def derivative(y, CODE: tl.constexpr):
    """:math:`f'(x)` from :math:`y = f(x)` for the activation with code ``CODE``; at the kinks of
    ``hard_sigmoid`` and ``relu`` it is 0, as in torch."""
    if CODE == SIGMOID:
        slope = y * (1.0 - y)
    elif CODE == HARD_SIGMOID:
        slope = tl.where((y > 0.0) & (y < 1.0), 1.0, 0.0).to(y.dtype)
    elif CODE == TANH:
        slope = 1.0 - y * y
    elif CODE == RELU:
        slope = tl.where(y > 0.0, 1.0, 0.0).to(y.dtype)
    elif CODE == G1997:
        slope = (4.0 - y * y) * 0.25
    elif CODE == H1997:
        slope = (1.0 - y * y) * 0.5
    else:  # identity
        slope = tl.zeros_like(y) + 1.0
    return slope


@triton.jit
def load(pointer, mask, COMPUTE: tl.constexpr):
    """``tl.load`` of ``pointer`` where ``mask`` (0 elsewhere), in the ``COMPUTE`` dtype."""
    return tl.load(pointer, mask=mask, other=0.0).to(COMPUTE)


@triton.jit
def unit_tile(batch, hidden, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """Row and unit indices of this program's ``(BLOCK_B, BLOCK_H)`` tile of a ``(B, H)`` grid,
    and its mask: ``(BLOCK_B, 1)``, ``(1, BLOCK_H)``, ``(BLOCK_B, BLOCK_H)``."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)[:, None]
    units = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)[None, :]
    return rows, units, (rows < batch) & (units < hidden)


@triton.jit
def step_active(lengths, rows, batch, step, HAS_LENGTHS: tl.constexpr):
    """Whether processing step ``step`` is inside each row's sequence: ``step < lengths[row]``
    (``rows`` any shape of row indices; all true without lengths)."""
    if HAS_LENGTHS:
        length = tl.load(lengths + rows, mask=rows < batch, other=0)
        active = step < length
    else:
        active = rows >= 0
    return active


INTERPRETED = not isinstance(activate, triton.runtime.JITFunction)
"""Whether these kernels run under Triton's interpreter (``TRITON_INTERPRET=1`` when this module
was first imported) rather than compiled for the GPU."""
