"""unroll: the step-by-step run reproduces the layer's outputs and final states, for every kind of
stack; and rejects what it cannot analyse."""

from __future__ import annotations

import pytest
import torch

import carousel
from carousel.diagnostics import unroll

CONFIGS = {
    "vanilla": {},
    "1997-blocks2": {"variant": "1997", "block_size": 2},
    "peephole": {"variant": "peephole"},
    "cifg": {"variant": "cifg"},
    "fgr": {"variant": "fgr"},
    "gru": {"variant": "gru"},
    "elman-relu": {"variant": "elman", "nonlinearity": "relu"},
    "L2-bidirectional": {"num_layers": 2, "bidirectional": True},
    "proj2": {"proj_size": 2},
    "batch_first": {"batch_first": True},
    "layer_norm": {"variant": "peephole", "layer_norm": True, "num_layers": 2},
    "regularized-eval": {"layer_norm": True, "zoneout": (0.2, 0.3), "recurrent_dropout": 0.5},
    "gru-layer_norm-zoneout": {"variant": "gru", "layer_norm": True, "zoneout": 0.3},
}


@pytest.mark.parametrize("options", CONFIGS.values(), ids=CONFIGS.keys())
def test_unroll_reproduces_layer_output_and_final_state(options):
    layer = carousel.nn.Recurrent(3, 4, dtype=torch.float64, **options).eval()
    x = torch.randn(6, 2, 3, dtype=torch.float64)  # (L, N, H_in)
    if layer.batch_first:
        x = x.transpose(0, 1).contiguous()
    output, final = layer(x)
    final = final if isinstance(final, tuple) else (final,)
    run = unroll(layer, x)
    torch.testing.assert_close(run.output, output, rtol=1e-12, atol=1e-12)
    assert len(run.states) == layer.num_layers * layer.num_directions
    for group, states in enumerate(run.states):
        assert len(states) == 7  # initial state + one per step
        for tensor, expected in zip(states[-1], final, strict=True):
            torch.testing.assert_close(tensor, expected[group], rtol=1e-12, atol=1e-12)
    if layer.spec.family == "lstm":
        assert len(run.values[0]) == 6
        if not layer.regularizers.zoneout_cell:  # (the step's cell, before zoneout mixes it)
            torch.testing.assert_close(run.values[0][-1].cell, final[1][0], rtol=1e-12, atol=1e-12)
    else:
        assert run.values is None


def test_unroll_rejects_bad_arguments():
    layer = carousel.LSTM(3, 4)
    with pytest.raises(TypeError, match="layer must be a carousel recurrent layer"):
        unroll(torch.nn.LSTM(3, 4), torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match="must be 3-D"):
        unroll(layer, torch.randn(5, 3))
    with pytest.raises(TypeError, match="dtype"):
        unroll(layer, torch.randn(5, 2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="input_size=3"):
        unroll(layer, torch.randn(5, 2, 4))
