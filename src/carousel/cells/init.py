r"""Named initialisers.

An initialiser is a function that takes a :class:`ParameterGroup` (the parameters of one direction
of one layer) and fills them in place. Layers take one initialiser or a sequence of them through
``init=``; they run in order, after the default, on every group::

    carousel.LSTM(8, 64, init=[carousel.init.uniform(0.1), carousel.init.chrono(t_max=1000)])

=========================  ====================================================================
``torch_default``          :math:`U(-1/\sqrt{H}, 1/\sqrt{H})` for every parameter, in torch's order
                           (always applied first, so a seeded layer equals a seeded ``torch.nn``)
``uniform(bound)``         :math:`U(-bound, bound)` for every parameter (the 1997 paper: 0.1, 0.2)
``forget_bias(value)``     forget-gate bias :math:`b_f = value` (Gers et al. 2000; Jozefowicz et
                           al. 2015 recommend 1)
``chrono(t_max)``          :math:`b_f \sim \log U[1, T_{max} - 1]`, :math:`b_i = -b_f` (Tallec &
                           Ollivier 2018)
``gate_bias(gate, v)``     bias of one gate block set to ``v`` (scalar or one value per unit),
                           e.g. the 1997 paper's staggered output-gate biases -1, -2, -3, -4
``orthogonal_recurrent``   each gate block of ``weight_hh`` (its :math:`h` columns) orthogonal
=========================  ====================================================================

Where a cell has two biases (``bias_ih`` and ``bias_hh``, as torch), the bias initialisers set
``bias_ih`` of the block and zero ``bias_hh`` of the block, so their sum is the value asked for.

The gains and shifts of a ``layer_norm`` cell (``ln_*_weight``, ``ln_*_bias``) start at 1 and 0,
as ``torch.nn.LayerNorm``'s; ``torch_default`` sets them so and ``uniform`` leaves them alone.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import Parameter

from carousel.cells.spec import CellSpec


@dataclass
class ParameterGroup:
    """The parameters of one direction of one layer.

    Attributes:
        spec: the cell.
        hidden_size: ``H``.
        proj_size: projection width, 0 for none.
        layer: layer index, from 0.
        direction: 0 forward, 1 reverse.
        params: parameters by name without the layer suffix (``weight_ih``, ``weight_hh``,
            ``bias_ih``, ``bias_hh`` or ``bias``, ``weight_peephole``, ``weight_hr``), in
            registration order.
    """

    spec: CellSpec
    hidden_size: int
    proj_size: int
    layer: int
    direction: int
    params: dict[str, Parameter]

    def rows(self, gate: str) -> slice:
        """Row range of ``gate`` in the packed weights and biases; ``ValueError`` if absent."""
        slices = self.spec.gate_slices(self.hidden_size)
        if gate not in slices:
            raise ValueError(
                f"gate {gate!r} does not exist in variant {self.spec.variant!r} "
                f"(gates {self.spec.gates})"
            )
        return slices[gate]

    def set_gate_bias(self, gate: str, value: Tensor | float) -> None:
        """Make the effective bias of ``gate``'s block equal ``value`` (see module docstring)."""
        rows = self.rows(gate)
        if "bias" in self.params:
            self.params["bias"][rows] = value
        elif "bias_ih" in self.params:
            self.params["bias_ih"][rows] = value
            self.params["bias_hh"][rows] = 0.0
        else:
            raise ValueError("this layer has no biases (bias=False); a bias initialiser needs them")


Initializer = Callable[[ParameterGroup], None]


def _real(function: str, name: str, value, *, above: float | None = None) -> float:
    """``value`` as a float if it is a finite real number (above ``above``, if given); else a
    ``TypeError``/``ValueError`` naming ``function``'s argument ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{function}: {name} must be a real number; got {type(value).__name__} {value!r}"
        )
    value = float(value)
    if not math.isfinite(value) or (above is not None and not value > above):
        condition = "finite" if above is None else f"finite and > {above:g}"
        raise ValueError(f"{function}: {name} must be {condition}; got {value!r}")
    return value


def _is_norm(name: str) -> bool:
    """Whether parameter ``name`` is a layer normalisation's gain or shift."""
    return name.startswith("ln_")


def torch_default(group: ParameterGroup) -> None:
    r"""Every parameter :math:`U(-1/\sqrt{H}, 1/\sqrt{H})`, exactly as ``torch.nn.LSTM/GRU/RNN``;
    layer normalisation gains 1 and shifts 0 (no random numbers drawn for them)."""
    bound = 1.0 / math.sqrt(group.hidden_size) if group.hidden_size > 0 else 0.0
    with torch.no_grad():
        for name, param in group.params.items():
            if _is_norm(name):
                param.fill_(1.0 if name.endswith("_weight") else 0.0)
            else:
                param.uniform_(-bound, bound)


