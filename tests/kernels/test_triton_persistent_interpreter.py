"""Level 2 of the triton backend, the persistent kernels, in Triton's interpreter on CPU tensors.

Against the reference backend (outputs, final states and every gradient under random upstream
gradients, :func:`tests.kernels.triton_cases.compare`) for every cell and option level 2 runs,
both directions, with lengths, stacked, several programs with partly masked tiles; against level 1
on the same layer; and which level runs a call (``CAROUSEL_TRITON_LEVEL``, the on-chip budget,
the calls level 2 does not implement). Every comparison forces level 2
(``CAROUSEL_TRITON_LEVEL=2``), which raises rather than fall back, so each one ran the persistent
kernels. Runs in the interpreter subprocess of ``test_triton.py::test_interpreter_suite``
(``TRITON_INTERPRET=1``); skips in any other process.
"""

from __future__ import annotations

import pytest
import torch

import carousel
from carousel.cells import make_spec
from tests.helpers import TOLERANCE, run_layer
from tests.kernels.triton_cases import (
    CELLS,
    OPTIONS,
    RESET,
    Shape,
    assert_close,
    compare,
    compare_regularized,
    interpreter_only,
    layers,
    split_options,
)

interpreter_only()  # skips this module outside the interpreter subprocess

from carousel.kernels.triton import persistent  # noqa: E402 (triton only after the check)

LEVEL = persistent.LEVEL_VARIABLE
SMALL = Shape(batch=3, steps=5, input=3, hidden=4, lengths=(5, 2, 4))
FULL = Shape(batch=3, steps=5, input=3, hidden=4, lengths=None)
DTYPES = [pytest.param(torch.float32, id="f32"), pytest.param(torch.float64, id="f64")]


def _runs_on_level_two(variant, options=None, layer_options=None, hidden=4, dtype=torch.float64):
    spec = make_spec(variant, **(options or {}))
    projection = (layer_options or {}).get("proj_size", 0)
    return persistent.unsupported(spec, hidden, dtype, projection > 0, projection or None)


CELLS_TWO = [v for v in CELLS if _runs_on_level_two(v) is None]
OPTIONS_TWO = {
    name: (variant, options)
    for name, (variant, options) in OPTIONS.items()
    if _runs_on_level_two(variant, *reversed(split_options(options))) is None
}


@pytest.fixture(autouse=True)
def _level_two(monkeypatch):
    monkeypatch.setenv(LEVEL, "2")


def test_level_two_covers_the_cells_it_is_meant_to():
    """The list the comparisons below run is what the module docstring promises."""
    assert CELLS_TWO == [
        "vanilla", "peephole", "nig", "nfg", "nog", "niaf", "noaf", "np", "cifg", "gru", "elman",
    ]  # fmt: skip
    assert {"peephole-truncate", "cifg-hard_sigmoid-truncate", "gru-no-bias"} <= set(OPTIONS_TWO)
    assert {"vanilla-proj2", "peephole-proj3-no-bias", "vanilla-proj3-truncate"} <= set(OPTIONS_TWO)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", CELLS_TWO)
def test_every_cell_matches_reference(variant, dtype):
    """One layer, both directions, a padded batch with lengths."""
    compare(variant, dtype, SMALL, layer_options={"num_layers": 1})


@pytest.mark.parametrize(("variant", "options"), OPTIONS_TWO.values(), ids=OPTIONS_TWO.keys())
def test_every_option_matches_reference(variant, options):
    layer_options, options = split_options(options)
    compare(
        variant, torch.float64, SMALL, layer_options={"num_layers": 1} | layer_options, **options
    )


CONFIGS = {
    f"L2-bi-{FULL}": ({"num_layers": 2}, FULL),
    f"L3-{SMALL}": ({"num_layers": 3, "bidirectional": False}, SMALL),
}


