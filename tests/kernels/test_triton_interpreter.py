"""The triton backend against the reference backend, run by Triton's interpreter on CPU tensors.

Outputs, final states and every gradient (parameters, input, initial states) under random upstream
gradients for the output and each final state, for every cell, option, stacking, direction and
lengths; float64 to 1e-10, float32 to 1e-5. The kernels are the ones compiled for GPUs, executed
by NumPy (``TRITON_INTERPRET=1``), so shapes are small: T <= 5, B = 3, H = 4.

The interpreter must be chosen before the kernels are first imported, so this module runs in a
subprocess with ``TRITON_INTERPRET=1`` in its environment, started by
``test_triton.py::test_interpreter_suite``; in any other process it skips with that reason. To
run it alone: ``TRITON_INTERPRET=1 pytest tests/kernels/test_triton_interpreter.py``.
"""

from __future__ import annotations

import os

import pytest
import torch

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip(
        "runs in a subprocess with TRITON_INTERPRET=1, started by "
        "tests/kernels/test_triton.py::test_interpreter_suite",
        allow_module_level=True,
    )
pytest.importorskip("triton", reason="triton is not installed (pip install 'carousel-lstm[gpu]')")

import carousel
from carousel.cells import VARIANTS, make_spec
from tests.helpers import assert_same, flatten

LSTM_VARIANTS = [name for name in VARIANTS if make_spec(name).family == "lstm"]
BATCH, STEPS, INPUT, HIDDEN = 3, 5, 3, 4
LENGTHS = torch.tensor([5, 2, 4])
DTYPES = [pytest.param(torch.float32, id="f32"), pytest.param(torch.float64, id="f64")]


def _layers(variant, dtype, options, layer_options):
    torch.manual_seed(1)
    reference = carousel.nn.Recurrent(
        INPUT, HIDDEN, variant=variant, backend="reference", dtype=dtype,
        **layer_options, **options,
    )  # fmt: skip
    with torch.no_grad():  # keep hard_sigmoid gates away from their kinks
        for p in reference.parameters():
            p.uniform_(-0.5, 0.5)
    fused = carousel.nn.Recurrent(
        INPUT, HIDDEN, variant=variant, backend="triton", dtype=dtype,
        **layer_options, **options,
    )  # fmt: skip
    fused.load_state_dict(reference.state_dict())
    return reference, fused


def _initial_state(layer, dtype):
    stacked = layer.num_layers * layer.num_directions
    sizes = layer.spec.state_sizes(layer.hidden_size, layer.proj_size)
    state = [torch.randn(stacked, BATCH, s, dtype=dtype) for s in sizes]
    if layer.spec.feedback_gates:  # gate activations lie in (0, 1)
        state[2] = torch.rand(stacked, BATCH, sizes[2], dtype=dtype)
    return tuple(s.requires_grad_(True) for s in state)


def _run(layer, x, state, lengths, upstream=None):
    """Forward, then backward with ``upstream`` (random if None); outputs and all gradients."""
    layer.zero_grad()
    for t in (x, *state):
        t.grad = None
    output, final = layer(x, state if len(state) > 1 else state[0], lengths=lengths)
    outputs = flatten((output, final))
    if upstream is None:
        upstream = [torch.randn_like(o) for o in outputs]
    sum((o * u).sum() for o, u in zip(outputs, upstream, strict=True)).backward()
    grads = {name: p.grad.clone() for name, p in layer.named_parameters()}
    for name, t in [("input", x)] + [(f"state{i}", s) for i, s in enumerate(state)]:
        grads[name] = torch.zeros_like(t) if t.grad is None else t.grad.clone()
    return [o.detach() for o in outputs], grads, upstream


def _compare(variant, dtype, lengths=LENGTHS, layer_options=None, **options):
    layer_options = {"bidirectional": True} | (layer_options or {})
    reference, fused = _layers(variant, dtype, options, layer_options)
    x = torch.randn(STEPS, BATCH, INPUT, dtype=dtype, requires_grad=True)
    state = _initial_state(reference, dtype)
    expected, expected_grads, upstream = _run(reference, x, state, lengths)
    actual, actual_grads, _ = _run(fused, x, state, lengths, upstream)
    assert_same(actual, expected, dtype, f"{variant} outputs and final states")
    assert_same(actual_grads, expected_grads, dtype, f"{variant} gradients")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", [*LSTM_VARIANTS, "gru", "elman"])
def test_every_cell_matches_reference(variant, dtype):
    """One layer, both directions, a padded batch with lengths."""
    _compare(variant, dtype, layer_options={"num_layers": 1})


OPTIONS = {
    "vanilla-hard_sigmoid": ("vanilla", {"gate_activation": "hard_sigmoid"}),
    "noaf-hard_sigmoid": ("noaf", {"gate_activation": "hard_sigmoid"}),
    "vanilla-identity-output": ("vanilla", {"output_activation": "identity"}),
    "vanilla-blocks2": ("vanilla", {"block_size": 2}),
    "1997-blocks2": ("1997", {"block_size": 2}),
    "1997-blocks4-truncate": ("1997", {"block_size": 4, "truncate_gradient": True}),
    "1997-truncate": ("1997", {"truncate_gradient": True}),
    "peephole-truncate": ("peephole", {"truncate_gradient": True}),
    "cifg-hard_sigmoid-truncate": (
        "cifg",
        {"gate_activation": "hard_sigmoid", "truncate_gradient": True},
    ),
    "fgr-no-peepholes": ("fgr", {"peepholes": False}),
    "nig-cell_bias-false": ("nig", {"cell_bias": False}),
    "vanilla-proj2": ("vanilla", {"proj_size": 2}),
    "peephole-proj3-no-bias": ("peephole", {"proj_size": 3, "bias": False}),
    "vanilla-proj3-truncate": ("vanilla", {"proj_size": 3, "truncate_gradient": True}),
    "vanilla-no-bias": ("vanilla", {"bias": False}),
    "gru-no-bias": ("gru", {"bias": False}),
    "gru-hard_sigmoid": ("gru", {"gate_activation": "hard_sigmoid"}),
    "elman-relu": ("elman", {"nonlinearity": "relu"}),
    "elman-no-bias": ("elman", {"bias": False}),
}


