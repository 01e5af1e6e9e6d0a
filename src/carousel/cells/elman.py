r"""The simple recurrent network of Elman (1990), exactly as ``torch.nn.RNN`` computes it.

.. math:: h_t = \phi(W x_t + b_{ih} + R h_{t-1} + b_{hh}), \qquad \phi \in \{\tanh, \mathrm{ReLU}\}

The error flowing back :math:`q` steps through it is scaled by a product of :math:`q` factors
:math:`\phi'(net) R`: it vanishes or explodes (Hochreiter 1991; seeds 000, 001, 004). This is the
baseline the 1997 paper's LSTM is measured against.
"""

from __future__ import annotations

from torch import Tensor

from carousel.cells.activations import ACTIVATIONS
from carousel.cells.registry import Family, register_family, register_variant
from carousel.cells.spec import CellSpec, CellWeights

ELMAN_1990 = "Elman (1990), Finding Structure in Time, Cognitive Science 14(2)"


@register_variant("elman", "elman", {"nonlinearity": "tanh"})
def elman(*, nonlinearity):
    r"""Elman RNN: :math:`h_t = \phi(W x_t + R h_{t-1} + b)` with ``nonlinearity`` ``"tanh"`` or ``"relu"`` as in torch."""
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(
            f"Unknown nonlinearity {nonlinearity!r}. Select from 'tanh' or 'relu'; "
            f"nonlinearity must be 'tanh' or 'relu'; got {nonlinearity!r}"
        )
    return CellSpec(
        family="elman",
        variant="elman",
        gates=("h",),
        candidate_activation=nonlinearity,
        reference=ELMAN_1990,
    )


def elman_step(
    spec: CellSpec, gates_x: Tensor, state: tuple[Tensor, ...], weights: CellWeights
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One Elman step. ``gates_x``: ``(B, H)`` = :math:`W x_t + b`; ``state``: ``(h,)`` of ``(B, H)``."""
    (h,) = state
    h_new = ACTIVATIONS[spec.candidate_activation].forward(gates_x + h @ weights.weight_hh.T)
    return h_new, (h_new,)


register_family(Family("elman", ("h",), elman_step))
