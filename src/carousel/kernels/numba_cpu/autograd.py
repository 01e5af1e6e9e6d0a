"""The compiled kernels as one ``torch.autograd.Function``, and the backend's ``run_direction``
and ``run_directions``.

Each family's kernels share one calling convention (see
:class:`~carousel.kernels.numba_cpu.FamilyKernels`), so one Function, :class:`FusedDirection`,
drives every family, for one direction or for both directions of a layer at once. Tensors and arrays are exchanged without copies: inputs
are viewed with ``Tensor.numpy()`` (after ``contiguous()``, a no-op for parameters), results are
wrapped with ``torch.from_numpy``. What the forward kernel saves for the backward pass stays a
NumPy array on ``ctx``; the inputs go through ``save_for_backward``, so an in-place change to them
between forward and backward is detected as usual. Without autograd (``torch.no_grad()`` or no
input requiring a gradient) the forward kernel runs with ``keep=False`` and saves nothing.

Parallel work (:mod:`.shards`): a call whose batch is large enough runs its kernels on
contiguous batch shards in parallel threads, one per thread of :func:`carousel.get_num_threads`,
and joins the results; the two directions of a bidirectional layer (:func:`run_directions`) run
in parallel too, each on half the threads. :class:`KernelCall` carries the shard ranges, fixed
when it is made.

Higher-order gradients: the hand-written backward kernel computes numbers, not a graph. When the
backward pass itself is to be differentiated (``create_graph=True``, so grad mode is on inside
``backward``), or its upstream gradients are batched or wrapped (a vmap over the backward, as
``gradcheck`` does to check batched gradients), :class:`FusedDirection` recomputes the direction
with the reference backend (the same equations in differentiable PyTorch ops) and returns the
gradients of that graph, which autograd can differentiate and vmap can batch. Ordinary
first-order gradients never take that path.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS the kernels call, for the policy)
import torch
from torch import Tensor

from carousel.cells import CellSpec, CellWeights
from carousel.cells.regularizers import Masks
from carousel.kernels import reference, threads
from carousel.kernels.numba_cpu import FAMILIES, FamilyKernels, shards

threads.apply_policy()


# Zero-size placeholders for absent optional weights and masks (bias (0,), peephole and
# projection (0, 0), zoneout (0, 0, 0)).
_EMPTY = {
    (dtype, ndim): np.zeros((0,) * ndim, dtype=dtype)
    for dtype in (np.float32, np.float64)
    for ndim in (1, 2, 3)
}


def _array(tensor: Tensor) -> np.ndarray:
    """A C-contiguous NumPy view of ``tensor`` (a copy only if it is not contiguous)."""
    return tensor.detach().contiguous().numpy()


def _arrays(kernels: FamilyKernels, inputs: tuple[Tensor | None, ...]) -> list[np.ndarray]:
    """The inputs as arrays; an absent optional weight or mask becomes a zero-size placeholder."""
    dtype = inputs[0].numpy().dtype.type
    ndims = (3,) + (2,) * kernels.state_slots + kernels.weight_ndims + kernels.mask_ndims
    return [
        _EMPTY[(dtype, ndim)] if tensor is None else _array(tensor)
        for tensor, ndim in zip(inputs, ndims, strict=True)
    ]


@dataclass(frozen=True, eq=False)
class KernelCall:
    """Everything about one direction's call that is not a tensor input."""

    spec: CellSpec
    kernels: FamilyKernels
    config: np.ndarray
    lengths: np.ndarray  # (B,) int64
    lengths_tensor: Tensor | None  # the same, as the reference backend takes it
    reverse: bool
    shards: shards.Shards  # batch ranges, see carousel.kernels.numba_cpu.shards

    def job(self, inputs: tuple[Tensor | None, ...]) -> shards.Job:
        """The kernels' work on these inputs ``(x, *states, *weights)``."""
        arrays = _arrays(self.kernels, inputs)
        return shards.Job(
            self.kernels, self.config, arrays, self.lengths, self.reverse, self.shards
        )

    def reference_run(self, inputs: tuple[Tensor | None, ...]) -> tuple[Tensor, ...]:
        """The same direction through the reference backend: ``(output, *final_state)``."""
        slots, count = self.kernels.state_slots, len(self.kernels.weight_fields)
        state = tuple(inputs[1 : 1 + len(self.spec.state_names)])
        weights = CellWeights(
            **dict(
                zip(self.kernels.weight_fields, inputs[1 + slots : 1 + slots + count], strict=True)
            )
        )
        masks = Masks(
            **dict(zip(self.kernels.mask_fields, inputs[1 + slots + count :], strict=True))
        )
        if masks.reset is not None:
            masks = masks._replace(reset=masks.reset != 0)
        output, final = reference.run_direction(
            self.spec, inputs[0], state, weights, self.lengths_tensor, self.reverse, masks
        )
        return (output, *final)


