r"""The LSTM family: its variants as named specs, and one step of the cell in PyTorch ops.

Notation (per step :math:`t`, batch rows omitted). :math:`x_t` input, :math:`h_{t-1}` previous
output, :math:`c_{t-1}` previous cell state, :math:`W_\ast` rows of ``weight_ih``, :math:`R_\ast`
rows of ``weight_hh``, :math:`p_\ast` peephole (diagonal) weights, :math:`\sigma` the gate
activation, :math:`g` the candidate (cell input) activation, :math:`h` the output activation.

The forget-gate LSTM of Gers, Schmidhuber & Cummins (2000), the math of ``torch.nn.LSTM``:

.. math::
    i_t &= \sigma(W_i x_t + R_i h_{t-1} + b_i) \\
    f_t &= \sigma(W_f x_t + R_f h_{t-1} + b_f) \\
    z_t &= g(W_g x_t + R_g h_{t-1} + b_g) \\
    c_t &= f_t \odot c_{t-1} + i_t \odot z_t \\
    o_t &= \sigma(W_o x_t + R_o h_{t-1} + b_o) \\
    y_t &= o_t \odot h(c_t), \qquad h_t = y_t \text{ (or } W_{hr} y_t \text{ with a projection)}

Peepholes (Gers & Schmidhuber 2000) add :math:`p_i \odot c_{t-1}` and :math:`p_f \odot c_{t-1}`
to the nets of :math:`i_t, f_t` and :math:`p_o \odot c_t` to the net of :math:`o_t`.

Greff, Srivastava, Koutník, Steunebrink & Schmidhuber (2017), "LSTM: A Search Space Odyssey",
define eight variants, each as ONE change to their baseline, the peephole LSTM above; carousel
follows the paper, so every Greff variant has peepholes unless ``peepholes=False`` is given, and
``np`` is ``vanilla`` under another name. Any LSTM variant takes ``peepholes=`` to add or drop them.

Memory blocks (Hochreiter & Schmidhuber 1997): with ``block_size=S`` the gates have
``hidden_size / S`` units, and gate unit ``j`` serves cells ``jS .. jS + S - 1``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from carousel.cells.activations import ACTIVATIONS
from carousel.cells.registry import Family, register_family, register_variant
from carousel.cells.spec import CellSpec, CellWeights, layer_norm

GERS_2000 = "Gers, Schmidhuber & Cummins (2000), Learning to Forget: Continual Prediction with LSTM"
PEEPHOLE_2000 = "Gers & Schmidhuber (2000), Recurrent Nets that Time and Count"
GREFF_2017 = "Greff et al. (2017), LSTM: A Search Space Odyssey, IEEE TNNLS 28(10)"
HOCHREITER_1997 = "Hochreiter & Schmidhuber (1997), Long Short-Term Memory, Neural Computation 9(8)"


LSTM_OPTIONS: dict[str, object] = {
    "peepholes": False,
    "gate_activation": "sigmoid",
    "candidate_activation": "tanh",
    "output_activation": "tanh",
    "block_size": 1,
    "truncate_gradient": False,
    "cell_bias": True,
    "layer_norm": False,
}
"""The options every LSTM variant takes (see :class:`CellSpec`), with the forget-gate LSTM's defaults."""


def lstm_variant(name: str, gates: str, reference: str, **settings):
    """Declare an LSTM variant: its packed ``gates`` (e.g. ``"ifgo"``), its source, and ``settings``.

    A setting named in :data:`LSTM_OPTIONS` changes that option's default for this variant (the
    user may still set it); any other is a fixed :class:`CellSpec` field of the variant
    (``coupled_input_forget``, ``gate_feedback``, ``num_biases``). The decorated function carries
    only the docstring with the variant's equations; it becomes the variant's factory.
    """
    defaults = {**LSTM_OPTIONS, **{k: v for k, v in settings.items() if k in LSTM_OPTIONS}}
    fixed = {k: v for k, v in settings.items() if k not in LSTM_OPTIONS}

    def declare(described):
        def build(**options) -> CellSpec:
            return CellSpec(
                family="lstm",
                variant=name,
                gates=tuple(gates),
                reference=reference,
                **fixed,
                **options,
            )

        build.__name__, build.__doc__ = described.__name__, described.__doc__
        build.__module__ = described.__module__
        return register_variant(name, "lstm", defaults)(build)

    return declare


