"""Step-wise cells against torch.nn cells, and against one step of the layers."""

from __future__ import annotations

import pytest
import torch

import carousel
from carousel.cells import VARIANTS
from tests.helpers import assert_same, forward_backward

PAIRS = {
    "lstm": (torch.nn.LSTMCell, carousel.LSTMCell, {}),
    "gru": (torch.nn.GRUCell, carousel.GRUCell, {}),
    "rnn-tanh": (torch.nn.RNNCell, carousel.RNNCell, {"nonlinearity": "tanh"}),
    "rnn-relu": (torch.nn.RNNCell, carousel.RNNCell, {"nonlinearity": "relu"}),
}


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("kind", PAIRS)
def test_cell_matches_torch(kind, bias, batched):
    torch_cls, ours_cls, extra = PAIRS[kind]
    torch.manual_seed(2)
    theirs = torch_cls(3, 5, bias=bias, dtype=torch.float64, **extra)
    torch.manual_seed(2)
    ours = ours_cls(3, 5, bias=bias, dtype=torch.float64, **extra)
    for (name, p), (our_name, q) in zip(
        theirs.named_parameters(), ours.named_parameters(), strict=True
    ):
        assert name == our_name and torch.equal(p, q)
    lead = (4,) if batched else ()
    x = torch.randn(*lead, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(*lead, 5, dtype=torch.float64, requires_grad=True)
    hx = (
        (h, torch.randn(*lead, 5, dtype=torch.float64, requires_grad=True)) if kind == "lstm" else h
    )
    upstream = [
        torch.randn(*lead, 5, dtype=torch.float64) for _ in range(2 if kind == "lstm" else 1)
    ]
    expected = forward_backward(theirs, (x, hx), upstream)
    actual = forward_backward(ours, (x, hx), upstream)
    assert_same(actual[0], expected[0], torch.float64)
    assert_same(actual[1], expected[1], torch.float64)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cell_equals_one_step_of_the_layer(variant):
    torch.manual_seed(4)
    layer = carousel.nn.Recurrent(3, 4, variant=variant, backend="reference", dtype=torch.float64)
    cell = carousel.RecurrentCell(3, 4, variant=variant, dtype=torch.float64)
    for name, param in cell.named_parameters():
        param.data.copy_(getattr(layer, f"{name}_l0"))
    x = torch.randn(2, 3, dtype=torch.float64)
    sizes = layer.spec.state_sizes(4)
    state = tuple(torch.rand(2, s, dtype=torch.float64) for s in sizes)
    _, layer_state = layer(
        x.unsqueeze(0),
        tuple(s.unsqueeze(0) for s in state) if len(sizes) > 1 else state[0].unsqueeze(0),
    )
    cell_state = cell(x, state if len(sizes) > 1 else state[0])
    layer_state = layer_state if isinstance(layer_state, tuple) else (layer_state,)
    cell_state = cell_state if isinstance(cell_state, tuple) else (cell_state,)
    assert_same([s.squeeze(0) for s in layer_state], list(cell_state), torch.float64)
