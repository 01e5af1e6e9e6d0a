"""The configuration vector that selects an LSTM variant inside the kernels of :mod:`.lstm`, and the
small compiled helpers that read it.

The kernels are compiled once per dtype, not per variant: which gate blocks exist and where they
start, peepholes, coupled gates, memory blocks, gate feedback, activations and the truncated
gradient are int64 fields of this vector.
"""

from __future__ import annotations

import numpy as np

from carousel.cells import ACTIVATIONS, CellSpec
from carousel.kernels.numba_cpu.common import activation_table, kernel

# Fields of the configuration vector.
GATE_ACTIVATION, CANDIDATE_ACTIVATION, OUTPUT_ACTIVATION = 0, 1, 2
BLOCK_SIZE = 3
ROW_I, ROW_F, ROW_G, ROW_O = 4, 5, 6, 7  # first packed row of each block, -1 if absent
PEEP_I, PEEP_F, PEEP_O = 8, 9, 10  # row of weight_peephole, -1 if none
FEED_I, FEED_F, FEED_O = 11, 12, 13  # offset within the fed-back gates, -1 if not fed back
COUPLED, TRUNCATE = 14, 15
CONFIG_SIZE = 16


def lstm_config(spec: CellSpec, hidden_size: int) -> np.ndarray:
    """The int64 configuration vector that selects ``spec``'s variant in the kernels."""
    config = np.full(CONFIG_SIZE, -1, dtype=np.int64)
    config[GATE_ACTIVATION] = ACTIVATIONS[spec.gate_activation].code
    config[CANDIDATE_ACTIVATION] = ACTIVATIONS[spec.candidate_activation].code
    config[OUTPUT_ACTIVATION] = ACTIVATIONS[spec.output_activation].code
    config[BLOCK_SIZE] = spec.block_size
    slices = spec.gate_slices(hidden_size)
    for gate, field in zip("ifgo", (ROW_I, ROW_F, ROW_G, ROW_O), strict=True):
        if gate in slices:
            config[field] = slices[gate].start
    for row, gate in enumerate(spec.peephole_gates):
        config[{"i": PEEP_I, "f": PEEP_F, "o": PEEP_O}[gate]] = row
    offset = 0
    for gate in spec.feedback_gates:
        config[{"i": FEED_I, "f": FEED_F, "o": FEED_O}[gate]] = offset
        offset += spec.gate_size(gate, hidden_size)
    config[COUPLED] = int(spec.coupled_input_forget)
    config[TRUNCATE] = int(spec.truncate_gradient)
    return config


@kernel
def activation_tables(config, rows, hidden, dtype):
    """Activation tables of the packed rows (gates and cell input) and of the cell output."""
    codes = np.full(rows, config[GATE_ACTIVATION])
    codes[config[ROW_G] : config[ROW_G] + hidden] = config[CANDIDATE_ACTIVATION]
    gate_table = activation_table(codes, dtype)
    output_table = activation_table(np.full(hidden, config[OUTPUT_ACTIVATION]), dtype)
    return gate_table, output_table


@kernel
def gate_reads(config, rows, units):
    """Where the input, forget and output gates are read in a row of activations.

    The row holds the ``rows`` packed blocks, then ``units`` ones, then ``units`` values of
    ``1 - i``: an absent gate reads the ones, a coupled forget gate reads ``1 - i``.
    """
    ones, complement = rows, rows + units
    read_i = config[ROW_I] if config[ROW_I] >= 0 else ones
    if config[ROW_F] >= 0:
        read_f = config[ROW_F]
    else:
        read_f = complement if config[COUPLED] == 1 else ones
    read_o = config[ROW_O] if config[ROW_O] >= 0 else ones
    return read_i, read_f, read_o


@kernel
def peephole_row(weight_peephole, row, hidden):
    """Row ``row`` of the peephole weights, or zeros when there is none (adds nothing)."""
    if row >= 0:
        return weight_peephole[row]
    return np.zeros(hidden, weight_peephole.dtype)
