r"""The GEMM the kernels call: BLAS reached from compiled code, and the thread count it runs on.

:func:`gemm` calls the Fortran ``sgemm``/``dgemm`` of the MKL that PyTorch links (else SciPy's
BLAS) through an LLVM intrinsic, so compiled and cached code calls it directly; :func:`matmul`
does products too small for a BLAS call as plain loops.
"""

from __future__ import annotations

import ctypes
from contextlib import contextmanager
from pathlib import Path

import llvmlite.binding as llvm
import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic

from carousel.kernels.numba_cpu.common import kernel


def _address(function) -> int:
    return ctypes.cast(function, ctypes.c_void_p).value


@numba.cfunc(types.int32(types.int32), cache=True)
def _threads_unchanged(num_threads):  # only without MKL: nothing to set
    return 0


def _blas_functions() -> tuple[int, int, int, str]:
    """Addresses of the Fortran ``sgemm``/``dgemm`` the kernels call, of a function that sets the
    calling thread's BLAS thread count, and where they come from.

    First choice: the MKL that PyTorch links (``libtorch_cpu`` exports ``sgemm_``, ``dgemm_`` and
    ``MKL_Set_Num_Threads_Local``). Its threads are PyTorch's own OpenMP pool, so a kernel's GEMMs
    share the cores with torch operations instead of competing with them, and it is the faster
    BLAS for the small GEMMs of a recurrent step. Otherwise (a PyTorch built without MKL): SciPy's
    BLAS, whose threads the policy of :mod:`carousel.kernels.threads` limits.
    """
    library_path = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    if library_path.exists():
        try:
            library = ctypes.CDLL(str(library_path))
            functions = library.sgemm_, library.dgemm_, library.MKL_Set_Num_Threads_Local
        except (OSError, AttributeError):
            pass
        else:
            return (*(_address(function) for function in functions), "mkl")
    return (
        get_cython_function_address("scipy.linalg.cython_blas", "sgemm"),
        get_cython_function_address("scipy.linalg.cython_blas", "dgemm"),
        _threads_unchanged.address,
        "scipy",
    )


_SGEMM, _DGEMM, _LOCAL_THREADS, BLAS = _blas_functions()
"""``BLAS`` names the library the kernels' GEMMs run on: ``"mkl"`` (PyTorch's) or ``"scipy"``."""
# compiled (and cached) code calls these by name; the names resolve anew in every process
llvm.add_symbol("carousel_sgemm", _SGEMM)
llvm.add_symbol("carousel_dgemm", _DGEMM)
llvm.add_symbol("carousel_blas_local_threads", _LOCAL_THREADS)

# PYFUNCTYPE: the call keeps the GIL (a CFUNCTYPE call would release it and then wait, on a busy
# machine for milliseconds, to get it back while shard threads run)
_local_threads = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_int)(_LOCAL_THREADS)


@contextmanager
def single_threaded():
    """Inside, the GEMMs that the calling thread's kernels make run on that thread alone (MKL's
    per-thread setting, restored on exit; nothing to set for SciPy's BLAS, which has none)."""
    previous = _local_threads(1)
    try:
        yield
    finally:
        _local_threads(previous)


PARALLEL_WORK = 1 << 20
"""A step's GEMMs with fewer multiply-adds run on the calling thread: splitting them costs more
than it saves. From this size on (a batch of one or two rows at H = 512) two threads read half
the recurrent weights each, which keeps each half in its core's cache: an unsharded 2x300x256x512
LSTM call (fwd+bwd) took 78-86 ms on two idle CPUs against 154-157 ms with these GEMMs on one
thread. On a busy machine each such GEMM meets its threads at a barrier once per step (325 ms
against 152 ms with one other process on the two CPUs): ``CAROUSEL_NUM_THREADS=1`` avoids it."""

SEQUENCE_PARALLEL_WORK = 1 << 26
"""The same for the GEMMs over a whole sequence (the input projection and the weight and input
gradients, :func:`sequence_gemm`), which split well but gain little below some 2 ms of work,
while on a busy machine a thread that lost its core reaches the barrier a time slice later: with
one other process on the two CPUs, an unsharded 1x500x32x64 LSTM call (fwd+bwd) took 32 ms on two
threads (3.6 ms on one) when its whole-sequence GEMMs of 2^22-2^23 were split, 2.4 ms with this
threshold; idle, 2.3-2.6 ms either way."""


