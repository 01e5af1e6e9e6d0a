"""Step-wise cells, drop-in replacements for ``torch.nn.LSTMCell``, ``GRUCell`` and ``RNNCell``.

A cell computes one step; the user drives the loop. Parameter names are torch's (``weight_ih``,
``weight_hh``, ``bias_ih``, ``bias_hh``) plus the variant's extras (``weight_peephole``), and the
math is the same step function the reference backend loops over (:data:`carousel.cells.STEPS`).

Shapes: input ``(N, H_in)`` or ``(H_in,)``; each state tensor ``(N, size)`` or ``(size,)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from carousel import kernels
from carousel.cells import DEFAULT_INIT, STEPS, CellSpec, CellWeights, make_spec
from carousel.cells.init import Initializer, ParameterGroup, torch_default
from carousel.nn import checks
from carousel.nn.recurrent import _as_initializers, _to


class RecurrentCell(nn.Module):
    """One step of any registered cell.

    Args:
        input_size, hidden_size, bias, device, dtype: as ``torch.nn.LSTMCell``.
        variant: a name from :data:`carousel.cells.VARIANTS` or a :class:`CellSpec`.
        init: named initialiser(s), applied after torch's default.
        **cell_options: options of the variant.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        variant: str | CellSpec = "vanilla",
        init: Initializer | Sequence[Initializer] | None = None,
        **cell_options,
    ) -> None:
        super().__init__()
        checks.check_cell_arguments(input_size=input_size, hidden_size=hidden_size)
        bias = bool(bias)
        spec = make_spec(variant, **cell_options)
        spec.check_sizes(hidden_size)
        self.spec = spec
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.init = _as_initializers(init)
        factory = {"device": device, "dtype": dtype}
        self._names = list(spec.parameter_shapes(input_size, hidden_size, 0, bias))
        for name, shape in spec.parameter_shapes(input_size, hidden_size, 0, bias).items():
            setattr(self, name, nn.Parameter(torch.empty(shape, **factory)))
        self.register_buffer(
            "recurrent_mask", _to(spec.recurrent_mask(hidden_size), factory), persistent=False
        )
        self.register_buffer(
            "bias_mask",
            _to(spec.bias_mask(hidden_size) if bias else None, factory),
            persistent=False,
        )
        self.reset_parameters()

    def parameter_group(self) -> ParameterGroup:
        """The cell's parameters as the initialisers see them."""
        params = {name: getattr(self, name) for name in self._names}
        return ParameterGroup(self.spec, self.hidden_size, 0, 0, 0, params)

    def reset_parameters(self) -> None:
        """torch's default initialisation, then ``init`` in order."""
        group = self.parameter_group()
        torch_default(group)
        if self.spec.family in DEFAULT_INIT:
            DEFAULT_INIT[self.spec.family](group)
        for initializer in self.init:
            initializer(group)

    def forward(self, input: Tensor, hx=None):
        """One step: returns the new state, a tensor ``h'`` (GRU, RNN) or a tuple ``(h', c'[, gates'])``.

        Under autocast the step runs in the autocast dtype where ``torch.nn``'s cell does (on
        accelerators; on the CPU torch's cells are not cast, and neither are these).
        """
        param = self.weight_ih
        values = kernels.graph_context(input) is None if isinstance(input, Tensor) else True
        name = type(self).__name__
        checks.check_input_tensor(
            input, "input", param, self.input_size, layer=name, cell=True, values=values
        )
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        sizes = self.spec.state_sizes(self.hidden_size)
        if hx is None:
            state = tuple(x.new_zeros(x.shape[0], size) for size in sizes)
        else:
            state = checks.check_state(
                hx, self.spec.state_names, sizes, 0, x.shape[0], batched, x, name, values=values
            )
        params = self.parameter_group().params
        weights = CellWeights.from_parameters(
            self.spec, params, self.recurrent_mask, self.bias_mask
        )
        gates_x = x @ weights.weight_ih.T
        if weights.bias is not None:
            gates_x = gates_x + weights.bias
        _, new_state = STEPS[self.spec.family](self.spec, gates_x, state, weights)
        if not batched:
            new_state = tuple(s.squeeze(0) for s in new_state)
        return new_state[0] if len(new_state) == 1 else new_state

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            text += ", bias=False"
        return text + f", cell={self.spec.describe()}"


class LSTMCell(RecurrentCell):
    """Drop-in ``torch.nn.LSTMCell`` for any LSTM variant (keyword-only ``variant`` and cell options)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        variant: str | CellSpec = "vanilla",
        init=None,
        **cell_options,
    ) -> None:
        spec = make_spec(variant)
        if spec.family != "lstm":
            raise ValueError(
                f"variant must be an LSTM variant for carousel.LSTMCell; {spec.variant!r} is a "
                f"{spec.family} cell"
            )
        super().__init__(
            input_size, hidden_size, bias, device, dtype, variant=spec, init=init, **cell_options
        )


class GRUCell(RecurrentCell):
    """Drop-in ``torch.nn.GRUCell``; keyword-only ``gate_activation``, ``candidate_activation``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        init=None,
        **cell_options,
    ) -> None:
        super().__init__(
            input_size, hidden_size, bias, device, dtype, variant="gru", init=init, **cell_options
        )


class RNNCell(RecurrentCell):
    """Drop-in ``torch.nn.RNNCell`` (Elman); ``nonlinearity`` ``"tanh"`` or ``"relu"`` comes fourth, as in torch."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device=None,
        dtype=None,
        *,
        init=None,
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            bias,
            device,
            dtype,
            variant="elman",
            init=init,
            nonlinearity=nonlinearity,
        )
        self.nonlinearity = nonlinearity
