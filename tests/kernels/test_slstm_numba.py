"""The sLSTM's fused kernels against the reference backend: outputs, final states (h, c, n, m) and
every gradient under random upstream gradients for the output and each final state (float64 to
1e-10, float32 to 1e-5); gradcheck and gradgradcheck in float64; ties of the stabiliser's
maximum; finite values with large pre-activations and at T = 10,000."""

from __future__ import annotations

import os

import pytest
import torch

import carousel
from carousel.kernels.numba_cpu.blas import MIN_HEAD_SIZE
from tests.helpers import assert_same, flatten, run_layer

BATCH, STEPS, INPUT, HIDDEN = 3, 6, 3, 4
LENGTHS = torch.tensor([6, 2, 4])
DTYPES = [pytest.param(torch.float64, id="f64"), pytest.param(torch.float32, id="f32")]


def _pair(dtype, scale=0.5, input_size=INPUT, hidden=HIDDEN, layer_options=None, **options):
    layer_options = {"num_layers": 2, "bidirectional": True} | (layer_options or {})
    torch.manual_seed(1)
    reference = carousel.nn.Recurrent(
        input_size, hidden, variant="slstm", backend="reference", dtype=dtype,
        **layer_options, **options,
    )  # fmt: skip
    with torch.no_grad():
        for p in reference.parameters():
            p.uniform_(-scale, scale)
    fused = carousel.nn.Recurrent(
        input_size, hidden, variant="slstm", backend="numba", dtype=dtype,
        **layer_options, **options,
    )  # fmt: skip
    fused.load_state_dict(reference.state_dict())
    return reference, fused


def _state(layer, dtype, batch=BATCH, empty_rows=(1,)):
    """A random state (h, c, n, m) with a positive normaliser, and some empty rows (all zeros)."""
    shape = (layer.num_layers * layer.num_directions, batch, layer.hidden_size)
    h, c, m = (torch.randn(shape, dtype=dtype) for _ in range(3))
    n = torch.rand(shape, dtype=dtype) + 0.5
    for row in empty_rows:
        for tensor in (h, c, n, m):
            tensor[:, row] = 0.0
    return tuple(t.requires_grad_(True) for t in (h, c, n, m))


def _compare(dtype, lengths=LENGTHS, zero_state=False, scale=0.5, steps=STEPS, **options):
    reference, fused = _pair(dtype, scale, **options)
    x = torch.randn(steps, BATCH, reference.input_size, dtype=dtype, requires_grad=True)
    state = None if zero_state else _state(reference, dtype)
    expected, expected_grads, upstream = run_layer(reference, x, state, lengths)
    actual, actual_grads, _ = run_layer(fused, x, state, lengths, upstream)
    assert_same(actual, expected, dtype, "outputs and final states (h, c, n, m)")
    assert_same(actual_grads, expected_grads, dtype, "gradients")
    return actual, actual_grads


CASES = {
    "heads1-sigmoid": {},
    "heads2-sigmoid": {"num_heads": 2},
    "heads4-exp": {"num_heads": 4, "forget_activation": "exp"},
    "hard_sigmoid-tanh-output": {"gate_activation": "hard_sigmoid", "output_activation": "tanh"},
    "no-bias": {"layer_options": {"bias": False}},
    "L3-no-lengths": {"layer_options": {"num_layers": 3, "bidirectional": False}, "lengths": None},
    "zero-state": {"zero_state": True, "num_heads": 2},
    "heads2-per-head-gemms": {"num_heads": 2, "hidden": 2 * MIN_HEAD_SIZE},
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES.values(), ids=[f"B3-T6-{k}" for k in CASES])
def test_numba_matches_reference(case, dtype):
    """Two layers both ways, a padded batch, a random state with an empty row, unless the case
    says otherwise."""
    _compare(dtype, **case)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_of_the_stabiliser_split_the_error_as_torch_maximum(dtype):
    """Identical input- and forget-gate nets with the exponential forget gate and m = 0 make
    log f + m equal the input net exactly: both backends give each side half the error."""
    reference, fused = _pair(dtype, layer_options={"num_layers": 1, "bidirectional": False},
                             forget_activation="exp")  # fmt: skip
    for layer in (reference, fused):
        with torch.no_grad():
            layer.weight_ih_l0[HIDDEN : 2 * HIDDEN] = layer.weight_ih_l0[:HIDDEN]
            layer.bias_l0[HIDDEN : 2 * HIDDEN] = layer.bias_l0[:HIDDEN]
            layer.weight_hh_l0.zero_()
    x = torch.randn(1, BATCH, INPUT, dtype=dtype, requires_grad=True)
    ones = torch.ones(1, BATCH, HIDDEN, dtype=dtype)
    state = tuple(t.clone().requires_grad_(True) for t in (0 * ones, ones, ones, 0 * ones))
    expected, expected_grads, upstream = run_layer(reference, x, state, None)
    actual, actual_grads, _ = run_layer(fused, x, state, None, upstream)
    assert_same(actual, expected, dtype, "outputs at a tie")
    assert_same(actual_grads, expected_grads, dtype, "gradients at a tie")
    assert float(expected_grads["state3"].abs().min()) > 0.0  # m_0 got its half


