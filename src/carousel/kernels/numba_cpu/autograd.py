"""The compiled kernels as ``torch.autograd.Function`` s, and the backend's ``run_direction``.

Tensors and arrays are exchanged without copies: inputs are viewed with ``Tensor.numpy()`` (after
``contiguous()``, a no-op for parameters), results are wrapped with ``torch.from_numpy``. What the
forward kernel saves for the backward pass stays a NumPy array on ``ctx``; the tensors the backward
pass reads again (input and weights) go through ``save_for_backward``, so an in-place change to
them between forward and backward is detected as usual. Without autograd (``torch.no_grad()`` or
no input requiring a gradient) the forward kernel runs with ``keep=False`` and saves nothing.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS the kernels call, for the policy)
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from carousel.cells import CellSpec, CellWeights
from carousel.kernels import threads
from carousel.kernels.numba_cpu.elman import elman_backward, elman_config, elman_forward
from carousel.kernels.numba_cpu.gru import gru_backward, gru_config, gru_forward
from carousel.kernels.numba_cpu.lstm import lstm_backward, lstm_config, lstm_forward

threads.apply_policy()

_EMPTY = {
    (dtype, ndim): np.zeros((0,) * ndim, dtype=dtype)
    for dtype in (np.float32, np.float64)
    for ndim in (1, 2, 3)
}


def _array(tensor: Tensor) -> np.ndarray:
    """A C-contiguous NumPy view of ``tensor`` (a copy only if it is not contiguous)."""
    return tensor.detach().contiguous().numpy()


def _optional(tensor: Tensor | None, like: np.ndarray, ndim: int) -> np.ndarray:
    """``tensor`` as an array, or a zero-size placeholder of ``like``'s dtype."""
    if tensor is None:
        return _EMPTY[(like.dtype.type, ndim)]
    return _array(tensor)


def _tensor(array: np.ndarray) -> Tensor:
    return torch.from_numpy(array)


_WORKSPACES = threading.local()


def _workspace(size: int, dtype) -> np.ndarray:
    """This thread's scratch array for the backward kernels, grown to ``size`` elements.

    Backward calls on one thread run one after another, so one buffer per dtype serves them all
    and spares the page faults of a fresh ``(T, B, G)`` buffer on every call.
    """
    key = np.dtype(dtype).name
    buffer = getattr(_WORKSPACES, key, None)
    if buffer is None or buffer.shape[0] < size:
        buffer = np.empty(size, dtype)
        setattr(_WORKSPACES, key, buffer)
    return buffer


def _grads(arrays, needed) -> list[Tensor | None]:
    """The kernel's gradients as tensors, ``None`` where the input needs none."""
    return [torch.from_numpy(a) if need else None for a, need in zip(arrays, needed, strict=True)]


def _lstm_forward(config, lengths, reverse, keep, x, h0, c0, feedback0, *weights):
    """Call :func:`lstm_forward` on tensors; returns its arrays."""
    weight_ih, bias, weight_hh, weight_peephole, weight_hr = weights
    x_array, h0_array = _array(x), _array(h0)
    if feedback0 is None:
        feedback0_array = np.zeros((h0_array.shape[0], 0), x_array.dtype)
    else:
        feedback0_array = _array(feedback0)
    return lstm_forward(
        config,
        x_array,
        h0_array,
        _array(c0),
        feedback0_array,
        _array(weight_ih),
        _optional(bias, x_array, 1),
        _array(weight_hh),
        _optional(weight_peephole, x_array, 2),
        _optional(weight_hr, x_array, 2),
        lengths,
        reverse,
        keep,
    )


def _gru_forward(config, lengths, reverse, keep, x, h0, weight_ih, bias_ih, weight_hh, bias_hh):
    """Call :func:`gru_forward` on tensors; returns its arrays."""
    x_array = _array(x)
    return gru_forward(
        config,
        x_array,
        _array(h0),
        _array(weight_ih),
        _optional(bias_ih, x_array, 1),
        _array(weight_hh),
        _optional(bias_hh, x_array, 1),
        lengths,
        reverse,
        keep,
    )