@intrinsic
def _set_local_threads(typingctx, num_threads):
    """Set the calling thread's BLAS thread count (0: the global one); returns the previous."""

    def codegen(context, builder, sig, args):
        int32 = ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(int32, [int32]), "carousel_blas_local_threads"
        )
        return builder.call(function, [builder.trunc(args[0], int32)])

    return types.int32(types.int64), codegen


@kernel(inline="always")
def gemm(a, b, c, transpose_a, transpose_b, beta):
    """``c = op(a) @ op(b) + beta * c`` on C-contiguous 2-D arrays, by the BLAS of :data:`BLAS`.

    ``op(x)`` is ``x.T`` when ``transpose_x`` is true. Products smaller than
    :data:`PARALLEL_WORK` multiply-adds run on the calling thread alone.
    """
    _split_gemm(a, b, c, transpose_a, transpose_b, beta, PARALLEL_WORK)


@kernel(inline="always")
def sequence_gemm(a, b, c, transpose_a, transpose_b, beta):
    """:func:`gemm` for the products over a whole sequence: split over threads only from
    :data:`SEQUENCE_PARALLEL_WORK` multiply-adds."""
    _split_gemm(a, b, c, transpose_a, transpose_b, beta, SEQUENCE_PARALLEL_WORK)


@kernel(inline="always")
def _split_gemm(a, b, c, transpose_a, transpose_b, beta, parallel_work):
    """:func:`_gemm` on the calling thread alone below ``parallel_work`` multiply-adds."""
    rows = a.shape[1] if transpose_a else a.shape[0]
    work = rows * (a.shape[0] if transpose_a else a.shape[1]) * c.shape[1]
    if work < parallel_work:
        previous = _set_local_threads(1)
        _gemm(a, b, c, transpose_a, transpose_b, beta)
        _set_local_threads(previous)
    else:
        _gemm(a, b, c, transpose_a, transpose_b, beta)


@intrinsic
def _gemm(typingctx, a, b, c, transpose_a, transpose_b, beta):
    """The Fortran ``gemm`` call behind :func:`gemm`: row-major arrays are column-major
    transposes, so it computes :math:`c^T = op(b)^T op(a)^T`."""
    arrays = (a, b, c)
    if not all(isinstance(x, types.Array) and x.ndim == 2 and x.layout == "C" for x in arrays):
        return None
    if not (a.dtype == b.dtype == c.dtype) or c.dtype not in (types.float32, types.float64):
        return None
    dtype = c.dtype
    signature = types.void(a, b, c, transpose_a, transpose_b, beta)

    def codegen(context, builder, sig, args):
        a_value, b_value, c_value, trans_a, trans_b, beta_value = args
        a_array = context.make_array(sig.args[0])(context, builder, a_value)
        b_array = context.make_array(sig.args[1])(context, builder, b_value)
        c_array = context.make_array(sig.args[2])(context, builder, c_value)
        int32, char = ir.IntType(32), ir.IntType(8)
        real = context.get_value_type(dtype)

        def stack(value, kind):  # Fortran takes every argument by reference
            slot = cgutils.alloca_once(builder, kind)
            builder.store(value, slot)
            return slot

        def flag(value, kind):
            truth = context.cast(builder, value, kind, types.boolean)
            return builder.select(truth, ir.Constant(char, ord("T")), ir.Constant(char, ord("N")))

        def dims(array):
            rows, cols = cgutils.unpack_tuple(builder, array.shape, 2)
            return builder.trunc(rows, int32), builder.trunc(cols, int32)

        a_rows, a_cols = dims(a_array)
        b_rows, b_cols = dims(b_array)
        is_a_t = context.cast(builder, trans_a, sig.args[3], types.boolean)
        is_b_t = context.cast(builder, trans_b, sig.args[4], types.boolean)
        m = builder.select(is_a_t, a_cols, a_rows)  # rows of op(a)
        k = builder.select(is_a_t, a_rows, a_cols)
        n = builder.select(is_b_t, b_rows, b_cols)  # columns of op(b)
        pointer = real.as_pointer()
        function = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(
                ir.VoidType(),
                [char.as_pointer()] * 2
                + [int32.as_pointer()] * 3
                + [pointer, pointer, int32.as_pointer(), pointer, int32.as_pointer()]
                + [pointer, pointer, int32.as_pointer()],
            ),
            "carousel_sgemm" if dtype == types.float32 else "carousel_dgemm",
        )
        builder.call(
            function,
            [
                stack(flag(trans_b, sig.args[4]), char),
                stack(flag(trans_a, sig.args[3]), char),
                stack(n, int32),
                stack(m, int32),
                stack(k, int32),
                stack(context.get_constant(dtype, 1.0), real),
                builder.bitcast(b_array.data, pointer),
                stack(b_cols, int32),
                builder.bitcast(a_array.data, pointer),
                stack(a_cols, int32),
                stack(context.cast(builder, beta_value, sig.args[5], dtype), real),
                builder.bitcast(c_array.data, pointer),
                stack(n, int32),
            ],
        )
        return context.get_dummy_value()

    return signature, codegen


