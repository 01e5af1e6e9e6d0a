"""Bad input gets a ValueError/TypeError that names the argument, the expected and the received."""

from __future__ import annotations

import pytest
import torch

import carousel


def layer(**kwargs):
    return carousel.LSTM(3, 4, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"input_size": 0}, ValueError, "input_size must be greater than zero; got 0"),
        ({"input_size": 3.0}, TypeError, "input_size should be of type int, got: float"),
        ({"hidden_size": -1}, ValueError, "hidden_size must be greater than zero; got -1"),
        ({"num_layers": 0}, ValueError, "num_layers must be greater than zero; got 0"),
        ({"bias": 1}, TypeError, "bias should be of type bool, got: int"),
        ({"batch_first": "yes"}, TypeError, "batch_first should be of type bool, got: str"),
        ({"dropout": 1.5}, ValueError, r"dropout should be a number in range \[0, 1\].*; got 1.5"),
        (
            {"proj_size": 4},
            ValueError,
            "proj_size has to be smaller than hidden_size; got proj_size=4 and hidden_size=4",
        ),
        ({"variant": "nope"}, ValueError, "variant must be one of .*; got 'nope'"),
        ({"variant": "gru"}, ValueError, "'gru' is a gru cell"),
        ({"gate_activation": "tanh"}, ValueError, "gate_activation must be one of"),
        ({"output_activation": "cube"}, ValueError, "output_activation must be one of"),
        ({"backend": "fast"}, ValueError, "backend must be 'auto' or one of .*; got 'fast'"),
        ({"variant": "1997", "block_size": 3}, ValueError, "multiple of block_size=3; got 4"),
        (
            {"variant": "fgr", "proj_size": 2},
            ValueError,
            "proj_size cannot be combined with gate feedback",
        ),
        ({"variant": "peephole", "block_size": 2}, ValueError, "peepholes .* need block_size=1"),
        ({"init": 3}, TypeError, "init must be an initialiser"),
    ],
)
def test_constructor_arguments(kwargs, error, match):
    arguments = {"input_size": 3, "hidden_size": 4, **kwargs}
    with pytest.raises(error, match=match):
        carousel.LSTM(**arguments)


def test_options_that_make_no_sense_together():
    with pytest.raises(ValueError, match="proj_size applies to LSTM cells only, not to 'gru'"):
        carousel.nn.Recurrent(3, 4, proj_size=2, variant="gru")
    with pytest.raises(ValueError, match="variant 'gru' takes the options"):
        carousel.nn.Recurrent(3, 4, variant="gru", peepholes=True)
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'; got 'sigmoid'"):
        carousel.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="backend 'torch-native' cannot run this layer"):
        carousel.LSTM(3, 4, variant="peephole", backend="torch-native")(torch.randn(2, 1, 3))


@pytest.mark.parametrize(
    ("make_input", "error", "match"),
    [
        (
            lambda: torch.randn(2, 1, 3).numpy(),
            TypeError,
            "input must be a Tensor or a PackedSequence; got ndarray",
        ),
        (
            lambda: torch.randn(2, 1, 3, dtype=torch.float64),
            TypeError,
            "input must have the parameters' dtype torch.float32; got torch.float64",
        ),
        (lambda: torch.randint(0, 2, (2, 1, 3)), TypeError, "dtype"),
        (
            lambda: torch.randn(2, 1, 1, 3),
            ValueError,
            r"input must be 2-D or 3-D; got 4-D of shape \[2, 1, 1, 3\]",
        ),
        (
            lambda: torch.randn(2, 1, 5),
            ValueError,
            r"input must have input_size=3 features in its last dimension; got shape \[2, 1, 5\]",
        ),
        (
            lambda: torch.randn(0, 1, 3),
            ValueError,
            r"Expected sequence length to be larger than 0 in RNN; input has shape \[0, 1, 3\]",
        ),
        (
            lambda: torch.tensor([[[1.0, float("nan"), 0.0]]]),
            ValueError,
            "input contains NaN or infinite values",
        ),
    ],
)
def test_bad_input(make_input, error, match):
    with pytest.raises(error, match=match):
        layer()(make_input())