def _per_call(calls: tuple[KernelCall, ...], inputs) -> list[tuple]:
    """``(x, *rest)`` as one ``(x, *states, *weights)`` tuple per call (``rest`` holds each call's
    states and weights in turn)."""
    width = (len(inputs) - 1) // len(calls)
    return [(inputs[0], *inputs[1 + k * width : 1 + (k + 1) * width]) for k in range(len(calls))]


class FusedDirection(torch.autograd.Function):
    """One direction, or several directions reading the same input, of one layer through a
    family's forward and backward kernels; all shards of all directions run in parallel.

    ``apply(calls, x, *rest)`` with ``rest`` each call's states and weights in turn (see
    :class:`FamilyKernels`) returns, per call, ``call.kernels.num_outputs`` tensors: ``output
    (T, B, H_out)`` and the final states. The gradient of ``x`` is the sum over the calls.
    """

    @staticmethod
    def forward(ctx, calls: tuple[KernelCall, ...], *inputs):
        jobs = [call.job(part) for call, part in zip(calls, _per_call(calls, inputs), strict=True)]
        results = shards.forward(jobs, keep=True)
        ctx.calls, ctx.jobs = calls, jobs
        ctx.kernel_saved = [saved for _, saved in results]
        ctx.save_for_backward(*inputs)  # for autograd's check of in-place changes
        return tuple(torch.from_numpy(a) for outputs, _ in results for a in outputs)

    @staticmethod
    def backward(ctx, *grad_outputs):
        calls, inputs, needed = ctx.calls, ctx.saved_tensors, ctx.needs_input_grad[1:]
        if torch.is_grad_enabled() or not all(_plain(g) for g in grad_outputs):
            return (None, *_differentiable_backward(calls, inputs, grad_outputs, needed))
        count = calls[0].kernels.num_outputs
        upstream = [
            [_array(g) for g in grad_outputs[k * count : (k + 1) * count]]
            for k in range(len(calls))
        ]
        grads = shards.backward(ctx.jobs, ctx.kernel_saved, upstream, needed[0])
        d_x = None
        if needed[0]:  # summed in NumPy: a torch add of this size would start torch's pool
            total = grads[0][0]
            for more in grads[1:]:
                total += more[0]
            d_x = torch.from_numpy(total)
        masks = (None,) * len(calls[0].kernels.mask_fields)  # masks have no gradient
        rest = [g for call_grads in grads for g in (*call_grads[1:], *masks)]
        return (
            None,
            d_x,
            *(
                torch.from_numpy(g) if need and g is not None else None
                for g, need in zip(rest, needed[1:], strict=True)
            ),
        )


def _plain(tensor: Tensor) -> bool:
    """Whether the kernels can read ``tensor``'s memory: not batched by a vmap (``gradcheck``
    checks batched gradients under the legacy one), not wrapped by a transform, no subclass."""
    functorch = torch._C._functorch
    return (
        type(tensor) is Tensor
        and not functorch.is_legacy_batchedtensor(tensor)
        and not functorch.is_functorch_wrapped_tensor(tensor)
    )


def _differentiable_backward(calls, inputs, grad_outputs, needed) -> list[Tensor | None]:
    """Gradients of the inputs as a differentiable graph, through the reference backend."""
    with torch.enable_grad():
        outputs = [
            t
            for call, part in zip(calls, _per_call(calls, inputs), strict=True)
            for t in call.reference_run(part)
        ]
    count = calls[0].kernels.num_outputs
    returned = len(outputs) // len(calls)  # the reference has no gate-feedback slot to fill
    upstream = [
        g for k in range(len(calls)) for g in grad_outputs[k * count : k * count + returned]
    ]
    wanted = [t for t, need in zip(inputs, needed, strict=True) if need]
    grads = iter(
        torch.autograd.grad(
            outputs,
            wanted,
            upstream,
            create_graph=True,
            allow_unused=True,
            materialize_grads=True,
        )
    )
    return [next(grads) if need else None for need in needed]


@lru_cache(maxsize=64)
def _no_state_tensor(dtype: torch.dtype, batch: int) -> Tensor:
    return torch.zeros(batch, 0, dtype=dtype)