def test_gradcheck_and_gradgradcheck_float64():
    torch.manual_seed(2)
    layer = carousel.nn.Recurrent(
        2, 4, num_layers=2, bidirectional=True, variant="slstm", num_heads=2,
        backend="numba", dtype=torch.float64,
    )  # fmt: skip
    with torch.no_grad():
        for p in layer.parameters():
            p.uniform_(-0.5, 0.5)
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    state = _state(layer, torch.float64, batch=2, empty_rows=())
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in layer.parameters()]

    def run(x, *tensors):
        state, weights = tensors[:4], tensors[4:]
        with torch.nn.utils.stateless._reparametrize_module(
            layer, dict(zip(names, weights, strict=True))
        ):
            output, final = layer(x, state, lengths=torch.tensor([4, 3]))
        return (output, *final)

    inputs = (x, *state, *params)
    assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-7)
    small = tuple(t[:, :1] if t.dim() == 3 else t for t in (x, *state))  # one sequence
    layer_one = carousel.nn.Recurrent(
        2, 4, variant="slstm", num_heads=2, backend="numba", dtype=torch.float64
    )
    layer_one.load_state_dict({k: v for k, v in layer.state_dict().items() if "l0" in k and
                               "reverse" not in k})  # fmt: skip
    x1 = small[0].detach().requires_grad_(True)
    h1, c1, n1, m1 = (s[:1].detach().requires_grad_(True) for s in small[1:])
    assert torch.autograd.gradgradcheck(
        lambda x, *s: flatten(layer_one(x, s)), (x1, h1, c1, n1, m1), eps=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("forget", ["sigmoid", "exp"])
def test_large_pre_activations_stay_finite_and_agree(forget, dtype):
    """Weights uniform in [-30, 30] and inputs of size 10: gate nets of several hundred, where
    exp() of them overflows float32 (and exp of the larger ones float64) without the stabiliser."""
    reference, fused = _pair(dtype, scale=30.0, forget_activation=forget)
    x = 10 * torch.randn(40, BATCH, INPUT, dtype=dtype)
    x.requires_grad_(True)
    with torch.no_grad():
        net = x @ reference.weight_ih_l0.T
    assert float(net.abs().max()) > 300
    outputs, grads, upstream = run_layer(reference, x, None, LENGTHS)
    fused_outputs, fused_grads, _ = run_layer(fused, x, None, LENGTHS, upstream)
    for tensor in (*outputs, *fused_outputs, *grads.values(), *fused_grads.values()):
        assert bool(torch.isfinite(tensor).all())
    tolerance = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {}
    for a, e in zip(fused_outputs, outputs, strict=True):
        torch.testing.assert_close(a, e, **tolerance)
    assert all(float(o.detach().abs().max()) <= 1.0 for o in outputs[:1])  # |h| <= |o| |c/n| <= 1


def _longrun_layer(dtype):
    """T = 10,000 with the exponential forget gate biased to grow m by about 3 a step (m reaches
    about 30,000, where exp(m) would overflow any float many times over)."""
    torch.manual_seed(4)
    reference, fused = _pair(
        dtype, scale=0.5, input_size=2, hidden=4, forget_activation="exp",
        layer_options={"num_layers": 1, "bidirectional": False},
    )  # fmt: skip
    for layer in (reference, fused):
        with torch.no_grad():
            layer.bias_l0[4:8] = 3.0
    x = torch.randn(10_000, 2, 2, dtype=dtype, requires_grad=True)
    return reference, fused, x


def _finiterun_layer(layer, x, upstream):
    """Forward and backward; asserts every output, state and gradient is finite."""
    output, (h, c, n, m) = layer(x)
    x.grad = None
    layer.zero_grad()
    (output * upstream).sum().backward()
    for tensor in (output, h, c, n, m, x.grad, *(p.grad for p in layer.parameters())):
        assert bool(torch.isfinite(tensor).all())
    assert float(m.detach().min()) > 20_000
    return output.detach(), x.grad.clone(), layer.weight_hh_l0.grad.clone()


@pytest.mark.parametrize("dtype", DTYPES)
def test_ten_thousand_steps_stay_finite(dtype):
    """The kernels at T = 10,000: outputs, states and gradients finite; the first 300 steps
    equal the reference's (the whole run's comparison is the slow test below)."""
    reference, fused, x = _longrun_layer(dtype)
    upstream = torch.randn(10_000, 2, 4, dtype=dtype)
    _finiterun_layer(fused, x, upstream)
    head = x[:300].detach().requires_grad_(True)
    expected = reference(head)[0]
    torch.testing.assert_close(fused(head)[0], expected)


@pytest.mark.skipif(
    not os.environ.get("CAROUSEL_SLOW_TESTS"),
    reason="about two minutes (the reference loop over 10,000 steps); set CAROUSEL_SLOW_TESTS=1",
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_ten_thousand_steps_reference_and_numba_agree(dtype):
    reference, fused, x = _longrun_layer(dtype)
    upstream = torch.randn(10_000, 2, 4, dtype=dtype)
    expected = _finiterun_layer(reference, x, upstream)
    actual = _finiterun_layer(fused, x, upstream)
    tolerance = {"rtol": 2e-3, "atol": 2e-3} if dtype == torch.float32 else {}
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, **tolerance)


def test_dense_recurrent_weights_are_not_split_into_heads():
    """The kernels split the recurrent GEMMs by head only when the weights outside the diagonal
    blocks are zero (the layer's mask); called directly with dense weights they stay exact."""
    from carousel.cells import CellWeights, make_spec
    from carousel.kernels import numba_cpu, reference

    spec = make_spec("slstm", num_heads=2)
    torch.manual_seed(3)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    weights = CellWeights(
        weight_ih=torch.randn(16, 3, dtype=torch.float64) / 2,
        weight_hh=torch.randn(16, 4, dtype=torch.float64) / 2,  # dense, not block-diagonal
        bias=torch.randn(16, dtype=torch.float64) / 2,
    )
    state = tuple(torch.zeros(2, 4, dtype=torch.float64) for _ in range(4))
    expected = flatten(reference.run_direction(spec, x, state, weights))
    actual = flatten(numba_cpu.run_direction(spec, x, state, weights))
    assert_same(actual, expected, torch.float64, "dense weights")