@lstm_variant("vanilla", "ifgo", GERS_2000)
def vanilla():
    r"""The forget-gate LSTM of Gers et al. (2000), exactly ``torch.nn.LSTM``.

    .. math::
        i_t = \sigma(W_i x_t + R_i h_{t-1} + b_i),\;
        f_t = \sigma(W_f x_t + R_f h_{t-1} + b_f),\;
        z_t = \tanh(W_g x_t + R_g h_{t-1} + b_g),\\
        c_t = f_t \odot c_{t-1} + i_t \odot z_t,\;
        o_t = \sigma(W_o x_t + R_o h_{t-1} + b_o),\;
        h_t = o_t \odot \tanh(c_t)

    Gate order ``(i, f, g, o)`` and two biases, as in torch, so its state_dicts load unchanged.
    """


@lstm_variant("peephole", "ifgo", PEEPHOLE_2000, peepholes=True)
def peephole():
    r"""The peephole LSTM of Gers & Schmidhuber (2000); the baseline of Greff et al. (2017).

    .. math::
        i_t = \sigma(W_i x_t + R_i h_{t-1} + p_i \odot c_{t-1} + b_i),\;
        f_t = \sigma(W_f x_t + R_f h_{t-1} + p_f \odot c_{t-1} + b_f),\\
        c_t = f_t \odot c_{t-1} + i_t \odot g(W_g x_t + R_g h_{t-1} + b_g),\\
        o_t = \sigma(W_o x_t + R_o h_{t-1} + p_o \odot c_t + b_o),\;
        h_t = o_t \odot h(c_t)

    The peephole weights are the parameter ``weight_peephole`` of shape ``(3, H)``, rows
    ``(p_i, p_f, p_o)``.
    """


@lstm_variant("nig", "fgo", GREFF_2017, peepholes=True)
def nig():
    r"""NIG, no input gate (Greff et al. 2017): the peephole LSTM with :math:`i_t = 1`.

    .. math:: c_t = f_t \odot c_{t-1} + g(W_g x_t + R_g h_{t-1} + b_g)

    Packed gates ``(f, g, o)``.
    """


@lstm_variant("nfg", "igo", GREFF_2017, peepholes=True)
def nfg():
    r"""NFG, no forget gate (Greff et al. 2017): the peephole LSTM with :math:`f_t = 1`.

    .. math:: c_t = c_{t-1} + i_t \odot z_t

    This is the constant error carousel of the 1997 paper. Packed gates ``(i, g, o)``.
    """


@lstm_variant("nog", "ifg", GREFF_2017, peepholes=True)
def nog():
    r"""NOG, no output gate (Greff et al. 2017): the peephole LSTM with :math:`o_t = 1`.

    .. math:: h_t = h(c_t)

    Packed gates ``(i, f, g)``.
    """


@lstm_variant("niaf", "ifgo", GREFF_2017, peepholes=True, candidate_activation="identity")
def niaf():
    r"""NIAF, no input activation function (Greff et al. 2017): the peephole LSTM with :math:`g(x) = x`.

    .. math:: c_t = f_t \odot c_{t-1} + i_t \odot (W_g x_t + R_g h_{t-1} + b_g)
    """


@lstm_variant("noaf", "ifgo", GREFF_2017, peepholes=True, output_activation="identity")
def noaf():
    r"""NOAF, no output activation function (Greff et al. 2017): the peephole LSTM with :math:`h(x) = x`.

    .. math:: h_t = o_t \odot c_t

    With ``gate_activation="hard_sigmoid"`` this is the LSTM of the ECE 417 lecture (seed 004).
    """


@lstm_variant("np", "ifgo", GREFF_2017)
def np_():
    r"""NP, no peepholes (Greff et al. 2017): the peephole LSTM without :math:`p_i, p_f, p_o`.

    That is the forget-gate LSTM, so ``np`` computes exactly what ``vanilla`` computes.
    """


@lstm_variant("cifg", "igo", GREFF_2017, peepholes=True, coupled_input_forget=True)
def cifg():
    r"""CIFG, coupled input and forget gate (Greff et al. 2017): :math:`f_t = 1 - i_t`.

    .. math:: c_t = (1 - i_t) \odot c_{t-1} + i_t \odot z_t

    Packed gates ``(i, g, o)``; peepholes on ``i`` and ``o``. The GRU couples its gates the same way.
    """


