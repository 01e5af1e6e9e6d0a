r"""Building blocks shared by the compiled kernels: activations, time indexing, the input GEMMs.

Every function here is compiled with Numba (``@njit(cache=True)``) and works on NumPy arrays of
float32 or float64; transcendental math is done in float64 whatever the storage type.

Activations are applied to whole contiguous slices so that LLVM vectorises them. ``np.exp`` would
call libm once per element (a scalar call per gate per step is most of the time of a small LSTM), so
:func:`exp` evaluates :math:`e^x = 2^n e^r` with :math:`n = \mathrm{round}(x / \ln 2)`,
:math:`|r| \le \ln 2 / 2` and a degree-13 Taylor polynomial for :math:`e^r`: relative error below
:math:`10^{-15}` on the whole range, and the loop vectorises. ``tanh`` is computed as
:math:`2 \sigma(2x) - 1` (absolute error below :math:`10^{-15}`).
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


@njit(cache=True, fastmath={"contract"})
def exp(x):
    """:math:`e^x` in float64, vectorisable; arguments are clamped to [-708, 709]."""
    if x > 709.0:
        x = 709.0
    if x < -708.0:
        x = -708.0
    n = np.floor(x * _LOG2E + 0.5)
    r = x - n * _LN2_HIGH - n * _LN2_LOW  # |r| <= ln(2) / 2
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * _float64_from_bits((np.int64(n) + 1023) << 52)


@njit(cache=True)
def activate(values, code):
    """Apply the activation with :attr:`~carousel.cells.Activation.code` ``code`` in place.

    Args:
        values: a contiguous 1-D slice, net inputs on entry, activations on return.
        code: ``SIGMOID``, ``HARD_SIGMOID``, ``TANH``, ``IDENTITY``, ``RELU``, ``G1997``, ``H1997``.
    """
    n = values.shape[0]
    if code == SIGMOID:
        for j in range(n):
            values[j] = 1.0 / (1.0 + exp(-values[j]))
    elif code == TANH:
        for j in range(n):
            values[j] = 2.0 / (1.0 + exp(-2.0 * values[j])) - 1.0
    elif code == HARD_SIGMOID:
        for j in range(n):
            values[j] = min(max(values[j], 0.0), 1.0)
    elif code == RELU:
        for j in range(n):
            values[j] = max(values[j], 0.0)
    elif code == G1997:
        for j in range(n):
            values[j] = 4.0 / (1.0 + exp(-values[j])) - 2.0
    elif code == H1997:
        for j in range(n):
            values[j] = 2.0 / (1.0 + exp(-values[j])) - 1.0


@njit(cache=True)
def derivative(y, code):
    """:math:`f'(x)` from the activation's output :math:`y = f(x)` (see :mod:`carousel.cells.activations`)."""
    if code == SIGMOID:
        return y * (1.0 - y)
    if code == TANH:
        return 1.0 - y * y
    if code == HARD_SIGMOID:
        return 1.0 if 0.0 < y < 1.0 else 0.0
    if code == RELU:
        return 1.0 if y > 0.0 else 0.0
    if code == G1997:
        return (4.0 - y * y) / 4.0
    if code == H1997:
        return (1.0 - y * y) / 2.0
    return 1.0  # identity


@njit(cache=True)
def time_index(step, length, reverse):
    """The time position that processing step ``step`` of a sequence of ``length`` reads.

    Forward: ``step``; reverse: ``length - 1 - step``, so each sequence runs backwards from its own
    last valid step and the padding past ``length`` is never touched.
    """
    return length - 1 - step if reverse else step


@njit(cache=True)
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


@njit(cache=True)
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
