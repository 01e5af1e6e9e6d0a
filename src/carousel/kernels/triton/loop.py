r"""The time loop around a family's pointwise kernels: cuBLAS for the GEMMs, Triton for the rest.

Forward, per step :math:`t` (processing order: a reverse direction's input is reversed before):

1. ``net = source[t] @ W_hh^T`` on cuBLAS (``torch.mm`` into a preallocated buffer);
2. the family's forward kernel: the step's activations, :math:`c_t`, and the next recurrent source
   ``source[t + 1]`` = :math:`[h_t, \gamma_t]` (or :math:`y_t`, with a projection);
3. with a projection, :math:`h_t = y_t W_{hr}^T` on cuBLAS.

The input projections of all steps are one GEMM before the loop (:mod:`.autograd`). Backward, per
step from the last: with a projection :math:`\delta y = \delta h\, W_{hr}` on cuBLAS; the
family's backward kernel (:math:`\partial net`, :math:`\delta c_{t-1}`); then
:math:`\delta [h_{t-1}, \gamma_{t-1}] = \partial net\, W_{hh}` on cuBLAS. The weight gradients
are large GEMMs after the loop: :math:`\partial W_{hh} = \sum_t \partial net_t^T
[h_{t-1}, \gamma_{t-1}]` over all ``T B`` rows at once, likewise :math:`W_{hr}`; the peephole
and ``bias_hh`` gradients are reductions. The input projection's gradients (:math:`W_{ih}`, the
bias, :math:`x`) follow from :math:`\partial net` by autograd.

Variable lengths: a row past its length keeps its state (the kernels write the old value), its
net-input gradient is zero, and the error reaching its state passes through unchanged.

Regularisers, resets and layer normalisation (:mod:`.options`): the recurrent dropout masks the
GEMM's source, zoneout mixes the previous state into the new one after the kernel, a reset puts
the initial state into the step's entering state, the recurrent projection is normalised after
its GEMM; candidate dropout and the cell state's normalisation are the kernels'.

Buffers, time-major, indexed by processing step: ``source (T + 1, B, R)`` (``source[0]`` the
initial one, ``source[t + 1]`` the state step ``t`` leaves), ``cell (T + 1, B, C)``,
``saved (T, B, A)``, ``y (T, B, H)`` (projection only); with resets ``source_in``/``cell_in``
``(T, B, .)`` hold the state each step enters (else views of ``source[:T]``, ``cell[:T]``), with
zoneout of the cell ``fresh (T, B, C)`` the cell state before zoneout (else ``cell[1:]``); see
:mod:`.plan` for what each family keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from carousel.cells import CellSpec
from carousel.cells.spec import LAYER_NORM_EPSILON
from carousel.kernels.triton.options import Options
from carousel.kernels.triton.plan import FamilyPlan


@dataclass(frozen=True, eq=False)
class Call:
    """Everything about one direction's call that is not a differentiable tensor.

    ``lengths`` is ``(B,)`` int64 on the tensors' device (``None``: every row runs all ``T``
    steps); ``active`` ``(T, B, 1)`` bool says which rows step ``t`` advances; ``widths`` the
    width of each state in ``spec.state_names`` (see :func:`.autograd.pack_state`);
    ``options`` the masks and layer normalisation (:mod:`.options`).
    """

    spec: CellSpec
    plan: FamilyPlan
    hidden: int
    out_size: int
    project: bool
    lengths: Tensor | None
    active: Tensor | None
    widths: tuple[int, ...]
    options: Options = field(default_factory=Options)

    def constants(self) -> dict:
        """The kernels' constexpr keyword arguments, and the compile option that keeps
        multiply-adds fused (Triton's default, named so that Triton does not warn about it)."""
        return {
            **self.plan.constants,
            "HAS_LENGTHS": self.lengths is not None,
            "enable_fp_fusion": True,
        }


@dataclass
class Forward:
    """What a forward pass returns and keeps for the backward pass."""

    output: Tensor  # (T, B, P), zero past each length
    source_n: Tensor  # (B, R): [h_n, gamma_n]
    cell_n: Tensor  # (B, C)
    source: Tensor  # (T + 1, B, R)
    cell: Tensor  # (T + 1, B, C)
    saved: Tensor  # (T, B, A)
    y: Tensor  # (T, B, H) with a projection, else (0,)
    source_in: Tensor  # (T, B, R): the source each step enters (after resets)
    cell_in: Tensor  # (T, B, C)
    fresh: Tensor  # (T, B, C): the cell state each step computes (before zoneout)
    raw: Tensor | None  # (T, B, G): the recurrent GEMM's output, with layer norm
    raw_stats: Tensor | None  # (T, B, 2): its rows' mean and 1 / sqrt(variance + eps)
    cell_stats: Tensor | None  # (T, B, 2): the same of the fresh cell state (LSTM layer norm)


def _extras(names, buffers: dict, placeholder: Tensor, t: int) -> list[Tensor]:
    """The buffers a family's kernels take after their runtime arguments (``plan.extra_*``), the
    step's slice of the time-indexed ones; the placeholder for those not in use."""
    extras = []
    for name in names:
        buffer = buffers.get(name)
        if buffer is None:
            buffer = placeholder
        elif name in ("cell_stats", "d_shown"):
            buffer = buffer[t]
        extras.append(buffer)
    return extras


def _zoneout(keep: Tensor, previous: Tensor, fresh: Tensor, out: Tensor) -> None:
    """``out = keep * previous + (1 - keep) * fresh`` (``out`` may be ``fresh``)."""
    out.copy_(keep * previous + (1.0 - keep) * fresh)


def forward(
    call: Call,
    gates_x: Tensor,
    source0: Tensor,
    cell0: Tensor,
    weight_hh: Tensor,
    weight_peephole: Tensor | None,
    weight_hr: Tensor | None,
    bias_hh: Tensor | None,
    norm_hh: Tensor | None = None,
    norm_cell: Tensor | None = None,
) -> Forward:
    """Run the recurrence over ``gates_x (T, B, G)`` from ``source0 (B, R)`` and ``cell0 (B, C)``.

    Weights as :class:`~carousel.cells.CellWeights` holds them (``norm_hh``, ``norm_cell`` its
    ``layer_norm_hh``, ``layer_norm_cell``); all tensors contiguous, on one device, in float32 or
    float64.
    """
    plan, hidden, options, out_size = call.plan, call.hidden, call.options, call.out_size
    steps, batch, _ = gates_x.shape
    empty = gates_x.new_empty
    source = empty(steps + 1, batch, plan.source_size)
    source[0] = source0
    cell = empty(steps + 1, batch, plan.cell_size)
    cell[0] = cell0
    reset = options.reset
    source_in = source[:steps] if reset is None else empty(steps, batch, plan.source_size)
    cell_in = cell[:steps] if reset is None else empty(steps, batch, plan.cell_size)
    keep_cell, keep_hidden = options.keep_cell, options.keep_hidden
    fresh = cell[1:] if keep_cell is None else empty(steps, batch, plan.cell_size)
    saved = empty(steps, batch, plan.saved_size)
    net = empty(batch, plan.rows)
    dropped = None if options.recurrent is None else empty(batch, plan.source_size)
    norm = options.layer_norm
    raw = empty(steps, batch, plan.rows) if norm else None
    raw_stats = empty(steps, batch, 2) if norm else None
    cell_stats = empty(steps, batch, 2) if norm and "cell_stats" in plan.extra_forward else None
    y = empty(steps, batch, hidden) if call.project else empty(0)
    projected = empty(batch, out_size) if call.project and call.lengths is not None else None
    placeholder = net  # for pointers a kernel does not read
    pointers = (
        placeholder if weight_peephole is None else weight_peephole,
        placeholder if bias_hh is None else bias_hh,
        placeholder if call.lengths is None else call.lengths,
    )
    buffers = {
        "candidate_mask": options.candidate,
        "norm_cell": norm_cell,
        "cell_stats": cell_stats,
    }
    weight_hh_t = weight_hh.t()
    weight_hr_t = None if weight_hr is None else weight_hr.t()
    constants = call.constants()
    for t in range(steps):
        if reset is not None:  # rows that reset enter the step from the initial state
            torch.where(reset[t], source0, source[t], out=source_in[t])
            torch.where(reset[t], cell0, cell[t], out=cell_in[t])
        read = source_in[t]
        if dropped is not None:  # recurrent dropout: the GEMM reads [m h, gamma]
            read = torch.mul(read, options.recurrent, out=dropped)
        if norm:  # LN(source W_hh^T), torch's row normalisation
            torch.mm(read, weight_hh_t, out=raw[t])
            step_net, mean, inverse = torch.native_layer_norm(
                raw[t], (plan.rows,), norm_hh[0], norm_hh[1], LAYER_NORM_EPSILON
            )
            torch.cat((mean, inverse), -1, out=raw_stats[t])
        else:
            step_net = torch.mm(read, weight_hh_t, out=net)  # (B, G) recurrent GEMM
        plan.forward[plan.grid](
            gates_x[t], step_net, source_in[t], source[t + 1], cell_in[t], fresh[t], saved[t],
            y[t] if call.project else placeholder, *pointers, t, batch, hidden, *plan.runtime,
            *_extras(plan.extra_forward, buffers, placeholder, t), **constants,
        )  # fmt: skip
        if call.project:  # h_t = y_t W_hr^T; rows past their length keep h
            if projected is None:
                torch.mm(y[t], weight_hr_t, out=source[t + 1])
            else:
                torch.mm(y[t], weight_hr_t, out=projected)
                torch.where(call.active[t], projected, source_in[t], out=source[t + 1])
        if keep_cell is not None:
            _zoneout(keep_cell[t], cell_in[t], fresh[t], cell[t + 1])
        if keep_hidden is not None:
            h = source[t + 1, :, :out_size]
            _zoneout(keep_hidden[t], source_in[t, :, :out_size], h, h)
    output = source[1:, :, :out_size]
    output = output.clone() if call.active is None else output * call.active
    return Forward(
        output, source[steps].clone(), cell[steps].clone(), source, cell, saved, y, source_in,
        cell_in, fresh, raw, raw_stats, cell_stats,
    )  # fmt: skip


GRADIENTS = ("weight_hh", "weight_peephole", "weight_hr", "bias_hh", "norm_hh", "norm_cell")
"""The weight gradients :func:`backward` computes when asked."""


def backward(
    call: Call,
    saved: Forward,
    weight_hh: Tensor,
    weight_peephole: Tensor | None,
    weight_hr: Tensor | None,
    d_output: Tensor,
    d_source_n: Tensor,
    d_cell_n: Tensor,
    wanted: frozenset[str] = frozenset(GRADIENTS),
    norm_hh: Tensor | None = None,
    norm_cell: Tensor | None = None,
) -> dict[str, Tensor | None]:
    """Backpropagation through time for :func:`forward`, given the upstream gradients of its
    ``output``, ``source_n`` and ``cell_n``.

    Returns the gradients by name: ``gates_x``, ``source0``, ``cell0``, and of the weights named
    in ``wanted`` (:data:`GRADIENTS`; ``None`` for absent or unwanted weights: their GEMMs and
    reductions are skipped).
    """
    plan, hidden, options = call.plan, call.hidden, call.options
    steps, batch, out_size = d_output.shape
    empty = d_output.new_empty
    d_output = d_output.contiguous()
    if call.active is not None:  # outputs past a length are constant zeros
        d_output = d_output * call.active
    inactive = None if call.active is None else (~call.active).to(d_output.dtype)  # (T, B, 1)
    d_source = d_source_n.contiguous().clone()  # error reaching source[t + 1]
    d_cell = d_cell_n.contiguous().clone()  # error reaching cell[t + 1]
    d_net = empty(steps, batch, plan.rows)
    d_recurrent = empty(steps, batch, plan.rows) if plan.recurrent_gradient else d_net
    d_raw = empty(steps, batch, plan.rows) if options.layer_norm else d_recurrent
    d_h = empty(steps, batch, out_size) if call.project else None  # error at each h_t
    d_y = empty(batch, hidden) if call.project else None
    mask, keep_cell, keep_hidden = options.recurrent, options.keep_cell, options.keep_hidden
    back = None if mask is None else empty(batch, plan.source_size)
    no_output = d_output.new_zeros(batch, out_size) if keep_hidden is not None else None
    d_shown = None
    if saved.cell_stats is not None:
        d_shown = empty(steps, batch, hidden)
    buffers = {
        "candidate_mask": options.candidate, "norm_cell": norm_cell, "cell_stats": saved.cell_stats,
        "d_shown": d_shown,
    }  # fmt: skip
    placeholder = d_source
    pointers = (
        placeholder if weight_peephole is None else weight_peephole,
        placeholder if call.lengths is None else call.lengths,
    )
    constants = call.constants()
    for t in range(steps - 1, -1, -1):
        d_out = d_output[t]
        direct_h = direct_c = None
        if keep_hidden is not None:  # zoneout: d delta skips the step, (1 - d) delta enters it
            total = d_source[:, :out_size] + d_out
            direct_h = keep_hidden[t] * total
            d_source[:, :out_size] = (1.0 - keep_hidden[t]) * total
            d_out = no_output
        if keep_cell is not None:
            direct_c = keep_cell[t] * d_cell
            d_cell.mul_(1.0 - keep_cell[t])
        current = d_source
        if call.project:  # y_t -> h_t = W_hr y_t
            current = d_h[t]
            torch.add(d_source, d_out, out=current)
            torch.mm(current, weight_hr, out=d_y)
        plan.backward[plan.grid](
            saved.saved[t], saved.source_in[t], saved.source[t + 1], saved.cell_in[t],
            saved.fresh[t], current, d_out, placeholder if d_y is None else d_y,
            d_cell, d_net[t], d_recurrent[t], *pointers, t, batch, hidden, *plan.runtime,
            *_extras(plan.extra_backward, buffers, placeholder, t), **constants,
        )  # fmt: skip
        if options.layer_norm:  # back through LN(source W_hh^T)
            d_raw[t] = torch.ops.aten.native_layer_norm_backward(
                d_recurrent[t], saved.raw[t], (plan.rows,), saved.raw_stats[t, :, :1].contiguous(),
                saved.raw_stats[t, :, 1:].contiguous(), norm_hh[0], norm_hh[1],
                [True, False, False],
            )[0]  # fmt: skip
        _recurrent_error(call, d_source, current, d_raw[t], weight_hh, mask, back, inactive, t)
        if direct_h is not None:
            d_source[:, :out_size] += direct_h
        if direct_c is not None:
            d_cell += direct_c
        if options.reset is not None:  # no error crosses a reset
            d_source.masked_fill_(options.reset[t], 0.0)
            d_cell.masked_fill_(options.reset[t], 0.0)

    grads = {"gates_x": d_net, "source0": d_source, "cell0": d_cell}
    grads |= _weight_gradients(
        call, saved, wanted, d_net, d_recurrent, d_raw, d_h, d_shown, weight_peephole
    )
    return grads


def _recurrent_error(call, d_source, current, d_raw, weight_hh, mask, back, inactive, t) -> None:
    r"""``d_source`` becomes the error reaching the source step ``t`` entered: the GEMM
    :math:`\partial net\, W_{hh}` (times the recurrent dropout's mask) plus, at rows past their
    length, ``current`` (the error reaching the state it held), or the GRU's direct part."""
    if call.plan.recurrent_gradient:  # the kernel wrote the direct part into d_source
        if mask is None:
            d_source.addmm_(d_raw, weight_hh)
        else:
            d_source.add_(torch.mm(d_raw, weight_hh, out=back).mul_(mask))
    elif call.spec.truncate_gradient:  # only the cell state carries error back
        if inactive is None:
            d_source.zero_()
        else:
            torch.mul(current, inactive[t], out=d_source)
    elif inactive is None:
        torch.mm(d_raw, weight_hh, out=d_source)
        if mask is not None:
            d_source.mul_(mask)
    else:
        torch.mul(current, inactive[t], out=d_source)
        if mask is None:
            d_source.addmm_(d_raw, weight_hh)
        else:
            d_source.add_(torch.mm(d_raw, weight_hh, out=back).mul_(mask))


def _weight_gradients(
    call, saved, wanted, d_net, d_recurrent, d_raw, d_h, d_shown, weight_peephole
) -> dict[str, Tensor | None]:
    """The weight gradients after the loop: GEMMs over all ``T B`` rows, and reductions."""
    spec, hidden, options = call.spec, call.hidden, call.options
    steps, batch = d_net.shape[0], d_net.shape[1]
    flat = steps * batch
    grads = dict.fromkeys(GRADIENTS)
    if "weight_hh" in wanted:
        read = saved.source_in
        if options.recurrent is not None:
            read = read * options.recurrent
        grads["weight_hh"] = d_raw.reshape(flat, -1).t() @ read.reshape(flat, -1)
    if "bias_hh" in wanted and call.plan.recurrent_gradient:
        grads["bias_hh"] = d_recurrent.sum((0, 1))
    if "weight_peephole" in wanted and weight_peephole is not None:
        slices = spec.gate_slices(hidden)
        rows = []
        for gate in spec.peephole_gates:  # i, f read c_{t-1}; o reads c_t (before zoneout)
            cell = saved.fresh if gate == "o" else saved.cell_in
            rows.append((d_net[:, :, slices[gate]] * cell).sum((0, 1)))
        grads["weight_peephole"] = torch.stack(rows)
    if "weight_hr" in wanted and call.project:
        grads["weight_hr"] = d_h.view(flat, -1).t() @ saved.y.view(flat, -1)
    if "norm_hh" in wanted and options.layer_norm:
        stats = saved.raw_stats
        hat = (saved.raw - stats[..., :1]) * stats[..., 1:]
        grads["norm_hh"] = torch.stack([(d_recurrent * hat).sum((0, 1)), d_recurrent.sum((0, 1))])
    if "norm_cell" in wanted and d_shown is not None:
        stats = saved.cell_stats
        hat = (saved.fresh - stats[..., :1]) * stats[..., 1:]
        grads["norm_cell"] = torch.stack([(d_shown * hat).sum((0, 1)), d_shown.sum((0, 1))])
    return grads