@pytest.mark.parametrize(("variant", "options"), OPTIONS.values(), ids=OPTIONS.keys())
def test_every_option_matches_reference(variant, options):
    """One bidirectional layer with lengths, float64 (float32 runs the same kernels with another
    ``COMPUTE`` type, checked for every cell above)."""
    options = dict(options)
    layer_options = {k: options.pop(k) for k in ("proj_size", "bias") if k in options}
    _compare(variant, torch.float64, layer_options={"num_layers": 1} | layer_options, **options)


SHAPE = f"B{BATCH}-T{STEPS}-H{HIDDEN}"
CONFIGS = {
    f"L1-{SHAPE}-no-lengths": ({"bidirectional": False}, None),
    f"L3-{SHAPE}-lengths": ({"num_layers": 3, "bidirectional": False}, LENGTHS),
    f"L2-bi-{SHAPE}-lengths": ({"num_layers": 2}, LENGTHS),
    f"L2-bi-{SHAPE}-all-full-length": ({"num_layers": 2}, None),
}


@pytest.mark.parametrize("variant", ["vanilla", "1997", "gru", "elman"])
@pytest.mark.parametrize(("layer_options", "lengths"), CONFIGS.values(), ids=CONFIGS.keys())
def test_stacks_directions_and_lengths_match_reference(variant, layer_options, lengths):
    _compare(variant, torch.float64, lengths=lengths, layer_options=layer_options)


def test_batch_first_packed_and_unbatched_inputs_match_reference():
    reference, fused = _layers("peephole", torch.float64, {}, {"batch_first": True})
    x = torch.randn(BATCH, STEPS, INPUT, dtype=torch.float64)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, LENGTHS, True, enforce_sorted=False)
    for inputs in (x, packed, x[0]):
        assert_same(flatten(fused(inputs)), flatten(reference(inputs)), torch.float64, "outputs")


def test_dropout_between_layers_uses_the_same_masks():
    reference, fused = _layers("gru", torch.float64, {}, {"num_layers": 2, "dropout": 0.5})
    x = torch.randn(3, BATCH, INPUT, dtype=torch.float64)
    torch.manual_seed(5)
    expected = reference(x)[0]
    torch.manual_seed(5)
    assert_same([fused(x)[0]], [expected], torch.float64, "output with dropout")


def test_forward_without_autograd_equals_forward_with_it():
    layer = carousel.LSTM(INPUT, 4, variant="1997", block_size=2, backend="triton")
    x = torch.randn(3, BATCH, INPUT)
    lengths = torch.tensor([3, 1, 2])
    with_grad = flatten(layer(x, lengths=lengths))
    with torch.no_grad():
        without = flatten(layer(x, lengths=lengths))
    assert all(torch.equal(a, b) for a, b in zip(with_grad, without, strict=True))
    assert with_grad[0].grad_fn is not None and without[0].grad_fn is None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_low_precision_layers_compute_in_float32_like_the_reference(dtype):
    reference, fused = _layers("cifg", dtype, {}, {"num_layers": 1})
    x = torch.randn(3, BATCH, INPUT, dtype=dtype)
    expected, actual = flatten(reference(x)), flatten(fused(x))
    assert all(t.dtype == dtype for t in actual)
    assert_same([t.float() for t in actual], [t.float() for t in expected], torch.float32, "")


@pytest.mark.parametrize("variant", ["peephole", "gru"])
def test_gradient_penalty_differentiates_through_the_reference_twin(variant):
    """create_graph=True: the backward pass is itself differentiated (second derivatives)."""
    results = []
    for backend in ("reference", "triton"):
        torch.manual_seed(3)
        layer = carousel.nn.Recurrent(
            INPUT, HIDDEN, variant=variant, backend=backend, dtype=torch.float64
        )
        x = torch.randn(3, 2, INPUT, dtype=torch.float64, requires_grad=True)
        (d_x,) = torch.autograd.grad(layer(x)[0].pow(2).sum(), x, create_graph=True)
        d_x.pow(2).sum().backward()
        results.append([x.grad, *(p.grad for p in layer.parameters())])
    assert_same(results[1], results[0], torch.float64, "second derivatives")


def test_torch_func_calls_are_handed_over_and_match_the_reference():
    torch.manual_seed(4)
    layer = carousel.LSTM(INPUT, HIDDEN, variant="peephole", backend="triton", dtype=torch.float64)
    x = torch.randn(3, 2, INPUT, dtype=torch.float64)
    params = dict(layer.named_parameters())

    def loss(params):
        return torch.func.functional_call(layer, params, (x,))[0].sum()

    transformed = torch.func.grad(loss)(params)
    layer.backend = "reference"
    expected = torch.func.grad(loss)(params)
    assert_same(transformed, expected, torch.float64, "torch.func.grad")


def test_empty_batch_is_handed_to_the_reference_loop():
    layer = carousel.GRU(INPUT, HIDDEN, backend="triton")
    output, h_n = layer(torch.randn(3, 0, INPUT))
    assert output.shape == (3, 0, HIDDEN) and h_n.shape == (1, 0, HIDDEN)
