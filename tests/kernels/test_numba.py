"""The numba backend against the reference backend: outputs, final states and every gradient
(parameters, input, initial states) under random upstream gradients for the output and each final
state; float64 to 1e-10, float32 to 1e-5. Then gradcheck, the plain kernels, and selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import carousel
from carousel import kernels
from carousel.cells import VARIANTS, make_spec
from carousel.kernels import numba_cpu
from tests.helpers import assert_same, flatten, run_layer

LSTM_VARIANTS = [name for name in VARIANTS if make_spec(name).family == "lstm"]
BATCH, STEPS, INPUT = 3, 6, 3
LENGTHS = torch.tensor([6, 2, 4])


def _layers(variant, dtype, hidden, options, layer_options):
    torch.manual_seed(1)
    reference = carousel.nn.Recurrent(
        INPUT, hidden, variant=variant, backend="reference", dtype=dtype,
        **layer_options, **options,
    )  # fmt: skip
    with torch.no_grad():  # keep hard_sigmoid gates away from their kinks
        for p in reference.parameters():
            p.uniform_(-0.5, 0.5)
    fused = carousel.nn.Recurrent(
        INPUT, hidden, variant=variant, backend="numba", dtype=dtype,
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


def _compare(variant, dtype, hidden=4, lengths=LENGTHS, layer_options=None, **options):
    layer_options = {"num_layers": 2, "bidirectional": True} | (layer_options or {})
    reference, fused = _layers(variant, dtype, hidden, options, layer_options)
    x = torch.randn(STEPS, BATCH, INPUT, dtype=dtype, requires_grad=True)
    state = _initial_state(reference, dtype)
    expected, expected_grads, upstream = run_layer(reference, x, state, lengths)
    actual, actual_grads, _ = run_layer(fused, x, state, lengths, upstream)
    assert_same(actual, expected, dtype, f"{variant} outputs and final states")
    assert_same(actual_grads, expected_grads, dtype, f"{variant} gradients")
    return fused


DTYPES = [pytest.param(torch.float64, id="f64"), pytest.param(torch.float32, id="f32")]
SHAPE = f"B{BATCH}-T{STEPS}-H4"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", [*LSTM_VARIANTS, "gru", "elman"])
def test_every_cell_matches_reference(variant, dtype):
    """Two layers, both directions, padded batch with lengths."""
    _compare(variant, dtype)


OPTIONS = {
    "vanilla-hard_sigmoid": ("vanilla", {"gate_activation": "hard_sigmoid"}),
    "noaf-hard_sigmoid": ("noaf", {"gate_activation": "hard_sigmoid"}),  # h = o * c, seed 004
    "vanilla-identity-output": ("vanilla", {"output_activation": "identity"}),
    "vanilla-blocks2": ("vanilla", {"block_size": 2}),
    "1997-blocks2": ("1997", {"block_size": 2}),
    "1997-blocks2-truncate": ("1997", {"block_size": 2, "truncate_gradient": True}),
    "1997-truncate": ("1997", {"truncate_gradient": True}),
    "peephole-truncate": ("peephole", {"truncate_gradient": True}),
    "cifg-hard_sigmoid-truncate": (
        "cifg",
        {"gate_activation": "hard_sigmoid", "truncate_gradient": True},
    ),
    "vanilla-proj2": ("vanilla", {"proj_size": 2}),
    "peephole-proj3-no-bias": ("peephole", {"proj_size": 3, "bias": False}),
    "vanilla-no-bias": ("vanilla", {"bias": False}),
    "nig-cell_bias-false": ("nig", {"cell_bias": False}),
    "1997-cell_bias-false": ("1997", {"cell_bias": False}),
    "fgr-no-peepholes": ("fgr", {"peepholes": False}),
    "gru-no-bias": ("gru", {"bias": False}),
    "gru-hard_sigmoid": ("gru", {"gate_activation": "hard_sigmoid"}),
    "elman-relu": ("elman", {"nonlinearity": "relu"}),
    "elman-no-bias": ("elman", {"bias": False}),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("variant", "options"), OPTIONS.values(), ids=OPTIONS.keys())
def test_every_option_matches_reference(variant, options, dtype):
    options = dict(options)
    layer_options = {k: options.pop(k) for k in ("proj_size", "bias") if k in options}
    _compare(variant, dtype, layer_options=layer_options, **options)


CONFIGS = {
    f"L1-{SHAPE}-no-lengths": ({"num_layers": 1}, None),
    f"L3-{SHAPE}-lengths": ({"num_layers": 3}, LENGTHS),
    f"L1-bi-{SHAPE}-reverse-lengths": ({"num_layers": 1, "bidirectional": True}, LENGTHS),
    f"L2-bi-{SHAPE}-all-full-length": ({"num_layers": 2, "bidirectional": True}, None),
}


@pytest.mark.parametrize("variant", ["vanilla", "1997", "gru", "elman"])
@pytest.mark.parametrize(("layer_options", "lengths"), CONFIGS.values(), ids=CONFIGS.keys())
def test_stacks_directions_and_lengths_match_reference(variant, layer_options, lengths):
    _compare(variant, torch.float64, lengths=lengths, layer_options=layer_options)


def test_batch_first_packed_and_unbatched_inputs_match_reference():
    reference, fused = _layers(
        "peephole", torch.float64, 4, {}, {"batch_first": True, "bidirectional": True}
    )
    x = torch.randn(BATCH, STEPS, INPUT, dtype=torch.float64)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, LENGTHS, True, enforce_sorted=False)
    for inputs in (x, packed, x[0]):
        assert_same(flatten(fused(inputs)), flatten(reference(inputs)), torch.float64, "outputs")


def test_dropout_between_layers_uses_the_same_masks():
    reference, fused = _layers("vanilla", torch.float64, 4, {}, {"num_layers": 2, "dropout": 0.5})
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
    torch.manual_seed(5)
    expected = reference(x)[0]
    torch.manual_seed(5)
    assert_same([fused(x)[0]], [expected], torch.float64, "output with dropout")


def test_forward_without_autograd_equals_forward_with_it():
    layer = carousel.LSTM(INPUT, 4, variant="1997", block_size=2, backend="numba")
    x = torch.randn(STEPS, BATCH, INPUT)
    with_grad = flatten(layer(x, lengths=LENGTHS))
    with torch.no_grad():
        without = flatten(layer(x, lengths=LENGTHS))
    assert all(torch.equal(a, b) for a, b in zip(with_grad, without, strict=True))
    assert with_grad[0].grad_fn is not None and without[0].grad_fn is None


@pytest.mark.parametrize(
    ("variant", "options"),
    [
        ("vanilla", {}),
        ("peephole", {"proj_size": 2}),
        ("1997", {"block_size": 2}),
        ("cifg", {}),
        ("fgr", {}),
        ("gru", {}),
        ("elman", {}),
    ],
    ids=["vanilla", "peephole-proj2", "1997-blocks2", "cifg", "fgr", "gru", "elman"],
)
def test_gradcheck_float64(variant, options):
    options = dict(options)
    proj_size = options.pop("proj_size", 0)
    layer = carousel.nn.Recurrent(
        2, 4, num_layers=2, bidirectional=True, proj_size=proj_size, variant=variant,
        backend="numba", dtype=torch.float64, **options,
    )  # fmt: skip
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    sizes = layer.spec.state_sizes(4, proj_size)
    state = tuple(torch.rand(4, 2, s, dtype=torch.float64, requires_grad=True) for s in sizes)
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in layer.parameters()]

    def run(x, *tensors):
        state, weights = tensors[: len(sizes)], tensors[len(sizes) :]
        with torch.nn.utils.stateless._reparametrize_module(
            layer, dict(zip(names, weights, strict=True))
        ):
            output, final = layer(
                x, state if len(state) > 1 else state[0], lengths=torch.tensor([4, 3])
            )
        return (output, *flatten(final))

    assert torch.autograd.gradcheck(run, (x, *state, *params), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "variant, options",
    [("vanilla", {}), ("vanilla", {"proj_size": 2}), ("1997", {}), ("gru", {}), ("elman", {}),
     ("slstm", {"num_heads": 1})],
    ids=["vanilla", "vanilla-proj", "1997", "gru", "elman", "slstm"],
)  # fmt: skip
@pytest.mark.parametrize("direction", ["forward", "bidirectional-lengths"])
def test_outputs_changed_in_place_before_backward_do_not_change_the_gradients(
    variant, options, direction
):
    """The caller may change the output and the final states in place before backward (torch.nn
    allows it): the kernels must not read them back as saved activations."""
    bidirectional = direction != "forward"
    layer_options = {"bidirectional": bidirectional, "num_layers": 2}
    reference, fused = _layers(variant, torch.float64, 4, options, layer_options)
    lengths = LENGTHS if bidirectional else None
    results = []
    for layer in (reference, fused):
        torch.manual_seed(3)
        x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64, requires_grad=True)
        output, final = layer(x, lengths=lengths)
        outputs = flatten((output, final))
        upstream = [torch.randn_like(o) for o in outputs]
        for o in outputs:
            o.mul_(3.0).add_(0.5)  # after the forward pass, before the backward pass
        sum((o * u).sum() for o, u in zip(outputs, upstream, strict=True)).backward()
        results.append({"input": x.grad, **{n: p.grad for n, p in layer.named_parameters()}})
    assert_same(results[1], results[0], torch.float64, f"{variant} {direction}")


def test_activation_runs_apply_each_values_own_activation_over_any_window():
    """The kernels' activation table (runs of equal activations) against each activation's own
    definition, over windows that start and stop inside runs; values outside stay untouched."""
    from carousel.cells.activations import ACTIVATIONS
    from carousel.kernels.numba_cpu import common

    names = ["sigmoid", "sigmoid", "tanh", "relu", "relu", "relu", "g1997", "identity"]
    names += ["hard_sigmoid", "h1997", "h1997", "sigmoid"]
    codes = np.array([ACTIVATIONS[n].code for n in names], np.int64)
    bounds, _ = common.activation_table(codes, np.float64)
    assert bounds.tolist() == [[0, 2], [2, 3], [3, 6], [6, 7], [7, 8], [8, 9], [9, 11], [11, 12]]
    table = common.activation_table(codes, np.float64)
    x = np.linspace(-3.0, 3.0, len(names)) + 0.05  # away from the kinks of relu, hard_sigmoid
    for start, stop in [(0, 12), (1, 10), (4, 5), (3, 3)]:
        values, slopes = x.copy(), np.full_like(x, 7.0)
        common.activate(values, table, start, stop)
        common.derivatives(values, table, start, stop, slopes)
        for j, name in enumerate(names):
            if start <= j < stop:
                y = ACTIVATIONS[name].forward(torch.tensor(x[j])).item()
                assert values[j] == pytest.approx(y, rel=1e-14, abs=1e-15), (name, j)
                expected = float(ACTIVATIONS[name].derivative_from_output(np.array(y)))
                assert slopes[j] == pytest.approx(expected, rel=1e-12, abs=1e-15), (name, j)
            else:
                assert values[j] == x[j] and slopes[j] == 7.0


def test_plain_kernels_run_inside_a_compiled_training_loop():
    """The njit functions take NumPy arrays, so a compiled loop can train without torch."""
    from numba import njit

    from carousel.kernels.numba_cpu.lstm import lstm_backward, lstm_config, lstm_forward

    @njit(cache=False)
    def train(config, xs, targets, weight_ih, bias, weight_hh, steps, learning_rate):
        empty, empty3 = np.zeros((0, 0)), np.zeros((0, 0, 0))  # no projection, options, masks
        hidden = weight_hh.shape[1] // 2
        lengths = np.full(1, xs.shape[1], dtype=np.int64)
        reverse, keep = steps < 0, steps > 0  # runtime flags: constants would compile anew
        zeros = np.zeros((1, hidden))
        workspace = np.empty(xs.shape[1] * weight_ih.shape[0])  # reused by every backward call
        losses = np.zeros(steps)
        for n in range(steps):
            x = xs[n % xs.shape[0]].reshape((xs.shape[1], 1, xs.shape[2]))
            out = lstm_forward(
                config, x, zeros, zeros, zeros, weight_ih, bias, weight_hh, empty, empty,
                empty, empty, empty, empty, empty, empty3, empty3, empty, lengths, reverse, keep,
            )  # fmt: skip
            error = out[0][-1, 0, 0] - targets[n % xs.shape[0]]
            losses[n] = 0.5 * error * error
            d_output = np.zeros_like(out[0])
            d_output[-1, 0, 0] = error
            grads = lstm_backward(
                config, x, weight_ih, weight_hh, empty, empty, empty, empty, empty, empty, empty,
                empty3, empty3, empty, lengths, reverse, *out[4:10], d_output, zeros, zeros,
                zeros, reverse, workspace,
            )  # fmt: skip
            weight_ih -= learning_rate * grads[4]
            bias -= learning_rate * grads[5]
            weight_hh -= learning_rate * grads[6]
        return losses

    spec = make_spec("1997", block_size=2, truncate_gradient=True)
    rng = np.random.default_rng(0)
    xs = rng.uniform(-1, 1, (8, 5, 2))
    targets = 0.5 * xs[:, :, 0].sum(axis=1) / 5
    weight_ih = rng.uniform(-0.1, 0.1, (8, 2))
    weight_hh = rng.uniform(-0.1, 0.1, (8, 8))
    bias = np.zeros(8)
    losses = train(lstm_config(spec, 4), xs, targets, weight_ih, bias, weight_hh, 400, 0.5)
    assert losses[-40:].mean() < 0.5 * losses[:40].mean()


def _work(variant="vanilla", **changes):
    fields = dict(
        spec=make_spec(variant),
        device=torch.device("cpu"),
        dtype=torch.float32,
        steps=100,
        batch=1,
        input_size=8,
        hidden_size=32,
        proj_size=0,
        num_layers=1,
        num_directions=1,
        has_lengths=False,
    )
    return kernels.Workload(**(fields | changes))


def test_auto_runs_every_cell_that_torch_lacks_on_the_numba_kernels():
    for variant in LSTM_VARIANTS:
        if variant not in ("vanilla", "np"):
            big = _work(variant, batch=64, hidden_size=256)
            assert kernels.select("auto", big).name == "numba", variant
    for variant in ("gru", "elman"):  # torch has no fused CPU operator for them
        assert kernels.select("auto", _work(variant, batch=64, hidden_size=256)).name == "numba"


def test_auto_leaves_the_stock_lstm_to_onednn_from_the_measured_width():
    assert kernels.select("auto", _work("vanilla")).name == "numba"  # B x H = 32
    assert kernels.select("auto", _work("vanilla", batch=16, hidden_size=64)).name == "torch-native"
    assert kernels.select("auto", _work("vanilla", batch=64, hidden_size=256)).name == "numba"
    big_inference = _work("vanilla", batch=64, hidden_size=256, needs_grad=False)
    assert kernels.select("auto", big_inference).name == "torch-native"
    inference = _work("vanilla", batch=8, hidden_size=32, needs_grad=False)  # 256
    assert kernels.select("auto", inference).name == "torch-native"
    assert kernels.select("auto", _work("vanilla", batch=8, hidden_size=32)).name == "numba"
    float64 = _work("vanilla", batch=64, hidden_size=256, dtype=torch.float64)
    assert kernels.select("auto", float64).name == "numba"  # oneDNN has no float64 LSTM


def test_unsupported_workloads_are_explained(monkeypatch):
    backend = kernels.BACKENDS["numba"]
    assert backend.unsupported(_work()) is None
    assert backend.unsupported(_work(dtype=torch.float16)) is None  # computed in float32
    assert "float32 or float64" in backend.unsupported(_work(dtype=torch.int32))
    assert "torch.func" in backend.unsupported(_work(context="a torch.func transform is active"))
    assert "CPU only" in backend.unsupported(_work(device=torch.device("meta")))
    monkeypatch.setattr(numba_cpu, "missing_dependency", lambda: "numba is not installed")
    assert backend.unsupported(_work()) == "numba is not installed"
    assert kernels.select("auto", _work("peephole")).name == "reference"
    with pytest.raises(ValueError, match="backend 'numba' cannot run this layer: numba is not"):
        kernels.select("numba", _work())
