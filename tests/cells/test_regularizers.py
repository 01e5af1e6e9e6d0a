"""Layer normalisation, recurrent and candidate dropout and zoneout in the reference backend,
against independent NumPy implementations of the papers' equations (tests/oracles.py), with
fixed masks; float64 gradcheck with fixed masks; the options' validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import carousel
from carousel.cells import VARIANTS, make_spec
from carousel.cells.regularizers import Masks, Regularizers, direction_resets
from carousel.kernels import reference
from tests.oracles import gru_forward, lstm_forward

LSTM_VARIANTS = [name for name in VARIANTS if make_spec(name).family == "lstm"]
STEPS, HIDDEN = 7, 4


def _layer(variant, **options):
    torch.manual_seed(0)
    layer = carousel.nn.Recurrent(
        3, HIDDEN, variant=variant, backend="reference", dtype=torch.float64, **options
    )
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.startswith("ln_") and "weight" in name:
                p.uniform_(0.5, 1.5)  # gains away from their initial 1, so they matter
            else:
                p.uniform_(-0.5, 0.5)
    return layer


def _masks(hidden, training, generator):
    """Fixed masks of one sequence: dropout masks as a layer draws them (0 or 1 / (1 - p)) and
    zoneout weights, Bernoulli draws (training) or the probability itself (evaluation)."""

    def bernoulli(p, *shape):
        return torch.bernoulli(torch.full(shape, p, dtype=torch.float64), generator=generator)

    if not training:
        return {
            "zoneout_cell": torch.full((STEPS, hidden), 0.3, dtype=torch.float64),
            "zoneout_hidden": torch.full((STEPS, hidden), 0.2, dtype=torch.float64),
        }
    return {
        "recurrent": bernoulli(0.6, hidden) / 0.6,
        "candidate": bernoulli(0.7, hidden) / 0.7,
        "zoneout_cell": bernoulli(0.3, STEPS, hidden),
        "zoneout_hidden": bernoulli(0.2, STEPS, hidden),
    }


def _run_reference(layer, x, masks):
    """One direction of the layer's first layer through the reference backend, one sequence."""
    weights = layer.cell_weights(0)
    sizes = layer.spec.state_sizes(HIDDEN)
    state = tuple(torch.zeros(1, size, dtype=torch.float64) for size in sizes)
    batched = {
        name: (mask.unsqueeze(0) if mask.dim() == 1 else mask.unsqueeze(1))
        for name, mask in masks.items()
    }
    if layer.spec.family == "gru":
        batched.pop("zoneout_cell", None)
    output, _ = reference.run_direction(
        layer.spec, x.unsqueeze(1), state, weights, masks=Masks(**batched)
    )
    return output[:, 0].detach().numpy()


