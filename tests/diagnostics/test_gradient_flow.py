"""gradient_flow against the layer's own gradients with respect to a restarted state, and the
constant error carousel against an Elman network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import carousel
from carousel.diagnostics import GradientFlow, cec_comparison, gradient_flow, unroll

STEPS, BATCH, HIDDEN = 12, 3, 5


def _norm(gradient):
    return float(torch.linalg.vector_norm(gradient, dim=-1).mean())


def _restarted_gradients(layer, x, states, lag):
    """dL/d(state) at T - lag with every part of the state held independent: the layer itself,
    restarted at that step from the recorded state (loss: sum of the last output)."""
    start = STEPS - lag
    state = tuple(s.detach()[None].requires_grad_() for s in states[start])
    output, _ = layer(x[start:], state[0] if len(state) == 1 else state)
    output[-1].sum().backward()
    return [s.grad[0] for s in state]


@pytest.mark.parametrize("variant", ["vanilla", "peephole", "gru", "elman"])
def test_norms_match_the_layer_restarted_at_each_lag(variant):
    layer = carousel.nn.Recurrent(2, HIDDEN, variant=variant, dtype=torch.float64).eval()
    x = torch.randn(STEPS, BATCH, 2, dtype=torch.float64)
    flow = gradient_flow(layer, x)
    np.testing.assert_array_equal(flow.lags, np.arange(STEPS + 1))
    assert flow.hidden[0] == pytest.approx(math.sqrt(HIDDEN))  # dL/dh_T = 1 for every unit
    states = unroll(layer, x).states[0]
    for lag in (1, 5, STEPS):
        gradients = _restarted_gradients(layer, x, states, lag)
        assert flow.hidden[lag] == pytest.approx(_norm(gradients[0]), rel=1e-10)
        if variant in ("gru", "elman"):
            assert flow.cell is None
            continue
        # The total derivative adds the path through h at the same step (ECE 417 lecture:
        # delta_c[t] = delta_h[t] dh[t]/dc[t] + delta_c[t+1] f[t+1]); the restart gives the second
        # term, one local vector-Jacobian product the first.
        hidden, cell = states[STEPS - lag][:2]
        (through_hidden,) = torch.autograd.grad(
            hidden, cell, grad_outputs=gradients[0], allow_unused=True
        )
        total = gradients[1] + (0 if through_hidden is None else through_hidden)
        assert flow.cell[lag] == pytest.approx(_norm(total), rel=1e-10)


def test_stacked_bidirectional_groups_and_custom_loss():
    layer = carousel.LSTM(2, 4, num_layers=2, bidirectional=True, batch_first=True)
    layer = layer.double().eval()
    x = torch.randn(BATCH, STEPS, 2, dtype=torch.float64)
    target = torch.randn(BATCH, 8, dtype=torch.float64)

    def loss(output):  # batch_first output: the last step is output[:, -1]
        return ((output[:, -1] - target) ** 2).sum()

    hx = tuple(torch.zeros(4, BATCH, 4, dtype=torch.float64, requires_grad=True) for _ in "hc")
    loss(layer(x, hx)[0]).backward()
    for layer_index in (0, 1):
        for direction in (0, 1):
            flow = gradient_flow(layer, x, loss, layer_index=layer_index, direction=direction)
            group = 2 * layer_index + direction
            for curve, initial in zip((flow.hidden, flow.cell), hx, strict=True):
                expected = torch.linalg.vector_norm(initial.grad[group], dim=-1).mean()
                assert curve[-1] == pytest.approx(float(expected), rel=1e-10)


def test_bad_loss_and_indices_are_rejected():
    layer = carousel.LSTM(2, 4)
    x = torch.randn(5, 2, 2)
    with pytest.raises(ValueError, match="scalar"):
        gradient_flow(layer, x, lambda output: output[-1])
    with pytest.raises(ValueError, match="computed from the layer's output"):
        gradient_flow(layer, x, lambda output: torch.tensor(1.0))
    with pytest.raises(ValueError, match="layer_index"):
        gradient_flow(layer, x, layer_index=1)
    with pytest.raises(ValueError, match="direction"):
        gradient_flow(layer, x, direction=1)


def test_relative_and_first_lag_below():
    flow = GradientFlow(np.arange(4), np.array([2.0, 1.0, 1e-3, 1e-12]), None)
    np.testing.assert_allclose(flow.relative().hidden, [1.0, 0.5, 5e-4, 5e-13])
    assert flow.first_lag_below(1e-2) == 2
    assert flow.first_lag_below(1e-20) is None
    with pytest.raises(ValueError, match="no cell state"):
        flow.first_lag_below(0.5, "cell")


def test_constant_error_carousel_is_exact_over_1000_steps_and_elman_vanishes_within_100():
    flows = cec_comparison(steps=1000)
    cell = flows["cec"].cell
    assert cell.shape == (1001,)
    assert cell[0] > 0
    np.testing.assert_array_equal(cell, np.full_like(cell, cell[0]))  # bit for bit
    lag = flows["elman"].first_lag_below(1e-10)
    assert lag is not None and lag <= 100
    assert flows["elman"].relative().hidden[100] < 1e-10