@lstm_variant("fgr", "ifgo", GREFF_2017, peepholes=True, gate_feedback="gates")
def fgr():
    r"""FGR, full gate recurrence (Greff et al. 2017): every gate also sees all gates of the last step.

    .. math::
        i_t = \sigma(W_i x_t + R_i h_{t-1} + p_i \odot c_{t-1} + b_i
              + R_{ii} i_{t-1} + R_{fi} f_{t-1} + R_{oi} o_{t-1})

    and likewise for :math:`f_t` and :math:`o_t`: nine extra :math:`H \times H` matrices. They are
    the last ``3H`` columns of ``weight_hh`` (shape ``(4H, 4H)``); the columns of the cell-input
    rows that would read the gates are held at zero by a fixed mask. The state carries the gate
    activations: ``(h, c, gates)``.
    """


@lstm_variant(
    "1997",
    "igo",
    HOCHREITER_1997,
    candidate_activation="g1997",
    output_activation="h1997",
    gate_feedback="all",
    num_biases=1,
)
def lstm1997():
    r"""The original LSTM of Hochreiter & Schmidhuber (1997): memory blocks, no forget gate.

    With blocks of ``S = block_size`` cells sharing one input gate and one output gate, for cell
    :math:`c_j` of block :math:`k`:

    .. math::
        y^{in_k}(t) &= \sigma(net_{in_k}(t)),\quad y^{out_k}(t) = \sigma(net_{out_k}(t)) \\
        s_{c_j}(t) &= s_{c_j}(t-1) + y^{in_k}(t)\, g(net_{c_j}(t)),\quad s_{c_j}(0) = 0 \\
        y^{c_j}(t) &= y^{out_k}(t)\, h(s_{c_j}(t))

    with :math:`g(x) = 4\sigma(x) - 2 \in [-2, 2]` and :math:`h(x) = 2\sigma(x) - 1 \in [-1, 1]`.
    Every net input reads the external input, the previous cell outputs AND the previous gate
    activations, plus one bias: ``weight_hh`` has ``H + 2H/S`` columns (recurrent source
    :math:`[y^c(t-1), y^{in}(t-1), y^{out}(t-1)]`) and the single bias is ``bias_l{k}``. This is the
    connectivity from which the paper's weight counts follow (adding problem: 2 inputs, 2 blocks of
    2 cells: 8 units x 11 sources = 88 weights).

    ``truncate_gradient=True`` gives the paper's learning rule: errors arriving at the net inputs of
    gates and cells update the incoming weights but are not propagated back in time; only the cell
    state carries error back. It is off by default so that the layer computes the exact gradient.
    The state is ``(h, c, gates)``. Packed gates ``(i, g, o)``.
    """


class LSTMStepValues(NamedTuple):
    r"""Everything one LSTM step computes, for diagnostics (gate traces) and tests.

    Gates have one unit per memory block, ``(B, H / block_size)``; a gate the variant lacks is
    ``None`` (``forget_gate`` is ``1 - input_gate`` for CIFG).

    Attributes:
        input_gate: :math:`i_t`, ``(B, H/S)`` or ``None``.
        forget_gate: :math:`f_t`, ``(B, H/S)`` or ``None``.
        candidate: :math:`z_t = g(\cdot)`, the cell input, ``(B, H)``.
        output_gate: :math:`o_t`, ``(B, H/S)`` or ``None``.
        cell: :math:`c_t`, ``(B, H)``.
        output: :math:`h_t`, ``(B, H_out)``.
        state: the state tuple of the next step, ``(h_t, c_t)`` or ``(h_t, c_t, gates_t)``.
    """

    input_gate: Tensor | None
    forget_gate: Tensor | None
    candidate: Tensor
    output_gate: Tensor | None
    cell: Tensor
    output: Tensor
    state: tuple[Tensor, ...]