def _elman_forward(config, lengths, reverse, keep, x, h0, weight_ih, bias, weight_hh):
    """Call :func:`elman_forward` on tensors; returns its arrays."""
    x_array = _array(x)
    return elman_forward(
        config,
        x_array,
        _array(h0),
        _array(weight_ih),
        _optional(bias, x_array, 1),
        _array(weight_hh),
        lengths,
        reverse,
        keep,
    )


class LSTMFunction(torch.autograd.Function):
    """One direction of one LSTM layer: :func:`~carousel.kernels.numba_cpu.lstm.lstm_forward` and
    :func:`~carousel.kernels.numba_cpu.lstm.lstm_backward`.

    ``apply(config, lengths, reverse, x, h0, c0, feedback0, weight_ih, bias, weight_hh,
    weight_peephole, weight_hr)`` returns ``(output, h_n, c_n, feedback_n)``; optional tensors may
    be ``None`` (``feedback_n`` then has width 0).
    """

    @staticmethod
    def forward(ctx, config, lengths, reverse, x, h0, c0, feedback0, *weights):
        results = _lstm_forward(config, lengths, reverse, True, x, h0, c0, feedback0, *weights)
        weight_ih, _, weight_hh, weight_peephole, weight_hr = weights
        ctx.config, ctx.lengths, ctx.reverse = config, lengths, reverse
        ctx.kernel_saved = results[4:]
        ctx.save_for_backward(x, weight_ih, weight_hh, weight_peephole, weight_hr)
        return tuple(_tensor(a) for a in results[:4])

    @staticmethod
    @once_differentiable
    def backward(ctx, d_output, d_h_n, d_c_n, d_feedback_n):
        x, weight_ih, weight_hh, weight_peephole, weight_hr = ctx.saved_tensors
        x_array = _array(x)
        grads = lstm_backward(
            ctx.config,
            x_array,
            _array(weight_ih),
            _array(weight_hh),
            _optional(weight_peephole, x_array, 2),
            _optional(weight_hr, x_array, 2),
            ctx.lengths,
            ctx.reverse,
            *ctx.kernel_saved,
            _array(d_output),
            _array(d_h_n),
            _array(d_c_n),
            _array(d_feedback_n),
            ctx.needs_input_grad[3],
            _workspace(x_array.shape[0] * x_array.shape[1] * weight_ih.shape[0], x_array.dtype),
        )
        return (None, None, None, *_grads(grads, ctx.needs_input_grad[3:]))


class GRUFunction(torch.autograd.Function):
    """One direction of one GRU layer: :func:`~carousel.kernels.numba_cpu.gru.gru_forward` and
    :func:`~carousel.kernels.numba_cpu.gru.gru_backward`.

    ``apply(config, lengths, reverse, x, h0, weight_ih, bias_ih, weight_hh, bias_hh)`` returns
    ``(output, h_n)``.
    """

    @staticmethod
    def forward(ctx, config, lengths, reverse, x, h0, weight_ih, bias_ih, weight_hh, bias_hh):
        output, h_n, *saved = _gru_forward(
            config, lengths, reverse, True, x, h0, weight_ih, bias_ih, weight_hh, bias_hh
        )
        ctx.config, ctx.lengths, ctx.reverse = config, lengths, reverse
        ctx.kernel_saved = saved
        ctx.save_for_backward(x, weight_ih, weight_hh)
        return _tensor(output), _tensor(h_n)

    @staticmethod
    @once_differentiable
    def backward(ctx, d_output, d_h_n):
        x, weight_ih, weight_hh = ctx.saved_tensors
        size = 2 * x.shape[0] * x.shape[1] * weight_ih.shape[0]
        grads = gru_backward(
            ctx.config,
            _array(x),
            _array(weight_ih),
            _array(weight_hh),
            ctx.lengths,
            ctx.reverse,
            *ctx.kernel_saved,
            _array(d_output),
            _array(d_h_n),
            ctx.needs_input_grad[3],
            _workspace(size, ctx.kernel_saved[0].dtype),
        )
        return (None, None, None, *_grads(grads, ctx.needs_input_grad[3:]))


