"""The keyword options of the cell variants, each listed once: its value type and what it means.

A variant's factory (:data:`carousel.cells.VARIANTS`) takes some of these options; ``None`` for
an option means the variant's own default. The run configuration has a field per option
(:class:`carousel.train.ModelConfig`, hence a ``carousel train`` option), and
:func:`carousel.models.build` passes the ones that are set to the layer. A new option is added
here and to the variants that take it.

The regularisers (:mod:`carousel.cells.regularizers`) are options of the layers and the
step-wise cells rather than of a variant; :data:`REGULARIZER_OPTIONS` lists them the same way,
and the run configuration and the command line take them too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CellOption:
    """A keyword option of cell variants: the type of its value (or the types it may take, the
    first one what the command line parses) and a one-line help."""

    type: type | tuple[type, ...]
    help: str

    @property
    def annotation(self) -> str:
        """The type as a run configuration's field annotation: ``"int | None"``."""
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        return " | ".join(t.__name__ for t in types) + " | None"


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
    "layer_norm": CellOption(
        bool, "LSTM/GRU: layer normalisation of both projections (and the LSTM cell state)"
    ),
    "num_heads": CellOption(int, "sLSTM: heads of its block-diagonal recurrent weights"),
    "forget_activation": CellOption(str, "sLSTM forget gate: sigmoid or exp"),
}
"""Every keyword option a registered variant takes, by name."""

REGULARIZER_OPTIONS: dict[str, CellOption] = {
    "recurrent_dropout": CellOption(
        float, "LSTM/GRU: variational dropout of h_{t-1}, one mask per sequence (Gal 2016)"
    ),
    "candidate_dropout": CellOption(
        float, "LSTM/GRU: dropout of the candidate written to the state (Semeniuta 2016)"
    ),
    "zoneout": CellOption(
        (str, float),
        "LSTM/GRU: zoneout probability p, or p_c,p_h for cell and output (Krueger 2017)",
    ),
    "weight_drop": CellOption(
        float, "DropConnect on the recurrent weights, one mask per forward (AWD-LSTM)"
    ),
}
"""The regularisers the layers and step-wise cells take, by name (``zoneout`` is text in a run
configuration: ``"0.1"`` or ``"0.15,0.05"``, see :func:`parse_zoneout`)."""


def parse_zoneout(text: str) -> float | tuple[float, float]:
    """A configuration's ``zoneout`` text as the layer argument: ``"0.1"`` -> ``0.1``,
    ``"0.15,0.05"`` -> ``(0.15, 0.05)``; ``ValueError`` naming the option otherwise."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise ValueError(f"zoneout must be a probability p or a pair p_c,p_h; got {text!r}")
    return values[0] if len(values) == 1 else (values[0], values[1])
