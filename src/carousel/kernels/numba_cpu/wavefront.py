r"""A wavefront over stacked layers: layer ``l`` runs time chunk ``k`` while layer ``l + 1`` runs
chunk ``k - 1``, in parallel threads.

A unidirectional stack whose batch is too small to shard (:func:`.shards.shard_ranges` gives one
shard) leaves all but one thread idle: each layer needs the whole output of the layer below. The
wavefront splits time into ``K`` contiguous chunks (:func:`chunk_count`) and runs the family's
compiled kernels per chunk, unchanged: a kernel runs a sequence from given initial states, so

- forward, wave ``w = 0 .. K + L - 2`` runs chunk ``k = w - l`` of every layer ``l`` with
  ``0 <= k < K``, all in parallel (:func:`carousel.kernels.threads.run_parallel`, single-threaded
  GEMMs). Chunk ``k`` of layer ``l`` reads the output chunk ``k`` of layer ``l - 1`` (made in wave
  ``w - 1``) and starts from the final states of its own chunk ``k - 1`` (wave ``w - 1``);
- backward, in reverse: wave ``w`` runs chunk ``k = K - 1 - (w - (L - 1 - l))`` of layer ``l``.
  The error of its output chunk is the input gradient of chunk ``k`` of layer ``l + 1``, the error
  of its final states the initial-state gradient of its own chunk ``k + 1`` (both from wave
  ``w - 1``; the last chunk's are the upstream gradients of the layer's final states). The weight
  gradients of a layer are summed over its chunks in the order ``K - 1, ..., 0``.

The threads meet once per wave, ``K + L - 1`` times per pass, never per step. Each chunk repeats
the kernel's per-call work (weight transposes, allocations, weight-gradient GEMMs), which
:data:`MIN_CHUNK_ROWS` and :data:`MIN_CHUNK_WORK` keep small beside the chunk's steps. The arithmetic of a chunk is the sequential kernel's on fewer
steps: results equal the sequential path's within float rounding (the input-projection GEMMs run
per chunk, the weight gradients are summed per chunk) and are bit-for-bit the same for a fixed
chunk count, which depends on the shape and :func:`carousel.get_num_threads` only.

Variable lengths run as per-chunk lengths, ``clip(lengths - t_0, 0, T_k)`` (a sequence that ended
before a chunk holds its state through it). Dropout between layers in training multiplies each
output by a mask drawn exactly as ``torch.nn.functional.dropout`` draws it on the CPU
(``empty_like(output).bernoulli_(1 - p)``, divided by ``1 - p``), all masks before the first wave,
in layer order, as the sequential path draws them between its layers. Calls with the regularisers'
masks or resets, bidirectional stacks, one thread, batches that shard, and too little work per
chunk run the sequential path (the layer's loop over ``run_direction``).

Higher-order gradients: as :class:`~.autograd.FusedDirection` does, a backward pass that is itself
differentiated (or vmapped) recomputes the stack with the reference backend and returns the
gradients of that graph.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from carousel.cells import CellSpec, CellWeights
from carousel.kernels import reference, threads
from carousel.kernels.numba_cpu import FAMILIES, FamilyKernels, shards
from carousel.kernels.numba_cpu.autograd import (
    _EMPTY,
    _array,
    _config,
    _full_lengths,
    _no_state,
    _plain,
)
from carousel.kernels.numba_cpu.blas import BLAS

MIN_CHUNK_ROWS = 48
"""Fewest ``T_k B`` (steps times batch rows) per chunk. Every kernel call passes over its weights
a few times besides its steps (transposes, weight-gradient GEMMs of ``T_k B`` rows, their sum over
the chunks), so at batch 1 a chunk costs some ten steps more than its steps: on one thread, a
1x100x128x256 two-layer LSTM run as 8 chunks one after another took 1.95x its unchunked time, as
2 chunks 1.07x (docs/performance.md)."""

MIN_CHUNK_WORK = 1 << 19
"""Fewest multiply-adds of the forward GEMMs (``T_k B G (I + R)``) per chunk of the lightest
layer: below, a chunk's fixed costs (the kernel call, the meeting of the threads: tens of
microseconds on an idle machine, up to milliseconds on a busy one) outweigh its steps. A
two-layer 1x100x8x32 LSTM (0.5 Mi multiply-adds a layer) ran 0.56x the sequential path's speed
in two chunks on two threads of a busy two-core machine."""

MAX_CHUNKS = 8
"""Most chunks per pass: ``L`` layers over ``K`` chunks run in ``K + L - 1`` waves, so ``L``
threads gain ``L K / (K + L - 1)`` at best (1.78x for two layers and 8 chunks, 1.88x for 16),
while every chunk adds a kernel call per layer and pass and a meeting of the threads."""

ENVIRONMENT_VARIABLE = "CAROUSEL_WAVEFRONT"

ENABLED = os.environ.get(ENVIRONMENT_VARIABLE, "").strip().lower() in ("1", "true", "on", "yes")
"""Whether stacks may run as a wavefront at all: off unless ``CAROUSEL_WAVEFRONT=1`` is set
before carousel is imported (or this is set to ``True``). Off by default because on the
two-CPU machine where it was measured, idle, it ran at 0.59x-1.15x the better of the sequential
path's one- and two-thread times, below 1x at every tested shape at eight chunks
(docs/performance.md): there the per-chunk cost and the meetings of the threads outweigh the
overlap. Where each layer can have a core of its own it is expected to pay (see the projection
in docs/performance.md); measure with ``carousel bench --layers`` before turning it on."""

RUNS = {"forward": 0, "backward": 0}
"""How many passes ran as a wavefront (for tests and diagnostics)."""

Chunks = tuple[tuple[int, int], ...]


def chunk_count(steps: int, batch: int, works: list[int], num_threads: int) -> int:
    """The number of time chunks for a stack whose layers do ``works`` forward multiply-adds each
    (whole sequence and batch), or 1 where the wavefront does not run: not :data:`ENABLED`,
    fewer than two threads or
    layers, a BLAS other than MKL (see :mod:`carousel.kernels.threads`), a batch that some layer
    would shard, or less than two chunks' worth of :data:`MIN_CHUNK_ROWS` and
    :data:`MIN_CHUNK_WORK` (in the lightest layer); at most :data:`MAX_CHUNKS`."""
    if not ENABLED or num_threads < 2 or len(works) < 2 or BLAS != "mkl":
        return 1
    if any(len(shards.shard_ranges(batch, work, num_threads)) > 1 for work in works):
        return 1
    count = min(MAX_CHUNKS, steps, steps * batch // MIN_CHUNK_ROWS, min(works) // MIN_CHUNK_WORK)
    return max(1, count)


@dataclass(frozen=True, eq=False)
class StackCall:
    """Everything about one stack's call that is not a tensor input: the cell, its kernels and
    configuration, the time ``chunks`` and each chunk's lengths, the layers' ``lengths`` as the
    reference backend takes them, and the dropout multipliers between layers (one ``(T, B, H)``
    tensor per layer but the last, or none)."""

    spec: CellSpec
    kernels: FamilyKernels
    config: np.ndarray
    chunks: Chunks
    chunk_lengths: tuple[np.ndarray, ...]
    lengths: Tensor | None
    num_layers: int
    noise: tuple[Tensor, ...]

    @property
    def width(self) -> int:
        """Inputs per layer: the state slots and the weights."""
        return self.kernels.state_slots + len(self.kernels.weight_fields)

    def per_layer(self, inputs) -> list[tuple]:
        """``(x, *rest)`` split into one ``(*states, *weights)`` tuple per layer."""
        width = self.width
        return [tuple(inputs[1 + k * width : 1 + (k + 1) * width]) for k in range(self.num_layers)]

    def reference_run(self, inputs) -> list[Tensor]:
        """The stack through the reference backend: ``[output, *final states of every layer]``."""
        slots, names = self.kernels.state_slots, self.kernels.weight_fields
        layer_input, results = inputs[0], []
        for layer, part in enumerate(self.per_layer(inputs)):
            if layer > 0 and self.noise:
                layer_input = layer_input * self.noise[layer - 1]
            state = part[: len(self.spec.state_names)]
            weights = CellWeights(**dict(zip(names, part[slots:], strict=True)))
            layer_input, final = reference.run_direction(
                self.spec, layer_input, state, weights, self.lengths
            )
            results += final
        return [layer_input, *results]


def _layer_arrays(call: StackCall, part: tuple, dtype) -> tuple[list, list]:
    """One layer's states and weights as arrays (absent weights as zero-size placeholders)."""
    slots = call.kernels.state_slots
    states = [_array(t) for t in part[:slots]]
    weights = [
        _EMPTY[(dtype, ndim)] if t is None else _array(t)
        for t, ndim in zip(part[slots:], call.kernels.weight_ndims, strict=True)
    ]
    return states, weights


