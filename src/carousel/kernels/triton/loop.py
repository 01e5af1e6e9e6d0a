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

Buffers, time-major, indexed by processing step: ``source (T + 1, B, R)`` (``source[0]`` the
initial one), ``cell (T + 1, B, C)``, ``saved (T, B, A)``, ``y (T, B, H)`` (projection only);
see :mod:`.plan` for what each family keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from carousel.cells import CellSpec
from carousel.kernels.triton.plan import FamilyPlan


@dataclass(frozen=True, eq=False)
class Call:
    """Everything about one direction's call that is not a differentiable tensor.

    ``lengths`` is ``(B,)`` int64 on the tensors' device (``None``: every row runs all ``T``
    steps); ``active`` ``(T, B, 1)`` bool says which rows step ``t`` advances; ``widths`` the
    width of each state in ``spec.state_names`` (see :func:`.autograd.pack_state`).
    """

    spec: CellSpec
    plan: FamilyPlan
    hidden: int
    out_size: int
    project: bool
    lengths: Tensor | None
    active: Tensor | None
    widths: tuple[int, ...]

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


def forward(
    call: Call,
    gates_x: Tensor,
    source0: Tensor,
    cell0: Tensor,
    weight_hh: Tensor,
    weight_peephole: Tensor | None,
    weight_hr: Tensor | None,
    bias_hh: Tensor | None,
) -> Forward:
    """Run the recurrence over ``gates_x (T, B, G)`` from ``source0 (B, R)`` and ``cell0 (B, C)``.

    Weights as :class:`~carousel.cells.CellWeights` holds them; all tensors contiguous, on one
    device, in float32 or float64.
    """
    plan, hidden = call.plan, call.hidden
    steps, batch, _ = gates_x.shape
    empty = gates_x.new_empty
    source = empty(steps + 1, batch, plan.source_size)
    source[0] = source0
    cell = empty(steps + 1, batch, plan.cell_size)
    cell[0] = cell0
    saved = empty(steps, batch, plan.saved_size)
    net = empty(batch, plan.rows)
    y = empty(steps, batch, hidden) if call.project else empty(0)
    projected = empty(batch, call.out_size) if call.project and call.lengths is not None else None
    placeholder = net  # for pointers a kernel does not read
    pointers = (
        placeholder if weight_peephole is None else weight_peephole,
        placeholder if bias_hh is None else bias_hh,
        placeholder if call.lengths is None else call.lengths,
    )
    weight_hh_t = weight_hh.t()
    weight_hr_t = None if weight_hr is None else weight_hr.t()
    constants = call.constants()
    for t in range(steps):
        torch.mm(source[t], weight_hh_t, out=net)  # (B, G) recurrent GEMM
        plan.forward[plan.grid](
            gates_x[t], net, source[t], source[t + 1], cell[t], cell[t + 1], saved[t],
            y[t] if call.project else placeholder, *pointers, t, batch, hidden, *plan.runtime,
            **constants,
        )  # fmt: skip
        if call.project:  # h_t = y_t W_hr^T; rows past their length keep h
            if projected is None:
                torch.mm(y[t], weight_hr_t, out=source[t + 1])
            else:
                torch.mm(y[t], weight_hr_t, out=projected)
                torch.where(call.active[t], projected, source[t], out=source[t + 1])
    return finish_forward(call, source, cell, saved, y)


def finish_forward(call: Call, source: Tensor, cell: Tensor, saved: Tensor, y: Tensor) -> Forward:
    """The :class:`Forward` of filled buffers: the output (zero past each length) and the final
    states as tensors of their own (shared with the persistent kernels of :mod:`.persistent`)."""
    steps = saved.shape[0]
    output = source[1:, :, : call.out_size]
    output = output.clone() if call.active is None else output * call.active
    return Forward(output, source[steps].clone(), cell[steps].clone(), source, cell, saved, y)


