r"""Building blocks shared by the compiled kernels: activations, time indexing, the input GEMMs.

Every function here is compiled with Numba (``@njit(cache=True)``) and works on NumPy arrays of
float32 or float64; transcendental math is done in float64 whatever the storage type.

Activations are applied by one branch-free loop over a whole row of gates, each element with its own
function read from a small table (:func:`activation_table`), so that LLVM vectorises it. ``np.exp``
would call libm once per element (such scalar calls were most of the time of a small LSTM), so
:func:`exp` evaluates :math:`e^x = 2^n e^r` with :math:`n = \mathrm{round}(x / \ln 2)`,
:math:`|r| \le \ln 2 / 2` and a degree-13 Taylor polynomial for :math:`e^r`: relative error below
:math:`10^{-15}` on the whole range. ``tanh`` is computed as :math:`2 \sigma(2x) - 1` (absolute
error below :math:`10^{-15}`).

Loops index arrays from ``range(n)`` or with an offset known to be non-negative: Numba wraps
negative indices around, and that check keeps a loop from vectorising unless LLVM can prove the
index is never negative.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

from carousel.cells.activations import ACTIVATIONS

SIGMOID = ACTIVATIONS["sigmoid"].code
HARD_SIGMOID = ACTIVATIONS["hard_sigmoid"].code
TANH = ACTIVATIONS["tanh"].code
IDENTITY = ACTIVATIONS["identity"].code
RELU = ACTIVATIONS["relu"].code
G1997 = ACTIVATIONS["g1997"].code
H1997 = ACTIVATIONS["h1997"].code

kernel = njit(cache=True, error_model="numpy")
"""How every kernel is compiled: cached on disk; float division follows NumPy (no zero check, which
would keep LLVM from vectorising the loops)."""

_LOG2E = 1.4426950408889634
_LN2_HIGH = 6.93147180369123816490e-01  # ln 2 split in two for an exact n * ln 2
_LN2_LOW = 1.90821492927058770002e-10


@intrinsic
def _float64_from_bits(typingctx, bits):
    """Reinterpret the bits of an int64 as a float64 (used to build :math:`2^n`)."""
    signature = types.float64(types.int64)

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return signature, codegen


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def exp(x):
    """:math:`e^x` in float64, vectorisable; arguments are clamped to [-708, 709].

    The polynomial is evaluated by Estrin's scheme (depth 4 instead of 13), which shortens the
    latency that sits on every step's critical path.
    """
    if x > 709.0:
        x = 709.0
    if x < -708.0:
        x = -708.0
    n = np.floor(x * _LOG2E + 0.5)
    r = x - n * _LN2_HIGH - n * _LN2_LOW  # |r| <= ln(2) / 2
    r2 = r * r
    r4 = r2 * r2
    low = (1.0 + r) + (0.5 + r * (1.0 / 6.0)) * r2
    low += ((1.0 / 24.0 + r * (1.0 / 120.0)) + (1.0 / 720.0 + r * (1.0 / 5040.0)) * r2) * r4
    high = (1.0 / 40320.0 + r * (1.0 / 362880.0)) + (1.0 / 3628800.0 + r * (1.0 / 39916800.0)) * r2
    high += (1.0 / 479001600.0 + r * (1.0 / 6227020800.0)) * r4
    return (low + high * (r4 * r4)) * _float64_from_bits((np.int64(n) + 1023) << 52)


# Rows of an activation table (see activation_table).
SCALE, SLOPE, OFFSET, LINEAR, LOW, HIGH, CURVATURE = 0, 1, 2, 3, 4, 5, 6


@kernel
def activation_table(codes):
    r"""Per-row parameters that let one branch-free loop apply a different activation to each row.

    Every activation is :math:`f(x) = a\,\sigma(s x) + o + \mathrm{clip}(l x, lo, hi)`:
    sigmoid ``(a, s, o) = (1, 1, 0)``, tanh ``(2, 2, -1)``, g1997 ``(4, 1, -2)``, h1997
    ``(2, 1, -1)`` with ``l = lo = hi = 0``; hard_sigmoid ``clip(x, 0, 1)``, relu
    ``clip(x, 0, inf)``, identity ``clip(x, -inf, inf)`` with ``a = s = o = 0``. The added zero
    terms are exact, so each row gets exactly its own function. ``CURVATURE`` is ``s / a`` (0 for
    the clipped ones), used by :func:`derivatives`.

    Args:
        codes: ``(n,)`` int64 activation codes, one per row.

    Returns:
        ``(7, n)`` float64, rows ``SCALE, SLOPE, OFFSET, LINEAR, LOW, HIGH, CURVATURE``.
    """
    table = np.zeros((7, codes.shape[0]))
    for j in range(codes.shape[0]):
        code = codes[j]
        if code == SIGMOID:
            table[SCALE, j], table[SLOPE, j] = 1.0, 1.0
        elif code == TANH:
            table[SCALE, j], table[SLOPE, j], table[OFFSET, j] = 2.0, 2.0, -1.0
        elif code == G1997:
            table[SCALE, j], table[SLOPE, j], table[OFFSET, j] = 4.0, 1.0, -2.0
        elif code == H1997:
            table[SCALE, j], table[SLOPE, j], table[OFFSET, j] = 2.0, 1.0, -1.0
        else:
            table[LINEAR, j] = 1.0
            table[LOW, j] = -np.inf if code == IDENTITY else 0.0
            table[HIGH, j] = 1.0 if code == HARD_SIGMOID else np.inf
        if table[SCALE, j] != 0.0:
            table[CURVATURE, j] = table[SLOPE, j] / table[SCALE, j]
    return table


@kernel
def activate(values, table, start, stop):
    """Apply each row's activation to ``values[start:stop]`` in place (see :func:`activation_table`)."""
    if start < 0:  # never; tells LLVM the indices are non-negative, so the loop vectorises
        start = 0
    for j in range(start, stop):
        x = values[j]
        squash = table[SCALE, j] / (1.0 + exp(-table[SLOPE, j] * x)) + table[OFFSET, j]
        values[j] = squash + min(max(table[LINEAR, j] * x, table[LOW, j]), table[HIGH, j])