class ElmanFunction(torch.autograd.Function):
    """One direction of one Elman layer: :func:`~carousel.kernels.numba_cpu.elman.elman_forward`
    and :func:`~carousel.kernels.numba_cpu.elman.elman_backward`.

    ``apply(config, lengths, reverse, x, h0, weight_ih, bias, weight_hh)`` returns
    ``(output, h_n)``.
    """

    @staticmethod
    def forward(ctx, config, lengths, reverse, x, h0, weight_ih, bias, weight_hh):
        output, h_n, source = _elman_forward(
            config, lengths, reverse, True, x, h0, weight_ih, bias, weight_hh
        )
        ctx.config, ctx.lengths, ctx.reverse = config, lengths, reverse
        ctx.kernel_saved = (output, source)
        ctx.save_for_backward(x, weight_ih, weight_hh)
        return _tensor(output), _tensor(h_n)

    @staticmethod
    @once_differentiable
    def backward(ctx, d_output, d_h_n):
        x, weight_ih, weight_hh = ctx.saved_tensors
        size = x.shape[0] * x.shape[1] * weight_ih.shape[0]
        grads = elman_backward(
            ctx.config,
            _array(x),
            _array(weight_ih),
            _array(weight_hh),
            ctx.lengths,
            ctx.reverse,
            *ctx.kernel_saved,
            _array(d_output),
            _array(d_h_n),
            ctx.needs_input_grad[3],
            _workspace(size, ctx.kernel_saved[0].dtype),
        )
        return (None, None, None, *_grads(grads, ctx.needs_input_grad[3:]))


@lru_cache(maxsize=256)
def _config(spec: CellSpec, hidden_size: int) -> np.ndarray:
    make = {"lstm": lstm_config, "gru": gru_config, "elman": elman_config}[spec.family]
    return make(spec, hidden_size)


def _lengths(lengths: Tensor | None, steps: int, batch: int) -> np.ndarray:
    if lengths is None:
        return np.full(batch, steps, dtype=np.int64)
    return np.ascontiguousarray(lengths.numpy(), dtype=np.int64)


def run_direction(
    spec: CellSpec,
    x: Tensor,
    state: tuple[Tensor, ...],
    weights: CellWeights,
    lengths: Tensor | None = None,
    reverse: bool = False,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One direction of one layer with the compiled kernels.

    Same contract as :func:`carousel.kernels.reference.run_direction`: ``x`` ``(T, B, I)``,
    ``state`` one ``(B, size)`` tensor per ``spec.state_names``, ``weights`` with masks applied and
    biases summed, ``lengths`` ``(B,)`` int64 on the CPU or ``None``. Returns
    ``(output (T, B, H_out), final_state)``.
    """
    steps, batch = x.shape[0], x.shape[1]
    hidden = state[1].shape[-1] if spec.family == "lstm" else state[0].shape[-1]
    config = _config(spec, hidden)
    lengths_array = _lengths(lengths, steps, batch)
    reverse = bool(reverse)
    if spec.family == "lstm":
        feedback0 = state[2] if len(state) > 2 else None
        inputs = (
            x,
            state[0],
            state[1],
            feedback0,
            weights.weight_ih,
            weights.bias,
            weights.weight_hh,
            weights.weight_peephole,
            weights.weight_hr,
        )
        function, forward = LSTMFunction, _lstm_forward
    elif spec.family == "gru":
        inputs = (x, state[0], weights.weight_ih, weights.bias, weights.weight_hh, weights.bias_hh)
        function, forward = GRUFunction, _gru_forward
    else:
        inputs = (x, state[0], weights.weight_ih, weights.bias, weights.weight_hh)
        function, forward = ElmanFunction, _elman_forward
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
        results = function.apply(config, lengths_array, reverse, *inputs)
    else:
        results = [_tensor(a) for a in forward(config, lengths_array, reverse, False, *inputs)[:4]]
    output = results[0]
    if spec.family != "lstm":
        return output, (results[1],)
    final = (results[1], results[2], results[3]) if len(state) > 2 else (results[1], results[2])
    return output, final