def _waves(call: StackCall, task, backward: bool) -> None:
    """Run ``task(layer, chunk)`` over the wavefront, one wave at a time, each wave in parallel
    (:func:`carousel.kernels.threads.run_parallel`). Every GEMM runs on its task's thread, also
    in the first and last waves, which have one task: a chunk's GEMMs are small, and on a busy
    machine the GEMM threads' meetings cost more than they save (docs/performance.md)."""
    layers, count = call.num_layers, len(call.chunks)
    for wave in range(count + layers - 1):
        active = range(max(0, wave - count + 1), min(layers, wave + 1))
        if backward:  # layer L - 1 - j runs chunk K - 1 - (wave - j)
            pairs = [(layers - 1 - j, count - 1 - (wave - j)) for j in active]
        else:
            pairs = [(j, wave - j) for j in active]
        tasks = [shards._single_threaded(lambda pair=pair: task(*pair)) for pair in pairs]
        threads.run_parallel(tasks)


def forward(call: StackCall, x: np.ndarray, parts: list[tuple], keep: bool):
    """Run the stack's forward kernels over the wavefront.

    Returns ``(output (T, B, H_out), finals, saved)``: ``finals`` the ``num_outputs - 1`` final
    states of every layer in turn; ``saved[l][k]`` what chunk ``k`` of layer ``l`` keeps for
    :func:`backward` (``None`` without ``keep``).
    """
    kernels, layers = call.kernels, call.num_layers
    arrays = [_layer_arrays(call, part, x.dtype.type) for part in parts]
    states = [list(s) for s, _ in arrays]
    masks = [_EMPTY[(x.dtype.type, ndim)] for ndim in kernels.mask_ndims]
    noise = [_array(n) for n in call.noise]
    outputs = [[None] * len(call.chunks) for _ in range(layers)]
    saved = [[None] * len(call.chunks) for _ in range(layers)]

    def task(layer: int, chunk: int) -> None:
        start, stop = call.chunks[chunk]
        if layer == 0:
            part = x[start:stop]
        else:
            part = outputs[layer - 1][chunk]
            if noise:
                part = part * noise[layer - 1][start:stop]
        inputs = (part, *states[layer], *arrays[layer][1], *masks)
        args = (call.config, *inputs, call.chunk_lengths[chunk], False, keep)
        result = shards._call(kernels.forward, args, shards.forward_scratch(kernels, inputs))()
        outputs[layer][chunk] = result[0]
        states[layer] = list(result[1 : kernels.num_outputs])
        if keep:
            saved[layer][chunk] = (inputs, tuple(result[k] for k in kernels.saved))

    _waves(call, task, backward=False)
    RUNS["forward"] += 1
    top = outputs[-1]
    output = top[0] if len(top) == 1 else np.concatenate(top, axis=0)
    return output, [s for layer in states for s in layer], saved


