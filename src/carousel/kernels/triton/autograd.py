"""The Triton recurrence as one ``torch.autograd.Function``, and the backend's ``run_direction``.

:func:`run_direction` computes the input projections of all steps as one GEMM, outside the
Function, so autograd derives their gradients (:math:`x`, :math:`W_{ih}`, the bias) from the
gradient of the net inputs with large GEMMs; a reverse direction reverses each sequence within its
length before and after. :class:`TritonDirection` runs the recurrence (:mod:`.loop`) on the net
inputs ``gates_x (T, B, G)``, the initial recurrent source ``[h_0, gamma_0] (B, R)``, the initial
cell state ``(B, C)`` and the recurrent weights.

Higher-order gradients: the hand-written backward pass computes numbers, not a graph. When the
backward pass itself is to be differentiated (``create_graph=True``) or its upstream gradients are
batched or wrapped (a vmap over the backward), the Function recomputes the recurrence with the
cell's step in differentiable PyTorch operations (:func:`reference_recurrence`, the reference
backend's loop) and returns the gradients of that graph, as the numba backend does.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from carousel.cells import CellSpec, CellWeights
from carousel.cells.regularizers import Masks, reset_state, zoneout
from carousel.kernels import reference
from carousel.kernels.triton import FAMILIES, coverage, loop, persistent
from carousel.kernels.triton.loop import Call
from carousel.kernels.triton.options import call_options

_INPUTS = (
    "gates_x", "source0", "cell0", "weight_hh", "weight_peephole", "weight_hr", "bias_hh",
    "norm_hh", "norm_cell",
)  # fmt: skip
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _on_device(tensor: Tensor):
    """Make ``tensor``'s GPU the current one: Triton launches on the current device."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


class TritonDirection(torch.autograd.Function):
    """``apply(call, gates_x, source0, cell0, weight_hh, weight_peephole, weight_hr, bias_hh,
    norm_hh, norm_cell)`` (the last two: ``layer_norm_hh``, ``layer_norm_cell`` or ``None``)
    returns ``output (T, B, P)``, ``source_n (B, R)`` and ``cell_n (B, C)``, in processing
    order."""

    @staticmethod
    def forward(ctx, call: Call, *inputs):
        result = _level(call).forward(call, *inputs)
        ctx.call, ctx.result = call, result
        ctx.save_for_backward(*inputs)
        return result.output, result.source_n, result.cell_n

    @staticmethod
    def backward(ctx, d_output, d_source_n, d_cell_n):
        call, inputs, needed = ctx.call, ctx.saved_tensors, ctx.needs_input_grad[1:]
        grad_outputs = (d_output, d_source_n, d_cell_n)
        if torch.is_grad_enabled() or not all(_plain(g) for g in grad_outputs):
            return (None, *_differentiable_backward(call, inputs, grad_outputs, needed))
        weights = dict(zip(_INPUTS, inputs, strict=True))
        with _on_device(d_output):
            grads = _level(call).backward(
                call,
                ctx.result,
                weights["weight_hh"],
                weights["weight_peephole"],
                weights["weight_hr"],
                d_output,
                d_source_n,
                d_cell_n,
                frozenset(name for name, need in zip(_INPUTS, needed, strict=True) if need),
                weights["norm_hh"],
                weights["norm_cell"],
            )
        return (
            None,
            *(grads[name] if need else None for name, need in zip(_INPUTS, needed, strict=True)),
        )


def _level(call: Call):
    """The module whose ``forward``/``backward`` run ``call``: :mod:`.loop` (level 1) or
    :mod:`.persistent` (level 2)."""
    return persistent if call.plan.level == 2 else loop


def _plain(tensor: Tensor) -> bool:
    """Whether a kernel can read ``tensor``'s memory: no vmap batching, no wrapper, no subclass."""
    functorch = torch._C._functorch
    return (
        type(tensor) is Tensor
        and not functorch.is_legacy_batchedtensor(tensor)
        and not functorch.is_functorch_wrapped_tensor(tensor)
    )


RECURRENT_STATES = ("h", "gates")
"""States that form the recurrent source (what ``weight_hh`` multiplies), in this order; every
other state of a cell (the LSTM's ``c``) goes into the cell buffer, in ``spec.state_names`` order."""


