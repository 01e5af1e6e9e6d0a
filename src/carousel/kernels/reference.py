"""The reference backend: the per-step loop in plain PyTorch ops, differentiated by autograd.

It is the executable specification: it supports every cell and option, and every fused kernel is
tested against it (outputs, final states and every gradient). It is written for clarity:

1. one GEMM for the input projections of all steps, :math:`W_{ih} x_t + b` for every ``t``;
2. per step, the family's step function from :mod:`carousel.cells` (one recurrent GEMM and the
   pointwise math);
3. variable lengths by holding the state of finished sequences (``torch.where``) and zeroing their
   outputs; the reverse direction by reversing every sequence within its own length;
4. the masks of the regularisers and resets (:mod:`carousel.cells.regularizers`): a reset puts
   the (detached) initial state back before its step, the step applies the recurrent and
   candidate masks, zoneout mixes the previous state into the new one after it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from carousel.cells import CellSpec, CellWeights
from carousel.cells.regularizers import MASK_FEATURES, Masks, reset_state, zoneout
from carousel.kernels.registry import Backend, Workload, register


def reverse_index(steps: int, lengths: Tensor | None, device: torch.device) -> Tensor:
    """Time indices ``(T, B)`` that reverse each sequence within its length; padding stays put.

    For a sequence of length ``n``: ``n-1, ..., 1, 0, n, n+1, ..., T-1``. Applying the gather twice
    is the identity.
    """
    time = torch.arange(steps, device=device).unsqueeze(1)  # (T, 1)
    if lengths is None:
        return (steps - 1 - time).expand(steps, 1)
    lengths = lengths.to(device).unsqueeze(0)  # (1, B)
    return torch.where(time < lengths, lengths - 1 - time, time)


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse every sequence of ``x`` ``(T, B, F)`` within its own length."""
    if lengths is None:
        return x.flip(0)
    index = reverse_index(x.shape[0], lengths, x.device)  # (T, B)
    return x.gather(0, index.unsqueeze(-1).expand_as(x))


def recur(
    spec: CellSpec,
    gates_x: Tensor,
    state: tuple[Tensor, ...],
    weights: CellWeights,
    step_masks: Masks | None = None,
    reset: Tensor | None = None,
    keep_cell: Tensor | None = None,
    keep_hidden: Tensor | None = None,
    active: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The recurrence over the net inputs ``gates_x (T, B, G)`` from ``state``, step by step:
    a reset puts the initial state back (``reset`` ``(T, B)`` bool), the cell's step (with the
    recurrent and candidate masks of ``step_masks``), zoneout (``keep_*``), and rows past their
    length (``active`` ``(T, B, 1)`` false) keep their state and output zero.

    Returns the outputs ``(T, B, H_out)`` and the final state. The triton backend recomputes its
    recurrence with it where a graph is wanted (:func:`.triton.autograd.reference_recurrence`).
    """
    initial = state
    outputs = []
    for t in range(gates_x.shape[0]):
        if reset is not None:
            state = reset_state(state, initial, reset[t])
        output, new_state = spec.step(gates_x[t], state, weights, step_masks)
        if keep_cell is not None or keep_hidden is not None:
            new_state = zoneout(
                spec,
                state,
                new_state,
                None if keep_cell is None else keep_cell[t],
                None if keep_hidden is None else keep_hidden[t],
            )
            output = new_state[0]
        if active is not None:
            new_state = tuple(
                torch.where(active[t], new, old) for new, old in zip(new_state, state, strict=True)
            )
            output = output * active[t]
        state = new_state
        outputs.append(output)
    return torch.stack(outputs), state


def run_direction(
    spec: CellSpec,
    x: Tensor,
    state: tuple[Tensor, ...],
    weights: CellWeights,
    lengths: Tensor | None = None,
    reverse: bool = False,
    masks: Masks | None = None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Run one direction of one layer over a padded sequence.

    Args:
        spec: the cell.
        x: ``(T, B, I)`` time-major input.
        state: the initial state, one ``(B, size)`` tensor per ``spec.state_names``.
        weights: the layer's :class:`~carousel.cells.CellWeights`.
        lengths: ``(B,)`` int64 on the CPU, each in ``[1, T]``, or ``None`` (all ``T``).
        reverse: run from each sequence's last valid step back to its first.
        masks: the regularisers' masks and the resets of this direction, or ``None``.

    Returns:
        ``(output, final_state)``: ``(T, B, H_out)`` with zeros past each length, and the state
        after each sequence's last valid step.
    """
    steps = x.shape[0]
    masks = masks or Masks()
    reset, keep_cell, keep_hidden = masks.reset, masks.zoneout_cell, masks.zoneout_hidden
    if reverse:
        x = reverse_padded(x, lengths)
        reset = None if reset is None else reverse_padded(reset.unsqueeze(-1), lengths)[..., 0]
        keep_cell = None if keep_cell is None else reverse_padded(keep_cell, lengths)
        keep_hidden = None if keep_hidden is None else reverse_padded(keep_hidden, lengths)
    step_masks = masks if masks.recurrent is not None or masks.candidate is not None else None
    gates_x = spec.project_input(x, weights)  # (T, B, G)
    active = None
    if lengths is not None:
        active = torch.arange(steps).unsqueeze(1) < lengths.unsqueeze(0)  # (T, B)
        active = active.to(x.device).unsqueeze(-1)  # (T, B, 1)

    if reset is not None and active is not None:  # padding holds the state, resets included
        reset = reset & active[..., 0]
    output, state = recur(
        spec, gates_x, state, weights, step_masks, reset, keep_cell, keep_hidden, active
    )
    if reverse:
        output = reverse_padded(output, lengths)
    return output, state


def cost(work: Workload) -> float:
    """Expected time in the registry's units (steps x layers x directions for a fused call).

    Per-step Python overhead dominates small problems; the loop is never the fastest choice when a
    fused backend supports the workload, so its cost is set well above theirs.
    """
    return 1e3 * work.steps * work.num_layers * work.num_directions


register(
    Backend(
        name="reference",
        description="per-step PyTorch loop with autograd (the executable specification)",
        unsupported=lambda work: None,
        cost=cost,
        run_direction=run_direction,
        features=MASK_FEATURES | {"layer_norm"},
    )
)