def backward(call: StackCall, saved, d_output: np.ndarray, d_finals: list, need_x: bool):
    """Run the stack's backward kernels over the wavefront, in reverse.

    Args:
        call, saved: as for and from :func:`forward`.
        d_output: the upstream gradient of the output ``(T, B, H_out)``, C-contiguous.
        d_finals: those of the final states, ``num_outputs - 1`` per layer in turn.
        need_x: whether to compute the gradient of the stack's input.

    Returns:
        ``(d_x, grads)``: ``d_x (T, B, I)`` (``None`` without ``need_x``) and per layer the
        gradients of its initial states and weights.
    """
    kernels, layers, slots = call.kernels, call.num_layers, call.kernels.state_slots
    count = kernels.num_outputs - 1
    d_states = [list(d_finals[k * count : (k + 1) * count]) for k in range(layers)]
    d_outputs = [[None] * len(call.chunks) for _ in range(layers)]
    d_outputs[-1] = [d_output[start:stop] for start, stop in call.chunks]
    d_x = [None] * len(call.chunks)
    weight_grads: list = [None] * layers
    noise = [_array(n) for n in call.noise]

    def task(layer: int, chunk: int) -> None:
        inputs, kernel_saved = saved[layer][chunk]
        part, rows = inputs[0], inputs[1 + slots].shape[0]
        size = kernels.workspace_factor * part.shape[0] * part.shape[1] * rows
        args = (call.config, *(inputs[k] for k in kernels.backward_inputs))
        args += (call.chunk_lengths[chunk], False, *kernel_saved)
        args += (d_outputs[layer][chunk], *d_states[layer], layer > 0 or need_x)
        result = kernels.backward(*args, shards.workspace(size, part.dtype))
        d_states[layer] = list(result[1 : 1 + slots])
        if layer > 0:
            start, stop = call.chunks[chunk]
            d_input = result[0] * noise[layer - 1][start:stop] if noise else result[0]
            d_outputs[layer - 1][chunk] = d_input
        else:
            d_x[chunk] = result[0]
        if weight_grads[layer] is None:  # the layer's last chunk, the first to run
            weight_grads[layer] = [np.array(g) for g in result[1 + slots :]]
        else:
            for total, more in zip(weight_grads[layer], result[1 + slots :], strict=True):
                total += more

    _waves(call, task, backward=True)
    RUNS["backward"] += 1
    grads = [d_states[k] + weight_grads[k] for k in range(layers)]
    if not need_x:
        return None, grads
    return (d_x[0] if len(d_x) == 1 else np.concatenate(d_x, axis=0)), grads


