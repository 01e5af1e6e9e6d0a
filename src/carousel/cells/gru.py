r"""The gated recurrent unit of Cho et al. (2014), exactly as ``torch.nn.GRU`` computes it.

.. math::
    r_t &= \sigma(W_r x_t + b_{ir} + R_r h_{t-1} + b_{hr}) \\
    z_t &= \sigma(W_z x_t + b_{iz} + R_z h_{t-1} + b_{hz}) \\
    n_t &= \tanh(W_n x_t + b_{in} + r_t \odot (R_n h_{t-1} + b_{hn})) \\
    h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}

Packed gate order ``(r, z, n)``. Like CIFG, the GRU couples keeping and writing through one gate
:math:`z_t`; it has no cell state separate from its output.
"""

from __future__ import annotations

from torch import Tensor

from carousel.cells.activations import ACTIVATIONS
from carousel.cells.registry import Family, register_family, register_variant
from carousel.cells.spec import CellSpec, CellWeights, layer_norm

CHO_2014 = "Cho et al. (2014), Learning Phrase Representations using RNN Encoder-Decoder"


@register_variant(
    "gru",
    "gru",
    {"gate_activation": "sigmoid", "candidate_activation": "tanh", "layer_norm": False},
)
def gru(*, gate_activation, candidate_activation, layer_norm):
    r"""The GRU of Cho et al. (2014) with ``torch.nn.GRU``'s placement of :math:`b_{hn}` inside :math:`r_t \odot (\cdot)`.

    .. math::
        r_t = \sigma(W_r x_t + R_r h_{t-1} + b_r),\;
        z_t = \sigma(W_z x_t + R_z h_{t-1} + b_z),\\
        n_t = \tanh(W_n x_t + b_{in} + r_t \odot (R_n h_{t-1} + b_{hn})),\;
        h_t = (1 - z_t) \odot n_t + z_t \odot h_{t-1}

    With ``layer_norm=True`` both projections are normalised before their biases
    (:math:`\mathrm{LN}(W x_t) + b_{ih}`, :math:`\mathrm{LN}(R h_{t-1}) + b_{hh}`).
    """
    return CellSpec(
        family="gru",
        variant="gru",
        gates=("r", "z", "n"),
        gate_activation=gate_activation,
        candidate_activation=candidate_activation,
        layer_norm=layer_norm,
        reference=CHO_2014,
    )


def gru_step(
    spec: CellSpec, gates_x: Tensor, state: tuple[Tensor, ...], weights: CellWeights, masks=None
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One GRU step. ``gates_x``: ``(B, 3H)`` = :math:`W x_t + b_{ih}` (see
    :meth:`CellSpec.project_input`); ``state``: ``(h,)`` of ``(B, H)``; ``masks``: ``None`` or
    :class:`~carousel.cells.regularizers.Masks` (``recurrent`` multiplies :math:`h_{t-1}` where
    :math:`R` reads it, ``candidate`` multiplies :math:`n_t` where it enters :math:`h_t`)."""
    (h,) = state
    hidden = h.shape[-1]
    recurrent_mask = None if masks is None else masks.recurrent
    candidate_mask = None if masks is None else masks.candidate
    source = h if recurrent_mask is None else h * recurrent_mask
    recurrent = source @ weights.weight_hh.T  # (B, 3H)
    if spec.layer_norm:
        recurrent = layer_norm(recurrent, weights.layer_norm_hh)
    if weights.bias_hh is not None:
        recurrent = recurrent + weights.bias_hh
    gate_act = ACTIVATIONS[spec.gate_activation].forward
    reset = gate_act(gates_x[:, :hidden] + recurrent[:, :hidden])
    update = gate_act(gates_x[:, hidden : 2 * hidden] + recurrent[:, hidden : 2 * hidden])
    new = ACTIVATIONS[spec.candidate_activation].forward(
        gates_x[:, 2 * hidden :] + reset * recurrent[:, 2 * hidden :]
    )
    if candidate_mask is not None:
        new = new * candidate_mask
    h_new = (1 - update) * new + update * h
    return h_new, (h_new,)


register_family(Family("gru", ("r", "z", "n"), gru_step))
