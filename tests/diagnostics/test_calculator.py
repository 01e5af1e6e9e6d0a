"""The ECE 417 lecture's pocket calculator: every network's numbers, checked by hand values,
autograd and the calculator's definition on random inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from carousel.diagnostics import calculator as worked
from carousel.diagnostics import calculator_training, gate_traces

TARGET = [0, 0, 0, 4, 0, 0, 0, 3]


def _in_domain_inputs(steps, batch, seed=0):
    rng = np.random.default_rng(seed)
    values = rng.integers(1, 6, size=(steps, batch)).astype(np.float64)
    values += rng.uniform(0, 1, size=(steps, batch)).round(2)  # any value >= 1
    return np.where(rng.uniform(size=(steps, batch)) < 0.3, 0.0, values)


def test_the_definition_on_the_lecture_example():
    printed, tally = worked.calculator(worked.CALCULATOR_INPUT)
    np.testing.assert_array_equal(printed, TARGET)
    np.testing.assert_array_equal(tally, [1, 3, 4, 0, 1, 2, 3, 0])
    with pytest.raises(ValueError, match="non-negative"):
        worked.calculator([1, -1, 0])


def test_linear_rnn_with_u_1_by_hand():
    result = worked.linear_rnn(1.0)
    np.testing.assert_array_equal(result.table["h"], [1, 3, 4, 4, 5, 6, 7, 7])
    np.testing.assert_array_equal(result.table["delta"], [4] * 8)  # eps = 0 at t = 3, 4 at t = 7
    assert result.error == 8.0  # (7 - 3)^2 / 2
    assert result.gradients["u"] == 120.0  # 4 * (0 + 1 + 3 + 4 + 4 + 5 + 6 + 7)
    assert result.autograd["u"] == 120.0


@pytest.mark.parametrize("u", [0.5, 1.0, 1.7])
def test_linear_rnn_backprop_table_agrees_with_autograd(u):
    result = worked.linear_rnn(u)
    h, x = result.table["h"], worked.CALCULATOR_INPUT
    np.testing.assert_allclose(h[1:], x[1:] + u * h[:-1])
    assert result.gradients["u"] == pytest.approx(result.autograd["u"], rel=1e-12)
    assert result.table["delta"][0] == pytest.approx(
        sum(result.table["eps"][t] * u**t for t in range(8)), rel=1e-12
    )


def test_linear_rnn_gradient_vanishes_and_explodes():
    deltas = {u: np.abs(worked.linear_rnn(u).table["delta"]) for u in (0.5, 1.7)}
    assert deltas[0.5][0] < deltas[0.5][3]  # shrinks going back in time
    assert deltas[1.7][0] > 40 * deltas[1.7][-1]  # grows going back in time


def test_forget_gate_rnn_what_went_wrong():
    result = worked.forget_gate_rnn()
    np.testing.assert_array_equal(result.table["f"], [1, 1, 1, 0, 1, 1, 1, 0])
    np.testing.assert_array_equal(result.table["h"], [1, 3, 4, 0, 1, 2, 3, 0])
    assert result.error == 12.5  # it prints 0 where 4 and 3 are wanted
    assert result.gradients == {"w_f": 0.0, "u_f": 0.0, "b_f": 0.0}
    assert result.autograd == result.gradients


def test_forget_gate_rnn_backprop_agrees_with_autograd_inside_the_gate_range():
    x = [0.3, 0.6, 0.2, 0.0, 0.5, 0.4]
    result = worked.forget_gate_rnn(x, [0, 0, 0, 2, 0, 1], w_f=0.5, u_f=0.3, b_f=0.2)
    assert all(0 < f < 1 for f in result.table["f"])
    for name in ("w_f", "u_f", "b_f"):
        assert result.gradients[name] != 0
        assert result.gradients[name] == pytest.approx(result.autograd[name], rel=1e-12)


def test_lecture_lstm_prints_the_targets_but_keeps_the_tally_one_step():
    result = worked.lstm_walkthrough(worked.seed_lstm())
    np.testing.assert_array_equal(result.table["h"], TARGET)
    np.testing.assert_array_equal(result.table["c"], [1, 3, 4, 4, 1, 2, 3, 3])
    np.testing.assert_array_equal(result.table["f"], [1, 1, 1, 1, 0, 1, 1, 1])
    np.testing.assert_array_equal(result.table["o"], [0, 0, 0, 1, 0, 0, 0, 1])
    assert result.error == 0.0


def test_lecture_lstm_fails_on_inputs_below_one():
    result = worked.lstm_walkthrough(worked.seed_lstm(), [0.5, 0.5, 0, 1, 0])
    np.testing.assert_allclose(result.table["h"], [0.25, 0.4375, 0.4921875, 0, 1.24993896484375])
    assert result.error > 0.25


def test_on_random_inputs_both_designs_print_the_calculator_and_only_the_corrected_keeps_its_tally():
    x = _in_domain_inputs(30, 64)
    printed, tally = worked.calculator(x)
    inputs = torch.tensor(x).unsqueeze(-1)
    lecture = gate_traces(worked.seed_lstm(), inputs)
    corrected = gate_traces(worked.corrected_lstm(), inputs)
    np.testing.assert_array_equal(lecture.hidden[..., 0], printed)
    np.testing.assert_array_equal(corrected.hidden[..., 1], printed)
    np.testing.assert_array_equal(corrected.cell[..., 0], tally)
    prints = (x == 0) & (printed > 0)
    assert prints.any()
    assert np.all(lecture.cell[..., 0][prints] != tally[prints])


def test_a_trained_lstm_learns_the_calculator():
    trained = calculator_training.train_lstm(
        500, hidden_size=16, steps=8, seed=0, test_sequences=200
    )
    assert np.mean(trained.losses[-50:]) < 0.05 * np.mean(trained.losses[:50])
    result = calculator_training.model_walkthrough(trained.model)
    np.testing.assert_array_equal(np.round(result.table["output"]), TARGET)
    assert trained.test_error < 0.2