@pytest.mark.parametrize("variant", ["vanilla", "gru", "elman"])
@pytest.mark.parametrize(("layer_options", "shape"), CONFIGS.values(), ids=CONFIGS.keys())
def test_stacks_and_directions_match_reference(variant, layer_options, shape):
    compare(variant, torch.float64, shape, layer_options=layer_options)


# 37 rows: three programs of 16, the last with 5 rows; 20 units padded to 32; 64 at the limit
WIDE = {
    "peephole-B37-H20": ("peephole", 20, torch.float64),
    "cifg-B37-H20": ("cifg", 20, torch.float64),
    "gru-B37-H20": ("gru", 20, torch.float64),
    "elman-B37-H20": ("elman", 20, torch.float64),
    "vanilla-B37-H64-f32": ("vanilla", 64, torch.float32),
    "elman-B37-H64-f64": ("elman", 64, torch.float64),
}


@pytest.mark.parametrize(("variant", "hidden", "dtype"), WIDE.values(), ids=WIDE.keys())
def test_several_programs_and_padded_tiles_match_reference(variant, hidden, dtype):
    lengths = tuple(1 + (row * 5) % 4 for row in range(37))
    shape = Shape(batch=37, steps=4, input=3, hidden=hidden, lengths=lengths)
    compare(variant, dtype, shape, layer_options={"num_layers": 1})


def test_a_projection_with_tiles_of_two_sizes_matches_reference():
    """24 cells padded to 32, projected to 12 padded to 16: rectangular tiles, 37 rows."""
    lengths = tuple(1 + (row * 5) % 4 for row in range(37))
    shape = Shape(batch=37, steps=4, input=3, hidden=24, lengths=lengths)
    compare("peephole", torch.float64, shape, layer_options={"num_layers": 1, "proj_size": 12})


@pytest.mark.parametrize(("variant", "projection"), [("peephole", 0), ("gru", 0), ("elman", 0),
                                                     ("vanilla", 3)])  # fmt: skip
def test_level_two_equals_level_one(variant, projection, monkeypatch):
    """The same layer and upstream gradients on both levels: equal up to the order of the sums in
    the recurrent product (float64)."""
    options = {"num_layers": 2, "bidirectional": True, "proj_size": projection}
    _, layer = layers(variant, torch.float64, {}, options, SMALL, "cpu")
    x = torch.randn(SMALL.steps, SMALL.batch, SMALL.input, dtype=torch.float64)
    x.requires_grad_(True)
    state = tuple(
        torch.randn(4, SMALL.batch, s, dtype=torch.float64, requires_grad=True)
        for s in layer.spec.state_sizes(SMALL.hidden, projection)
    )
    results, upstream = [], None
    for level in ("1", "2"):
        monkeypatch.setenv(LEVEL, level)
        outputs, grads, upstream = run_layer(layer, x, state, SMALL.lengths_tensor, upstream)
        results.append((outputs, grads))
    assert_close(results[1][0], results[0][0], TOLERANCE[torch.float64], "outputs")
    assert_close(results[1][1], results[0][1], TOLERANCE[torch.float64], "gradients")


def test_forward_without_autograd_equals_forward_with_it():
    layer = carousel.GRU(SMALL.input, 4, backend="triton", bidirectional=True)
    x = torch.randn(3, SMALL.batch, SMALL.input)
    lengths = torch.tensor([3, 1, 2])
    with_grad = layer(x, lengths=lengths)
    with torch.no_grad():
        without = layer(x, lengths=lengths)
    assert torch.equal(with_grad[0], without[0]) and torch.equal(with_grad[1], without[1])


def test_auto_runs_level_two_where_it_applies_and_level_one_elsewhere(monkeypatch):
    monkeypatch.delenv(LEVEL)
    ran = []
    for name in ("forward", "backward"):
        original = getattr(persistent, name)

        def spy(*args, name=name, original=original, **kwargs):
            ran.append(name)
            return original(*args, **kwargs)

        monkeypatch.setattr(persistent, name, spy)
    x = torch.randn(2, 2, SMALL.input)
    for layer, expected in (
        (carousel.LSTM(SMALL.input, 4, backend="triton"), ["forward", "backward"]),
        (carousel.LSTM(SMALL.input, 4, proj_size=2, backend="triton"), ["forward", "backward"]),
        (carousel.LSTM(SMALL.input, 4, variant="1997", backend="triton"), []),
        (carousel.GRU(SMALL.input, 80, backend="triton"), []),  # 80 pads to 128 > 64
    ):
        ran.clear()
        layer(x)[0].sum().backward()
        assert ran == expected, layer


