"""The regularisers and resets as the layers and cells use them: the masks they draw (rates,
one per sequence, fresh per step for zoneout, one per call for the weight drop, identity or
expectation in evaluation, reproducible from a seed), resets as independent segments with no
gradient across them, the layer-norm parameters, the backends that may run them, bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import carousel
from carousel import kernels
from carousel.cells.regularizers import Masks
from carousel.errors import InputError, InputTypeError
from carousel.kernels import reference


@pytest.fixture
def spy(monkeypatch):
    """Record what the reference backend receives: ``(weights, masks)`` per direction."""
    calls = []

    def run_direction(spec, x, state, weights, lengths=None, reverse=False, masks=None):
        calls.append((weights, masks))
        return reference.run_direction(spec, x, state, weights, lengths, reverse, masks)

    backend = dataclasses.replace(kernels.BACKENDS["reference"], run_direction=run_direction)
    monkeypatch.setitem(kernels.BACKENDS, "reference", backend)
    return calls


def _rate_close(mask, p, value):
    """The share of ``mask`` entries equal to ``value`` is ``p`` within 5 standard deviations."""
    share = (mask == value).double().mean().item()
    assert abs(share - p) < 5 * (p * (1 - p) / mask.numel()) ** 0.5 + 1e-12, (share, p)


def test_dropout_masks_one_per_sequence_layer_and_direction(spy):
    layer = carousel.nn.Recurrent(
        3, 40, num_layers=2, bidirectional=True, backend="reference",
        recurrent_dropout=0.3, candidate_dropout=0.5,
    )  # fmt: skip
    layer(torch.randn(4, 500, 3))
    assert len(spy) == 4
    recurrent = [masks.recurrent for _, masks in spy]
    for mask in recurrent:
        assert mask.shape == (500, 40)  # no time axis: the same mask at every step
        kept = mask[mask != 0]
        torch.testing.assert_close(kept, torch.full_like(kept, 1 / 0.7))
        _rate_close(mask, 0.3, 0.0)
    for _, masks in spy:
        assert masks.candidate.shape == (500, 40)
        _rate_close(masks.candidate, 0.5, 0.0)
        assert masks.zoneout_cell is None and masks.reset is None
    assert not torch.equal(recurrent[0], recurrent[1])  # directions and layers draw their own
    assert not torch.equal(recurrent[0], recurrent[2])
    layer(torch.randn(4, 500, 3))
    assert not torch.equal(spy[4][1].recurrent, recurrent[0])  # and every call draws anew


def test_zoneout_masks_fresh_per_step_in_training_and_the_expectation_in_eval(spy):
    layer = carousel.LSTM(3, 30, backend="reference", zoneout=(0.2, 0.4))
    layer(torch.randn(50, 40, 3))
    masks = spy[0][1]
    assert masks.zoneout_cell.shape == (50, 40, 30) and masks.zoneout_hidden.shape == (50, 40, 30)
    _rate_close(masks.zoneout_cell, 0.2, 1.0)
    _rate_close(masks.zoneout_hidden, 0.4, 1.0)
    changed = (masks.zoneout_hidden[1:] != masks.zoneout_hidden[:-1]).double().mean().item()
    assert abs(changed - 2 * 0.4 * 0.6) < 0.02  # independent draws at every step
    layer.eval()
    layer(torch.randn(5, 2, 3))
    masks = spy[1][1]
    assert torch.all(masks.zoneout_cell == 0.2) and torch.all(masks.zoneout_hidden == 0.4)
    assert masks.recurrent is None


def test_weight_drop_one_mask_per_call_and_fixed_masks_still_apply(spy):
    layer = carousel.nn.Recurrent(3, 20, variant="fgr", backend="reference", weight_drop=0.25)
    weight = layer.cell_weights(0).weight_hh.detach()
    layer(torch.randn(3, 2, 3))
    layer(torch.randn(3, 2, 3))
    seen = [w.weight_hh.detach() for w, _ in spy]
    nonzero = weight != 0
    ratios = [s[nonzero] / weight[nonzero] for s in seen]
    for ratio in ratios:
        assert torch.allclose(ratio[ratio != 0], torch.tensor(1 / 0.75))
        _rate_close(ratio, 0.25, 0.0)
    assert not torch.equal(ratios[0], ratios[1])
    assert torch.all(seen[0][~nonzero] == 0)  # FGR's masked columns stay zero
    layer.eval()
    layer(torch.randn(3, 2, 3))
    assert torch.equal(spy[2][0].weight_hh, layer.cell_weights(0).weight_hh)


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_eval_mode_is_the_plain_layer_and_a_seed_reproduces_training(backend):
    options = dict(recurrent_dropout=0.3, candidate_dropout=0.3, weight_drop=0.3, zoneout=0.2)
    torch.manual_seed(0)
    layer = carousel.LSTM(3, 8, num_layers=2, backend=backend, **options)
    plain = carousel.LSTM(3, 8, num_layers=2, backend=backend, zoneout=0.2)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(6, 4, 3)
    layer.eval()
    plain.eval()
    torch.testing.assert_close(layer(x)[0], plain(x)[0], rtol=0, atol=0)
    layer.train()
    runs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        runs.append(layer(x)[0])
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def _segments(layer, x, h0, cut):
    """Sequence 0 of ``x`` run as two sequences, split at step ``cut``, each from ``h0``."""
    state = tuple(h[:, :1] for h in h0)
    state = state if len(state) > 1 else state[0]
    first, _ = layer(x[:cut, :1], state)
    second, _ = layer(x[cut:, :1], state)
    return torch.cat((first, second))


@pytest.mark.parametrize("backend", ["reference", "numba"])
@pytest.mark.parametrize("variant", ["peephole", "gru"])
def test_reset_splits_a_sequence_into_independent_segments(variant, backend):
    torch.manual_seed(0)
    layer = carousel.nn.Recurrent(
        3, 5, num_layers=2, bidirectional=True, variant=variant, backend=backend,
        dtype=torch.float64,
    )  # fmt: skip
    x = torch.randn(7, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = tuple(
        torch.randn(4, 2, s, dtype=torch.float64, requires_grad=True)
        for s in layer.spec.state_sizes(5)
    )
    reset = torch.zeros(7, 2, dtype=torch.bool)
    reset[3, 0] = True
    state = h0 if len(h0) > 1 else h0[0]
    output, _ = layer(x, state, reset=reset)
    expected = _segments(layer, x, h0, 3)
    torch.testing.assert_close(output[:, :1], expected, rtol=1e-12, atol=1e-12)
    plain, _ = layer(x, state)
    torch.testing.assert_close(output[:, 1], plain[:, 1], rtol=0, atol=0)  # no reset, no change
    first_reset = reset.clone()
    first_reset[0] = True  # the first step starts from the initial state anyway
    torch.testing.assert_close(layer(x, state, reset=first_reset)[0], output, rtol=0, atol=0)

    # no gradient crosses the reset: the last layer's forward direction after step 3 depends on
    # neither the steps before it nor the forward directions' initial states (rows 0 and 2 of
    # h0); the reverse direction runs the segment [3, 7) first, from its own h0 (row 1)
    direction = output[3:, 0, :5].sum()
    grads = torch.autograd.grad(direction, (x, *h0), allow_unused=True, materialize_grads=True)
    assert torch.all(grads[0][:3, 0] == 0) and torch.all(grads[0][3:, 0] != 0)
    for h in grads[1:]:
        assert torch.all(h[(0, 2), 0] == 0) and torch.any(h[1, 0] != 0)


def test_reset_with_lengths_and_unbatched_input():
    torch.manual_seed(0)
    layer = carousel.GRU(2, 4, bidirectional=True, batch_first=True, backend="numba")
    x = torch.randn(2, 6, 2)
    reset = torch.zeros(2, 6, dtype=torch.bool)
    reset[1, 2] = True
    output, _ = layer(x, lengths=torch.tensor([6, 4]), reset=reset)
    expected = torch.cat((layer(x[1:, :2])[0], layer(x[1:, 2:4])[0]), dim=1)
    torch.testing.assert_close(output[1:, :4], expected, rtol=1e-6, atol=1e-6)
    assert torch.all(output[1, 4:] == 0)
    single, _ = layer(x[1, :4], reset=reset[1, :4])
    torch.testing.assert_close(single, expected[0], rtol=1e-6, atol=1e-6)


def test_reset_input_errors():
    layer = carousel.LSTM(2, 3)
    x = torch.randn(5, 4, 2)
    with pytest.raises(
        InputTypeError, match=r"reset must be a bool tensor; got dtype torch\.int64"
    ):
        layer(x, reset=torch.zeros(5, 4, dtype=torch.int64))
    with pytest.raises(
        InputError, match=r"reset must have shape \(L, N\) = \(5, 4\).*got \[4, 5\]"
    ):
        layer(x, reset=torch.zeros(4, 5, dtype=torch.bool))
    with pytest.raises(InputTypeError, match="reset must be a bool tensor of shape"):
        layer(x, reset=[[False] * 4] * 5)
    with pytest.raises(InputError, match=r"\(L,\) for unbatched input"):
        layer(x[:, 0], reset=torch.zeros(5, 4, dtype=torch.bool))


def test_backends_that_cannot_apply_masks_hand_over_or_refuse():
    x = torch.randn(4, 2, 3)
    reset = torch.zeros(4, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="torch-native backend does not implement reset"):
        carousel.LSTM(3, 4, backend="torch-native")(x, reset=reset)
    with pytest.raises(ValueError, match="does not implement recurrent"):
        carousel.LSTM(3, 4, backend="torch-native", recurrent_dropout=0.1)(x)
    with pytest.raises(ValueError, match="does not implement layer_norm"):
        carousel.LSTM(3, 4, backend="torch-native", layer_norm=True)(x)
    with pytest.raises(ValueError, match="numba elman kernel has no reset"):
        carousel.RNN(3, 4, backend="numba")(x, reset=reset)
    work = kernels.Workload(
        spec=carousel.LSTM(3, 256, layer_norm=True).spec, device=torch.device("cpu"),
        dtype=torch.float32, steps=10, batch=64, input_size=3, hidden_size=256, proj_size=0,
        num_layers=1, num_directions=1, has_lengths=False, masks=frozenset({"reset"}),
    )  # fmt: skip
    assert kernels.select("auto", work).name == "numba"
    elman = dataclasses.replace(work, spec=carousel.RNN(3, 4).spec)
    assert kernels.select("auto", elman).name == "reference"
    # weight drop needs no backend support: torch's fused LSTM runs it
    layer = carousel.LSTM(3, 4, backend="torch-native", weight_drop=0.5)
    torch.manual_seed(0)
    fused, _ = layer(x)
    reference_layer = carousel.LSTM(3, 4, backend="reference", weight_drop=0.5)
    reference_layer.load_state_dict(layer.state_dict())
    torch.manual_seed(0)
    torch.testing.assert_close(fused, reference_layer(x)[0], rtol=1e-5, atol=1e-5)


def test_layer_norm_parameters_names_initialisation_count_and_state_dict():
    torch.manual_seed(0)
    layer = carousel.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, layer_norm=True)
    torch.manual_seed(0)
    stock = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2)
    params = dict(layer.named_parameters())
    for name, value in stock.named_parameters():  # torch's draws are untouched
        assert torch.equal(params.pop(name), value), name
    expected = {
        f"ln_{kind}_{part}_l{k}{suffix}"
        for kind in ("ih", "hh", "cell")
        for part in ("weight", "bias")
        for k in (0, 1)
        for suffix in ("", "_reverse")
    }
    assert set(params) == expected
    for name, value in params.items():
        assert torch.all(value == (1.0 if "_weight" in name else 0.0)), name
        assert value.shape == ((4,) if "cell" in name else (16,))
    assert layer.num_weights() == sum(p.numel() for p in stock.parameters()) + 8 * (16 + 16 + 4)
    copy = carousel.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, layer_norm=True)
    with torch.no_grad():
        layer.ln_cell_weight_l1.fill_(0.5)
    copy.load_state_dict(layer.state_dict())
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(copy(x)[0], layer(x)[0], rtol=0, atol=0)
    gru = carousel.GRU(3, 4, layer_norm=True)
    assert [n for n in gru.state_dict() if n.startswith("ln_")] == [
        "ln_ih_weight_l0", "ln_ih_bias_l0", "ln_hh_weight_l0", "ln_hh_bias_l0",
    ]  # fmt: skip
    assert "layer_norm=True" in repr(layer) and "recurrent_dropout=0.2" in repr(
        carousel.LSTM(3, 4, recurrent_dropout=0.2)
    )


def test_step_wise_cells_take_the_options():
    torch.manual_seed(0)
    layer = carousel.LSTM(3, 4, layer_norm=True, backend="reference", zoneout=0.3)
    cell = carousel.LSTMCell(3, 4, layer_norm=True, zoneout=0.3)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.uniform_(0.5, 1.5) if "ln_" in name and "weight" in name else p.uniform_(-0.5, 0.5)
    cell.load_state_dict({k[: -len("_l0")]: v for k, v in layer.state_dict().items()})
    layer.eval()
    cell.eval()
    x = torch.randn(3, 2, 3)
    state = (torch.zeros(2, 4), torch.zeros(2, 4))
    for x_t in x:
        state = cell(x_t, state)
    torch.testing.assert_close(state[0], layer(x)[0][-1], rtol=1e-6, atol=1e-6)

    dropping = carousel.GRUCell(3, 4, recurrent_dropout=0.5, weight_drop=0.2)
    with pytest.raises(InputError, match=r"pass masks=cell.draw_masks\(batch\)"):
        dropping(torch.randn(2, 3))
    masks = dropping.draw_masks(2)
    assert masks.recurrent.shape == (2, 4) and masks.weight_hh.shape == (12, 4)
    assert masks.candidate is None
    with pytest.raises(InputError, match=r"masks.recurrent must have shape \(5, 4\)"):
        dropping(torch.randn(5, 3), masks=masks)
    # the cell's steps with fixed masks are the reference backend's with the same masks
    h = torch.zeros(2, 4)
    sequence = torch.randn(4, 2, 3)
    for x_t in sequence:
        h = dropping(x_t, h, masks=masks)
    weights = dropping.parameter_group().params
    from carousel.cells import CellWeights

    cell_weights = CellWeights.from_parameters(dropping.spec, weights)
    cell_weights = cell_weights._replace(weight_hh=cell_weights.weight_hh * masks.weight_hh)
    output, _ = reference.run_direction(
        dropping.spec, sequence, (torch.zeros(2, 4),), cell_weights,
        masks=Masks(recurrent=masks.recurrent),
    )  # fmt: skip
    torch.testing.assert_close(h, output[-1], rtol=1e-6, atol=1e-6)
    dropping.eval()
    assert dropping.draw_masks(2) == (None, None, None)
