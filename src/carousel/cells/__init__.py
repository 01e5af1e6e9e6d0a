"""Cell specs: what each recurrent cell of the LSTM family computes, its parameters and its init.

See :mod:`carousel.cells.spec` for the dataclass and the packed layout, :mod:`carousel.cells.lstm`,
:mod:`carousel.cells.gru`, :mod:`carousel.cells.elman` and :mod:`carousel.cells.slstm` for the
variants and their equations.
"""

from carousel.cells import init, slstm
from carousel.cells.activations import ACTIVATIONS, GATE_ACTIVATIONS, Activation, get_activation
from carousel.cells.elman import elman_step
from carousel.cells.gru import gru_step
from carousel.cells.lstm import LSTMStepValues, lstm_step, lstm_step_values
from carousel.cells.slstm import slstm_step
from carousel.cells.spec import VARIANTS, CellSpec, CellWeights, make_spec, register_variant

STEPS = {"lstm": lstm_step, "gru": gru_step, "elman": elman_step, "slstm": slstm_step}
"""One step of each family, in PyTorch ops: ``step(spec, gates_x, state, weights) -> (h_t, state)``."""

DEFAULT_INIT = {"slstm": slstm.paper_init}
"""A family's own initialisation, applied by layers after torch's default (and before ``init=``)."""

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_INIT",
    "GATE_ACTIVATIONS",
    "STEPS",
    "VARIANTS",
    "Activation",
    "CellSpec",
    "CellWeights",
    "LSTMStepValues",
    "elman_step",
    "get_activation",
    "gru_step",
    "init",
    "lstm_step",
    "lstm_step_values",
    "make_spec",
    "register_variant",
    "slstm_step",
]