class FusedStack(torch.autograd.Function):
    """A unidirectional stack over the wavefront, as one autograd Function.

    ``apply(call, x, *rest)`` with ``rest`` each layer's ``state_slots`` states and its weights
    (:attr:`FamilyKernels.weight_fields`) in turn returns ``output (T, B, H_out)`` and the
    ``num_outputs - 1`` final states of every layer in turn.
    """

    @staticmethod
    def forward(ctx, call: StackCall, x: Tensor, *rest):
        inputs = (x, *rest)
        output, finals, saved = forward(call, _array(x), call.per_layer(inputs), keep=True)
        ctx.call, ctx.kernel_saved = call, saved
        ctx.save_for_backward(*inputs)  # for autograd's check of in-place changes
        return (torch.from_numpy(output), *(torch.from_numpy(a) for a in finals))

    @staticmethod
    def backward(ctx, *grad_outputs):
        call, inputs, needed = ctx.call, ctx.saved_tensors, ctx.needs_input_grad[1:]
        if torch.is_grad_enabled() or not all(_plain(g) for g in grad_outputs):
            return (None, *_differentiable_backward(call, inputs, grad_outputs, needed))
        upstream = [_array(g) for g in grad_outputs]
        d_x, grads = backward(call, ctx.kernel_saved, upstream[0], upstream[1:], needed[0])
        flat = [d_x, *(g for layer in grads for g in layer)]
        return (
            None,
            *(
                torch.from_numpy(g) if need and g is not None else None
                for g, need in zip(flat, needed, strict=True)
            ),
        )


