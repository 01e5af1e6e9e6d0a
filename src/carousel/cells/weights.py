r"""The tensors a backend computes with (:class:`CellWeights`), and the layer normalisation
they carry the gains and shifts of (:func:`layer_norm`; the equations in :mod:`carousel.cells.spec`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

if TYPE_CHECKING:
    from carousel.cells.spec import CellSpec

LAYER_NORM_EPSILON = 1e-5
r"""The :math:`\epsilon` of the layer normalisation (``torch.nn.LayerNorm``'s default)."""


class CellWeights(NamedTuple):
    """The tensors one direction of one layer computes with, as backends receive them.

    Masks (:meth:`CellSpec.recurrent_mask`, :meth:`CellSpec.bias_mask`) are already applied and
    LSTM/Elman biases already summed, so a backend never deals with either. Shapes, with
    ``G = spec.num_gate_rows(H)`` and ``R = spec.recurrent_size(H, proj_size)``:

    - ``weight_ih``: ``(G, I)``
    - ``weight_hh``: ``(G, R)``
    - ``bias``: ``(G,)`` or ``None``; added to the input projection. LSTM/Elman: the sum of both
      biases; GRU: ``bias_ih`` only.
    - ``bias_hh``: ``(G,)`` or ``None``; GRU only, added to the recurrent projection (its ``n``
      block sits inside the reset gate).
    - ``weight_peephole``: ``(len(spec.peephole_gates), H)`` or ``None``.
    - ``weight_hr``: ``(proj_size, H)`` or ``None``.
    - ``layer_norm_ih``, ``layer_norm_hh``: ``(2, G)``, gain and shift of the normalisation of
      the input and the recurrent projection, or ``None`` without ``layer_norm``.
    - ``layer_norm_cell``: ``(2, H)``, gain and shift of the cell state's (LSTM), or ``None``.
    """

    weight_ih: Tensor
    weight_hh: Tensor
    bias: Tensor | None = None
    bias_hh: Tensor | None = None
    weight_peephole: Tensor | None = None
    weight_hr: Tensor | None = None
    layer_norm_ih: Tensor | None = None
    layer_norm_hh: Tensor | None = None
    layer_norm_cell: Tensor | None = None

    @classmethod
    def from_parameters(
        cls,
        spec: CellSpec,
        params: dict[str, Tensor],
        recurrent_mask: Tensor | None = None,
        bias_mask: Tensor | None = None,
    ) -> CellWeights:
        """Assemble the backend view from parameters named as in :meth:`CellSpec.parameter_shapes`."""
        weight_hh = params["weight_hh"]
        if recurrent_mask is not None:
            weight_hh = weight_hh * recurrent_mask
        bias, bias_hh = params.get("bias"), None
        if "bias_ih" in params:
            if spec.family == "gru":
                bias, bias_hh = params["bias_ih"], params["bias_hh"]
            else:
                bias = params["bias_ih"] + params["bias_hh"]
        if bias is not None and bias_mask is not None:
            bias = bias * bias_mask
        norms = {
            f"layer_norm_{name}": torch.stack(
                (params[f"ln_{name}_weight"], params[f"ln_{name}_bias"])
            )
            for name in ("ih", "hh", "cell")
            if spec.layer_norm and f"ln_{name}_weight" in params
        }
        return cls(
            weight_ih=params["weight_ih"],
            weight_hh=weight_hh,
            bias=bias,
            bias_hh=bias_hh,
            weight_peephole=params.get("weight_peephole"),
            weight_hr=params.get("weight_hr"),
            **norms,
        )


def layer_norm(values: Tensor, gain_shift: Tensor) -> Tensor:
    r""":math:`\mathrm{LN}(a; \gamma, \beta)` over the last axis of ``values`` ``(..., n)``, with
    ``gain_shift`` ``(2, n)`` holding :math:`\gamma` and :math:`\beta` (see the module docstring)."""
    return torch.nn.functional.layer_norm(
        values, values.shape[-1:], gain_shift[0], gain_shift[1], LAYER_NORM_EPSILON
    )
