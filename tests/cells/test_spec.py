"""Cell specs: packed layout, state, parameter shapes, validation."""

from __future__ import annotations

import pytest

from carousel.cells import CellSpec, make_spec


def test_packed_layout_follows_torch_order_and_drops_missing_gates():
    assert make_spec("vanilla").gates == ("i", "f", "g", "o")
    assert make_spec("cifg").gates == ("i", "g", "o")
    assert make_spec("nig").gates == ("f", "g", "o")
    assert make_spec("gru").gates == ("r", "z", "n")
    spec = make_spec("1997", block_size=2)
    assert spec.gate_slices(4) == {"i": slice(0, 2), "g": slice(2, 6), "o": slice(6, 8)}


def test_state_and_recurrent_source():
    assert make_spec("vanilla").state_names == ("h", "c")
    assert make_spec("vanilla").state_sizes(6, 3) == (3, 6)
    spec = make_spec("1997", block_size=2)
    assert spec.state_names == ("h", "c", "gates")
    assert spec.recurrent_size(4) == 4 + 2 + 2
    assert make_spec("fgr").recurrent_size(4) == 4 + 12
    assert make_spec("gru").state_names == ("h",)


def test_parameter_shapes():
    assert make_spec("peephole").parameter_shapes(3, 4) == {
        "weight_ih": (16, 3),
        "weight_hh": (16, 4),
        "bias_ih": (16,),
        "bias_hh": (16,),
        "weight_peephole": (3, 4),
    }
    assert make_spec("vanilla").parameter_shapes(3, 4, proj_size=2, bias=False) == {
        "weight_ih": (16, 3),
        "weight_hh": (16, 2),
        "weight_hr": (2, 4),
    }
    assert make_spec("1997").parameter_shapes(2, 4) == {
        "weight_ih": (12, 2),
        "weight_hh": (12, 12),
        "bias": (12,),
    }


def test_masks():
    mask = make_spec("fgr").recurrent_mask(2)
    assert mask.shape == (8, 8)
    assert mask[4:6, 2:].sum() == 0 and mask[4:6, :2].sum() == 4 and mask[:4].sum() == 32
    assert make_spec("1997").recurrent_mask(2) is None
    assert make_spec("1997", cell_bias=False).bias_mask(2).tolist() == [1, 1, 0, 0, 1, 1]


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"family": "lstm", "gates": ("f", "i", "g", "o")}, "ordered subset"),
        ({"family": "lstm", "gates": ("i", "f", "o")}, "needs its cell input block 'g'"),
        (
            {"family": "lstm", "gates": ("i", "f", "g"), "coupled_input_forget": True},
            "coupled_input_forget",
        ),
        (
            {"family": "gru", "gates": ("r", "z", "n"), "peepholes": True},
            "applies to LSTM cells only",
        ),
        (
            {"family": "gru", "gates": ("r", "z", "n"), "num_biases": 1},
            "GRU cell needs num_biases=2",
        ),
        ({"family": "rnn", "gates": ("h",)}, "family must be one of"),
        (
            {"family": "lstm", "gates": ("i", "g"), "block_size": 0},
            "block_size must be a positive int",
        ),
        (
            {"family": "lstm", "gates": ("i", "g"), "gate_feedback": "some"},
            "gate_feedback must be one of",
        ),
    ],
)
def test_invalid_specs(fields, match):
    with pytest.raises(ValueError, match=match):
        CellSpec(variant="x", **fields)


def test_describe_lists_only_what_differs():
    assert make_spec("vanilla").describe() == "vanilla (lstm, gates ifgo)"
    assert "peepholes=True" in make_spec("peephole").describe()
