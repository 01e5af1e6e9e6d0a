r"""The declarative description of a recurrent cell.

A :class:`CellSpec` says *what* a cell computes; every backend (the reference loop, the fused
kernels) and every layer derives from it the computation, the parameter shapes and names, the
state it carries and its initialisation. Variants of the family are named factories that return a
spec (see :mod:`carousel.cells.lstm`, :mod:`carousel.cells.gru`, :mod:`carousel.cells.elman`).

Packed layout
-------------
Rows of ``weight_ih`` and ``weight_hh`` (and of the biases) are blocks, one per entry of
:attr:`CellSpec.gates`, in that order. The order follows ``torch.nn``: LSTM ``(i, f, g, o)``,
GRU ``(r, z, n)``, Elman ``(h,)``; the sLSTM (:mod:`carousel.cells.slstm`) packs ``(i, f, g, o)``
like the LSTM, ``g`` holding the cell input :math:`z`. An LSTM variant without a gate drops its block and keeps the
order of the rest: CIFG packs ``(i, g, o)``, NIG ``(f, g, o)``.

Gate blocks of an LSTM have ``hidden_size // block_size`` rows (one gate per memory block, shared
by ``block_size`` cells, as in the 1997 paper); the cell-input block ``g`` has ``hidden_size`` rows.

The *recurrent source* of a step is what ``weight_hh`` multiplies: the previous output
:math:`h_{t-1}` (``proj_size`` wide when projecting, else ``hidden_size``), followed, for cells
with gate feedback (``fgr``, ``1997``), by the previous step's gate activations in gate order.

Layer normalisation (Ba, Kiros & Hinton 2016), ``layer_norm=True``, normalises the input
projection and the recurrent projection, each over all its ``G`` packed rows at once, and (LSTM)
the cell state before the output activation, each with its own gain and shift:

.. math::
    \mathrm{LN}(a; \gamma, \beta) = \gamma \odot \frac{a - \mu(a)}{\sqrt{\sigma^2(a) + \epsilon}}
        + \beta, \qquad \epsilon = 10^{-5}

    net_t = \mathrm{LN}(W_{ih} x_t; \gamma_{ih}, \beta_{ih}) + b
        + \mathrm{LN}(W_{hh} s_{t-1}; \gamma_{hh}, \beta_{hh}), \qquad
    y_t = o_t \odot h(\mathrm{LN}(c_t; \gamma_c, \beta_c))

(GRU: ``b_hh`` is added after the recurrent normalisation, inside the reset gate, as ever). The
cell state carried to the next step is :math:`c_t` itself, not normalised.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch
from torch import Tensor

from carousel.cells.activations import ACTIVATIONS, GATE_ACTIVATIONS
from carousel.cells.registry import FAMILIES
from carousel.cells.weights import LAYER_NORM_EPSILON, CellWeights, layer_norm

__all__ = ["LAYER_NORM_EPSILON", "CellSpec", "CellWeights", "layer_norm"]

FORGET_ACTIVATIONS = ("sigmoid", "exp")
GATE_FEEDBACK = ("none", "gates", "all")
LAYER_NORM_FAMILIES = ("lstm", "gru")
"""Families whose cells take ``layer_norm=True``."""


@dataclass(frozen=True)
class CellSpec:
    """What one step of a recurrent cell computes.

    Attributes:
        family: ``"lstm"``, ``"gru"``, ``"elman"``, or ``"slstm"`` (the sLSTM of Beck et al. 2024,
            an LSTM variant with its own step and state, see :mod:`carousel.cells.slstm`).
        variant: the name under which the variant is registered (``"vanilla"``, ``"1997"``, ...).
        gates: the packed row blocks, in order (see the module docstring).
        gate_activation: squashing of the gates, ``"sigmoid"`` or ``"hard_sigmoid"``.
        candidate_activation: squashing of the candidate: the LSTM cell input :math:`g`, the GRU
            new gate :math:`n`, the Elman unit itself.
        output_activation: LSTM only, applied to the cell state: :math:`y = o \\odot h(c)`.
        peepholes: LSTM only; input and forget gates see :math:`c_{t-1}`, the output gate sees
            :math:`c_t`, each through a diagonal weight (Gers & Schmidhuber 2000).
        coupled_input_forget: LSTM only; :math:`f_t = 1 - i_t` (CIFG).
        gate_feedback: ``"none"``; ``"gates"``: the gates also receive the previous step's gate
            activations (FGR); ``"all"``: gates and cell inputs receive them (the 1997 paper).
        block_size: LSTM only; cells per memory block sharing one set of gates.
        truncate_gradient: LSTM only; errors reaching the net inputs of gates and cells are not
            propagated back in time, only the cell state carries error back (the 1997 paper).
        num_biases: 2 as in ``torch.nn`` (``bias_ih`` and ``bias_hh``), or 1 (``bias``).
        cell_bias: if ``False`` the cell-input block ``g`` has no bias (only gates are biased).
        layer_norm: LSTM and GRU; layer normalisation of the input and recurrent projections
            and (LSTM) of the cell state before the output activation (see the module docstring).
        num_heads: sLSTM only; the recurrent weights are block-diagonal with this many heads.
        forget_activation: sLSTM only; ``"sigmoid"`` or ``"exp"`` (the exponential forget gate).
        reference: the paper that defines the variant.
    """

    family: str
    variant: str
    gates: tuple[str, ...]
    gate_activation: str = "sigmoid"
    candidate_activation: str = "tanh"
    output_activation: str = "tanh"
    peepholes: bool = False
    coupled_input_forget: bool = False
    gate_feedback: str = "none"
    block_size: int = 1
    truncate_gradient: bool = False
    num_biases: int = 2
    cell_bias: bool = True
    layer_norm: bool = False
    num_heads: int = 1
    forget_activation: str = "sigmoid"
    reference: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {sorted(FAMILIES)}; got {self.family!r}")
        allowed = FAMILIES[self.family].gates
        if (
            not self.gates
            or any(g not in allowed for g in self.gates)
            or list(self.gates) != [g for g in allowed if g in self.gates]
        ):
            raise ValueError(
                f"gates of a {self.family} cell must be an ordered subset of {allowed}; "
                f"got {self.gates}"
            )
        for name in ("candidate_activation", "output_activation"):
            value = getattr(self, name)
            if value not in ACTIVATIONS:
                raise ValueError(f"{name} must be one of {sorted(ACTIVATIONS)}; got {value!r}")
        if self.gate_activation not in GATE_ACTIVATIONS:
            raise ValueError(
                f"gate_activation must be one of {GATE_ACTIVATIONS} (gates must lie in [0, 1]); "
                f"got {self.gate_activation!r}"
            )
        if self.gate_feedback not in GATE_FEEDBACK:
            raise ValueError(
                f"gate_feedback must be one of {GATE_FEEDBACK}; got {self.gate_feedback!r}"
            )
        for name in ("block_size", "num_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if self.num_biases not in (1, 2):
            raise ValueError(f"num_biases must be 1 or 2; got {self.num_biases!r}")
        if not isinstance(self.layer_norm, bool):
            raise TypeError(f"layer_norm must be a bool; got {self.layer_norm!r}")
        if self.layer_norm and self.family not in LAYER_NORM_FAMILIES:
            raise ValueError(
                f"layer_norm is not defined for the {self.variant!r} variant: it applies to the "
                f"{' and '.join(LAYER_NORM_FAMILIES)} families only, not to {self.family!r}"
            )
        if self.forget_activation not in FORGET_ACTIVATIONS:
            raise ValueError(
                f"forget_activation must be one of {FORGET_ACTIVATIONS}; got {self.forget_activation!r}"
            )
        if self.family != "slstm":
            for name, value, default in (
                ("num_heads", self.num_heads, 1),
                ("forget_activation", self.forget_activation, "sigmoid"),
            ):
                if value != default:
                    raise ValueError(
                        f"{name}={value!r} applies to sLSTM cells only, not to {self.family!r}"
                    )
        elif self.gates != FAMILIES["slstm"].gates:
            raise ValueError(
                f"an sLSTM cell has the gates {FAMILIES['slstm'].gates}; got {self.gates}"
            )
        if self.family != "lstm":
            lstm_only = {
                "peepholes": (self.peepholes, False),
                "coupled_input_forget": (self.coupled_input_forget, False),
                "gate_feedback": (self.gate_feedback, "none"),
                "block_size": (self.block_size, 1),
                "truncate_gradient": (self.truncate_gradient, False),
                "cell_bias": (self.cell_bias, True),
            }
            for name, (value, default) in lstm_only.items():
                if value != default:
                    raise ValueError(
                        f"{name}={value!r} applies to LSTM cells only, not to {self.family!r}"
                    )
            if self.family == "gru" and self.num_biases != 2:
                raise ValueError(
                    "a GRU cell needs num_biases=2 (bias_hh sits inside the reset gate)"
                )
            return
        if "g" not in self.gates:
            raise ValueError("an LSTM cell needs its cell input block 'g'")
        if self.coupled_input_forget and ("i" not in self.gates or "f" in self.gates):
            raise ValueError(
                "coupled_input_forget (f = 1 - i) needs an input gate 'i' and no separate forget "
                f"gate 'f' in gates; got {self.gates}"
            )
        if self.peepholes and self.block_size != 1:
            raise ValueError("peepholes are defined per cell and need block_size=1")

    # ---- layout -------------------------------------------------------------------------

    @property
    def has_input_gate(self) -> bool:
        """Whether an input gate ``i`` exists (LSTM)."""
        return "i" in self.gates

    @property
    def has_forget_gate(self) -> bool:
        """Whether a forget gate acts on the cell: a gate ``f``, or ``1 - i`` when coupled."""
        return "f" in self.gates or self.coupled_input_forget

    @property
    def has_output_gate(self) -> bool:
        """Whether an output gate ``o`` exists (LSTM)."""
        return "o" in self.gates

    @property
    def feedback_gates(self) -> tuple[str, ...]:
        """Gates whose previous activations join the recurrent source (gate feedback)."""
        if self.gate_feedback == "none":
            return ()
        return tuple(g for g in self.gates if g != "g")

    @property
    def peephole_gates(self) -> tuple[str, ...]:
        """Gates with a peephole weight, in packed order (rows of ``weight_peephole``)."""
        if not self.peepholes:
            return ()
        return tuple(g for g in self.gates if g in ("i", "f", "o"))

    @property
    def state_names(self) -> tuple[str, ...]:
        """Names of the state tensors a layer carries: ``h`` (and ``c``, and ``gates``; the sLSTM
        carries ``h, c, n, m``: output, cell, normaliser and stabiliser)."""
        if self.family == "slstm":
            return ("h", "c", "n", "m")
        if self.family != "lstm":
            return ("h",)
        return ("h", "c", "gates") if self.feedback_gates else ("h", "c")

    def gate_size(self, gate: str, hidden_size: int) -> int:
        """Rows of the packed block ``gate``."""
        if self.family == "lstm" and gate != "g":
            return hidden_size // self.block_size
        return hidden_size

    def gate_slices(self, hidden_size: int) -> dict[str, slice]:
        """The row range of every packed block."""
        slices, start = {}, 0
        for gate in self.gates:
            stop = start + self.gate_size(gate, hidden_size)
            slices[gate] = slice(start, stop)
            start = stop
        return slices

    def num_gate_rows(self, hidden_size: int) -> int:
        """Rows of ``weight_ih``/``weight_hh``: the sum of all block sizes."""
        return sum(self.gate_size(g, hidden_size) for g in self.gates)

    def feedback_size(self, hidden_size: int) -> int:
        """Width of the gate activations appended to the recurrent source."""
        return sum(self.gate_size(g, hidden_size) for g in self.feedback_gates)

    def output_size(self, hidden_size: int, proj_size: int = 0) -> int:
        """Width of the output :math:`h_t`."""
        return proj_size if proj_size > 0 else hidden_size

    def recurrent_size(self, hidden_size: int, proj_size: int = 0) -> int:
        """Columns of ``weight_hh``: :math:`h_{t-1}` plus the fed-back gate activations."""
        return self.output_size(hidden_size, proj_size) + self.feedback_size(hidden_size)

    def state_sizes(self, hidden_size: int, proj_size: int = 0) -> tuple[int, ...]:
        """Width of each state tensor named in :attr:`state_names`."""
        sizes = {
            "h": self.output_size(hidden_size, proj_size),
            "c": hidden_size,
            "n": hidden_size,
            "m": hidden_size,
            "gates": self.feedback_size(hidden_size),
        }
        return tuple(sizes[name] for name in self.state_names)

    def check_sizes(self, hidden_size: int, proj_size: int = 0) -> None:
        """Raise ``ValueError`` if this cell cannot have these sizes."""
        if hidden_size % self.block_size:
            raise ValueError(
                f"hidden_size must be a multiple of block_size={self.block_size}; got {hidden_size}"
            )
        if hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size must be a multiple of num_heads={self.num_heads}; got {hidden_size}"
            )
        if proj_size and self.family != "lstm":
            raise ValueError(f"proj_size applies to LSTM cells only, not to {self.family!r}")
        if proj_size and self.feedback_gates:
            raise ValueError(
                f"proj_size cannot be combined with gate feedback ({self.variant!r} feeds gate "
                "activations back alongside h)"
            )

    def parameter_shapes(
        self, input_size: int, hidden_size: int, proj_size: int = 0, bias: bool = True
    ) -> dict[str, tuple[int, ...]]:
        """Shapes of one direction's parameters, by short name, in registration order.

        The order is ``torch.nn``'s (``weight_ih, weight_hh, bias_ih, bias_hh, weight_hr``) followed
        by the extras of the variant (``weight_peephole``) and, with ``layer_norm``, the gains and
        shifts of the normalisations (``ln_ih_weight, ln_ih_bias, ln_hh_weight, ln_hh_bias``
        of ``(G,)``, and for an LSTM ``ln_cell_weight, ln_cell_bias`` of ``(H,)``); a one-bias
        cell has ``bias`` instead of ``bias_ih, bias_hh``. Layers append ``_l{k}`` (and
        ``_reverse``) to each name.
        """
        rows = self.num_gate_rows(hidden_size)
        shapes: dict[str, tuple[int, ...]] = {
            "weight_ih": (rows, input_size),
            "weight_hh": (rows, self.recurrent_size(hidden_size, proj_size)),
        }
        if bias and self.num_biases == 2:
            shapes.update(bias_ih=(rows,), bias_hh=(rows,))
        elif bias:
            shapes["bias"] = (rows,)
        if proj_size:
            shapes["weight_hr"] = (proj_size, hidden_size)
        if self.peepholes:
            shapes["weight_peephole"] = (len(self.peephole_gates), hidden_size)
        for name, width in self.layer_norm_widths(hidden_size).items():
            shapes[f"ln_{name}_weight"] = (width,)
            shapes[f"ln_{name}_bias"] = (width,)
        return shapes

    def layer_norm_widths(self, hidden_size: int) -> dict[str, int]:
        """The normalisations of a ``layer_norm`` cell and their widths: ``ih`` and ``hh`` over
        the ``G`` packed rows, ``cell`` (LSTM) over the ``H`` cells; empty without."""
        if not self.layer_norm:
            return {}
        rows = self.num_gate_rows(hidden_size)
        widths = {"ih": rows, "hh": rows}
        if self.family == "lstm":
            widths["cell"] = hidden_size
        return widths

    def recurrent_mask(self, hidden_size: int, proj_size: int = 0) -> torch.Tensor | None:
        """Fixed 0/1 mask on ``weight_hh``, or ``None`` when every weight is trainable.

        With ``gate_feedback="gates"`` (FGR) the cell input ``g`` does not see the previous
        gate activations, so those columns of its rows are masked. An sLSTM with ``num_heads > 1``
        has block-diagonal recurrent weights: row ``k`` of every gate block reads only the
        columns of its own head, ``(k // D) * D .. (k // D + 1) * D - 1`` with
        ``D = hidden_size // num_heads``.
        """
        if self.family == "slstm" and self.num_heads > 1:
            head = torch.arange(hidden_size) // (hidden_size // self.num_heads)  # (H,)
            same = (head.unsqueeze(1) == head.unsqueeze(0)).float()  # (H, H)
            return same.repeat(len(self.gates), 1)  # (4H, H)
        if self.gate_feedback != "gates":
            return None
        mask = torch.ones(
            self.num_gate_rows(hidden_size), self.recurrent_size(hidden_size, proj_size)
        )
        mask[self.gate_slices(hidden_size)["g"], self.output_size(hidden_size, proj_size) :] = 0
        return mask

    def bias_mask(self, hidden_size: int) -> torch.Tensor | None:
        """Fixed 0/1 mask on the biases, or ``None`` when every bias is trainable."""
        if self.cell_bias:
            return None
        mask = torch.ones(self.num_gate_rows(hidden_size))
        mask[self.gate_slices(hidden_size)["g"]] = 0
        return mask

    def step(
        self, gates_x: Tensor, state: tuple[Tensor, ...], weights: CellWeights, masks=None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """One step of this cell in PyTorch ops (its family's
        :attr:`~carousel.cells.registry.Family.step`); ``masks``
        (:class:`~carousel.cells.regularizers.Masks`, its ``recurrent`` and ``candidate``
        fields) only where a regulariser is active."""
        if masks is None:
            return FAMILIES[self.family].step(self, gates_x, state, weights)
        return FAMILIES[self.family].step(self, gates_x, state, weights, masks)

    def project_input(self, x: Tensor, weights: CellWeights) -> Tensor:
        r"""The input projection a step adds to its net inputs, ``(..., I) -> (..., G)``:
        :math:`W_{ih} x + b`, or :math:`\mathrm{LN}(W_{ih} x) + b` with ``layer_norm``."""
        gates_x = x @ weights.weight_ih.T
        if self.layer_norm:
            gates_x = layer_norm(gates_x, weights.layer_norm_ih)
        if weights.bias is not None:
            gates_x = gates_x + weights.bias
        return gates_x

    def replace(self, **changes) -> CellSpec:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def describe(self) -> str:
        """One line listing the fields that differ from the defaults."""
        defaults = {f.name: f.default for f in fields(self)}
        parts = [f"{self.variant} ({self.family}, gates {''.join(self.gates)})"]
        for name, default in defaults.items():
            if name in ("family", "variant", "gates", "reference"):
                continue
            value = getattr(self, name)
            if value != default:
                parts.append(f"{name}={value!r}")
        return ", ".join(parts)