SMALL_PRODUCT = 4096
"""Products ``M * K * N`` up to this size are computed by a plain loop rather than a BLAS call."""


@kernel
def matmul(a, b, out):
    """``out (M, N) = a (M, K) @ b (K, N)``, all C-contiguous; a loop for small sizes, else BLAS."""
    rows, inner = a.shape
    cols = b.shape[1]
    if rows * inner * cols > SMALL_PRODUCT:
        gemm(a, b, out, False, False, 0.0)
        return
    for m in range(rows):
        for n in range(cols):
            out[m, n] = 0.0
        for k in range(inner):
            scale = a[m, k]
            for n in range(cols):
                out[m, n] += scale * b[k, n]


@kernel
def input_projection(x, weight_ih):
    """:math:`W_{ih} x_t` for all steps in one GEMM. The kernels add the bias where they read a
    row (:func:`row_bias`): written into every row first, it would cost a pass over the result.

    Args:
        x: ``(T, B, I)``.
        weight_ih: ``(G, I)``.

    Returns:
        ``(T, B, G)``.
    """
    steps, batch, _ = x.shape
    rows = weight_ih.shape[0]
    return project_into(x, weight_ih, np.empty(steps * batch * rows, x.dtype))


@kernel
def project_into(x, weight_ih, workspace):
    """:func:`input_projection` into the start of ``workspace`` (1-D, the dtype), or into a new
    array when it is too small: a kernel that only reads the projections during its own run
    reuses one buffer across calls instead of fresh memory (and its page faults) each time."""
    steps, batch, inputs = x.shape
    rows = weight_ih.shape[0]
    size = steps * batch * rows
    buffer = workspace[:size] if workspace.shape[0] >= size else np.empty(size, x.dtype)
    projected = buffer.reshape((steps * batch, rows))  # (T*B, G)
    sequence_gemm(x.reshape((steps * batch, inputs)), weight_ih, projected, False, True, 0.0)
    return projected.reshape((steps, batch, rows))


@kernel
def row_bias(bias, rows, dtype, used):
    """The bias a kernel adds to each row of :func:`input_projection`: ``bias`` ``(G,)``, or
    ``rows`` zeros when it has none (``(0,)``) or does not add it (``used`` false: layer norm
    folds it into a shift)."""
    if bias.shape[0] > 0 and used:
        return bias
    return np.zeros(rows, dtype)


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
    d_weight_ih = np.empty((rows, inputs), x.dtype)
    sequence_gemm(d_net, x.reshape((steps * batch, inputs)), d_weight_ih, True, False, 0.0)
    d_bias_sum = np.zeros(rows)  # accumulated in float64
    for n in range(steps * batch):
        for g in range(rows):
            d_bias_sum[g] += d_net[n, g]
    d_bias = d_bias_sum.astype(x.dtype)
    if need_input_grad:
        d_x = np.empty((steps, batch, inputs), x.dtype)
        sequence_gemm(d_net, weight_ih, d_x.reshape((steps * batch, inputs)), False, False, 0.0)
    else:
        d_x = np.zeros((0, 0, 0), dtype=x.dtype)
    return d_x, d_weight_ih, d_bias


