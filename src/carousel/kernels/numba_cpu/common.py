r"""Building blocks shared by the compiled kernels: the kernel decorator and its cache, activations,
time indexing (the GEMMs are in :mod:`.blas`).

Every function here is compiled with Numba (``@njit(cache=True)``) and works on NumPy arrays of
float32 or float64; transcendental math is done in float64 whatever the storage type.

Activations are applied by one branch-free loop per block of a row of gates that shares an activation,
its parameters read from a small table (:func:`activation_table`), so that LLVM vectorises it. ``np.exp``
would call libm once per element (such scalar calls were most of the time of a small LSTM), so
:func:`exp` evaluates :math:`e^x = 2^n e^r` with :math:`n = \mathrm{round}(x / \ln 2)`,
:math:`|r| \le \ln 2 / 2` and a degree-13 Taylor polynomial for :math:`e^r`: relative error below
:math:`10^{-15}` on the whole range. ``tanh`` is computed as :math:`2 \sigma(2x) - 1` (absolute
error below :math:`10^{-15}`).

Loops index arrays from ``range(n)``, or with unsigned indices when they start at an offset: Numba
wraps negative indices around, and that check keeps a loop from vectorising unless LLVM can prove
the index is never negative.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numba
import numpy as np
from numba import njit, types
from numba.extending import intrinsic, overload

from carousel.cells.activations import ACTIVATIONS

SIGMOID = ACTIVATIONS["sigmoid"].code
HARD_SIGMOID = ACTIVATIONS["hard_sigmoid"].code
TANH = ACTIVATIONS["tanh"].code
IDENTITY = ACTIVATIONS["identity"].code
RELU = ACTIVATIONS["relu"].code
G1997 = ACTIVATIONS["g1997"].code
H1997 = ACTIVATIONS["h1997"].code


def _cache_directory() -> str:
    """Where compiled kernels are cached: a directory named after a hash of this package's sources.

    Numba checks a cached function against the time stamp of its own file only, not of the files
    it calls into; keying the directory by every kernel source makes any edit recompile them all.
    It lies under ``NUMBA_CACHE_DIR`` if set, else next to the sources (``__pycache__``).
    """
    sources = sorted(Path(__file__).parent.glob("*.py"))
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()[:16]
    base = numba.config.CACHE_DIR or str(Path(__file__).parent / "__pycache__")
    return os.path.join(base, f"kernels-{digest}")


_CACHE_DIRECTORY = _cache_directory()


def kernel(function=None, *, fastmath=False, inline="never"):
    """Compile ``function`` as a kernel: ``@njit(cache=True, nogil=True)`` into
    :func:`_cache_directory`, with NumPy's float division (no zero check, which would keep LLVM
    from vectorising the loops). ``@kernel(fastmath=...)`` passes numba's ``fastmath`` flags.

    ``@kernel(inline="always")`` marks the small helpers that the kernels call once per row or
    step (activations, time indexing, masks, the GEMM wrappers): Numba inlines them into the
    caller. A call that is not inlined passes every array argument on the stack and adds and
    drops a reference to it, an atomic operation each, which at a row of a few hundred values
    cost more than the helper's arithmetic. ``matmul`` is not inlined: its plain-loop branch
    slowed the small GRU and RNN kernels it was inlined into.

    ``nogil``: called from Python, a kernel releases the GIL for its whole run, so the batch
    shards of one call (:mod:`.shards`) run their kernels in parallel Python threads."""
    if function is None:
        return lambda function: kernel(function, fastmath=fastmath, inline=inline)
    user_directory = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = _CACHE_DIRECTORY  # read when the dispatcher sets up its cache
    try:
        return njit(cache=True, nogil=True, error_model="numpy", fastmath=fastmath, inline=inline)(
            function
        )
    finally:
        numba.config.CACHE_DIR = user_directory


_LOG2E = 1.4426950408889634
_LN2_HIGH = 6.93147180369123816490e-01  # ln 2 split in two for an exact n * ln 2
_LN2_LOW = 1.90821492927058770002e-10
_LN2_HIGH_32 = 0.693359375  # the same split for float32 (few mantissa bits in the high part)
_LN2_LOW_32 = -2.12194440054690583e-4


def _bitcast(source, target):
    """An intrinsic reinterpreting the bits of a ``source`` integer as a ``target`` float."""

    @intrinsic
    def reinterpret(typingctx, bits):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(target))

        return target(source), codegen

    return reinterpret


_float64_from_bits = _bitcast(types.int64, types.float64)
_float32_from_bits = _bitcast(types.int32, types.float32)


def exp(x):
    """:math:`e^x`, computed in the precision of ``x``; vectorisable inside compiled loops.

    float64: :math:`n = \\mathrm{round}(x / \\ln 2)`, :math:`r = x - n \\ln 2`, a degree-13 Taylor
    polynomial for :math:`e^r`, times :math:`2^n` built from its bits; arguments clamped to
    [-708, 709]. float32: the same with degree 7 and [-87, 88]. The polynomials are evaluated by
    Estrin's scheme (depth 3 or 4 instead of 7 or 13), which shortens the latency that sits on
    every step's critical path. Outside compiled code this is :func:`math.exp`.
    """
    return math.exp(x)


@overload(exp, jit_options={"error_model": "numpy", "fastmath": {"contract"}})
def _exp_compiled(x):
    if x == types.float32:
        return _exp32
    return _exp64


def _exp64(x):
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


def _exp32(x):
    one = np.float32(1.0)
    if x > np.float32(88.0):
        x = np.float32(88.0)
    if x < np.float32(-87.0):
        x = np.float32(-87.0)
    n = np.floor(x * np.float32(_LOG2E) + np.float32(0.5))
    r = x - n * np.float32(_LN2_HIGH_32) - n * np.float32(_LN2_LOW_32)
    r2 = r * r
    low = (one + r) + (np.float32(0.5) + r * np.float32(1.0 / 6.0)) * r2
    high = (np.float32(1.0 / 24.0) + r * np.float32(1.0 / 120.0)) + (
        np.float32(1.0 / 720.0) + r * np.float32(1.0 / 5040.0)
    ) * r2
    scale = _float32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))
    return (low + high * (r2 * r2)) * scale


# Columns of an activation table's parameters (see activation_table).
SCALE, SLOPE, OFFSET, LINEAR, LOW, HIGH, CURVATURE = 0, 1, 2, 3, 4, 5, 6


@kernel
def activation_table(codes, dtype):
    r"""The activations of a row of values, as runs of equal activations with their parameters.

    Every activation is :math:`f(x) = a\,\sigma(s x) + o` or :math:`f(x) = \mathrm{clip}(l x,
    lo, hi)`: sigmoid ``(a, s, o) = (1, 1, 0)``, tanh ``(2, 2, -1)``, g1997 ``(4, 1, -2)``, h1997
    ``(2, 1, -1)``; hard_sigmoid ``clip(x, 0, 1)``, relu ``clip(x, 0, inf)``, identity
    ``clip(x, -inf, inf)`` (``a = 0`` marks the clipped ones). ``CURVATURE`` is ``s / a``, used by
    :func:`derivatives`. A row of gates holds a few blocks, each with one activation, so
    :func:`activate` runs one loop per block with its parameters in registers: a table read per
    value would cost more loads than the arithmetic.

    Args:
        codes: ``(n,)`` int64 activation codes, one per value of the row.
        dtype: the dtype of the values it will act on.

    Returns:
        ``(bounds, parameters)``: ``bounds (S, 2)`` int64, the ``[start, stop)`` of each of the
        ``S`` runs of equal codes in order; ``parameters (S, 7)`` of ``dtype``, columns ``SCALE,
        SLOPE, OFFSET, LINEAR, LOW, HIGH, CURVATURE``.
    """
    size = codes.shape[0]
    runs = 0
    for j in range(size):
        if j == 0 or codes[j] != codes[j - 1]:
            runs += 1
    bounds = np.zeros((runs, 2), np.int64)
    parameters = np.zeros((runs, 7), dtype)
    run = -1
    for j in range(size):
        if j == 0 or codes[j] != codes[j - 1]:
            run += 1
            bounds[run, 0] = j
            _parameters(codes[j], parameters[run])
        bounds[run, 1] = j + 1
    return bounds, parameters


@kernel
def _parameters(code, out):
    """Write the ``(7,)`` parameters of activation ``code`` into ``out`` (zeros beforehand)."""
    if code == SIGMOID:
        out[SCALE], out[SLOPE] = 1.0, 1.0
    elif code == TANH:
        out[SCALE], out[SLOPE], out[OFFSET] = 2.0, 2.0, -1.0
    elif code == G1997:
        out[SCALE], out[SLOPE], out[OFFSET] = 4.0, 1.0, -2.0
    elif code == H1997:
        out[SCALE], out[SLOPE], out[OFFSET] = 2.0, 1.0, -1.0
    else:
        out[LINEAR] = 1.0
        out[LOW] = -np.inf if code == IDENTITY else 0.0
        out[HIGH] = 1.0 if code == HARD_SIGMOID else np.inf
    if out[SCALE] != 0.0:
        out[CURVATURE] = out[SLOPE] / out[SCALE]


@kernel(inline="always")
def activate(values, table, start, stop):
    """Apply each value's activation to ``values[start:stop]`` in place (see
    :func:`activation_table`)."""
    bounds, parameters = table
    for run in range(bounds.shape[0]):
        low, high = max(start, bounds[run, 0]), min(stop, bounds[run, 1])
        if low < high:
            _activate_run(values, parameters[run], low, high)


@kernel(inline="always")
def _activate_run(values, parameters, start, stop):
    """:func:`activate` over ``[start, stop)``, where every value has the activation of
    ``parameters``."""
    one = values.dtype.type(1.0)  # all arithmetic in the values' precision
    base = np.uint64(start)  # unsigned indices: no wrap-around check, so the loop vectorises
    scale, slope, offset = parameters[SCALE], parameters[SLOPE], parameters[OFFSET]
    if scale != 0.0:
        for n in range(stop - start):
            j = base + np.uint64(n)
            values[j] = scale / (one + exp(-slope * values[j])) + offset
    else:
        linear, low, high = parameters[LINEAR], parameters[LOW], parameters[HIGH]
        for n in range(stop - start):
            j = base + np.uint64(n)
            values[j] = min(max(linear * values[j], low), high)


@kernel(inline="always")
def derivatives(values, table, start, stop, out):
    """``out[j] = f'(x)`` from the output ``y = values[j]``, for ``start <= j < stop``.

    For the squashing activations :math:`f' = (s / a)(y - o)(a + o - y)`, which is
    :math:`y (1 - y)`, :math:`1 - y^2`, :math:`(4 - y^2) / 4`, :math:`(1 - y^2) / 2`; for the
    clipped ones :math:`f' = l` strictly inside ``(lo, hi)``, else 0 (torch's convention at the
    kinks).
    """
    bounds, parameters = table
    for run in range(bounds.shape[0]):
        low, high = max(start, bounds[run, 0]), min(stop, bounds[run, 1])
        if low < high:
            _derivatives_run(values, parameters[run], low, high, out)


@kernel(inline="always")
def _derivatives_run(values, parameters, start, stop, out):
    """:func:`derivatives` over ``[start, stop)``, one activation (see :func:`_activate_run`)."""
    one, zero = values.dtype.type(1.0), values.dtype.type(0.0)
    base = np.uint64(start)
    scale, offset = parameters[SCALE], parameters[OFFSET]
    if scale != 0.0:
        curvature = parameters[CURVATURE]
        for n in range(stop - start):
            j = base + np.uint64(n)
            y = values[j]
            out[j] = curvature * (y - offset) * (scale + offset - y)
    else:
        linear, low, high = parameters[LINEAR], parameters[LOW], parameters[HIGH]
        for n in range(stop - start):
            j = base + np.uint64(n)
            y = values[j]
            out[j] = linear * (one if low < y < high else zero)


@kernel(inline="always")
def expand(gate, block, out):
    """Gate values per cell: ``out[j] = gate[j // block]`` (one gate unit serves ``block`` cells)."""
    for j in range(out.shape[0]):
        out[j] = gate[j // block]


@kernel(inline="always")
def block_sums(values, block, out):
    """``out[k] = sum(values[k * block : (k + 1) * block])``: per-cell terms summed per gate unit."""
    for k in range(out.shape[0]):
        total = 0.0
        for j in range(k * block, (k + 1) * block):
            total += values[j]
        out[k] = total


@kernel(inline="always")
def time_index(step, length, reverse):
    """The time position that processing step ``step`` of a sequence of ``length`` reads.

    Forward: ``step``; reverse: ``length - 1 - step``, so each sequence runs backwards from its own
    last valid step and the padding past ``length`` is never touched.
    """
    return length - 1 - step if reverse else step


@kernel(inline="always")
def add_output_error(step, d_output, lengths, reverse, d_h):
    """Backward at processing step ``step``: ``d_h[b] += d_output[tau, b]`` for every sequence
    still active (``tau`` its time position), ``d_output`` ``(T, B, W)``, ``d_h`` ``(B, W)``."""
    for b in range(d_h.shape[0]):
        if step < lengths[b]:
            tau = time_index(step, lengths[b], reverse)
            for j in range(d_output.shape[2]):
                d_h[b, j] += d_output[tau, b, j]


@kernel
def time_major(steps, batch, width, dtype, lengths):
    """A ``(steps, batch, width)`` buffer: zeros if some sequence is shorter than ``steps`` (its
    padding is never written, and must read as zero), else uninitialised (every entry is)."""
    if steps > 0 and batch > 0 and np.min(lengths) < steps:
        return np.zeros((steps, batch, width), dtype)
    return np.empty((steps, batch, width), dtype)


@kernel
def scratch(workspace, offset, steps, batch, width, dtype, lengths):
    """A ``(steps, batch, width)`` buffer carved from ``workspace`` (1-D) at ``offset``, or a new one
    when it is too small (pass a zero-length ``workspace`` to always allocate).

    Reusing one workspace across calls spares the page faults of fresh memory; the buffer is
    zeroed when some sequence is shorter than ``steps`` (see :func:`time_major`).
    """
    size = steps * batch * width
    if workspace.shape[0] < offset + size:
        return time_major(steps, batch, width, dtype, lengths)
    buffer = workspace[offset : offset + size].reshape((steps, batch, width))
    if steps > 0 and batch > 0 and np.min(lengths) < steps:
        buffer[:] = 0.0
    return buffer


def log1p_unit(u):
    r""":math:`\log(1 + u)` for :math:`0 \le u \le 1`, vectorisable inside compiled loops.

    :math:`\log(1 + u) = 2\,\mathrm{artanh}(s)` with :math:`s = u / (2 + u) \le 1/3`, summed as
    :math:`2 s \sum_k s^{2k} / (2k + 1)`: 16 terms in float64 (the next is below
    :math:`4 \cdot 10^{-17}` of the sum), 7 in float32 (below :math:`2 \cdot 10^{-8}`). Outside
    compiled code this is :func:`math.log1p`.
    """
    return math.log1p(u)


@overload(log1p_unit, jit_options={"error_model": "numpy", "fastmath": {"contract"}})
def _log1p_unit_compiled(u):
    if u == types.float32:
        return _log1p_unit32
    return _log1p_unit64


def _log1p_unit64(u):
    s = u / (2.0 + u)
    y = s * s
    # sum_k y^k / (2k + 1), k = 0 .. 15, by Horner's rule
    total = 1.0 / 31.0
    total = total * y + 0.034482758620689655  # 1 / 29
    total = total * y + 0.037037037037037035  # 1 / 27
    total = total * y + 0.04  # 1 / 25
    total = total * y + 0.043478260869565216  # 1 / 23
    total = total * y + 0.047619047619047616  # 1 / 21
    total = total * y + 0.05263157894736842  # 1 / 19
    total = total * y + 0.058823529411764705  # 1 / 17
    total = total * y + 0.06666666666666667  # 1 / 15
    total = total * y + 0.07692307692307693  # 1 / 13
    total = total * y + 0.09090909090909091  # 1 / 11
    total = total * y + 0.1111111111111111  # 1 / 9
    total = total * y + 0.14285714285714285  # 1 / 7
    total = total * y + 0.2  # 1 / 5
    total = total * y + 0.3333333333333333  # 1 / 3
    total = total * y + 1.0  # 1 / 1
    return 2.0 * s * total


def _log1p_unit32(u):
    s = u / (np.float32(2.0) + u)
    y = s * s
    # sum_k y^k / (2k + 1), k = 0 .. 6, by Horner's rule
    total = np.float32(1.0 / 13.0)
    total = total * y + np.float32(0.09090909090909091)  # 1 / 11
    total = total * y + np.float32(0.1111111111111111)  # 1 / 9
    total = total * y + np.float32(0.14285714285714285)  # 1 / 7
    total = total * y + np.float32(0.2)  # 1 / 5
    total = total * y + np.float32(0.3333333333333333)  # 1 / 3
    total = total * y + np.float32(1.0)  # 1 / 1
    return np.float32(2.0) * s * total
