"""Step-wise cells, drop-in replacements for ``torch.nn.LSTMCell``, ``GRUCell`` and ``RNNCell``.

A cell computes one step; the user drives the loop. Parameter names are torch's (``weight_ih``,
``weight_hh``, ``bias_ih``, ``bias_hh``) plus the variant's extras (``weight_peephole``), and the
math is the same step function the reference backend loops over (:meth:`CellSpec.step`).

Shapes: input ``(N, H_in)`` or ``(H_in,)``; each state tensor ``(N, size)`` or ``(size,)``.

Regularisers (:mod:`carousel.cells.regularizers`): zoneout draws its masks at every step, as
the method does. Recurrent dropout, candidate dropout and the weight drop keep one mask for a
whole sequence, which a cell cannot see: draw them with :meth:`RecurrentCell.draw_masks` at the
start of each sequence and pass them to every step::

    cell = carousel.LSTMCell(8, 32, recurrent_dropout=0.25)
    masks = cell.draw_masks(batch)             # once per sequence (all None in eval mode)
    for x_t in x:
        h, c = cell(x_t, (h, c), masks=masks)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from torch import Tensor, nn

from carousel import kernels
from carousel.cells import CellSpec, make_spec
from carousel.cells.init import Initializer, ParameterGroup
from carousel.cells.regularizers import Masks, Regularizers, zoneout
from carousel.errors import InputError
from carousel.nn import checks
from carousel.nn.parameters import (
    as_initializers,
    cell_weights,
    initialize,
    register_masks,
    register_parameters,
)


class CellMasks(NamedTuple):
    """The per-sequence masks of a step-wise cell (:meth:`RecurrentCell.draw_masks`), ``None``
    where unused: ``recurrent`` ``(N, H_out)``, ``candidate`` ``(N, H)``, ``weight_hh`` (the
    weight drop's, ``weight_hh``'s shape)."""

    recurrent: Tensor | None = None
    candidate: Tensor | None = None
    weight_hh: Tensor | None = None


class RecurrentCell(nn.Module):
    """One step of any registered cell.

    Args:
        input_size, hidden_size, bias, device, dtype: as ``torch.nn.LSTMCell``.
        variant: a name from :data:`carousel.cells.VARIANTS` or a :class:`CellSpec`.
        init: named initialiser(s), applied after torch's default.
        recurrent_dropout, candidate_dropout, zoneout, weight_drop: the regularisers of
            :class:`carousel.nn.Recurrent` (see the module docstring for their masks).
        **cell_options: options of the variant (``layer_norm``, ...).
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
        recurrent_dropout: float = 0.0,
        candidate_dropout: float = 0.0,
        zoneout: float | tuple[float, float] = 0.0,
        weight_drop: float = 0.0,
        **cell_options,
    ) -> None:
        super().__init__()
        checks.check_cell_arguments(input_size=input_size, hidden_size=hidden_size)
        bias = bool(bias)
        spec = make_spec(variant, **cell_options)
        spec.check_sizes(hidden_size)
        self.regularizers = Regularizers.create(
            spec, recurrent_dropout, candidate_dropout, zoneout, weight_drop
        )
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

    def draw_masks(self, batch: int) -> CellMasks:
        """The masks of one sequence of ``batch`` rows for recurrent dropout, candidate dropout
        and the weight drop, from torch's generator (``None`` where unused or in eval mode)."""
        regularizers, like = self.regularizers, self.weight_hh
        masks = regularizers.sequence_masks(
            self.spec, batch, self.hidden_size, 0, like, self.training
        )
        weight = regularizers.weight_mask(like, self.training)
        return CellMasks(masks.recurrent, masks.candidate, weight)

    def forward(self, input: Tensor, hx=None, masks: CellMasks | None = None):
        """One step: returns the new state, a tensor ``h'`` (GRU, RNN) or a tuple ``(h', c'[, gates'])``.

        ``masks``: this sequence's :meth:`draw_masks`, needed in training when the cell has
        recurrent dropout, candidate dropout or a weight drop. Zoneout draws its masks here.

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
        masks = self._check_masks(masks, x.shape[0])
        if masks.weight_hh is not None:
            weights = weights._replace(weight_hh=weights.weight_hh * masks.weight_hh)
        gates_x = self.spec.project_input(x, weights)
        step_masks = None
        if masks.recurrent is not None or masks.candidate is not None:
            step_masks = Masks(recurrent=masks.recurrent, candidate=masks.candidate)
        _, new_state = self.spec.step(gates_x, state, weights, step_masks)
        keep_cell, keep_hidden = self.regularizers.zoneout_masks(
            (x.shape[0],), self.hidden_size, self.hidden_size, x, self.training
        )
        if keep_cell is not None or keep_hidden is not None:
            new_state = zoneout(self.spec, state, new_state, keep_cell, keep_hidden)
        if not batched:
            new_state = tuple(s.squeeze(0) for s in new_state)
        return new_state[0] if len(new_state) == 1 else new_state

    def _check_masks(self, masks: CellMasks | None, batch: int) -> CellMasks:
        """``masks`` checked against the cell and the batch (``CellMasks()`` for ``None``)."""
        regularizers = self.regularizers
        needed = self.training and (
            regularizers.recurrent_dropout
            or regularizers.candidate_dropout
            or regularizers.weight_drop
        )
        if masks is None:
            if needed:
                raise InputError(
                    f"{type(self).__name__} with {regularizers.describe()} in training keeps one "
                    "mask per sequence: pass masks=cell.draw_masks(batch), drawn at the start of "
                    "each sequence; got masks=None"
                )
            return CellMasks()
        if not isinstance(masks, CellMasks):
            raise InputError(
                f"masks must be the CellMasks of draw_masks(batch); got {type(masks).__name__}"
            )
        expected = {
            "recurrent": (batch, self.hidden_size),
            "candidate": (batch, self.hidden_size),
            "weight_hh": tuple(self.weight_hh.shape),
        }
        for name, mask in zip(masks._fields, masks, strict=True):
            if mask is not None and tuple(mask.shape) != expected[name]:
                raise InputError(
                    f"masks.{name} must have shape {expected[name]} (draw_masks({batch})); "
                    f"got {list(mask.shape)}"
                )
        return masks

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            text += ", bias=False"
        text += f", cell={self.spec.describe()}"
        if self.regularizers.describe():
            text += ", " + self.regularizers.describe()
        return text


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