# ---- block-diagonal (multi-head) recurrent products -----------------------------------------

MIN_HEAD_SIZE = 32
"""Smaller heads run one dense GEMM over the masked weights: per-head GEMMs of 2 to 16 units
were slower than the dense one (one thread: 1.7x at 1x1000x2x8, 1.4x at 1x100x8x32, 1.1x at
16x100x32x64, 4 heads), as fast at 32 (32x100x32x128) and faster above."""


@kernel
def head_count(heads, weight_hh):
    """The number of heads the recurrent GEMMs split into: ``heads``, when each head has at least
    ``MIN_HEAD_SIZE`` units and every weight outside the diagonal blocks is zero (the layer's mask
    makes it so), else 1 (one dense GEMM, exact either way)."""
    rows, hidden = weight_hh.shape
    if heads <= 1 or hidden == 0 or hidden // heads < MIN_HEAD_SIZE:
        return 1
    size = hidden // heads
    for r in range(rows):
        head = (r % hidden) // size
        for c in range(hidden):
            if c // size != head and weight_hh[r, c] != 0.0:
                return 1
    return heads


@kernel
def head_blocks(weight_hh, heads, transpose):
    """The diagonal blocks of ``weight_hh`` ``(4H, H)``, head by head: ``(heads, 4D, D)``, rows
    gate-major as in the packed layout, or their transposes ``(heads, D, 4D)``."""
    hidden = weight_hh.shape[1]
    size = hidden // heads
    blocks = np.empty(
        (heads, size, 4 * size) if transpose else (heads, 4 * size, size), weight_hh.dtype
    )
    for head in range(heads):
        for gate in range(4):
            for k in range(size):
                for j in range(size):
                    value = weight_hh[gate * hidden + head * size + k, head * size + j]
                    if transpose:
                        blocks[head, j, gate * size + k] = value
                    else:
                        blocks[head, gate * size + k, j] = value
    return blocks


@kernel
def _head_gates(full, part, head, to_part):
    """Copy head ``head``'s columns of the four gate blocks between ``full`` ``(B, 4H)`` and
    ``part`` ``(B, 4D)`` (``D = H / heads``): into ``part`` when ``to_part``, else into ``full``."""
    hidden, size = full.shape[1] // 4, part.shape[1] // 4
    for b in range(full.shape[0]):
        for gate in range(4):
            for k in range(size):
                column = gate * hidden + head * size + k
                if to_part:
                    part[b, gate * size + k] = full[b, column]
                else:
                    full[b, column] = part[b, gate * size + k]


@kernel
def head_matmul(h, weight_t, blocks_t, heads, h_heads, net_heads, net):
    """``net (B, 4H) = h (B, H) @ W_hh^T``: one GEMM, or one per head on its diagonal block."""
    if heads == 1:
        matmul(h, weight_t, net)
        return
    size = h.shape[1] // heads
    for head in range(heads):
        for b in range(h.shape[0]):
            for j in range(size):
                h_heads[head, b, j] = h[b, head * size + j]
        matmul(h_heads[head], blocks_t[head], net_heads[head])  # (B, D) @ (D, 4D)
        _head_gates(net, net_heads[head], head, False)


@kernel
def head_matmul_backward(d_net, weight, blocks, heads, d_net_heads, d_source_heads, d_source):
    """``d_source (B, H) = d_net (B, 4H) @ W_hh``: one GEMM, or one per head."""
    if heads == 1:
        matmul(d_net, weight, d_source)
        return
    size = d_source.shape[1] // heads
    for head in range(heads):
        _head_gates(d_net, d_net_heads[head], head, True)
        matmul(d_net_heads[head], blocks[head], d_source_heads[head])  # (B, 4D) @ (4D, D)
        for b in range(d_source.shape[0]):
            for j in range(size):
                d_source[b, head * size + j] = d_source_heads[head, b, j]
