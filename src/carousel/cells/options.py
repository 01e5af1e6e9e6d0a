"""The keyword options of the cell variants, each listed once: its value type and what it means.

A variant's factory (:data:`carousel.cells.VARIANTS`) takes some of these options; ``None`` for
an option means the variant's own default. The run configuration has a field per option
(:class:`carousel.train.ModelConfig`, hence a ``carousel train`` option), and
:func:`carousel.models.build` passes the ones that are set to the layer. A new option is added
here and to the variants that take it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CellOption:
    """A keyword option of cell variants: the type of its value and a one-line help."""

    type: type
    help: str


CELL_OPTIONS: dict[str, CellOption] = {
    "block_size": CellOption(int, "LSTM cells per memory block sharing gates (1997)"),
    "peepholes": CellOption(bool, "LSTM: add/drop peephole connections"),
    "gate_activation": CellOption(str, "gate squashing: sigmoid or hard_sigmoid"),
    "candidate_activation": CellOption(
        str, "squashing of the cell input (LSTM g, GRU n): tanh, identity, g1997, ..."
    ),
    "output_activation": CellOption(
        str, "LSTM squashing of the cell state in the output h: tanh, identity, h1997, ..."
    ),
    "cell_bias": CellOption(bool, "LSTM: a bias on the cell input g (the gates keep theirs)"),
    "truncate_gradient": CellOption(bool, "the 1997 paper's truncated gradient"),
    "nonlinearity": CellOption(str, "Elman RNN: tanh or relu"),
    "num_heads": CellOption(int, "sLSTM: heads of its block-diagonal recurrent weights"),
    "forget_activation": CellOption(str, "sLSTM forget gate: sigmoid or exp"),
}
"""Every keyword option a registered variant takes, by name."""
