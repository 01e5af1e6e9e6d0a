"""Second derivatives and torch.func transforms, on every backend: the fused kernels' backward is
differentiated through the reference twin, and transforms hand the call to a backend that can run
under them. Oracles: ``gradgradcheck`` in float64, and the reference backend."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad, hessian, jacrev, vmap

import carousel
from carousel.cells import VARIANTS, make_spec

BACKENDS = ["reference", "numba", "auto"]
VARIANT_CASES = [(v, {}) for v in VARIANTS] + [("elman", {"nonlinearity": "relu"})]


def _layer(variant, backend, **options):
    hidden = 2
    return carousel.nn.Recurrent(
        2, hidden, variant=variant, backend=backend, dtype=torch.float64, **options
    )


def _functional(layer, lengths=None):
    """``f(x, *state, *params) -> (output, *final)`` with the layer's parameters as inputs."""
    names = [n for n, _ in layer.named_parameters()]
    count = len(layer.spec.state_names)

    def run(x, *tensors):
        state, weights = tensors[:count], tensors[count:]
        output, final = functional_call(
            layer,
            dict(zip(names, weights, strict=True)),
            (x, state if count > 1 else state[0]),
            {"lengths": lengths},
        )
        return (output, *(final if count > 1 else (final,)))

    return run


def _inputs(layer, steps=3, batch=2):
    stacked = layer.num_layers * layer.num_directions
    x = torch.randn(steps, batch, layer.input_size, dtype=torch.float64, requires_grad=True)
    sizes = layer.spec.state_sizes(layer.hidden_size, layer.proj_size)
    state = [torch.rand(stacked, batch, s, dtype=torch.float64, requires_grad=True) for s in sizes]
    params = [p.detach().clone().requires_grad_(True) for p in layer.parameters()]
    return (x, *state, *params)


STOCK = {"vanilla", "gru", "elman"}
GRADGRAD_CASES = [
    pytest.param(
        variant, options, backend, id=f"{variant}-{options.get('nonlinearity', '')}-{backend}"
    )
    for variant, options in VARIANT_CASES
    for backend in ("reference", "numba", "torch-native")
    if backend != "torch-native" or variant in STOCK
]


@pytest.mark.parametrize(("variant", "options", "backend"), GRADGRAD_CASES)
def test_gradgradcheck_float64(variant, options, backend):
    layer = _layer(variant, backend, **options)
    assert torch.autograd.gradgradcheck(
        _functional(layer), _inputs(layer), eps=1e-6, atol=1e-5, rtol=1e-4
    )


def test_gradgradcheck_stacked_bidirectional_with_lengths():
    layer = carousel.nn.Recurrent(
        1, 2, num_layers=2, bidirectional=True, variant="1997", block_size=2, backend="numba",
        dtype=torch.float64,
    )  # fmt: skip
    run = _functional(layer, lengths=torch.tensor([2, 1]))
    inputs = _inputs(layer, steps=2)
    assert torch.autograd.gradgradcheck(run, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", ["vanilla", "peephole", "1997", "gru", "elman"])
def test_gradient_penalty_equals_the_reference_on_every_backend(variant):
    """``d/dW |dL/dx|^2`` (a gradient penalty): never None or zero where the reference is not."""
    results = {}
    for backend in BACKENDS:
        torch.manual_seed(3)
        spec = make_spec(variant)
        layer = carousel.nn.Recurrent(
            3, 4, num_layers=2, variant=spec, backend=backend, dtype=torch.float64
        )
        x = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)
        output, _ = layer(x)
        (d_x,) = torch.autograd.grad(output.sin().sum(), x, create_graph=True)
        penalty = d_x.pow(2).sum()
        results[backend] = torch.autograd.grad(penalty, list(layer.parameters()))
    for backend in ("numba", "auto"):
        for ours, reference in zip(results[backend], results["reference"], strict=True):
            assert reference.abs().sum() > 0
            torch.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-12)


def _per_sample_setup(backend):
    torch.manual_seed(5)
    layer = carousel.LSTM(3, 4, variant="peephole", backend=backend)
    params = {name: p.detach() for name, p in layer.named_parameters()}
    xs = torch.randn(5, 7, 3)  # 5 samples of 7 steps

    def loss(params, x):
        output, _ = functional_call(layer, params, (x.unsqueeze(1),))
        return output.pow(2).sum()

    return layer, params, xs, loss


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_sample_gradients_with_vmap(backend):
    layer, params, xs, loss = _per_sample_setup(backend)
    batched = vmap(grad(loss), in_dims=(None, 0))(params, xs)
    for k in range(xs.shape[0]):
        layer.zero_grad()
        loss(dict(layer.named_parameters()), xs[k]).backward()
        for name, p in layer.named_parameters():
            torch.testing.assert_close(batched[name][k], p.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls", [carousel.LSTM, carousel.GRU, carousel.RNN])
def test_jacrev_and_hessian_equal_the_reference(cls, backend):
    results = {}
    for name in ("reference", backend):
        torch.manual_seed(7)
        layer = cls(2, 3, backend=name, dtype=torch.float64)
        x = torch.randn(4, 1, 2, dtype=torch.float64)
        results[name] = (
            jacrev(lambda x, layer=layer: layer(x)[0])(x),
            hessian(lambda x, layer=layer: layer(x)[0].tanh().sum())(x),
        )
    for ours, reference in zip(results[backend], results["reference"], strict=True):
        assert reference.abs().sum() > 0
        torch.testing.assert_close(ours, reference)


def test_a_named_backend_hands_transformed_calls_over():
    layer = carousel.LSTM(2, 3, variant="peephole", backend="numba")
    work = carousel.kernels.Workload(
        spec=layer.spec, device=torch.device("cpu"), dtype=torch.float32, steps=4, batch=1,
        input_size=2, hidden_size=3, proj_size=0, num_layers=1, num_directions=1,
        has_lengths=False, context="a torch.func transform is active",
    )  # fmt: skip
    assert carousel.kernels.select("numba", work).name == "reference"
    eager = carousel.kernels.Workload(**{**work.__dict__, "context": None})
    assert carousel.kernels.select("numba", eager).name == "numba"
