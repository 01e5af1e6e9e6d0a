"""Step-wise cells, drop-in replacements for ``torch.nn.LSTMCell``, ``GRUCell`` and ``RNNCell``.

A cell computes one step; the user drives the loop. Parameter names are torch's (``weight_ih``,
``weight_hh``, ``bias_ih``, ``bias_hh``) plus the variant's extras (``weight_peephole``), and the
math is the same step function the reference backend loops over (:meth:`CellSpec.step`).

Shapes: input ``(N, H_in)`` or ``(H_in,)``; each state tensor ``(N, size)`` or ``(size,)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from carousel import kernels
from carousel.cells import CellSpec, make_spec
from carousel.cells.init import Initializer, ParameterGroup
from carousel.nn import checks
from carousel.nn.parameters import (
    as_initializers,
    cell_weights,
    initialize,
    register_masks,
    register_parameters,
)


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
        self.init = as_initializers(init)
        factory = {"device": device, "dtype": dtype}
        self._names = register_parameters(self, spec, input_size, hidden_size, 0, bias, "", factory)
        register_masks(self, spec, hidden_size, 0, bias, factory)
        self.reset_parameters()

    def parameter_group(self) -> ParameterGroup:
        """The cell's parameters as the initialisers see them."""
        params = {name: getattr(self, name) for name in self._names}
        return ParameterGroup(self.spec, self.hidden_size, 0, 0, 0, params)

    def reset_parameters(self) -> None:
        """torch's default initialisation, then ``init`` in order."""
        initialize([self.parameter_group()], self.init)

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
        checks.check_dtype_and_device(input, "input", param)  # after the shapes, as torch's cells
        weights = cell_weights(self, self.parameter_group())
        gates_x = x @ weights.weight_ih.T
        if weights.bias is not None:
            gates_x = gates_x + weights.bias
        _, new_state = self.spec.step(gates_x, state, weights)
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