def lstm_step(
    spec: CellSpec, gates_x: Tensor, state: tuple[Tensor, ...], weights: CellWeights, masks=None
) -> tuple[Tensor, tuple[Tensor, ...]]:
    r"""One step of any LSTM variant, in differentiable PyTorch ops.

    Args:
        spec: the cell.
        gates_x: ``(B, G)`` input projection :math:`W x_t + b` for this step
            (:meth:`CellSpec.project_input`: normalised before the bias with ``layer_norm``).
        state: ``(h, c)`` or ``(h, c, gates)`` with shapes ``(B, H_out)``, ``(B, H)``,
            ``(B, spec.feedback_size(H))``.
        weights: the layer's :class:`CellWeights` (masks applied).
        masks: ``None``, or :class:`~carousel.cells.regularizers.Masks` whose ``recurrent``
            ``(B, H_out)`` multiplies :math:`h_{t-1}` where ``weight_hh`` reads it and whose
            ``candidate`` ``(B, H)`` multiplies :math:`z_t` where it enters :math:`c_t`.

    Returns:
        ``(h_t, new_state)``: the output ``(B, H_out)`` and the state tuple of the next step.
    """
    values = lstm_step_values(spec, gates_x, state, weights, masks)
    return values.output, values.state


def lstm_step_values(
    spec: CellSpec,
    gates_x: Tensor,
    state: tuple[Tensor, ...],
    weights: CellWeights,
    masks=None,
) -> LSTMStepValues:
    r""":func:`lstm_step`, returning the gates and the cell input as well (same arguments).

    With ``layer_norm`` the recurrent projection is normalised,
    :math:`\mathrm{LN}(W_{hh} s_{t-1})`, and the output reads :math:`h(\mathrm{LN}(c_t))`.
    """
    h, c = state[0], state[1]
    hidden_size = c.shape[-1]
    recurrent_mask = None if masks is None else masks.recurrent
    candidate_mask = None if masks is None else masks.candidate
    if recurrent_mask is not None:
        h = h * recurrent_mask
    source = torch.cat((h, state[2]), dim=-1) if spec.feedback_gates else h
    peep_cell = c
    if spec.truncate_gradient:
        source, peep_cell = source.detach(), c.detach()
    recurrent = source @ weights.weight_hh.T  # (B, G)
    if spec.layer_norm:
        recurrent = layer_norm(recurrent, weights.layer_norm_hh)
    net = gates_x + recurrent

    rows = spec.gate_slices(hidden_size)
    gate_act = ACTIVATIONS[spec.gate_activation].forward
    peep = (
        dict(zip(spec.peephole_gates, weights.weight_peephole, strict=True))
        if spec.peepholes
        else {}
    )

    def gate(name: str, cell: Tensor) -> Tensor:
        gate_net = net[:, rows[name]]
        if name in peep:
            gate_net = gate_net + peep[name] * cell
        return gate_act(gate_net)

    def per_cell(gate_value: Tensor) -> Tensor:  # (B, H/S) -> (B, H): one gate serves S cells
        return (
            gate_value.repeat_interleave(spec.block_size, dim=-1)
            if spec.block_size > 1
            else gate_value
        )

    input_gate = gate("i", peep_cell) if spec.has_input_gate else None
    if "f" in spec.gates:
        forget_gate = gate("f", peep_cell)
    elif spec.coupled_input_forget:
        forget_gate = 1 - input_gate
    else:
        forget_gate = None
    candidate = ACTIVATIONS[spec.candidate_activation].forward(net[:, rows["g"]])
    written = candidate if candidate_mask is None else candidate * candidate_mask

    cell = c if forget_gate is None else per_cell(forget_gate) * c
    cell = cell + (written if input_gate is None else per_cell(input_gate) * written)

    output_gate = None
    if spec.has_output_gate:
        output_gate = gate("o", cell.detach() if spec.truncate_gradient else cell)
    shown = layer_norm(cell, weights.layer_norm_cell) if spec.layer_norm else cell
    output = ACTIVATIONS[spec.output_activation].forward(shown)
    if output_gate is not None:
        output = per_cell(output_gate) * output
    if weights.weight_hr is not None:
        output = output @ weights.weight_hr.T

    new_state: tuple[Tensor, ...] = (output, cell)
    if spec.feedback_gates:
        values = {"i": input_gate, "f": forget_gate, "o": output_gate}
        new_state = (*new_state, torch.cat([values[g] for g in spec.feedback_gates], dim=-1))
    return LSTMStepValues(input_gate, forget_gate, candidate, output_gate, cell, output, new_state)


register_family(Family("lstm", ("i", "f", "g", "o"), lstm_step))