def pack_state(spec: CellSpec, state: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    """A cell's state as the loop carries it: ``(source (B, R), cell (B, C))``."""
    named = dict(zip(spec.state_names, state, strict=True))
    source = torch.cat([named[name] for name in RECURRENT_STATES if name in named], -1)
    cells = [tensor for name, tensor in named.items() if name not in RECURRENT_STATES]
    return source, torch.cat(cells, -1) if cells else state[0].new_zeros(state[0].shape[0], 0)


def unpack_state(spec: CellSpec, source: Tensor, cell: Tensor, widths) -> tuple[Tensor, ...]:
    """The inverse of :func:`pack_state`; ``widths`` holds each state's width, in order."""
    width = dict(zip(spec.state_names, widths, strict=True))
    recurrent = [name for name in RECURRENT_STATES if name in width]
    others = [name for name in spec.state_names if name not in RECURRENT_STATES]
    parts = {}
    for names, packed in ((recurrent, source), (others, cell)):
        start = 0
        for name in names:
            parts[name] = packed[:, start : start + width[name]]
            start += width[name]
    return tuple(parts[name] for name in spec.state_names)


def reference_recurrence(call: Call, *inputs) -> tuple[Tensor, Tensor, Tensor]:
    """:class:`TritonDirection`'s results from the cell's step in differentiable PyTorch ops, with
    the call's masks and resets as the reference backend applies them."""
    gates_x, source0, cell0, weight_hh, weight_peephole, weight_hr, bias_hh, *norms = inputs
    spec, options = call.spec, call.options
    state = initial = unpack_state(spec, source0, cell0, call.widths)
    weights = CellWeights(
        None, weight_hh, None, bias_hh, weight_peephole, weight_hr, None, norms[0], norms[1]
    )
    step_masks = options.step_masks(call.out_size)
    keep_cell, keep_hidden = options.keep_cell, options.keep_hidden
    outputs = []
    for t in range(gates_x.shape[0]):
        if options.reset is not None:
            state = reset_state(state, initial, options.reset[t, :, 0])
        output, new_state = spec.step(gates_x[t], state, weights, step_masks)
        if keep_cell is not None or keep_hidden is not None:  # 1 past the lengths: held
            new_state = zoneout(
                spec,
                state,
                new_state,
                None if keep_cell is None else keep_cell[t],
                None if keep_hidden is None else keep_hidden[t],
            )
            output = new_state[0]
        if call.active is not None:
            new_state = tuple(
                torch.where(call.active[t], new, old)
                for new, old in zip(new_state, state, strict=True)
            )
            output = output * call.active[t]
        state = new_state
        outputs.append(output)
    return (torch.stack(outputs), *pack_state(spec, state))


def _differentiable_backward(call, inputs, grad_outputs, needed) -> list[Tensor | None]:
    """Gradients of the inputs as a differentiable graph, through :func:`reference_recurrence`."""
    with torch.enable_grad():
        outputs = reference_recurrence(call, *inputs)
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs, strict=True) if o.requires_grad]
    wanted = [t for t, need in zip(inputs, needed, strict=True) if need]
    grads = iter(
        torch.autograd.grad(
            [o for o, _ in pairs],
            wanted,
            [g for _, g in pairs],
            create_graph=True,
            allow_unused=True,
            materialize_grads=True,
        )
    )
    return [next(grads) if need else None for need in needed]


KNOWN_WEIGHTS = (
    "weight_ih", "weight_hh", "bias", "bias_hh", "weight_peephole", "weight_hr", "layer_norm_ih",
    "layer_norm_hh", "layer_norm_cell",
)  # fmt: skip
"""The :class:`~carousel.cells.CellWeights` fields the kernels compute with."""


def _unknown_weights(weights: CellWeights) -> str | None:
    """The reason to refuse ``weights`` if it carries a tensor the kernels would ignore."""
    unknown = [
        f for f in weights._fields if f not in KNOWN_WEIGHTS and getattr(weights, f) is not None
    ]
    if unknown:
        return f"the triton kernels do not implement the weights {', '.join(unknown)}"
    return None


