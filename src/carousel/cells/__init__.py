"""Cell specs: what each recurrent cell of the LSTM family computes, its parameters and its init.

See :mod:`carousel.cells.spec` for the dataclass and the packed layout, :mod:`carousel.cells.lstm`,
:mod:`carousel.cells.gru`, :mod:`carousel.cells.elman` and :mod:`carousel.cells.slstm` for the
variants and their equations.
"""

from carousel.cells import init
from carousel.cells.activations import ACTIVATIONS, GATE_ACTIVATIONS, Activation, get_activation
from carousel.cells.elman import elman_step
from carousel.cells.gru import gru_step
from carousel.cells.lstm import (
    LSTM_OPTIONS,
    LSTMStepValues,
    lstm_step,
    lstm_step_values,
    lstm_variant,
)
from carousel.cells.registry import (
    FAMILIES,
    VARIANTS,
    Family,
    Variant,
    make_spec,
    register_family,
    register_variant,
)
from carousel.cells.slstm import slstm_step
from carousel.cells.spec import CellSpec, CellWeights

__all__ = [
    "ACTIVATIONS",
    "FAMILIES",
    "GATE_ACTIVATIONS",
    "LSTM_OPTIONS",
    "VARIANTS",
    "Activation",
    "CellSpec",
    "CellWeights",
    "Family",
    "LSTMStepValues",
    "Variant",
    "elman_step",
    "get_activation",
    "gru_step",
    "init",
    "lstm_step",
    "lstm_step_values",
    "lstm_variant",
    "make_spec",
    "register_family",
    "register_variant",
    "slstm_step",
]
