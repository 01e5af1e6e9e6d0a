"""Hochreiter's error-flow factor: the recursion against the sum over paths and against autograd;
the one-unit cases; the ECE 417 lecture's memorizer (formula, autograd and explicit BPTT agree)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import carousel
from carousel.diagnostics import elman_net_inputs, error_flow, memorizer


def _path_sum(weight, slopes, time, lag, u, v):
    """The n^(q-1)-term sum over paths l_0 = u, ..., l_q = v of prod f'(net_lm(t-m)) w_{lm l(m-1)}."""
    units = weight.shape[0]
    total = 0.0
    for middle in itertools.product(range(units), repeat=lag - 1):
        path = (u, *middle, v)
        term = 1.0
        for m in range(1, lag + 1):
            term *= slopes[time - m, path[m]] * weight[path[m - 1], path[m]]
        total += term
    return total


def test_recursion_equals_the_sum_over_paths():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(3, 3))
    nets = rng.normal(size=(6, 3))
    factors = error_flow(weight, nets, "tanh")
    slopes = 1 - np.tanh(nets) ** 2
    assert factors.shape == (6, 3, 3)
    np.testing.assert_array_equal(factors[0], np.eye(3))
    for lag in range(1, 5):
        for u, v in itertools.product(range(3), repeat=2):
            expected = _path_sum(weight, slopes, 5, lag, u, v)
            assert factors[lag, v, u] == pytest.approx(expected, rel=1e-12, abs=1e-14)


def test_recursion_equals_autograd_through_an_elman_net():
    torch.manual_seed(1)
    weight = torch.randn(4, 4, dtype=torch.float64) * 0.8
    drive = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    h = torch.zeros(4, dtype=torch.float64)
    nets = []
    for t in range(8):
        net = drive[t] + weight @ h
        net.retain_grad()
        nets.append(net)
        h = torch.tanh(net)
    factors = error_flow(weight.numpy(), torch.stack(nets).detach().numpy(), "tanh", time=7)
    for u in range(4):  # d net_u(7) / d net_v(7 - q) = d theta_v(7 - q) / d theta_u(7)
        grads = torch.autograd.grad(nets[7][u], nets, retain_graph=True, allow_unused=True)
        for lag in range(8):
            np.testing.assert_allclose(factors[lag, :, u], grads[7 - lag].numpy(), rtol=1e-12)


def test_elman_net_inputs_reproduce_the_layer():
    layer = carousel.RNN(2, 5, dtype=torch.float64)
    x = torch.randn(7, 3, 2, dtype=torch.float64)
    nets = elman_net_inputs(layer, x)
    assert nets.shape == (3, 7, 5)
    np.testing.assert_allclose(np.tanh(nets), layer(x)[0].detach().transpose(0, 1).numpy())
    with pytest.raises(ValueError, match="Elman"):
        elman_net_inputs(carousel.LSTM(2, 5), torch.randn(7, 3, 2))


@pytest.mark.parametrize("weight", [0.5, 0.9, 1.1, 1.7])
def test_single_linear_unit_scales_by_w_to_the_q(weight):
    factors = error_flow([[weight]], np.zeros((50, 1)), "identity")[:, 0, 0]
    np.testing.assert_allclose(factors, weight ** np.arange(50), rtol=1e-12)


def test_constant_error_carousel_factor_is_exactly_one():
    factors = error_flow([[1.0]], np.random.default_rng(0).normal(size=(1000, 1)), "identity")
    np.testing.assert_array_equal(factors[:, 0, 0], np.ones(1000))


def test_error_flow_rejects_bad_arguments():
    with pytest.raises(ValueError, match="square"):
        error_flow(np.ones((2, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="net_inputs"):
        error_flow(np.ones((2, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="time"):
        error_flow(np.ones((2, 2)), np.zeros((4, 2)), time=4)
    with pytest.raises(ValueError, match="activation"):
        error_flow(np.ones((2, 2)), np.zeros((4, 2)), "softsign")


@pytest.mark.parametrize("u", [0.5, 1.0, 1.7])
def test_memorizer_formula_autograd_and_bptt_agree(u):
    result = memorizer(u, w=0.5, x0=1.0, m=10)
    assert result.outputs[-1] == pytest.approx(0.5 * u**10, rel=1e-12)
    assert result.analytic == pytest.approx(1.0 * (0.5 * u**10 - 1.0) * u**10, rel=1e-12)
    assert result.analytic != 0
    assert result.autograd == pytest.approx(result.analytic, rel=1e-12)
    assert result.bptt == pytest.approx(result.analytic, rel=1e-12)
    np.testing.assert_allclose(result.deltas, result.deltas[-1] * u ** np.arange(10, -1, -1))


def test_memorizer_gradient_vanishes_and_explodes_with_the_lag():
    small = [abs(memorizer(0.5, m=m).analytic) for m in (5, 10, 20)]
    large = [abs(memorizer(1.7, m=m).analytic) for m in (5, 10, 20)]
    assert small[0] > small[1] > small[2] and small[2] < 1e-6
    assert large[0] < large[1] < large[2] and large[2] > 1e8