def _contiguous(tensor: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if tensor is None else tensor.to(dtype).contiguous()


def run_direction(
    spec: CellSpec,
    x: Tensor,
    state: tuple[Tensor, ...],
    weights: CellWeights,
    lengths: Tensor | None = None,
    reverse: bool = False,
    masks: Masks | None = None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One direction of one layer with the Triton kernels.

    Same contract as :func:`carousel.kernels.reference.run_direction`: ``x`` ``(T, B, I)``,
    ``state`` one ``(B, size)`` tensor per ``spec.state_names``, ``weights`` with masks applied
    and biases summed, ``lengths`` ``(B,)`` int64 on the CPU or ``None``, ``masks`` the
    regularisers' masks and resets of this direction (:mod:`.options`). Returns
    ``(output (T, B, H_out), final_state)``. float16 and bfloat16 are computed in float32.
    """
    reason = coverage.unsupported_spec(spec) or _unknown_weights(weights)
    if reason is not None:  # called directly, past the registry's decision
        raise ValueError(reason)
    steps, batch = x.shape[0], x.shape[1]
    hidden = state[1].shape[-1] if spec.family == "lstm" else state[0].shape[-1]
    if batch == 0 or hidden == 0:  # nothing to launch
        return reference.run_direction(spec, x, state, weights, lengths, reverse, masks)
    dtype = x.dtype
    compute = torch.float32 if dtype in _LOW_PRECISION else dtype
    out_size = state[0].shape[-1]
    if reverse:
        x = reference.reverse_padded(x, lengths)
    x = x.to(compute)
    cast = CellWeights(  # what the input projection reads
        weights.weight_ih.to(compute),
        weights.weight_hh,
        bias=None if weights.bias is None else weights.bias.to(compute),
        layer_norm_ih=None if weights.layer_norm_ih is None else weights.layer_norm_ih.to(compute),
    )  # (T, B, G) input projections, one GEMM (normalised before the bias with layer_norm)
    gates_x = spec.project_input(x.reshape(steps * batch, -1), cast).view(steps, batch, -1)

    device_lengths, active = None, None
    if lengths is not None:
        device_lengths = lengths.to(device=x.device, dtype=torch.int64)
        time = torch.arange(steps, device=x.device).unsqueeze(1)
        active = (time < device_lengths.unsqueeze(0)).unsqueeze(-1)  # (T, B, 1)
    source0, cell0 = pack_state(spec, state)
    options = call_options(
        masks, spec.layer_norm, lengths, active, reverse, source0.shape[-1], compute, x.device
    )
    plan = FAMILIES[spec.family].plan(
        spec,
        hidden,
        out_size,
        batch,
        compute,
        weights.weight_hr is not None,
        weights.bias_hh is not None,
        options.kernel_features(),
    )
    project = weights.weight_hr is not None
    if persistent.choose_level(spec, hidden, compute, project, out_size, options) == 2:
        plan = persistent.plan(
            plan, spec, hidden, out_size, batch, compute, project, weights.bias_hh is not None
        )
    widths = tuple(s.shape[-1] for s in state)
    call = Call(
        spec, plan, hidden, out_size, weights.weight_hr is not None, device_lengths, active, widths,
        options,
    )  # fmt: skip
    inputs = (
        gates_x,
        _contiguous(source0, compute),
        _contiguous(cell0, compute),
        weights.weight_hh.to(compute),
        _contiguous(weights.weight_peephole, compute),
        None if weights.weight_hr is None else weights.weight_hr.to(compute),
        _contiguous(weights.bias_hh, compute),
        _contiguous(weights.layer_norm_hh, compute),
        _contiguous(weights.layer_norm_cell, compute),
    )
    with _on_device(x):
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
            output, source_n, cell_n = TritonDirection.apply(call, *inputs)
        else:
            result = _level(call).forward(call, *inputs)
            output, source_n, cell_n = result.output, result.source_n, result.cell_n
    if reverse:
        output = reference.reverse_padded(output, lengths)
    final = unpack_state(spec, source_n, cell_n, widths)
    return output.to(dtype), tuple(s.to(dtype) for s in final)
