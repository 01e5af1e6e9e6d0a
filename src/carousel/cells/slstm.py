r"""The sLSTM of Beck et al. (2024): exponential gating, a normaliser and a stabiliser state.

"xLSTM: Extended Long Short-Term Memory" (Beck, Pöppel, Spanring, Auer, Prudnikova, Kopp,
Klambauer, Brandstetter & Hochreiter, NeurIPS 2024) keeps the 1997 cell's constant error carousel
and gives it an exponential input gate (and optionally an exponential forget gate), a normaliser
state :math:`n_t` that turns the cell state into a weighted average, and block-diagonal
("multi-head") recurrent weights. Per step, with :math:`R` block-diagonal over ``num_heads``
heads and the packed gate order ``(i, f, g, o)`` (``g`` holds the paper's cell input
:math:`z`):

.. math::
    \tilde\imath_t, \tilde f_t, \tilde z_t, \tilde o_t &= W x_t + R h_{t-1} + b \\
    i_t = \exp(\tilde\imath_t), \quad f_t &= \sigma(\tilde f_t) \text{ or } \exp(\tilde f_t), \quad
    z_t = \varphi(\tilde z_t), \quad o_t = \sigma(\tilde o_t) \\
    c_t = f_t c_{t-1} + i_t z_t, \quad n_t &= f_t n_{t-1} + i_t, \quad
    h_t = o_t \odot \psi(c_t / n_t)

with :math:`\varphi = \tanh` and :math:`\psi` the identity (the paper's :math:`h_t = o_t \tilde h_t`,
:math:`\tilde h_t = c_t / n_t`). The exponentials overflow, so the paper carries a stabiliser state
:math:`m_t` and computes in log space (its eqs. 15-17):

.. math::
    m_t &= \max(\log f_t + m_{t-1},\; \tilde\imath_t) \\
    i'_t &= \exp(\tilde\imath_t - m_t), \qquad f'_t = \exp(\log f_t + m_{t-1} - m_t) \\
    c_t &= f'_t c_{t-1} + i'_t z_t, \qquad n_t = f'_t n_{t-1} + i'_t

with :math:`\log f_t = \log\sigma(\tilde f_t)` (computed as ``logsigmoid``) or :math:`\tilde f_t`.
The stored :math:`c_t, n_t` are the unstabilised ones times :math:`e^{-m_t}`, so
:math:`c_t / n_t`, the output and its gradients are the paper's, while one of :math:`i'_t, f'_t`
is exactly 1 and neither exceeds 1: nothing overflows whatever the pre-activations.

**The empty memory.** A state with :math:`n_{t-1} = 0` (the zero initial state; a stream row
reset to zeros) holds nothing: its unstabilised normaliser is 0, whose logarithm is
:math:`-\infty`. carousel reads it that way: :math:`m_t = \tilde\imath_t` and
:math:`f'_t = 0`, so the first step gives :math:`n_t = 1` and :math:`h_t = o_t z_t` exactly as the
unstabilised equations do. Taking :math:`m_0 = 0` literally gives the same output in exact
arithmetic, but :math:`i'_1 = \exp(\tilde\imath_1 - \max(\log f_1, \tilde\imath_1))` then underflows
to 0 for a large negative :math:`\tilde\imath_1` and :math:`c_1 / n_1 = 0 / 0`. (The ``xlstm``
package makes the same choice when the whole batch's normaliser is zero.) From an empty or positive
normaliser, :math:`n_t \ge \min(1, n_0)` for every later step, since one of :math:`i'_t, f'_t` is 1.

**Gradients.** The reference backend differentiates every line above, the maximum included
(``torch.maximum``: at a tie each argument gets half), so the gradients of the final
:math:`c_T, n_T, m_T` are exact too. For the outputs :math:`h_t` the error flowing through
:math:`m` cancels exactly (they do not depend on it).

**Parameters** (``num_biases=1``, one bias as in the paper): ``weight_ih`` ``(4H, I)``,
``weight_hh`` ``(4H, H)`` with a fixed block-diagonal mask when ``num_heads > 1`` (only the
diagonal blocks are trained; :meth:`~carousel.cells.CellSpec.recurrent_mask`), ``bias`` ``(4H,)``.
No projection, peepholes or memory blocks. The state is ``(h, c, n, m)``.

**Initialisation** (:func:`paper_init`, the variant's default, applied after torch's): as the
paper's reference implementation (the ``xlstm`` package's ``sLSTMCell`` and ``sLSTMLayer``)
initialises its sLSTM: recurrent weights zero; input weights normal with standard deviation
:math:`\sqrt{2 / (5 I)}` ("small init", Nguyen & Salazar 2019); biases zero except the forget
gate's, set per head by the "power law" :math:`b_f[k] = 5 - 12 (k / (D - 1))^{0.3}` for
:math:`k = 0 .. D - 1` (:math:`D` cells per head), from 5 (remembers over about 150 steps) down
to -7 (forgets at once). Named alternatives: :func:`linspace_forget_bias` (the package's
"small_init" forget biases, linearly from 3 to 6), and any initialiser of
:mod:`carousel.cells.init` (e.g. ``chrono``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from carousel.cells.activations import ACTIVATIONS
from carousel.cells.init import Initializer, ParameterGroup
from carousel.cells.registry import Family, register_family, register_variant
from carousel.cells.spec import CellSpec, CellWeights

BECK_2024 = "Beck et al. (2024), xLSTM: Extended Long Short-Term Memory, NeurIPS 2024"


@register_variant(
    "slstm",
    "slstm",
    {
        "num_heads": 1,
        "forget_activation": "sigmoid",
        "gate_activation": "sigmoid",
        "candidate_activation": "tanh",
        "output_activation": "identity",
    },
)
def slstm(
    *, num_heads, forget_activation, gate_activation, candidate_activation, output_activation
):
    r"""The sLSTM of Beck et al. (2024) (equations in :mod:`carousel.cells.slstm`).

    .. math::
        m_t = \max(\log f_t + m_{t-1}, \tilde\imath_t),\;
        i'_t = e^{\tilde\imath_t - m_t},\; f'_t = e^{\log f_t + m_{t-1} - m_t},\\
        c_t = f'_t c_{t-1} + i'_t \tanh(\tilde z_t),\; n_t = f'_t n_{t-1} + i'_t,\;
        h_t = \sigma(\tilde o_t) \odot c_t / n_t

    Args:
        num_heads: heads of the block-diagonal recurrent weights (must divide ``hidden_size``).
        forget_activation: ``"sigmoid"`` (:math:`\log f = \log\sigma(\tilde f)`, the reference
            implementation's choice) or ``"exp"`` (:math:`\log f = \tilde f`).
        gate_activation: the output gate's squashing (``"sigmoid"`` or ``"hard_sigmoid"``).
        candidate_activation: :math:`\varphi` of the cell input (``"tanh"``).
        output_activation: :math:`\psi` applied to :math:`c_t / n_t` (``"identity"``, the paper).

    Packed gates ``(i, f, g, o)``, one bias; state ``(h, c, n, m)``.
    """
    return CellSpec(
        family="slstm",
        variant="slstm",
        gates=("i", "f", "g", "o"),
        gate_activation=gate_activation,
        candidate_activation=candidate_activation,
        output_activation=output_activation,
        num_biases=1,
        num_heads=num_heads,
        forget_activation=forget_activation,
        reference=BECK_2024,
    )


def slstm_step(
    spec: CellSpec, gates_x: Tensor, state: tuple[Tensor, ...], weights: CellWeights
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One sLSTM step in differentiable PyTorch ops (the equations of the module docstring).

    Args:
        spec: an sLSTM spec.
        gates_x: ``(B, 4H)`` input projection :math:`W x_t + b`.
        state: ``(h, c, n, m)``, each ``(B, H)``.
        weights: the layer's :class:`CellWeights` (block-diagonal mask applied).

    Returns:
        ``(h_t, (h_t, c_t, n_t, m_t))``.
    """
    h, c, n, m = state
    hidden = c.shape[-1]
    net = gates_x + h @ weights.weight_hh.T  # (B, 4H)
    input_net, forget_net, cell_net, output_net = net.split(hidden, dim=-1)
    log_forget = F.logsigmoid(forget_net) if spec.forget_activation == "sigmoid" else forget_net
    empty = n == 0  # an empty memory: its log-normaliser is -inf (module docstring)
    carried = log_forget + m  # log f_t + m_{t-1}
    m_new = torch.where(empty, input_net, torch.maximum(carried, input_net))
    input_gate = torch.exp(input_net - m_new)
    # exp(0) where empty keeps the discarded branch (and its gradient) finite
    forget_gate = torch.where(empty, 0.0, torch.exp(torch.where(empty, m_new, carried) - m_new))
    cell_input = ACTIVATIONS[spec.candidate_activation].forward(cell_net)
    output_gate = ACTIVATIONS[spec.gate_activation].forward(output_net)
    c_new = forget_gate * c + input_gate * cell_input
    n_new = forget_gate * n + input_gate
    h_new = output_gate * ACTIVATIONS[spec.output_activation].forward(c_new / n_new)
    return h_new, (h_new, c_new, n_new, m_new)


# ---- initialisation ---------------------------------------------------------------------------


def powerlaw_forget_bias(exponent: float = 0.3) -> Initializer:
    r"""Forget-gate biases :math:`b_f[k] = 5 - 12 (k / (D - 1))^{p}` per head of :math:`D` cells.

    The reference implementation's default ("powerlaw_blockdependent"), with :math:`p = 0.3` for
    the first block of a stack (it raises :math:`p` towards 1.6 for later blocks; carousel keeps
    0.3 for every layer). A head of one cell gets 5.
    """

    def init(group: ParameterGroup) -> None:
        heads = group.spec.num_heads
        size = group.hidden_size // heads
        target = group.params["weight_ih"]
        position = torch.arange(size, dtype=torch.float64) / max(size - 1, 1)
        per_head = 5.0 - 12.0 * position**exponent  # (D,)
        value = per_head.repeat(heads)  # (H,)
        with torch.no_grad():
            group.set_gate_bias("f", value.to(target.dtype).to(target.device))

    init.__name__ = f"powerlaw_forget_bias({exponent})"
    return init


def linspace_forget_bias(start: float = 3.0, stop: float = 6.0) -> Initializer:
    """Forget-gate biases evenly spaced from ``start`` to ``stop`` over each head (the reference
    implementation's "small_init" choice)."""

    def init(group: ParameterGroup) -> None:
        heads = group.spec.num_heads
        size = group.hidden_size // heads
        target = group.params["weight_ih"]
        value = torch.linspace(start, stop, size, dtype=torch.float64).repeat(heads)
        with torch.no_grad():
            group.set_gate_bias("f", value.to(target.dtype).to(target.device))

    init.__name__ = f"linspace_forget_bias({start}, {stop})"
    return init


def paper_init(group: ParameterGroup) -> None:
    r"""The sLSTM's default initialisation (module docstring): :math:`W \sim N(0, 2 / (5 I))`,
    :math:`R = 0`, biases 0 but the forget gate's power law."""
    weight_ih = group.params["weight_ih"]
    inputs = weight_ih.shape[1]
    with torch.no_grad():
        if inputs > 0:
            weight_ih.normal_(0.0, math.sqrt(2.0 / (5.0 * inputs)))
        group.params["weight_hh"].zero_()
        for name, param in group.params.items():
            if name.startswith("bias"):
                param.zero_()
    if any(name.startswith("bias") for name in group.params):
        powerlaw_forget_bias()(group)


register_family(Family("slstm", ("i", "f", "g", "o"), slstm_step, init=paper_init))