@kernel
def derivatives(values, table, start, stop, out):
    """``out[j] = f'(x)`` from the output ``y = values[j]``, for ``start <= j < stop``.

    For the squashing part :math:`f' = (s / a)(y - o)(a + o - y)`, which is :math:`y (1 - y)`,
    :math:`1 - y^2`, :math:`(4 - y^2) / 4`, :math:`(1 - y^2) / 2`; for the clipped part
    :math:`f' = 1` strictly inside ``(lo, hi)``, else 0 (torch's convention at the kinks).
    """
    if start < 0:  # see activate
        start = 0
    for j in range(start, stop):
        y = values[j]
        offset = table[OFFSET, j]
        inside = 1.0 if table[LOW, j] < y < table[HIGH, j] else 0.0
        squash = table[CURVATURE, j] * (y - offset) * (table[SCALE, j] + offset - y)
        out[j] = squash + table[LINEAR, j] * inside


@kernel
def expand(gate, block, out):
    """Gate values per cell: ``out[j] = gate[j // block]`` (one gate unit serves ``block`` cells)."""
    for j in range(out.shape[0]):
        out[j] = gate[j // block]


@kernel
def block_sums(values, block, out):
    """``out[k] = sum(values[k * block : (k + 1) * block])``: per-cell terms summed per gate unit."""
    for k in range(out.shape[0]):
        total = 0.0
        for j in range(k * block, (k + 1) * block):
            total += values[j]
        out[k] = total


SMALL_PRODUCT = 4096
"""Products ``M * K * N`` up to this size are computed by a plain loop rather than a BLAS call."""


@kernel
def matmul(a, b, out):
    """``out (M, N) = a (M, K) @ b (K, N)``, all C-contiguous; a loop for small sizes, else BLAS."""
    rows, inner = a.shape
    cols = b.shape[1]
    if rows * inner * cols > SMALL_PRODUCT:
        np.dot(a, b, out)
        return
    for m in range(rows):
        for n in range(cols):
            out[m, n] = 0.0
        for k in range(inner):
            scale = a[m, k]
            for n in range(cols):
                out[m, n] += scale * b[k, n]


@kernel
def time_index(step, length, reverse):
    """The time position that processing step ``step`` of a sequence of ``length`` reads.

    Forward: ``step``; reverse: ``length - 1 - step``, so each sequence runs backwards from its own
    last valid step and the padding past ``length`` is never touched.
    """
    return length - 1 - step if reverse else step


@kernel
def input_projection(x, weight_ih, bias):
    """:math:`W_{ih} x_t + b` for all steps in one GEMM.

    Args:
        x: ``(T, B, I)``.
        weight_ih: ``(G, I)``.
        bias: ``(G,)``, or ``(0,)`` for none.

    Returns:
        ``(T, B, G)``.
    """
    steps, batch, inputs = x.shape
    rows = weight_ih.shape[0]
    projected = np.dot(x.reshape((steps * batch, inputs)), weight_ih.T)  # (T*B, G)
    if bias.shape[0] > 0:
        for n in range(steps * batch):
            for g in range(rows):
                projected[n, g] += bias[g]
    return projected.reshape((steps, batch, rows))


@kernel
def input_gradients(x, weight_ih, d_projection, need_input_grad):
    """Backward of :func:`input_projection`, as large GEMMs.

    Args:
        x: ``(T, B, I)``.
        weight_ih: ``(G, I)``.
        d_projection: ``(T, B, G)``, the gradient of the net inputs (zero at padding).
        need_input_grad: whether to compute ``d_x``.

    Returns:
        ``(d_x (T, B, I) or (0, 0, 0), d_weight_ih (G, I), d_bias (G,))``.
    """
    steps, batch, inputs = x.shape
    rows = weight_ih.shape[0]
    d_net = d_projection.reshape((steps * batch, rows))  # (T*B, G)
    d_weight_ih = np.dot(d_net.T, x.reshape((steps * batch, inputs)))  # (G, I)
    d_bias_sum = np.zeros(rows)  # accumulated in float64
    for n in range(steps * batch):
        for g in range(rows):
            d_bias_sum[g] += d_net[n, g]
    d_bias = d_bias_sum.astype(x.dtype)
    if need_input_grad:
        d_x = np.dot(d_net, weight_ih).reshape((steps, batch, inputs))
    else:
        d_x = np.zeros((0, 0, 0), dtype=x.dtype)
    return d_x, d_weight_ih, d_bias
