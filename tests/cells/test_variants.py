"""Every LSTM variant against an independent NumPy implementation of its paper's equations, and
against torch.autograd.gradcheck in float64; variant-specific properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import carousel
from carousel.cells import VARIANTS, make_spec
from tests.oracles import lstm_forward

LSTM_VARIANTS = [name for name in VARIANTS if make_spec(name).family == "lstm"]
OPTIONS = {
    "default": {},
    "hard_sigmoid": {"gate_activation": "hard_sigmoid"},
    "h=o*c": {"output_activation": "identity"},
    "blocks2": {"block_size": 2, "peepholes": False},
    "toggled-peepholes": "toggle",
}


def _options(variant, key):
    options = OPTIONS[key]
    if options == "toggle":
        return {"peepholes": not make_spec(variant).peepholes}
    return options


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("variant", LSTM_VARIANTS)
def test_reference_matches_numpy_oracle(variant, option):
    options = _options(variant, option)
    layer = carousel.LSTM(
        3, 4, variant=variant, backend="reference", dtype=torch.float64, **options
    )
    with torch.no_grad():  # keep hard_sigmoid gates away from their kinks and in the linear range
        for p in layer.parameters():
            p.uniform_(-0.5, 0.5)
    x = torch.randn(6, 1, 3, dtype=torch.float64)
    output, _ = layer(x)
    params = {name: p.detach().numpy() for name, p in layer.parameter_groups()[0].params.items()}
    expected = lstm_forward(layer.spec, params, x[:, 0].numpy(), hidden=4)
    np.testing.assert_allclose(output[:, 0].detach().numpy(), expected, rtol=1e-12, atol=1e-12)


# truncate_gradient is not the exact gradient by design; test_truncated_gradient_* covers it.
GRADCHECK = [(v, {}) for v in VARIANTS] + [
    ("vanilla", {"gate_activation": "hard_sigmoid"}),
    ("vanilla", {"output_activation": "identity", "proj_size": 2}),
    ("1997", {"block_size": 2}),
    ("fgr", {"peepholes": False}),
    ("cifg", {"cell_bias": False}),
]


@pytest.mark.parametrize(
    ("variant", "options"),
    GRADCHECK,
    ids=[f"{v}-{'-'.join(f'{k}={w}' for k, w in o.items())}" for v, o in GRADCHECK],
)
def test_gradcheck_float64(variant, options):
    options = dict(options)
    proj_size = options.pop("proj_size", 0)
    hidden = 4 if "block_size" in options or proj_size else 2
    layer = carousel.nn.Recurrent(
        2,
        hidden,
        num_layers=2,
        bidirectional=True,
        proj_size=proj_size,
        variant=variant,
        backend="reference",
        dtype=torch.float64,
        **options,
    )
    if options.get("gate_activation") == "hard_sigmoid":
        with torch.no_grad():  # stay inside (0, 1), where the clipped gate is differentiable
            for p in layer.parameters():
                p.uniform_(-0.1, 0.1)
            for group in layer.parameter_groups():
                group.params["bias_ih"].fill_(0.5)
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    sizes = layer.spec.state_sizes(hidden, proj_size)
    state = tuple(torch.randn(4, 2, s, dtype=torch.float64, requires_grad=True) for s in sizes)
    if layer.spec.feedback_gates:  # gate activations lie in (0, 1)
        state = (*state[:2], torch.rand(4, 2, sizes[2], dtype=torch.float64, requires_grad=True))
    lengths = torch.tensor([4, 3])
    params = list(layer.parameters())

    def run(x, *tensors):
        state, weights = tensors[: len(sizes)], tensors[len(sizes) :]
        with torch.nn.utils.stateless._reparametrize_module(
            layer, dict(zip([n for n, _ in layer.named_parameters()], weights, strict=True))
        ):
            output, final = layer(x, state if len(state) > 1 else state[0], lengths=lengths)
        return (output, *(final if isinstance(final, tuple) else (final,)))

    assert torch.autograd.gradcheck(run, (x, *state, *params), eps=1e-6, atol=1e-7)


def test_np_is_vanilla_under_another_name():
    torch.manual_seed(0)
    vanilla = carousel.LSTM(3, 4, backend="reference")
    torch.manual_seed(0)
    np_layer = carousel.LSTM(3, 4, variant="np", backend="reference")
    x = torch.randn(5, 2, 3)
    assert torch.equal(vanilla(x)[0], np_layer(x)[0])
    assert make_spec("np").replace(variant="vanilla") == make_spec("vanilla")


def test_1997_weight_count_is_the_papers():
    """Adding problem: 2 inputs, 2 blocks of 2 cells, all units biased: 88 weights in the layer."""
    layer = carousel.LSTM(2, 4, variant="1997", block_size=2)
    assert layer.num_weights() == 88
    assert dict((n, tuple(p.shape)) for n, p in layer.named_parameters()) == {
        "weight_ih_l0": (8, 2),
        "weight_hh_l0": (8, 8),
        "bias_l0": (8,),
    }
    # Reber grammar (exp. 1): 7 inputs, 4 blocks of 1, only gates biased: 12 units x 19 + 8 = 236
    reber = carousel.LSTM(7, 4, variant="1997", cell_bias=False)
    assert reber.num_weights() == 236


def test_fgr_cell_input_does_not_read_gates():
    layer = carousel.LSTM(3, 4, variant="fgr", backend="reference")
    assert layer.num_weights() == 4 * 4 * 3 + (4 * 4) * 4 + 9 * 16 + 2 * 16 + 3 * 4
    x = torch.randn(6, 2, 3)
    output, (_, _, gates) = layer(x)
    output.sum().backward()
    rows = layer.spec.gate_slices(4)["g"]
    assert torch.all(layer.weight_hh_l0.grad[rows, 4:] == 0)
    assert torch.any(layer.weight_hh_l0.grad[:, 4:] != 0)
    assert gates.shape == (1, 2, 12)


def test_nfg_cell_integrates_its_input():
    layer = carousel.LSTM(3, 4, variant="nfg", peepholes=False, backend="reference")
    x = torch.randn(8, 1, 3)
    cells = []
    state = None
    for t in range(8):
        _, state = layer(x[t : t + 1], state)
        cells.append(state[1][0, 0])
    differences = torch.stack(cells).diff(dim=0)
    # with f = 1 nothing is forgotten: c_t - c_{t-1} = i_t g_t, each bounded by |g| < 1
    assert torch.all(differences.abs() < 1)


def test_cifg_forget_gate_is_one_minus_input_gate():
    spec = make_spec("cifg", peepholes=False)
    cell = carousel.LSTMCell(2, 3, variant=spec)
    x = torch.randn(4, 2)
    c0 = torch.randn(4, 3)
    _, c1 = cell(x, (torch.zeros(4, 3), c0))
    net = x @ cell.weight_ih.T + cell.bias_ih + cell.bias_hh
    i = torch.sigmoid(net[:, :3])
    g = torch.tanh(net[:, 3:6])
    torch.testing.assert_close(c1, (1 - i) * c0 + i * g)


def test_truncated_gradient_flows_back_only_through_the_cell_state():
    layer = carousel.LSTM(
        2,
        4,
        variant="1997",
        block_size=2,
        truncate_gradient=True,
        backend="reference",
        dtype=torch.float64,
    )
    x = torch.randn(10, 3, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 3, 4, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(1, 3, 4, dtype=torch.float64, requires_grad=True)
    g0 = torch.rand(1, 3, 4, dtype=torch.float64, requires_grad=True)
    output, _ = layer(x, (h0, c0, g0))
    output[-1].sum().backward()
    assert h0.grad is None and g0.grad is None  # they feed only net inputs: truncated
    assert c0.grad.abs().max() > 0
    # the error at the last step reaches earlier inputs only through the cell state, and
    # recurrent weights still learn from it
    assert x.grad[0].abs().max() > 0
    assert layer.weight_hh_l0.grad.abs().max() > 0
    full = carousel.LSTM(
        2, 4, variant="1997", block_size=2, backend="reference", dtype=torch.float64
    )
    full.load_state_dict(layer.state_dict())
    x.grad = None
    full(x, (h0, c0, g0))[0][-1].sum().backward()
    assert h0.grad.abs().max() > 0


@pytest.mark.parametrize("name", sorted(carousel.cells.ACTIVATIONS))
def test_activation_derivative_from_output(name):
    activation = carousel.cells.ACTIVATIONS[name]
    x = torch.linspace(-3, 3, 61, dtype=torch.float64)[1::2]  # avoids the kinks at 0 and 1
    x.requires_grad_(True)
    y = activation.forward(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(activation.derivative_from_output(y.detach()), grad)