@pytest.mark.parametrize(
    ("make_hx", "error", "match"),
    [
        (
            lambda: torch.zeros(1, 2, 4),
            TypeError,
            r"hx must be a tuple of 2 tensors \(h, c\) for LSTM; got Tensor",
        ),
        (lambda: (torch.zeros(1, 2, 4),), TypeError, "tuple of 2 tensors .* got tuple of length 1"),
        (
            lambda: (torch.zeros(1, 3, 4), torch.zeros(1, 2, 4)),
            ValueError,
            r"hx\[0\] \(h\) must have shape \[1, 2, 4\]; got \[1, 3, 4\]",
        ),
        (
            lambda: (torch.zeros(1, 2, 4), torch.zeros(2, 4)),
            ValueError,
            r"hx\[1\] \(c\) must have shape \[1, 2, 4\]; got \[2, 4\]",
        ),
        (
            lambda: (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4, dtype=torch.float64)),
            TypeError,
            r"hx\[1\] \(c\) must have the input's dtype",
        ),
        (
            lambda: (torch.full((1, 2, 4), float("inf")), torch.zeros(1, 2, 4)),
            ValueError,
            r"hx\[0\] \(h\) contains NaN",
        ),
    ],
)
def test_bad_state(make_hx, error, match):
    with pytest.raises(error, match=match):
        layer()(torch.randn(5, 2, 3), make_hx())


def test_bad_state_for_single_state_layers_and_feedback_cells():
    with pytest.raises(TypeError, match="hx must be a Tensor for GRU; got tuple"):
        carousel.GRU(3, 4)(torch.randn(5, 2, 3), (torch.zeros(1, 2, 4),))
    with pytest.raises(TypeError, match=r"hx must be a tuple of 3 tensors \(h, c, gates\)"):
        carousel.LSTM(3, 4, variant="1997")(torch.randn(5, 2, 3), (torch.zeros(1, 2, 4),) * 2)


@pytest.mark.parametrize(
    ("lengths", "error", "match"),
    [
        (
            torch.tensor([5.0, 2.0]),
            TypeError,
            "lengths must hold integers; got dtype torch.float32",
        ),
        (
            torch.tensor([5, 2, 1]),
            ValueError,
            r"lengths must have one entry per sequence, shape \(2,\); got shape \[3\]",
        ),
        (
            torch.tensor([6, 2]),
            ValueError,
            r"lengths must lie in \[1, 5\] \(the input has 5 steps\); got values from 2 to 6",
        ),
        (torch.tensor([0, 2]), ValueError, r"lengths must lie in \[1, 5\]"),
        ([[5, 2]], ValueError, "lengths must have one entry per sequence"),
        ("abc", TypeError, "lengths must be a 1-D tensor or sequence of ints"),
    ],
)
def test_bad_lengths(lengths, error, match):
    with pytest.raises(error, match=match):
        layer()(torch.randn(5, 2, 3), lengths=lengths)


def test_lengths_with_packed_or_unbatched_input():
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(5, 2, 3), [5, 2])
    with pytest.raises(ValueError, match="lengths must be None for a PackedSequence input"):
        layer()(packed, lengths=[5, 2])
    with pytest.raises(ValueError, match=r"lengths must be None for unbatched \(2-D\) input"):
        layer()(torch.randn(5, 3), lengths=[5])


def test_dropout_with_one_layer_warns():
    with pytest.warns(UserWarning, match="dropout acts between stacked layers"):
        carousel.LSTM(3, 4, dropout=0.5)


def test_cells_reject_bad_input():
    cell = carousel.LSTMCell(3, 4)
    with pytest.raises(ValueError, match=r"input must be 1-D or 2-D; got 3-D"):
        cell(torch.randn(2, 2, 3))
    with pytest.raises(ValueError, match=r"hx\[0\] \(h\) must have shape \[2, 4\]; got \[2, 5\]"):
        cell(torch.randn(2, 3), (torch.zeros(2, 5), torch.zeros(2, 4)))
    with pytest.raises(ValueError, match=r"variant must be an LSTM variant for carousel\.LSTMCell"):
        carousel.LSTMCell(3, 4, variant="elman")
