"""The fused kernels against the reference backend with layer norm, recurrent and candidate
dropout, zoneout, weight drop and resets: outputs, final states and every gradient under random
upstream gradients, the masks drawn by the layers from the same seed; float64 to 1e-10, float32
to 1e-5. Then float64 gradcheck of the kernels with fixed masks on every variant."""

from __future__ import annotations

import pytest
import torch

import carousel
from carousel.cells import VARIANTS, make_spec
from tests.helpers import assert_same, gradcheck_with_fixed_masks, run_layer

LSTM_VARIANTS = [name for name in VARIANTS if make_spec(name).family == "lstm"]
STEPS, BATCH, INPUT = 6, 3, 3
LENGTHS = torch.tensor([6, 2, 4])
RESET = torch.tensor(
    [[0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=torch.bool
)
EVERY = {"layer_norm": True, "recurrent_dropout": 0.3, "candidate_dropout": 0.3}
EVERY |= {"zoneout": (0.3, 0.2), "weight_drop": 0.3}


def _layers(variant, dtype, options, layer_options):
    torch.manual_seed(1)
    kwargs = dict(num_layers=2, bidirectional=True, dtype=dtype) | layer_options | options
    reference = carousel.nn.Recurrent(INPUT, 4, variant=variant, backend="reference", **kwargs)
    with torch.no_grad():  # keep hard_sigmoid gates away from their kinks
        for p in reference.parameters():
            p.uniform_(-0.5, 0.5)
    fused = carousel.nn.Recurrent(INPUT, 4, variant=variant, backend="numba", **kwargs)
    fused.load_state_dict(reference.state_dict())
    return reference, fused


def _compare(variant, dtype, *, training=True, reset=None, lengths=LENGTHS, layer_options=None,
             **options):  # fmt: skip
    reference, fused = _layers(variant, dtype, options, layer_options or {})
    reference.train(training)
    fused.train(training)
    x = torch.randn(STEPS, BATCH, INPUT, dtype=dtype, requires_grad=True)
    sizes = reference.spec.state_sizes(reference.hidden_size, reference.proj_size)
    state = [torch.randn(4, BATCH, size, dtype=dtype) for size in sizes]
    if reference.spec.feedback_gates:
        state[2] = torch.rand(4, BATCH, sizes[2], dtype=dtype)
    if reference.spec.family == "slstm":  # a normaliser n well away from 0
        state[2] = torch.rand(4, BATCH, sizes[2], dtype=dtype) + 0.5
    state = tuple(s.requires_grad_(True) for s in state)
    # the masks drawn from one seed: the same for both backends
    expected, expected_grads, upstream = run_layer(
        reference, x, state, lengths, reset=reset, seed=7
    )
    actual, actual_grads, _ = run_layer(fused, x, state, lengths, upstream, reset=reset, seed=7)
    assert_same(actual, expected, dtype, f"{variant} {options} outputs and final states")
    assert_same(actual_grads, expected_grads, dtype, f"{variant} {options} gradients")


DTYPES = [pytest.param(torch.float64, id="f64"), pytest.param(torch.float32, id="f32")]
ALONE = {
    "layer_norm": ({"layer_norm": True}, True),
    "recurrent_dropout": ({"recurrent_dropout": 0.4}, True),
    "candidate_dropout": ({"candidate_dropout": 0.4}, True),
    "zoneout": ({"zoneout": 0.3}, True),
    "zoneout-eval": ({"zoneout": 0.3}, False),
    "weight_drop": ({"weight_drop": 0.4}, True),
    "reset": ({"reset": RESET}, True),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("options", "training"), ALONE.values(), ids=ALONE.keys())
@pytest.mark.parametrize("variant", ["vanilla", "gru"])
def test_each_option_matches_reference(variant, options, training, dtype):
    """Two layers, both directions, a padded batch with lengths."""
    _compare(variant, dtype, training=training, **options)


@pytest.mark.parametrize("variant", [*LSTM_VARIANTS, "gru"])
def test_every_option_at_once_matches_reference_on_every_variant(variant):
    options = dict(EVERY, zoneout=0.3) if variant == "gru" else EVERY
    _compare(variant, torch.float64, reset=RESET, **options)


COMBINATIONS = {
    "vanilla-proj2": ("vanilla", {"layer_options": {"proj_size": 2}}),
    "1997-blocks2-truncate": ("1997", {"block_size": 2, "truncate_gradient": True}),
    "peephole-truncate": ("peephole", {"truncate_gradient": True}),
    "cifg-hard_sigmoid": ("cifg", {"gate_activation": "hard_sigmoid"}),
    "vanilla-eval": ("vanilla", {"training": False}),
    "gru-eval-no-bias": ("gru", {"training": False, "layer_options": {"bias": False}}),
    "vanilla-full-lengths": ("vanilla", {"lengths": None}),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("variant", "extra"), COMBINATIONS.values(), ids=COMBINATIONS.keys())
def test_every_option_with_other_options_matches_reference(variant, extra, dtype):
    options = dict(EVERY, zoneout=0.3) if variant == "gru" else dict(EVERY)
    _compare(variant, dtype, reset=RESET, **options | extra)


def test_packed_and_batch_first_input_with_resets_match_reference():
    reference, fused = _layers("vanilla", torch.float64, EVERY, {"batch_first": True})
    x = torch.randn(BATCH, STEPS, INPUT, dtype=torch.float64)
    reset = RESET.T.contiguous()  # (N, L) with batch_first
    results = []
    for layer in (reference, fused):
        torch.manual_seed(3)
        padded, _ = layer(x, lengths=LENGTHS, reset=reset)
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, LENGTHS, batch_first=True, enforce_sorted=False
        )
        torch.manual_seed(3)
        output, _ = layer(packed, reset=reset)
        unpacked, _ = torch.nn.utils.rnn.pad_packed_sequence(output, batch_first=True)
        results.append((padded, unpacked))
    assert_same([results[1][0]], [results[0][0]], torch.float64, "padded")
    assert_same([results[1][1]], [results[0][1]], torch.float64, "packed")
    assert_same([results[0][1]], [results[0][0]], torch.float64, "packed = padded")


@pytest.mark.parametrize("variant", [*LSTM_VARIANTS, "gru"])
def test_gradcheck_float64_with_fixed_masks(variant):
    """The kernels' hand-written backward of every option at once, against finite differences
    (fast mode: random projections of the Jacobian), masks fixed by reseeding."""
    options = dict(EVERY, zoneout=0.3) if variant == "gru" else EVERY
    layer = carousel.nn.Recurrent(
        2, 4 if variant == "1997" else 2, variant=variant, backend="numba",
        dtype=torch.float64, bidirectional=True, **options,
    )  # fmt: skip
    assert gradcheck_with_fixed_masks(layer)