def _no_state(x: Tensor, batch: int) -> Tensor:
    """A ``(B, 0)`` tensor for a state slot the cell does not use (gate feedback of an LSTM
    without it); shared by the calls of a dtype and batch size (it holds no values)."""
    return _no_state_tensor(x.dtype, batch)


@lru_cache(maxsize=256)
def _config(spec: CellSpec, hidden_size: int) -> np.ndarray:
    return FAMILIES[spec.family].config(spec, hidden_size)


@lru_cache(maxsize=64)
def _full_lengths(steps: int, batch: int) -> np.ndarray:
    return np.full(batch, steps, dtype=np.int64)  # shared by the calls of this shape, never written


def _lengths(lengths: Tensor | None, steps: int, batch: int) -> np.ndarray:
    if lengths is None:
        return _full_lengths(steps, batch)
    return np.ascontiguousarray(lengths.numpy(), dtype=np.int64)


def _call(
    spec, x, state, weights, lengths, reverse, num_threads, masks=None
) -> tuple[KernelCall, tuple]:
    """The call of one direction with ``num_threads`` threads, and its inputs as tensors (the
    masks of :class:`~carousel.cells.regularizers.Masks` last, in ``x``'s dtype, contiguous)."""
    kernels = FAMILIES[spec.family]
    steps, batch = x.shape[0], x.shape[1]
    hidden = state[1].shape[-1] if spec.family == "lstm" else state[0].shape[-1]
    states = tuple(state) + (_no_state(x, batch),) * (kernels.state_slots - len(state))
    mask_inputs = tuple(
        None if masks is None or getattr(masks, name) is None
        else getattr(masks, name).to(x.dtype).contiguous()
        for name in kernels.mask_fields
    )  # fmt: skip
    inputs = (
        x,
        *states,
        *(getattr(weights, name) for name in kernels.weight_fields),
        *mask_inputs,
    )
    rows, recurrent = weights.weight_ih.shape[0], weights.weight_hh.shape[1]
    work = steps * batch * rows * (x.shape[2] + recurrent)
    call = KernelCall(
        spec,
        kernels,
        _config(spec, hidden),
        _lengths(lengths, steps, batch),
        lengths,
        bool(reverse),
        shards.shard_ranges(batch, work, num_threads),
    )
    return call, inputs


def _run(calls: tuple[KernelCall, ...], inputs: list[tuple], states: list[tuple]) -> list:
    """Run ``calls`` on their inputs; ``(output, final_state)`` per call."""
    flat = (inputs[0][0], *(t for part in inputs for t in part[1:]))
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in flat):
        results = FusedDirection.apply(calls, *flat)
    else:
        jobs = [call.job(part) for call, part in zip(calls, inputs, strict=True)]
        results = [
            torch.from_numpy(a) for outputs, _ in shards.forward(jobs, False) for a in outputs
        ]
    count = calls[0].kernels.num_outputs
    return [
        (results[k * count], tuple(results[k * count + 1 : k * count + 1 + len(state)]))
        for k, state in enumerate(states)
    ]


def run_direction(
    spec: CellSpec,
    x: Tensor,
    state: tuple[Tensor, ...],
    weights: CellWeights,
    lengths: Tensor | None = None,
    reverse: bool = False,
    masks: Masks | None = None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One direction of one layer with the compiled kernels.

    Same contract as :func:`carousel.kernels.reference.run_direction`: ``x`` ``(T, B, I)``,
    ``state`` one ``(B, size)`` tensor per ``spec.state_names``, ``weights`` with masks applied and
    biases summed, ``lengths`` ``(B,)`` int64 on the CPU or ``None``, ``masks`` the regularisers'
    masks and the resets or ``None``. Returns ``(output (T, B, H_out), final_state)``.
    """
    call, inputs = _call(
        spec, x, state, weights, lengths, reverse, threads.get_num_threads(), masks
    )
    return _run((call,), [inputs], [state])[0]


def run_directions(
    spec: CellSpec,
    x: Tensor,
    states: list[tuple[Tensor, ...]],
    weights: list[CellWeights],
    lengths: Tensor | None = None,
) -> list[tuple[Tensor, tuple[Tensor, ...]]]:
    """Both directions of one bidirectional layer, in parallel (each on half the threads).

    ``states`` and ``weights`` hold one entry per direction (forward, then reverse), each as
    :func:`run_direction` takes it; returns ``(output, final_state)`` per direction.
    """
    share = max(1, threads.get_num_threads() // len(states))
    made = [
        _call(spec, x, state, w, lengths, direction == 1, share)
        for direction, (state, w) in enumerate(zip(states, weights, strict=True))
    ]
    return _run(tuple(call for call, _ in made), [inputs for _, inputs in made], states)
