"""The tables of options list every keyword option of every registered variant, and every
regulariser of the layers, once; the run configuration and the models take them all."""

from __future__ import annotations

import inspect

import pytest

from carousel.cells import VARIANTS
from carousel.cells.options import CELL_OPTIONS, REGULARIZER_OPTIONS, parse_zoneout
from carousel.nn import GRU, LSTM, GRUCell, LSTMCell, Recurrent


def keyword_options(function) -> dict[str, inspect.Parameter]:
    parameters = inspect.signature(function).parameters.items()
    return {name: p for name, p in parameters if p.kind is p.KEYWORD_ONLY}


def test_every_option_of_every_variant_is_in_the_table_with_its_type():
    taken = set()
    for variant in VARIANTS.values():
        for name, default in variant.options.items():
            assert name in CELL_OPTIONS, (
                f"variant {variant.name!r} takes {name!r}: add it to CELL_OPTIONS"
            )
            assert isinstance(default, CELL_OPTIONS[name].type), (variant.name, name)
            taken.add(name)
    assert taken == set(CELL_OPTIONS), "an option in the table that no variant takes"


def test_the_layers_and_cells_take_the_options_of_the_tables():
    for layer in (LSTM, GRU):
        options = set(keyword_options(layer.__init__)) - {"variant", "backend", "init", "proj_size"}
        assert options <= set(CELL_OPTIONS) | set(REGULARIZER_OPTIONS), layer
        assert set(REGULARIZER_OPTIONS) <= options, layer
    for module in (Recurrent, LSTMCell, GRUCell):
        signature = inspect.signature(module.__init__).parameters
        assert all(name in signature or "cell_options" in signature for name in REGULARIZER_OPTIONS)


def test_the_run_configuration_builds_a_layer_with_the_regularisers():
    from carousel.models import build
    from carousel.tasks import ModelIO
    from carousel.train import ModelConfig

    config = ModelConfig(
        hidden_size=8, layer_norm=True, recurrent_dropout=0.2, candidate_dropout=0.1,
        zoneout="0.15,0.05", weight_drop=0.3,
    )  # fmt: skip
    model = build(ModelIO(head="regressor", input_size=2, output_size=1), config)
    layer = model.encoder.layer
    assert layer.spec.layer_norm
    assert layer.regularizers.zoneout == (0.15, 0.05) and layer.regularizers.weight_drop == 0.3
    assert parse_zoneout("0.1") == 0.1
    with pytest.raises(ValueError, match="zoneout must be a probability p or a pair p_c,p_h"):
        parse_zoneout("0.1,0.2,0.3")
