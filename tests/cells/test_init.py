"""Named initialisers set what they say, on every layer and direction."""

from __future__ import annotations

import math

import pytest
import torch

import carousel
from carousel import init


def test_forget_bias_sets_the_effective_forget_bias():
    layer = carousel.LSTM(3, 4, num_layers=2, bidirectional=True, init=init.forget_bias(1.0))
    for group in layer.parameter_groups():
        rows = group.rows("f")
        total = group.params["bias_ih"][rows] + group.params["bias_hh"][rows]
        assert torch.equal(total, torch.ones(4))
        assert torch.equal(group.params["bias_hh"][rows], torch.zeros(4))


def test_chrono_spreads_forget_biases_and_mirrors_input_biases():
    torch.manual_seed(0)
    layer = carousel.LSTM(3, 256, init=init.chrono(t_max=100))
    group = layer.parameter_groups()[0]
    forget = group.params["bias_ih"][group.rows("f")]
    entry = group.params["bias_ih"][group.rows("i")]
    assert torch.equal(entry, -forget)
    assert forget.min() >= 0 and forget.max() <= math.log(99)
    assert forget.max() > math.log(50)  # spread over the range, not clustered


def test_gate_bias_per_block_for_1997():
    layer = carousel.LSTM(
        2,
        8,
        variant="1997",
        block_size=2,
        init=[
            init.uniform(0.1),
            init.gate_bias("o", [-1, -2, -3, -4]),
            init.gate_bias("i", [-3, -6, -3, -6]),
        ],
    )
    group = layer.parameter_groups()[0]
    assert group.params["bias"][group.rows("o")].tolist() == [-1, -2, -3, -4]
    assert group.params["bias"][group.rows("i")].tolist() == [-3, -6, -3, -6]
    assert group.params["weight_ih"].abs().max() <= 0.1


def test_initialisers_reject_what_does_not_exist():
    with pytest.raises(ValueError, match="gate 'f' does not exist in variant 'nfg'"):
        carousel.LSTM(3, 4, variant="nfg", init=init.forget_bias(1.0))
    with pytest.raises(ValueError, match="this layer has no biases"):
        carousel.LSTM(3, 4, bias=False, init=init.forget_bias(1.0))
    with pytest.raises(ValueError, match="values for gate 'o' must be a scalar or 4 numbers"):
        carousel.LSTM(3, 4, init=init.gate_bias("o", [1, 2]))
    with pytest.raises(ValueError, match=r"chrono: t_max must be finite and > 2; got 1\.0"):
        init.chrono(1)


def test_orthogonal_recurrent_blocks():
    layer = carousel.GRU(3, 5, init=init.orthogonal_recurrent())
    group = layer.parameter_groups()[0]
    for gate in "rzn":
        block = group.params["weight_hh"][group.rows(gate)]
        torch.testing.assert_close(block @ block.T, torch.eye(5), atol=1e-5, rtol=0)


def test_reset_parameters_reapplies_init():
    layer = carousel.LSTM(3, 4, init=init.forget_bias(2.0))
    with torch.no_grad():
        layer.bias_ih_l0.zero_()
    layer.reset_parameters()
    assert torch.equal(layer.bias_ih_l0[4:8], torch.full((4,), 2.0))
    assert "init=[forget_bias(2.0)]" in repr(layer)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (
            lambda: init.gate_bias("f", float("nan")),
            ValueError,
            r"gate_bias: values must be finite; got nan",
        ),
        (
            lambda: init.gate_bias("o", [-1, float("inf")]),
            ValueError,
            r"gate_bias: values\[1\] must be finite",
        ),
        (
            lambda: init.gate_bias("o", ["-1"]),
            TypeError,
            r"gate_bias: values\[0\] must be a real number; got str",
        ),
        (lambda: init.gate_bias(1, 0.5), TypeError, r"gate_bias: gate must be a gate name"),
        (lambda: init.forget_bias(float("-inf")), ValueError, r"forget_bias: value must be finite"),
        (
            lambda: init.uniform(float("inf")),
            ValueError,
            r"uniform: bound must be finite and > 0; got inf",
        ),
        (
            lambda: init.uniform(-0.1),
            ValueError,
            r"uniform: bound must be finite and > 0; got -0.1",
        ),
        (
            lambda: init.uniform("0.1"),
            TypeError,
            r"uniform: bound must be a real number; got str '0.1'",
        ),
        (lambda: init.uniform(True), TypeError, r"uniform: bound must be a real number; got bool"),
        (
            lambda: init.chrono(float("inf")),
            ValueError,
            r"chrono: t_max must be finite and > 2; got inf",
        ),
        (
            lambda: init.chrono(float("nan")),
            ValueError,
            r"chrono: t_max must be finite and > 2; got nan",
        ),
        (
            lambda: init.chrono(None),
            TypeError,
            r"chrono: t_max must be a real number; got NoneType",
        ),
        (
            lambda: init.orthogonal_recurrent(float("nan")),
            ValueError,
            r"orthogonal_recurrent: gain must be finite",
        ),
    ],
)
def test_initialisers_validate_their_arguments(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_initialisers_accept_numbers_of_any_real_type():
    import numpy as np

    values = torch.tensor([-1.0, -2.0, -3.0, -4.0])
    layer = carousel.LSTM(2, 4, init=[init.uniform(np.float32(0.1)), init.gate_bias("o", values)])
    group = layer.parameter_groups()[0]
    assert group.params["bias_ih"][group.rows("o")].tolist() == values.tolist()
    assert init.chrono(100).__name__ == "chrono(100.0)"


def test_init_text_reports_the_initialisers_own_error():
    from carousel.models import parse_init

    with pytest.raises(ValueError, match=r"init 'uniform\(1e999\)': uniform: bound must be finite"):
        parse_init("uniform(1e999)")
