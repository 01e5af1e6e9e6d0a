"""The torch-native backend: PyTorch's own fused RNN operators, for the cells whose math they implement.

``torch.nn.LSTM``, ``GRU`` and ``RNN`` call ``torch._VF.lstm`` / ``gru`` / ``rnn_tanh`` /
``rnn_relu`` with their flat weight list; this backend makes the same call with the same
arguments, so for the stock cells it computes exactly what torch computes (oneDNN on CPU, cuDNN on
GPU). It runs a whole stack (all layers, both directions, inter-layer dropout) in one call.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from carousel.cells import CellSpec, make_spec
from carousel.kernels.registry import Backend, Workload, register

_STOCK = {
    ("lstm",): make_spec("vanilla"),
    ("gru",): make_spec("gru"),
    ("elman", "tanh"): make_spec("elman", nonlinearity="tanh"),
    ("elman", "relu"): make_spec("elman", nonlinearity="relu"),
}


def _stock_key(spec: CellSpec) -> tuple[str, ...]:
    return (spec.family, spec.candidate_activation) if spec.family == "elman" else (spec.family,)


@lru_cache(maxsize=256)
def unsupported(spec: CellSpec, proj_size: int) -> str | None:
    """``None`` if torch's operators compute this cell exactly, else the reason they do not."""
    stock = _STOCK.get(_stock_key(spec))
    if stock is None or spec.replace(variant=stock.variant) != stock:
        return f"torch implements only the stock LSTM/GRU/RNN cells, not {spec.describe()}"
    return None


def unsupported_workload(work: Workload) -> str | None:
    """``None`` if torch's operators can run ``work`` (a :class:`carousel.kernels.Workload`)."""
    if work.has_lengths and work.context is not None:
        return (
            "variable lengths go through pack_padded_sequence, which reads the lengths' values, "
            f"which it cannot while {work.context}"
        )
    return unsupported(work.spec, work.proj_size)


def _operator(spec: CellSpec):
    if spec.family == "lstm":
        return torch._VF.lstm
    if spec.family == "gru":
        return torch._VF.gru
    return torch._VF.rnn_tanh if spec.candidate_activation == "tanh" else torch._VF.rnn_relu


def run_stack(
    spec: CellSpec,
    x: Tensor,
    hx: tuple[Tensor, ...],
    flat_weights: list[Tensor],
    lengths: Tensor | None,
    *,
    has_biases: bool,
    num_layers: int,
    dropout: float,
    training: bool,
    bidirectional: bool,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Run the stack with torch's fused operator.

    Args:
        x: ``(T, B, I)`` time-major padded input.
        hx: initial states, each ``(L * D, B, size)``; ``(h,)`` or ``(h, c)``.
        flat_weights: parameters in ``torch.nn``'s order.
        lengths: ``(B,)`` int64 CPU lengths or ``None``.

    Returns:
        ``(output (T, B, D * H_out), final states)`` in the input's batch order.
    """
    operator = _operator(spec)
    state = hx if spec.family == "lstm" else hx[0]
    if lengths is None:
        result = operator(
            x, state, flat_weights, has_biases, num_layers, dropout, training, bidirectional, False
        )
        output, final = result[0], result[1:]
        return output, tuple(final)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    order = packed.sorted_indices
    if spec.family == "lstm":
        state = tuple(s.index_select(1, order) for s in state)
    else:
        state = state.index_select(1, order)
    result = operator(
        packed.data,
        packed.batch_sizes,
        state,
        flat_weights,
        has_biases,
        num_layers,
        dropout,
        training,
        bidirectional,
    )
    output, _ = pad_packed_sequence(
        PackedSequence(
            result[0], packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices
        ),
        total_length=x.shape[0],
    )
    final = tuple(s.index_select(1, packed.unsorted_indices) for s in result[1:])
    return output, final


def cost(work: Workload) -> float:
    """Expected time: the registry's unit, steps x layers x directions (the numba backend's cost
    model says where its kernels beat this one)."""
    return float(work.steps * work.num_layers * work.num_directions)


register(
    Backend(
        name="torch-native",
        description="torch's fused RNN operators (oneDNN / cuDNN); stock LSTM, GRU, RNN cells",
        unsupported=unsupported_workload,
        cost=cost,
        run_stack=run_stack,
        length_generic=True,
    )
)
