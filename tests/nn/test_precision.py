"""Mixed precision as torch.nn: float16 and bfloat16 layers, and autocast regions, on every backend
that ``auto`` may pick. Outputs and states come back in the dtype torch.nn gives; the values are
those of the float32 layer (computed in float32), rounded."""

from __future__ import annotations

import pytest
import torch

import carousel

BACKENDS = ["reference", "numba", "auto"]
LOW = [torch.bfloat16, torch.float16]
# A bfloat16 keeps 8 bits of mantissa: about 3 significant digits.
LOW_TOLERANCE = {
    torch.bfloat16: dict(rtol=3e-2, atol=3e-2),
    torch.float16: dict(rtol=5e-3, atol=5e-3),
}


def _flat(result):
    output, state = result
    return [output, *(state if isinstance(state, tuple) else (state,))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize(
    ("cls", "options"),
    [(carousel.LSTM, {}), (carousel.LSTM, {"variant": "1997"}), (carousel.GRU, {})],
    ids=["lstm", "lstm-1997", "gru"],
)
def test_low_precision_layers_compute_in_float32(cls, options, dtype, backend):
    full = cls(3, 4, num_layers=2, bidirectional=True, backend=backend, **options)
    low = cls(3, 4, num_layers=2, bidirectional=True, backend=backend, **options).to(dtype)
    low.load_state_dict(full.state_dict())
    x = torch.randn(6, 2, 3).to(dtype)
    lows = _flat(low(x))
    fulls = _flat(full(x.float()))
    for ours, expected in zip(lows, fulls, strict=True):
        assert ours.dtype == dtype
        torch.testing.assert_close(ours.float(), expected, **LOW_TOLERANCE[dtype])
    lows[0].float().sum().backward()
    assert all(p.grad.dtype == dtype and p.grad.abs().sum() > 0 for p in low.parameters())


@pytest.mark.parametrize("backend", BACKENDS)
def test_autocast_gives_torch_nns_output_dtypes(backend):
    pairs = [
        (torch.nn.LSTM(3, 4), carousel.LSTM(3, 4, backend=backend)),
        (torch.nn.GRU(3, 4), carousel.GRU(3, 4, backend=backend)),
        (torch.nn.RNN(3, 4), carousel.RNN(3, 4, backend=backend)),
        (torch.nn.LSTMCell(3, 4), carousel.LSTMCell(3, 4)),
    ]
    x = torch.randn(5, 2, 3)
    for theirs, ours in pairs:
        ours.load_state_dict(theirs.state_dict())
        inputs = x[0] if isinstance(ours, carousel.nn.RecurrentCell) else x
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected = theirs(inputs)
            result = ours(inputs)
        flat_expected = [t for t in _flat_any(expected)]
        flat_result = [t for t in _flat_any(result)]
        for got, want in zip(flat_result, flat_expected, strict=True):
            assert got.dtype == want.dtype, type(ours).__name__
            torch.testing.assert_close(got.float(), want.float(), rtol=3e-2, atol=3e-2)


def _flat_any(value):
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for item in value for t in _flat_any(item)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_autocast_backward_reaches_float32_parameters(backend):
    layer = carousel.LSTM(3, 4, variant="peephole", backend=backend)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, _ = layer(torch.randn(5, 2, 3))
    assert output.dtype == torch.bfloat16
    output.float().sum().backward()
    assert all(p.grad.dtype == torch.float32 and p.grad.abs().sum() > 0 for p in layer.parameters())
