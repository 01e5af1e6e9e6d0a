"""The sLSTM variant (Beck et al. 2024): the reference step against an independent NumPy oracle of
the paper's equations, its spec and parameters, its initialisation, the empty-memory rule, and the
state (h, c, n, m) through hx, lengths, reverse direction, packing and stream resets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import carousel
from carousel import kernels
from carousel.cells import make_spec
from carousel.train.loop import continue_state
from tests.helpers import flatten
from tests.oracles import slstm_forward

CASES = {
    "H4-heads1-sigmoid": (4, 1, "sigmoid"),
    "H4-heads2-sigmoid": (4, 2, "sigmoid"),
    "H6-heads3-exp": (6, 3, "exp"),
    "H4-heads4-exp": (4, 4, "exp"),
}


def _layer(hidden, heads, forget, backend="reference", dtype=torch.float64, scale=0.5, **extra):
    layer = carousel.LSTM(
        3, hidden, variant="slstm", num_heads=heads, forget_activation=forget,
        backend=backend, dtype=dtype, **extra,
    )  # fmt: skip
    with torch.no_grad():
        for p in layer.parameters():
            p.uniform_(-scale, scale)
    return layer


def _params(layer) -> dict[str, np.ndarray]:
    return {k: p.detach().numpy() for k, p in layer.parameter_groups()[0].params.items()}


@pytest.mark.parametrize(("hidden", "heads", "forget"), CASES.values(), ids=CASES.keys())
def test_reference_matches_the_papers_equations(hidden, heads, forget):
    """Outputs equal the unstabilised equations (eqs. 8-14) and the literal stabilised ones
    (eqs. 15-17, m_0 = 0); the stored c, n are the unstabilised ones times exp(-m)."""
    layer = _layer(hidden, heads, forget)
    x = torch.randn(7, 1, 3, dtype=torch.float64)
    output, (h_n, c_n, n_n, m_n) = layer(x)
    params = _params(layer)
    plain_h, plain_c, plain_n, _ = slstm_forward(params, x[:, 0].numpy(), hidden, heads, forget)
    stable_h, *_ = slstm_forward(params, x[:, 0].numpy(), hidden, heads, forget, stabilised=True)
    ours = output[:, 0].detach().numpy()
    np.testing.assert_allclose(ours, plain_h, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours, stable_h, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h_n[0, 0].detach().numpy(), plain_h[-1], rtol=1e-12, atol=1e-12)
    scale = torch.exp(m_n[0, 0]).detach().numpy()
    np.testing.assert_allclose(c_n[0, 0].detach().numpy() * scale, plain_c[-1], rtol=1e-10)
    np.testing.assert_allclose(n_n[0, 0].detach().numpy() * scale, plain_n[-1], rtol=1e-10)


def test_parameters_mask_state_and_repr():
    layer = carousel.LSTM(5, 8, num_layers=2, bidirectional=True, variant="slstm", num_heads=4)
    names = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    assert names["weight_ih_l0"] == (32, 5) and names["weight_hh_l0"] == (32, 8)
    assert names["bias_l1_reverse"] == (32,) and "bias_ih_l0" not in names
    mask = layer.recurrent_mask
    assert mask.shape == (32, 8)
    expected = torch.block_diag(*[torch.ones(2, 2)] * 4).repeat(4, 1)
    assert torch.equal(mask, expected)
    per_direction_layer0 = 32 * 5 + 4 * 4 * 2 * 2 + 32  # W, R: 4 gates x 4 heads x 2 x 2, b
    per_direction_layer1 = 32 * 16 + 4 * 4 * 2 * 2 + 32
    assert layer.num_weights() == 2 * (per_direction_layer0 + per_direction_layer1)
    assert layer.spec.state_names == ("h", "c", "n", "m")
    assert "num_heads=4" in repr(layer)
    output, state = layer(torch.randn(3, 2, 5))
    assert output.shape == (3, 2, 16) and len(state) == 4
    assert all(s.shape == (4, 2, 8) for s in state)


def test_masked_recurrent_weights_get_no_gradient_and_change_nothing():
    layer = _layer(4, 2, "sigmoid")
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    before = layer(x)[0]
    with torch.no_grad():  # an off-head entry: head 0's input-gate row reading head 1's cells
        layer.weight_hh_l0[0, 3] += 10.0
    assert torch.equal(layer(x)[0], before)
    layer(x)[0].sum().backward()
    assert float(layer.weight_hh_l0.grad[0, 2:].abs().sum()) == 0.0
    assert float(layer.weight_hh_l0.grad[0, :2].abs().sum()) > 0.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_heads": 3}, "hidden_size must be a multiple of num_heads=3"),
        ({"num_heads": 0}, "num_heads must be a positive int; got 0"),
        ({"forget_activation": "tanh"}, "forget_activation must be one of"),
        ({"proj_size": 2}, "proj_size applies to LSTM cells only, not to 'slstm'"),
        ({"peepholes": True}, "peepholes=True applies to LSTM cells only, not to 'slstm'"),
        ({"block_size": 2}, "block_size=2 applies to LSTM cells only, not to 'slstm'"),
    ],
)
def test_bad_options_are_refused_with_their_name(options, message):
    with pytest.raises(ValueError, match=message):
        carousel.LSTM(3, 8, variant="slstm", **options)


def test_sLSTM_options_belong_to_the_sLSTM_only():
    with pytest.raises(ValueError, match="num_heads=2 applies to sLSTM cells only"):
        make_spec("vanilla").replace(num_heads=2)
    with pytest.raises(ValueError, match="forget_activation='exp' applies to sLSTM cells only"):
        carousel.LSTM(3, 4, forget_activation="exp")
    with pytest.raises(ValueError, match="an sLSTM cell has the gates"):
        make_spec("slstm").replace(gates=("i", "g", "o"))
    with pytest.raises(ValueError, match="is a slstm cell"):
        carousel.nn.LSTMCell(3, 4, variant="slstm")


def test_default_initialisation_is_the_reference_implementations():
    torch.manual_seed(3)
    layer = carousel.LSTM(50, 16, variant="slstm", num_heads=4)
    assert float(layer.weight_hh_l0.detach().abs().max()) == 0.0
    rows = layer.spec.gate_slices(16)
    bias = layer.bias_l0.detach()
    assert float(bias[rows["i"]].abs().max()) == 0.0 and float(bias[rows["o"]].abs().max()) == 0.0
    head = 5.0 - 12.0 * (torch.arange(4) / 3.0) ** 0.3  # D = 4 cells per head
    torch.testing.assert_close(bias[rows["f"]], head.repeat(4), rtol=0, atol=1e-6)
    assert bias[rows["f"]][0] == 5.0 and abs(float(bias[rows["f"]][3]) + 7.0) < 1e-6
    std = float(layer.weight_ih_l0.detach().std())
    assert abs(std - math.sqrt(2 / (5 * 50))) < 0.1 * math.sqrt(2 / (5 * 50))
    chrono = carousel.LSTM(2, 4, variant="slstm", init=carousel.init.chrono(100))
    forget = chrono.bias_l0.detach()[chrono.spec.gate_slices(4)["f"]]
    assert float(forget.min()) >= 0.0 and float(forget.max()) <= math.log(99)  # log U[1, 99]


def test_linspace_forget_bias_initialiser():
    from carousel.cells.slstm import linspace_forget_bias

    layer = carousel.LSTM(2, 8, variant="slstm", num_heads=2, init=linspace_forget_bias(3, 6))
    forget = layer.bias_l0.detach()[8:16]
    torch.testing.assert_close(forget, torch.linspace(3, 6, 4).repeat(2))


@pytest.mark.parametrize("backend", ["reference", "numba"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_an_empty_memory_starts_at_n_1_whatever_the_input_gate(backend, dtype):
    """From the zero state h_1 = o z exactly, even where exp(i) under- or overflows."""
    layer = _layer(4, 1, "sigmoid", backend=backend, dtype=dtype)
    with torch.no_grad():
        layer.bias_l0[:4] = torch.tensor([-1000.0, -100.0, 100.0, 1000.0], dtype=dtype)
    x = torch.randn(1, 2, 3, dtype=dtype)
    output, (_, _, n, m) = layer(x)
    net = x[0] @ layer.weight_ih_l0.T + layer.bias_l0  # (B, 4H)
    expected = torch.sigmoid(net[:, 12:]) * torch.tanh(net[:, 8:12])
    torch.testing.assert_close(output[0], expected)
    assert torch.equal(n[0], torch.ones_like(n[0]))
    torch.testing.assert_close(m[0], net[:, :4])


def test_state_flows_through_hx_lengths_and_reverse():
    layer = _layer(4, 2, "exp", num_layers=2, bidirectional=True)
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 4])
    output, state = layer(x, lengths=lengths)
    for b in range(3):  # each sequence alone, cut at its length
        alone, alone_state = layer(x[: lengths[b], b : b + 1])
        torch.testing.assert_close(output[: lengths[b], b], alone[:, 0])
        assert float(output[lengths[b] :, b].detach().abs().sum()) == 0.0
        for held, expected in zip(state, alone_state, strict=True):
            torch.testing.assert_close(held[:, b], expected[:, 0])
    # continuing from a state (hx) equals running the whole sequence
    forward = _layer(4, 2, "exp", num_layers=2)
    first, middle = forward(x[:3])
    second, final = forward(x[3:], middle)
    whole, whole_state = forward(x)
    torch.testing.assert_close(torch.cat([first, second]), whole)
    for a, b in zip(final, whole_state, strict=True):
        torch.testing.assert_close(a, b)


def test_packed_batch_first_and_unbatched_inputs_agree():
    layer = _layer(4, 2, "sigmoid", batch_first=True, bidirectional=True)
    x = torch.randn(3, 6, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 4])
    padded, padded_state = layer(x, lengths=lengths)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, True, enforce_sorted=False)
    out, packed_state = layer(packed)
    unpacked, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
    torch.testing.assert_close(unpacked, padded)
    for a, b in zip(flatten(packed_state), flatten(padded_state), strict=True):
        torch.testing.assert_close(a, b)
    single, single_state = layer(x[1, :2])
    torch.testing.assert_close(single, padded[1, :2])
    assert single_state[2].shape == (2, 4)


def test_a_stream_row_reset_to_zeros_starts_afresh():
    """The training loop zeroes the carried state where a stream restarts: with n = 0 that is
    exactly a fresh start."""
    layer = _layer(4, 2, "sigmoid")
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    _, carried = layer(torch.randn(4, 2, 3, dtype=torch.float64))
    reset = torch.tensor([True, False])
    output, _ = layer(x, continue_state(carried, reset))
    fresh, _ = layer(x[:, :1])
    torch.testing.assert_close(output[:, 0], fresh[:, 0], rtol=0, atol=0)
    kept, _ = layer(x[:, 1:], tuple(s[:, 1:] for s in carried))
    torch.testing.assert_close(output[:, 1], kept[:, 0], rtol=0, atol=0)


def test_torch_native_refuses_and_auto_runs_the_kernels():
    spec = make_spec("slstm", num_heads=2)
    work = kernels.Workload(
        spec=spec, device=torch.device("cpu"), dtype=torch.float32, steps=100, batch=64,
        input_size=8, hidden_size=256, proj_size=0, num_layers=1, num_directions=1,
        has_lengths=False,
    )  # fmt: skip
    reason = kernels.BACKENDS["torch-native"].unsupported(work)
    assert reason is not None and "slstm" in reason
    assert kernels.select("auto", work).name == "numba"
    with pytest.raises(ValueError, match="backend 'torch-native' cannot run this layer"):
        carousel.LSTM(8, 4, variant="slstm", backend="torch-native")(torch.randn(3, 1, 8))