def backward(
    call: Call,
    saved: Forward,
    weight_hh: Tensor,
    weight_peephole: Tensor | None,
    weight_hr: Tensor | None,
    d_output: Tensor,
    d_source_n: Tensor,
    d_cell_n: Tensor,
    wanted: frozenset[str] = frozenset({"weight_hh", "weight_peephole", "weight_hr", "bias_hh"}),
) -> dict[str, Tensor | None]:
    """Backpropagation through time for :func:`forward`, given the upstream gradients of its
    ``output``, ``source_n`` and ``cell_n``.

    Returns the gradients by name: ``gates_x``, ``source0``, ``cell0``, and of the weights named
    in ``wanted``: ``weight_hh``, ``weight_peephole``, ``weight_hr``, ``bias_hh`` (``None`` for
    absent or unwanted weights: their GEMMs and reductions are skipped).
    """
    plan, hidden, spec = call.plan, call.hidden, call.spec
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
    d_h = empty(steps, batch, out_size) if call.project else None  # error at each h_t
    d_y = empty(batch, hidden) if call.project else None
    placeholder = d_source
    pointers = (
        placeholder if weight_peephole is None else weight_peephole,
        placeholder if call.lengths is None else call.lengths,
    )
    constants = call.constants()
    for t in range(steps - 1, -1, -1):
        current = d_source
        if call.project:  # y_t -> h_t = W_hr y_t
            current = d_h[t]
            torch.add(d_source, d_output[t], out=current)
            torch.mm(current, weight_hr, out=d_y)
        plan.backward[plan.grid](
            saved.saved[t], saved.source[t], saved.source[t + 1], saved.cell[t],
            saved.cell[t + 1], current, d_output[t], placeholder if d_y is None else d_y,
            d_cell, d_net[t], d_recurrent[t], *pointers, t, batch, hidden, *plan.runtime,
            **constants,
        )  # fmt: skip
        if plan.recurrent_gradient:  # the kernel wrote the direct part into d_source
            d_source.addmm_(d_recurrent[t], weight_hh)
        elif spec.truncate_gradient:  # only the cell state carries error back
            if inactive is None:
                d_source.zero_()
            else:
                torch.mul(current, inactive[t], out=d_source)
        elif inactive is None:
            torch.mm(d_recurrent[t], weight_hh, out=d_source)
        else:
            torch.mul(current, inactive[t], out=d_source)
            d_source.addmm_(d_recurrent[t], weight_hh)
    return {
        "gates_x": d_net,
        "source0": d_source,
        "cell0": d_cell,
        **weight_gradients(call, saved, weight_peephole, d_net, d_recurrent, d_h, wanted),
    }


def weight_gradients(
    call: Call,
    saved: Forward,
    weight_peephole: Tensor | None,
    d_net: Tensor,
    d_recurrent: Tensor,
    d_h: Tensor | None,
    wanted: frozenset[str],
) -> dict[str, Tensor | None]:
    r"""The gradients of the recurrent weights after the loop, as large GEMMs and reductions over
    all ``T B`` rows: ``weight_hh`` (:math:`\sum_t \partial net_t^T [h_{t-1}, \gamma_{t-1}]`),
    ``bias_hh`` (GRU), ``weight_peephole``, ``weight_hr``, each ``None`` unless in ``wanted`` and
    present. ``d_net``/``d_recurrent`` ``(T, B, G)``, ``d_h`` ``(T, B, P)`` the error at each
    :math:`h_t` (projection only). Shared by both levels (:mod:`.persistent`)."""
    plan, hidden, spec = call.plan, call.hidden, call.spec
    steps, batch = d_net.shape[0], d_net.shape[1]
    flat = steps * batch
    grads = {
        "weight_hh": None,
        "weight_peephole": None,
        "weight_hr": None,
        "bias_hh": None,
    }
    if "weight_hh" in wanted:
        grads["weight_hh"] = d_recurrent.view(flat, -1).t() @ saved.source[:steps].view(flat, -1)
    if "bias_hh" in wanted and plan.recurrent_gradient:
        grads["bias_hh"] = d_recurrent.sum((0, 1))
    if "weight_peephole" in wanted and weight_peephole is not None:
        slices = spec.gate_slices(hidden)
        rows = []
        for gate in spec.peephole_gates:  # i, f read c_{t-1}; o reads c_t
            cell = saved.cell[1:] if gate == "o" else saved.cell[:steps]
            rows.append((d_net[:, :, slices[gate]] * cell).sum((0, 1)))
        grads["weight_peephole"] = torch.stack(rows)
    if "weight_hr" in wanted and call.project:
        grads["weight_hr"] = d_h.view(flat, -1).t() @ saved.y.view(flat, -1)
    return grads