def _numpy(masks):
    return {name: mask.numpy() for name, mask in masks.items()}


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("layer_norm", [False, True], ids=["", "layer_norm"])
@pytest.mark.parametrize("variant", LSTM_VARIANTS)
def test_lstm_matches_numpy_oracle(variant, layer_norm, training):
    """Ba et al.'s layer norm, Gal's recurrent mask, Semeniuta's candidate mask and Krueger's
    zoneout (Bernoulli in training, the expectation in evaluation), on every LSTM variant."""
    layer = _layer(variant, layer_norm=layer_norm)
    generator = torch.Generator().manual_seed(1)
    masks = _masks(HIDDEN, training, generator)
    x = torch.randn(STEPS, 3, dtype=torch.float64, generator=generator)
    params = {name: p.detach().numpy() for name, p in layer.parameter_groups()[0].params.items()}
    expected = lstm_forward(layer.spec, params, x.numpy(), HIDDEN, _numpy(masks))
    np.testing.assert_allclose(_run_reference(layer, x, masks), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("layer_norm", [False, True], ids=["", "layer_norm"])
def test_gru_matches_numpy_oracle(layer_norm, training):
    layer = _layer("gru", layer_norm=layer_norm)
    generator = torch.Generator().manual_seed(2)
    masks = _masks(HIDDEN, training, generator)
    masks.pop("zoneout_cell")
    x = torch.randn(STEPS, 3, dtype=torch.float64, generator=generator)
    params = {name: p.detach().numpy() for name, p in layer.parameter_groups()[0].params.items()}
    expected = gru_forward(params, x.numpy(), HIDDEN, layer_norm, _numpy(masks))
    np.testing.assert_allclose(_run_reference(layer, x, masks), expected, rtol=1e-12, atol=1e-12)


def test_zero_recurrent_mask_cuts_the_recurrence_and_zoneout_one_freezes_the_state():
    """Limits of the equations: a recurrent mask of zeros is a layer whose weight_hh is zero, and
    zoneout weights of one keep the initial (zero) state forever."""
    layer = _layer("peephole")
    x = torch.randn(STEPS, 3, dtype=torch.float64)
    dropped = _run_reference(layer, x, {"recurrent": torch.zeros(HIDDEN, dtype=torch.float64)})
    with torch.no_grad():
        layer.weight_hh_l0.zero_()
    np.testing.assert_allclose(dropped, _run_reference(layer, x, {}), rtol=1e-14, atol=1e-14)
    frozen = {
        "zoneout_cell": torch.ones(STEPS, HIDDEN, dtype=torch.float64),
        "zoneout_hidden": torch.ones(STEPS, HIDDEN, dtype=torch.float64),
    }
    assert np.all(_run_reference(layer, x, frozen) == 0.0)
    assert not np.all(_run_reference(layer, x, {}) == 0.0)


GRADCHECK = [
    ("peephole", {"layer_norm": True}),
    ("1997", {"layer_norm": True, "block_size": 2}),
    ("gru", {"layer_norm": True}),
]


@pytest.mark.parametrize(("variant", "options"), GRADCHECK, ids=[v for v, _ in GRADCHECK])
def test_reference_gradcheck_with_fixed_masks(variant, options):
    """Every option at once (layer norm, both dropouts, zoneout, weight drop, resets), the masks
    fixed by reseeding before each evaluation (gradcheck's fast mode: random projections of the
    Jacobian; the numba tests check every variant this way, and numba = reference exactly)."""
    hidden = 4 if "block_size" in options else 2
    zoneout = (0.3, 0.4) if variant != "gru" else 0.3
    layer = carousel.nn.Recurrent(
        2, hidden, variant=variant, backend="reference", dtype=torch.float64,
        recurrent_dropout=0.3, candidate_dropout=0.3, zoneout=zoneout, weight_drop=0.3, **options,
    )  # fmt: skip
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    reset = torch.tensor([[False, False], [False, True], [True, False], [False, False]])
    params = [p.detach().clone().requires_grad_(True) for p in layer.parameters()]
    names = [n for n, _ in layer.named_parameters()]

    def run(x, *params):
        torch.manual_seed(5)
        output, _ = torch.func.functional_call(
            layer, dict(zip(names, params, strict=True)), (x,), {"reset": reset}
        )
        return output

    assert torch.autograd.gradcheck(run, (x, *params), eps=1e-6, atol=1e-7, fast_mode=True)


def test_option_validation_names_the_argument():
    spec = make_spec("vanilla")
    with pytest.raises(ValueError, match=r"recurrent_dropout must be a probability in \[0, 1\)"):
        Regularizers.create(spec, recurrent_dropout=1.0)
    with pytest.raises(TypeError, match="weight_drop must be a probability"):
        Regularizers.create(spec, weight_drop="0.1")
    with pytest.raises(ValueError, match=r"zoneout\[1\] \(p_h\)"):
        Regularizers.create(spec, zoneout=(0.1, 1.5))
    with pytest.raises(ValueError, match="zoneout=\\(p_c, p_h\\) needs a cell state"):
        Regularizers.create(make_spec("gru"), zoneout=(0.1, 0.1))
    with pytest.raises(ValueError, match="applies to the lstm and gru families only"):
        Regularizers.create(make_spec("elman"), recurrent_dropout=0.1)
    with pytest.raises(
        ValueError,
        match=r"layer_norm is not defined for the .* variant: it applies to the lstm and gru families only",
    ):
        make_spec("elman").replace(layer_norm=True)
    with pytest.raises(ValueError, match="variant 'elman' takes the options"):
        carousel.nn.Recurrent(2, 3, variant="elman", layer_norm=True)
    assert Regularizers.create(spec, zoneout=0.2).zoneout == 0.2
    assert Regularizers.create(spec, zoneout=[0.2, 0.1]).zoneout == (0.2, 0.1)
    assert Regularizers.create(make_spec("elman"), weight_drop=0.5).weight_drop == 0.5


def test_reverse_resets_start_each_segment_at_its_last_step():
    reset = torch.tensor([[0, 0], [0, 1], [1, 0], [0, 0], [0, 1]], dtype=torch.bool)
    forward = direction_resets(reset, None, reverse=False)
    backward = direction_resets(reset, None, reverse=True)
    assert forward.tolist() == reset.tolist()  # (reset[0] would be dropped: nothing to reset)
    # segments of sequence 0: [0, 2), [2, 5): the reverse pass restarts before step 1
    # sequence 1: [0, 1), [1, 4), [4, 5): before steps 3 and 0
    assert backward.tolist() == [[0, 1], [1, 0], [0, 0], [0, 1], [0, 0]]
    lengths = torch.tensor([5, 3])
    assert direction_resets(reset, lengths, reverse=True)[:, 1].tolist() == [1, 0, 0, 0, 0]
    assert direction_resets(reset, lengths, reverse=False)[:, 1].tolist() == [0, 1, 0, 0, 0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zoneout_masks_in_training_are_bernoulli_draws_of_the_dtype_seeded_by_torch(dtype):
    like = torch.zeros(1, dtype=dtype)
    regularizers = Regularizers.create(make_spec("vanilla"), zoneout=(0.3, 1.0))
    torch.manual_seed(5)
    cell, hidden = regularizers.zoneout_masks((200, 50), 40, 30, like, training=True)
    assert cell.dtype == dtype and cell.shape == (200, 50, 40) and hidden.shape == (200, 50, 30)
    assert set(cell.unique().tolist()) == {0.0, 1.0}
    assert abs(cell.mean().item() - 0.3) < 0.005  # 400,000 draws: 7 standard deviations
    assert torch.all(hidden == 1.0)  # p = 1 keeps every previous state
    torch.manual_seed(5)
    again, _ = regularizers.zoneout_masks((200, 50), 40, 30, like, training=True)
    assert torch.equal(cell, again)
    rare = Regularizers.create(make_spec("gru"), zoneout=1e-12)
    _, never = rare.zoneout_masks((100, 10), 20, 20, like, training=True)
    assert torch.all(never == 0.0)  # p below 2^-32 rounds to a threshold of 0