def uniform(bound: float) -> Initializer:
    """Every weight and bias uniform in ``[-bound, bound]`` (the 1997 paper uses 0.2 and 0.1);
    layer normalisation gains and shifts keep their values.

    Raises:
        TypeError, ValueError: ``bound`` is not a finite number > 0.
    """
    bound = _real("uniform", "bound", bound, above=0)

    def init(group: ParameterGroup) -> None:
        with torch.no_grad():
            for name, param in group.params.items():
                if not _is_norm(name):
                    param.uniform_(-bound, bound)

    init.__name__ = f"uniform({bound})"
    return init


def gate_bias(gate: str, values: float | Sequence[float]) -> Initializer:
    """Set the bias of one gate block: a scalar, or one value per unit of the block.

    Example: ``gate_bias("o", [-1, -2, -3, -4])`` gives four memory blocks the 1997 paper's
    staggered output-gate biases.

    Raises:
        TypeError, ValueError: ``gate`` is not a string, or ``values`` is not a finite number or
            a flat sequence of them (whether the gate exists and the count fits is checked when
            the initialiser is applied).
    """
    if not isinstance(gate, str):
        raise TypeError(f"gate_bias: gate must be a gate name such as 'f'; got {gate!r}")
    if isinstance(values, Tensor):
        values = values.tolist()
    if isinstance(values, (list, tuple)):
        values = [_real("gate_bias", f"values[{k}]", v) for k, v in enumerate(values)]
    else:
        values = _real("gate_bias", "values", values)

    def init(group: ParameterGroup) -> None:
        rows = group.rows(gate)
        width = rows.stop - rows.start
        target = next(iter(group.params.values()))
        value = torch.as_tensor(values, dtype=target.dtype, device=target.device)
        if value.dim() > 1 or (value.dim() == 1 and value.numel() != width):
            raise ValueError(
                f"values for gate {gate!r} must be a scalar or {width} numbers; got {list(value.shape)}"
            )
        with torch.no_grad():
            group.set_gate_bias(gate, value)

    init.__name__ = f"gate_bias({gate!r}, {values!r})"
    return init


def forget_bias(value: float = 1.0) -> Initializer:
    """Forget-gate bias :math:`b_f = value` (positive values make cells remember at the start).

    Raises:
        TypeError, ValueError: ``value`` is not a finite number.
    """
    init = gate_bias("f", _real("forget_bias", "value", value))
    init.__name__ = f"forget_bias({value})"
    return init


def chrono(t_max: float) -> Initializer:
    r"""Chrono initialisation (Tallec & Ollivier 2018): :math:`b_f \sim \log U[1, T_{max}-1]`, :math:`b_i = -b_f`.

    A cell with forget bias :math:`b_f` keeps a fraction :math:`\sigma(b_f)` of its content per step,
    so its characteristic forgetting time is about :math:`e^{b_f}` steps: spread over
    :math:`[1, T_{max}]`, the cells cover every time scale up to the longest expected dependency.

    Raises:
        TypeError, ValueError: ``t_max`` is not a finite number > 2 (the range is
            :math:`[1, T_{max} - 1]`).
    """
    t_max = _real("chrono", "t_max", t_max, above=2)

    def init(group: ParameterGroup) -> None:
        rows = group.rows("f")
        target = next(iter(group.params.values()))
        forget = torch.log(
            torch.empty(rows.stop - rows.start, dtype=target.dtype, device=target.device).uniform_(
                1, t_max - 1
            )
        )
        with torch.no_grad():
            group.set_gate_bias("f", forget)
            if group.spec.has_input_gate:
                group.set_gate_bias("i", -forget)

    init.__name__ = f"chrono({t_max})"
    return init


def orthogonal_recurrent(gain: float = 1.0) -> Initializer:
    """Each gate block of ``weight_hh`` (its columns reading :math:`h_{t-1}`) a (semi-)orthogonal matrix.

    Raises:
        TypeError, ValueError: ``gain`` is not a finite number.
    """
    gain = _real("orthogonal_recurrent", "gain", gain)

    def init(group: ParameterGroup) -> None:
        weight = group.params["weight_hh"]
        width = group.spec.output_size(group.hidden_size, group.proj_size)
        with torch.no_grad():
            for gate in group.spec.gates:
                rows = group.rows(gate)
                block = torch.empty(rows.stop - rows.start, width, dtype=weight.dtype)
                weight[rows, :width] = torch.nn.init.orthogonal_(block, gain=gain).to(weight.device)

    init.__name__ = f"orthogonal_recurrent({gain})"
    return init