def test_the_level_decision_follows_the_budget(monkeypatch):
    monkeypatch.delenv(LEVEL)
    f32, f64 = torch.float32, torch.float64
    decide = persistent.choose_level
    assert decide(make_spec("vanilla"), 64, f32, False) == 2
    assert decide(make_spec("vanilla"), 33, f64, False) == 1  # 4 x 64^2 x 8 bytes = 128 KiB
    assert decide(make_spec("vanilla"), 32, f64, False) == 2
    assert decide(make_spec("elman"), 64, f64, False) == 2
    assert decide(make_spec("elman"), 65, f32, False) == 1  # tile side 128
    assert decide(make_spec("vanilla", block_size=2), 8, f32, False) == 1
    assert decide(make_spec("slstm"), 8, f32, False) == 1
    monkeypatch.setenv(LEVEL, "1")
    assert decide(make_spec("vanilla"), 4, f32, False) == 1
    monkeypatch.setenv(LEVEL, "2")
    with pytest.raises(ValueError, match=r"CAROUSEL_TRITON_LEVEL=2 .* 131072 bytes on chip"):
        decide(make_spec("vanilla"), 64, f64, False)
    monkeypatch.setenv(LEVEL, "3")
    with pytest.raises(ValueError, match=r"CAROUSEL_TRITON_LEVEL must be one of auto, 1, 2"):
        decide(make_spec("vanilla"), 4, f32, False)


def test_forcing_level_two_on_a_call_it_does_not_run_raises_by_name():
    layer = carousel.LSTM(SMALL.input, 4, variant="1997", backend="triton")
    with pytest.raises(ValueError, match=r"CAROUSEL_TRITON_LEVEL=2 .*gate feedback") as error:
        layer(torch.randn(2, 2, SMALL.input))
    assert "\n" not in str(error.value)


REGULARISERS = {
    "recurrent_dropout": ({"recurrent_dropout": 0.3}, "recurrent"),
    "candidate_dropout": ({"candidate_dropout": 0.3}, "candidate"),
    "zoneout": ({"zoneout": (0.3, 0.2)}, "keep_cell"),
    "layer_norm": ({"layer_norm": True}, "layer_norm"),
    "reset": ({}, "reset"),
}


@pytest.mark.parametrize(("options", "named"), REGULARISERS.values(), ids=REGULARISERS.keys())
def test_regularisers_resets_and_layer_norm_stay_on_level_one(options, named, monkeypatch):
    """``auto`` runs them on level 1 (right, against the reference); a forced level 2 refuses
    them by name."""
    reset = RESET if named == "reset" else None
    monkeypatch.delenv(LEVEL)
    ran = []
    original = persistent.forward
    monkeypatch.setattr(persistent, "forward", lambda *a, **k: ran.append(1) or original(*a, **k))
    compare_regularized(
        "peephole", torch.float64, SMALL, reset=reset, layer_options={"num_layers": 1}, **options
    )
    assert ran == []
    monkeypatch.setenv(LEVEL, "2")
    with pytest.raises(ValueError, match=f"CAROUSEL_TRITON_LEVEL=2 .*{named}"):
        compare_regularized("peephole", torch.float64, SMALL, reset=reset, **options)


def test_weight_drop_runs_on_level_two():
    """The weight drop masks the weights before the kernels see them: level 2 runs it."""
    compare_regularized(
        "gru", torch.float64, SMALL, layer_options={"num_layers": 1}, weight_drop=0.3
    )
