r"""Run a recurrent layer step by step and keep everything it computes.

The diagnostics need what a fused layer never keeps: the state after every step (to take
:math:`\partial L / \partial h_t` and :math:`\partial L / \partial c_t` with autograd) and,
for the LSTM family, the gate activations of every step. :func:`unroll` runs any
:class:`carousel.nn.Recurrent` layer (every variant, stacked, bidirectional, projected) with the
cells' own step functions from :mod:`carousel.cells`, the same math the reference backend loops
over, and returns the output together with those per-step tensors, still in the autograd graph.

It analyses full-length batches (no ``lengths``) from a zero initial state, and applies no dropout
between layers, as a layer in ``eval()`` mode computes: no recurrent or candidate dropout, no
weight drop, and zoneout as its expectation (:mod:`carousel.cells.regularizers`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from carousel.cells import LSTMStepValues, lstm_step_values
from carousel.cells.regularizers import zoneout
from carousel.nn import Recurrent, checks


@dataclass
class Unrolled:
    """What :func:`unroll` returns.

    Groups are the (layer, direction) pairs in the layer's parameter order: group
    ``layer * num_directions + direction``. Steps are counted in processing order, so for a
    reverse direction step 1 reads the last time step of the input.

    Attributes:
        output: the layer's output, exactly as ``layer(input)[0]`` returns it,
            ``(L, N, D * H_out)`` (``(N, L, D * H_out)`` with ``batch_first``).
        states: ``states[group][k]`` is the state tuple after ``k`` steps, ``k = 0 .. L``
            (``k = 0`` is the zero initial state, a leaf that requires grad): ``(h,)`` for GRU and
            Elman cells, ``(h, c)`` or ``(h, c, gates)`` for the LSTM family, each ``(N, size)``.
        values: LSTM family only, else ``None``: ``values[group][k - 1]`` holds the gates, cell
            input, cell and output of step ``k`` (:class:`carousel.cells.LSTMStepValues`).
    """

    output: Tensor
    states: list[list[tuple[Tensor, ...]]]
    values: list[list[LSTMStepValues]] | None


def check_layer(layer) -> Recurrent:
    """Raise ``TypeError`` unless ``layer`` is a :class:`carousel.nn.Recurrent` (or subclass)."""
    if not isinstance(layer, Recurrent):
        raise TypeError(
            "layer must be a carousel recurrent layer (carousel.LSTM, GRU, RNN or "
            f"carousel.nn.Recurrent); got {type(layer).__name__}"
        )
    return layer


def check_group(layer: Recurrent, layer_index: int, direction: int) -> int:
    """The group index of (``layer_index``, ``direction``); negative layer indices count back."""
    for name, value in (("layer_index", layer_index), ("direction", direction)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int; got {type(value).__name__} {value!r}")
    if not -layer.num_layers <= layer_index < layer.num_layers:
        raise ValueError(
            f"layer_index must lie in [{-layer.num_layers}, {layer.num_layers - 1}] for a layer "
            f"with num_layers={layer.num_layers}; got {layer_index}"
        )
    if not 0 <= direction < layer.num_directions:
        raise ValueError(
            f"direction must lie in [0, {layer.num_directions - 1}] for a layer with "
            f"bidirectional={layer.bidirectional}; got {direction}"
        )
    return (layer_index % layer.num_layers) * layer.num_directions + direction


def unroll(layer: Recurrent, input: Tensor) -> Unrolled:
    """Run ``layer`` over ``input`` one step at a time, keeping every state (and LSTM gate).

    Args:
        layer: any :class:`carousel.nn.Recurrent` layer (``carousel.LSTM``, ``GRU``, ``RNN``).
        input: a batched tensor, ``(L, N, H_in)`` (``(N, L, H_in)`` with ``batch_first``), with the
            layer's dtype and device.

    Returns:
        :class:`Unrolled`; its ``output`` equals ``layer(input)[0]`` (in ``eval()`` mode).

    Raises:
        TypeError, ValueError: ``layer`` is not a carousel layer, or ``input`` has the wrong type,
            dtype, device, rank or feature size, is empty or holds NaN/inf.
    """
    check_layer(layer)
    param = next(layer.parameters())
    checks.check_input_tensor(input, "input", param, layer.input_size, ndims=(3,))
    x = input.transpose(0, 1) if layer.batch_first else input  # (L, N, H_in)
    spec = layer.spec
    batch = x.shape[1]
    sizes = spec.state_sizes(layer.hidden_size, layer.proj_size)
    track = torch.is_grad_enabled()

    states: list[list[tuple[Tensor, ...]]] = []
    values: list[list[LSTMStepValues]] | None = [] if spec.family == "lstm" else None
    layer_input = x
    for layer_index in range(layer.num_layers):
        outputs = []
        for direction in range(layer.num_directions):
            weights = layer.cell_weights(layer_index, direction)
            sequence = layer_input.flip(0) if direction else layer_input
            gates_x = spec.project_input(sequence, weights)  # (L, N, G)
            keep_cell, keep_hidden = layer.regularizers.zoneout_masks(
                (batch,), layer.hidden_size, spec.output_size(layer.hidden_size, layer.proj_size),
                x, training=False,
            )  # fmt: skip
            state = tuple(x.new_zeros(batch, size, requires_grad=track) for size in sizes)
            group_states, group_values, group_outputs = [state], [], []
            for gates_x_t in gates_x:
                previous = state
                if values is not None:
                    step = lstm_step_values(spec, gates_x_t, state, weights)
                    output, state = step.output, step.state
                    group_values.append(step)
                else:
                    output, state = spec.step(gates_x_t, state, weights)
                if keep_cell is not None or keep_hidden is not None:
                    state = zoneout(spec, previous, state, keep_cell, keep_hidden)
                    output = state[0]
                group_states.append(state)
                group_outputs.append(output)
            output = torch.stack(group_outputs)  # (L, N, H_out)
            outputs.append(output.flip(0) if direction else output)
            states.append(group_states)
            if values is not None:
                values.append(group_values)
        layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
    output = layer_input.transpose(0, 1) if layer.batch_first else layer_input
    return Unrolled(output=output, states=states, values=values)
