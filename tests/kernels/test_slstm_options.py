"""The sLSTM with the options it takes, weight drop and state resets: the fused kernels against the
reference backend (outputs, final states, every gradient; float64 and float32), float64 gradcheck
of the kernels with fixed masks, resets as independent segments; and the options it refuses (layer
norm, recurrent and candidate dropout, zoneout), each with an error naming option and variant."""

from __future__ import annotations

import pytest
import torch

import carousel
from tests.helpers import gradcheck_with_fixed_masks
from tests.kernels.test_numba_options import DTYPES, RESET, _compare

OPTIONS = {
    "weight_drop": {"weight_drop": 0.4},
    "reset": {"reset": RESET},
    "both": {"weight_drop": 0.3, "reset": RESET},
    "both-exp-heads2": {
        "weight_drop": 0.3,
        "reset": RESET,
        "forget_activation": "exp",
        "num_heads": 2,
    },
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_slstm_options_match_reference(options, dtype):
    """Two layers, both directions, a padded batch with lengths (the masks from one seed)."""
    _compare("slstm", dtype, **options)


def test_slstm_resets_without_lengths_and_in_eval_match_reference():
    _compare("slstm", torch.float64, reset=RESET, lengths=None, weight_drop=0.3)
    _compare("slstm", torch.float64, reset=RESET, training=False, weight_drop=0.3)


def test_slstm_gradcheck_float64_with_fixed_masks():
    layer = carousel.LSTM(
        2, 2, variant="slstm", backend="numba", dtype=torch.float64, bidirectional=True,
        weight_drop=0.3,
    )  # fmt: skip
    assert gradcheck_with_fixed_masks(layer)


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_slstm_reset_splits_a_sequence_into_independent_segments(backend):
    torch.manual_seed(0)
    layer = carousel.LSTM(3, 4, variant="slstm", backend=backend, dtype=torch.float64)
    x = torch.randn(7, 2, 3, dtype=torch.float64, requires_grad=True)
    reset = torch.zeros(7, 2, dtype=torch.bool)
    reset[3, 0] = True
    output, _ = layer(x, reset=reset)
    first, _ = layer(x[:3, :1])
    second, _ = layer(x[3:, :1])
    torch.testing.assert_close(output[:, :1], torch.cat((first, second)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(output[:, 1], layer(x)[0][:, 1], rtol=0, atol=0)
    (grad,) = torch.autograd.grad(output[3:, 0].sum(), (x,))
    assert torch.all(grad[:3, 0] == 0) and torch.all(grad[3:, 0] != 0)


REFUSED = {
    "layer_norm": {"layer_norm": True},
    "recurrent_dropout": {"recurrent_dropout": 0.1},
    "candidate_dropout": {"candidate_dropout": 0.1},
    "zoneout": {"zoneout": 0.1},
}


@pytest.mark.parametrize("option", REFUSED)
def test_slstm_refuses_the_options_it_does_not_define(option):
    pattern = rf"^{option}[^\n]* is not defined for the 'slstm' variant"
    with pytest.raises(ValueError, match=pattern):
        carousel.LSTM(3, 4, variant="slstm", **REFUSED[option])
    with pytest.raises(ValueError, match=pattern):
        carousel.nn.Recurrent(3, 4, variant="slstm", num_heads=2, **REFUSED[option])
