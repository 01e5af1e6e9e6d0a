"""Gate traces against the gate equations recomputed from the parameters; retention times."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import carousel
from carousel.diagnostics import gate_traces, retention_time


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_traces_follow_the_vanilla_lstm_equations():
    layer = carousel.LSTM(3, 4, dtype=torch.float64).eval()
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    traces = gate_traces(layer, x)
    output, (_, c_n) = layer(x)
    np.testing.assert_allclose(traces.hidden, output.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(traces.cell[-1], c_n[0].detach().numpy(), rtol=1e-12)
    w_ih, w_hh = layer.weight_ih_l0.detach().numpy(), layer.weight_hh_l0.detach().numpy()
    bias = (layer.bias_ih_l0 + layer.bias_hh_l0).detach().numpy()
    previous = np.zeros((2, 4))
    for t in range(6):
        net = x[t].numpy() @ w_ih.T + previous @ w_hh.T + bias  # (B, 16), gates (i, f, g, o)
        np.testing.assert_allclose(traces.input_gate[t], _sigmoid(net[:, 0:4]), rtol=1e-12)
        np.testing.assert_allclose(traces.forget_gate[t], _sigmoid(net[:, 4:8]), rtol=1e-12)
        np.testing.assert_allclose(traces.candidate[t], np.tanh(net[:, 8:12]), rtol=1e-12)
        np.testing.assert_allclose(traces.output_gate[t], _sigmoid(net[:, 12:16]), rtol=1e-12)
        previous = traces.hidden[t]


def test_variants_without_gates_and_with_blocks():
    x = torch.randn(5, 2, 3)
    original = gate_traces(carousel.LSTM(3, 4, variant="1997", block_size=2), x)
    assert original.forget_gate is None
    assert original.input_gate.shape == (5, 2, 2) and original.cell.shape == (5, 2, 4)
    assert original.gate_units == 2
    np.testing.assert_array_equal(retention_time(original), [np.inf, np.inf])
    coupled = gate_traces(carousel.LSTM(3, 4, variant="cifg"), x)
    np.testing.assert_allclose(coupled.forget_gate, 1 - coupled.input_gate)


@pytest.mark.parametrize("forget_bias", [0.0, 2.0, 5.0])
def test_retention_of_a_constant_forget_gate(forget_bias):
    layer = carousel.LSTM(
        1, 3, init=[carousel.init.uniform(1e-9), carousel.init.forget_bias(forget_bias)]
    )
    with torch.no_grad():
        for param in layer.parameters():
            if param.dim() == 2:
                param.zero_()
    traces = gate_traces(layer, torch.randn(20, 4, 1))
    kept = 1 / (1 + math.exp(-forget_bias))
    np.testing.assert_allclose(traces.forget_gate, kept, rtol=1e-6)
    np.testing.assert_allclose(retention_time(traces), math.log(0.5) / math.log(kept), rtol=1e-5)
    np.testing.assert_allclose(
        retention_time(traces, fraction=0.1), math.log(0.1) / math.log(kept), rtol=1e-5
    )


def test_retention_is_zero_once_the_gate_closes_completely():
    from carousel.diagnostics.calculator import CALCULATOR_INPUT, corrected_lstm

    traces = gate_traces(corrected_lstm(), torch.tensor(CALCULATOR_INPUT).view(-1, 1, 1))
    np.testing.assert_array_equal(retention_time(traces), [0.0, 0.0])


def test_gate_traces_reject_other_families_and_bad_fractions():
    with pytest.raises(ValueError, match="LSTM-family"):
        gate_traces(carousel.GRU(3, 4), torch.randn(5, 2, 3))
    traces = gate_traces(carousel.LSTM(3, 4), torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match="fraction"):
        retention_time(traces, fraction=1.0)
    with pytest.raises(TypeError, match="GateTraces"):
        retention_time(traces.forget_gate)