def _differentiable_backward(call: StackCall, inputs, grad_outputs, needed) -> list:
    """Gradients of the inputs as a differentiable graph, through the reference backend."""
    with torch.enable_grad():
        outputs = call.reference_run(inputs)
    count, returned = call.kernels.num_outputs - 1, len(call.spec.state_names)
    upstream = [grad_outputs[0]] + [
        g
        for layer in range(call.num_layers)
        for g in grad_outputs[1 + layer * count : 1 + layer * count + returned]
    ]
    wanted = [t for t, need in zip(inputs, needed, strict=True) if need]
    grads = iter(
        torch.autograd.grad(
            outputs, wanted, upstream, create_graph=True, allow_unused=True, materialize_grads=True
        )
    )
    return [next(grads) if need else None for need in needed]


def _chunk_lengths(lengths: Tensor | None, chunks: Chunks, batch: int) -> tuple[np.ndarray, ...]:
    if lengths is None:
        return tuple(_full_lengths(stop - start, batch) for start, stop in chunks)
    full = lengths.numpy().astype(np.int64)
    return tuple(
        np.ascontiguousarray(np.clip(full - start, 0, stop - start)) for start, stop in chunks
    )


def _noise(x: Tensor, width: int, layers: int, dropout: float) -> tuple[Tensor, ...]:
    """The dropout multipliers after every layer but the last, drawn as ``F.dropout`` draws them
    on the CPU (``empty_like(output).bernoulli_(1 - p).div_(1 - p)``), in layer order."""
    if dropout == 0.0:
        return ()
    shape = (*x.shape[:2], width)
    return tuple(
        torch.empty(shape, dtype=x.dtype).bernoulli_(1 - dropout).div_(1 - dropout)
        for _ in range(layers - 1)
    )


def run_layers(
    spec: CellSpec,
    x: Tensor,
    states: list[tuple[Tensor, ...]],
    weights: list[CellWeights],
    lengths: Tensor | None = None,
    dropout: float = 0.0,
):
    """A unidirectional stack over the wavefront, or ``None`` where it does not pay.

    ``x`` ``(T, B, I)``; ``states`` and ``weights`` one entry per layer, each as
    :func:`~.autograd.run_direction` takes it; ``lengths`` ``(B,)`` int64 or ``None``;
    ``dropout`` the probability of dropout between layers (0 outside training). Returns
    ``(output (T, B, H_out), [final_state per layer])`` or ``None`` (nothing run, nothing drawn:
    the caller runs the layers one after another), see :func:`chunk_count`.
    """
    if not 0.0 <= dropout < 1.0:
        return None
    kernels = FAMILIES[spec.family]
    steps, batch = x.shape[0], x.shape[1]
    works = [
        steps * batch * w.weight_ih.shape[0] * (w.weight_ih.shape[1] + w.weight_hh.shape[1])
        for w in weights
    ]
    count = chunk_count(steps, batch, works, threads.get_num_threads())
    if count < 2:
        return None
    hidden = states[0][1].shape[-1] if spec.family == "lstm" else states[0][0].shape[-1]
    chunks = shards.split(steps, count)
    call = StackCall(
        spec,
        kernels,
        _config(spec, hidden),
        chunks,
        _chunk_lengths(lengths, chunks, batch),
        lengths,
        len(weights),
        _noise(x, states[0][0].shape[-1], len(weights), dropout),
    )
    padding = (_no_state(x, batch),) * (kernels.state_slots - len(states[0]))
    parts = [
        (*state, *padding, *(getattr(w, name) for name in kernels.weight_fields))
        for state, w in zip(states, weights, strict=True)
    ]
    flat = (x, *(t for part in parts for t in part))
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in flat):
        results = FusedStack.apply(call, *flat)
    else:
        output, finals, _ = forward(call, _array(x), parts, keep=False)
        results = (torch.from_numpy(output), *(torch.from_numpy(a) for a in finals))
    step = kernels.num_outputs - 1
    finals = [
        tuple(results[1 + k * step : 1 + k * step + len(state)]) for k, state in enumerate(states)
    ]
    return results[0], finals
