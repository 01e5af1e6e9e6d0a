r"""The regularisers, resets and layer normalisation of one triton call, in processing order.

:mod:`carousel.cells.regularizers` defines what they compute; the layer draws the masks from
torch's generator and hands them over as a :class:`~carousel.cells.regularizers.Masks`, so the
triton, numba and reference backends consume the same masks. :func:`call_options` rearranges them
for one direction (time-indexed masks reversed within each length for a reverse direction, as the
reference loop does) and the time loop (:mod:`.loop`) applies them:

- ``recurrent_dropout``: the recurrent GEMM reads :math:`[m \odot h_{t-1}, \gamma_{t-1}]`, a
  masked copy of the source; backward, the error the GEMM :math:`\partial net\, W_{hh}` carries
  to :math:`h_{t-1}` is multiplied by :math:`m`, and :math:`\partial W_{hh}` reads the masked
  source.
- ``candidate_dropout``: inside the pointwise kernels (:mod:`.lstm`, :mod:`.gru`).
- ``zoneout``: after the step's kernel (and projection), :math:`c_t = d^c c_{t-1} + (1 - d^c)
  \tilde c_t` and :math:`h_t = d^h h_{t-1} + (1 - d^h) \tilde h_t` as elementwise torch operations;
  the LSTM kernel writes :math:`\tilde c_t` into a buffer of its own, which its backward reads.
  Backward the error reaching a state splits into :math:`d\, \delta` (straight to the previous
  state) and :math:`(1 - d)\, \delta` (into the step). At rows past their length :math:`d = 1`,
  so the state is held exactly.
- ``reset``: before a step, the rows that reset take the initial state (``torch.where`` into a
  buffer of entering states, so the state each step left behind stays for the outputs and the
  backward pass); backward, the error reaching those rows of the entering state is dropped.
- ``layer_norm``: the input projection's normalisation runs for all steps before the loop
  (autograd differentiates it); the recurrent projection's is torch's row normalisation after the
  step's GEMM (its backward torch's, its gains' gradients one reduction after the loop); the cell
  state's is inside the LSTM kernels, whose programs then cover whole rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from carousel.cells.regularizers import Masks
from carousel.kernels import reference


@dataclass(frozen=True, eq=False)
class Options:
    """One direction's masks in processing order (``None``: not used); shapes with ``T`` steps,
    ``B`` rows, ``H`` cells, ``P`` output width, ``R`` recurrent source width, ``C`` cell width.

    ``recurrent`` ``(B, R)``: :math:`m` on :math:`h`'s columns, 1 on fed-back gates';
    ``candidate`` ``(B, H)``; ``keep_cell`` ``(T, B, C)`` and ``keep_hidden`` ``(T, B, P)``: the
    zoneout weight of the previous state, 1 at rows past their length; ``reset`` ``(T, B, 1)``
    bool, never set past a length; ``layer_norm``: the cell normalises its projections (and the
    LSTM its cell state)."""

    recurrent: Tensor | None = None
    candidate: Tensor | None = None
    keep_cell: Tensor | None = None
    keep_hidden: Tensor | None = None
    reset: Tensor | None = None
    layer_norm: bool = False

    def kernel_features(self) -> frozenset[str]:
        """What the pointwise kernels must compute: ``candidate``, ``layer_norm``."""
        used = {"candidate"} if self.candidate is not None else set()
        return frozenset(used | ({"layer_norm"} if self.layer_norm else set()))

    def step_masks(self, out_size: int) -> Masks | None:
        """The per-sequence masks as a cell's step takes them (``None`` if neither is used)."""
        if self.recurrent is None and self.candidate is None:
            return None
        recurrent = None if self.recurrent is None else self.recurrent[:, :out_size]
        return Masks(recurrent=recurrent, candidate=self.candidate)


def call_options(
    masks: Masks | None,
    layer_norm: bool,
    lengths: Tensor | None,
    active: Tensor | None,
    reverse: bool,
    source_size: int,
    dtype: torch.dtype,
    device: torch.device,
) -> Options:
    """:class:`Options` from a layer's ``masks`` for one direction; ``active`` ``(T, B, 1)`` bool
    (``None`` without lengths), ``lengths`` the layer's ``(B,)``."""
    masks = masks or Masks()

    def ordered(mask: Tensor | None) -> Tensor | None:  # time position -> processing step
        if mask is None or not reverse:
            return mask
        return reference.reverse_padded(mask, lengths)

    def keep(mask: Tensor | None) -> Tensor | None:
        if mask is None:
            return None
        mask = ordered(mask.to(device=device, dtype=dtype))
        return mask.contiguous() if active is None else torch.where(active, mask, 1.0)

    recurrent = masks.recurrent
    if recurrent is not None:
        recurrent = recurrent.to(device=device, dtype=dtype)
        fed = source_size - recurrent.shape[-1]  # fed-back gates are not dropped
        recurrent = torch.cat([recurrent, recurrent.new_ones(recurrent.shape[0], fed)], -1)
    candidate = masks.candidate
    if candidate is not None:
        candidate = candidate.to(device=device, dtype=dtype).contiguous()
    reset = masks.reset
    if reset is not None:
        reset = ordered(reset.to(device).bool().unsqueeze(-1))
        if active is not None:  # padding holds the state, resets included
            reset = reset & active
    return Options(
        recurrent=recurrent,
        candidate=candidate,
        keep_cell=keep(masks.zoneout_cell),
        keep_hidden=keep(masks.zoneout_hidden),
        reset=reset,
        layer_norm=layer_norm,
    )
