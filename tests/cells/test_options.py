"""The table of cell options lists every keyword option of every registered variant, once."""

from __future__ import annotations

import inspect

from carousel.cells import VARIANTS
from carousel.cells.options import CELL_OPTIONS
from carousel.nn import GRU, LSTM


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


def test_the_layers_take_the_options_of_the_table():
    for layer in (LSTM, GRU):
        options = set(keyword_options(layer.__init__)) - {"variant", "backend", "init", "proj_size"}
        assert options <= set(CELL_OPTIONS), layer
