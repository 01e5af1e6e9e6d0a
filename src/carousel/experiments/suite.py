"""The experiments of Hochreiter & Schmidhuber (1997), section 5, as runnable configurations.

Each :class:`Experiment` is one row of one of the paper's tables: the task and its options, the
paper's network and learning rule (:class:`~carousel.experiments.faithful.Faithful`), the paper's
result (:class:`PaperResult`) and a training budget. Rows are grouped by experiment (``"1"``,
``"2a"``, ..., ``"6b"``); ``carousel reproduce GROUP`` runs a group, ``carousel reproduce ROW``
one row. The numbers come from the paper's tables (see ``docs/reproduction.md``); where the
paper is ambiguous, the choice made is stated in the row's ``note``. The group ``"beyond"``
holds rows the paper did not run (the adding problem at T = 2000, 5000 and 10,000); they have no
paper result and are not part of ``all``.

The ``modern`` configuration of every row is the forget-gate LSTM of today's practice (Adam,
minibatches, gradient clipping, chrono initialisation); the ``elman`` and ``gru`` baselines train
those cells the same way, under the same budget. How a row trains them is its :class:`Trained`.
"""

from __future__ import annotations

import ast
import dataclasses
import re

from carousel.experiments.experiment import Experiment, PaperResult, Trained
from carousel.experiments.faithful import Faithful


def _reber(blocks: int, size: int, lr: float, paper: PaperResult, target: bool = False):
    biases = tuple(float(-k) for k in range(1, blocks + 1))
    return Experiment(
        name=f"1-{blocks}x{size}-lr{lr:g}",
        group="1",
        title=f"embedded Reber grammar, {blocks} blocks of {size}, lr {lr:g}",
        task="reber",
        options={"sampling": "replacement"},
        faithful=Faithful(
            blocks=blocks,
            block_size=size,
            lr=lr,
            init_range=0.2,
            input_gate_bias_range=0.1,
            output_gate_bias=biases,
            biased="gates",
            output_bias=False,
            update="step",
        ),
        paper=paper,
        budget=100_000,
        eval_every=64,
        chunk=64,
        trained=Trained(
            budget=50_000,
            batch=1,
            lr=0.03,
            hidden=128,
            eval_every=64,
            task_options={"sampling": "epochs"},
        ),
        target=target,
        note="input-gate biases random in [-0.1, 0.1] (the paper's table: 'r'; its text: all "
        "weights but the output-gate biases in [-0.2, 0.2]); training strings drawn from the "
        "training set with replacement, the rule judged on both sets every 64 sequences; weights "
        "change after every step (the paper's online RTRL); a trial is one training/test pair "
        "(seeded by the trial) and one initialisation",
    )


_LONG_LAG_2A = Faithful(
    blocks=1, lr=1.0, update="step", init_range=0.2, biased="none", output_bias=False, output_gate=False,
    output_from_inputs=True, recurrent=False, candidate_activation="sigmoid",
    output_activation="identity", staged=True,
)  # fmt: skip
"""Experiment 2a/2b: one cell with an input gate and no output gate, g = sigmoid, h = identity;
cell and gate read the inputs, the output units read inputs and cell (10,504 weights at p = 100);
weights change after every step (the paper's online RTRL). Built sequentially, as the paper
says: the output units learn from the inputs alone (10,201 weights) until the error has stopped
decreasing (:class:`~carousel.experiments.faithful.Plateau`), then cell and input gate are
added."""


def _long_lag_2c(q: int, p: int, sequences: float, target: bool = False) -> Experiment:
    return Experiment(
        name=f"2c-q{q}-p{p}",
        group="2c",
        title=f"long time lags with distractors, q = {q}, p = {p}",
        task="longlag",
        options={"problem": "2c", "q": q, "p": p},
        faithful=Faithful(
            blocks=2,
            lr=0.01,
            init_range=0.2,
            biased="none",
            output_bias=False,
        ),
        paper=PaperResult(20, 100.0, sequences, 4 + 6 * (p + 4 + 6)),
        budget=max(300_000, int(4 * sequences)),
        chunk=50,
        target=target,
        note="the paper gives no gate biases here: all random, no biases on any unit",
    )


def _two_sequence(
    variant: str,
    length: int,
    informative: int,
    sequences: int,
    misclassified: str,
    st1=None,
    **extra,
):
    """A row of Table 3: the paper ran 10 trials of a 102-weight net each; ``sequences`` to the
    stopping rule, the fraction ``misclassified``, and the sequences to ST1 where it gives them."""
    milestones = {} if st1 is None else {"ST1": st1}
    paper = PaperResult(10, None, sequences, 102, f"{misclassified} misclassified", milestones)
    lr = 0.1 if variant == "3c" else 1.0
    return Experiment(
        name=f"{variant}-T{length}-N{informative}",
        group=variant,
        title=f"two-sequence problem {variant}, T = {length}, N = {informative}",
        task="two_sequence",
        options={"problem": variant, "length": length, "informative": informative},
        faithful=Faithful(
            blocks=3,
            lr=lr,
            input_gate_bias=(-1.0, -3.0, -5.0),
            output_gate_bias=(-2.0, -4.0, -6.0),
            output_bias=False,
        ),
        paper=paper,
        budget=max(200_000, int(3 * paper.sequences)),
        eval_every=500 if length <= 100 else 2000,
        chunk=100 if length <= 100 else 20,
        note="the stopping rule is checked on 256 test sequences every eval_every training "
        "sequences; the output unit has no bias (this gives the paper's 102 weights)",
        **extra,
    )


def _adding(
    length: int,
    paper: PaperResult | None,
    budget: int,
    target: bool = False,
    trained: Trained | None = None,
) -> Experiment:
    output_units = "linear" if length <= 100 else "sigmoid"
    return Experiment(
        name=f"4-T{length}",
        group="4" if paper else "beyond",
        title=f"adding problem, T = {length}" + ("" if paper else " (beyond the paper)"),
        task="adding",
        options={"length": length},
        faithful=Faithful(
            blocks=2, block_size=2, lr=0.5, input_gate_bias=(-3.0, -6.0), output_units=output_units
        ),
        paper=paper,
        budget=budget,
        chunk=max(20, 10_000 // length),
        trained=trained or Trained(),
        target=target,
        note="output-gate biases random in [-0.1, 0.1]; the paper does not name the output "
        "unit's squashing: a linear unit at T = 100 (with a sigmoid one the targets near 0 and 1 "
        "stay wrong for long and the stopping rule rarely holds), a sigmoid one beyond (a "
        "linear one at lr 0.5 jitters above the targets' variance and does not leave the "
        "plateau); both measured in docs/reproduction.md",
    )


def _multiplication(n_seq: int, paper: PaperResult, target: bool = False) -> Experiment:
    return Experiment(
        name=f"5-nseq{n_seq}",
        group="5",
        title=f"multiplication problem, stop with fewer than {n_seq} of 2,000 wrong",
        task="multiplication",
        options={"n_seq": n_seq},
        faithful=Faithful(
            blocks=2, block_size=2, lr=0.1, input_gate_bias=(-3.0, -6.0), output_units="linear"
        ),
        paper=paper,
        budget=int(5 * paper.sequences),
        target=target,
        note="network as in experiment 4 (input-gate biases -3, -6, a linear output unit)",
    )


def _temporal_order(
    variant: str, blocks: int, lr: float, paper: PaperResult, **extra
) -> Experiment:
    return Experiment(
        name=variant,
        group=variant,
        title=f"temporal order {variant}, {blocks} blocks of 2, lr {lr:g}",
        task="temporal_order",
        options={"problem": variant},
        faithful=Faithful(
            blocks=blocks,
            block_size=2,
            lr=lr,
            input_gate_bias=tuple(-2.0 * (k + 1) for k in range(blocks)),
        ),
        paper=paper,
        budget=int(5 * paper.sequences),
        target=True,
        note="output-gate biases random in [-0.1, 0.1]",
        **extra,
    )


EXPERIMENTS: dict[str, Experiment] = {
    row.name: row
    for row in (
        _reber(4, 1, 0.1, PaperResult(30, 100.0, 39_740, 264)),
        _reber(3, 2, 0.1, PaperResult(30, 100.0, 21_730, 276)),
        _reber(3, 2, 0.2, PaperResult(30, 97.0, 14_060, 276)),
        _reber(4, 1, 0.5, PaperResult(30, 97.0, 9_500, 264)),
        _reber(3, 2, 0.5, PaperResult(30, 100.0, 8_440, 276), target=True),
        Experiment(
            name="2a-p100",
            group="2a",
            title="noise-free long time lag, p = 100",
            task="longlag",
            options={"problem": "2a", "p": 100},
            faithful=_LONG_LAG_2A,
            paper=PaperResult(18, 100.0, 5_040, 10_504),
            budget=200_000,
            chunk=100,
            target=True,
        ),
        Experiment(
            name="2b-p100",
            group="2b",
            title="long time lag with a random middle, p = 100",
            task="longlag",
            options={"problem": "2b", "p": 100, "targets": "every"},
            faithful=_LONG_LAG_2A,
            paper=PaperResult(18, 100.0, 5_680, 10_504),
            budget=200_000,
            chunk=100,
            trained=Trained(
                batch=8, lr=0.03, hidden=64, init="chrono(1000)", task_options={"targets": "end"}
            ),
            note="trained on every next element, judged at the sequence end only (the paper); "
            "the trained configurations train at the end only",
        ),
        _long_lag_2c(50, 50, 30_000),
        _long_lag_2c(100, 100, 31_000, target=True),
        _long_lag_2c(200, 200, 33_000),
        _long_lag_2c(500, 500, 38_000),
        _long_lag_2c(1000, 1000, 49_000, target=True),
        _long_lag_2c(1000, 500, 49_000),
        _long_lag_2c(1000, 200, 75_000),
        _long_lag_2c(1000, 100, 135_000),
        _long_lag_2c(1000, 50, 203_000),
        _two_sequence("3a", 100, 3, 39_850, "0.000195", st1=27_380, target=True),
        _two_sequence("3a", 100, 1, 64_330, "0.000117", st1=58_370),
        _two_sequence("3a", 1000, 3, 452_460, "0.000078", st1=446_850),
        _two_sequence("3b", 100, 3, 43_250, "0.00828", st1=41_740),
        _two_sequence("3b", 100, 1, 78_430, "0.01500", st1=74_950),
        _two_sequence("3b", 1000, 1, 485_080, "0.01207", st1=481_060),
        _two_sequence("3c", 100, 3, 269_650, "0.00558"),
        _two_sequence("3c", 100, 1, 565_640, "0.00441"),
        _adding(
            100,
            PaperResult(10, 100.0, 74_000, 93, "1 wrong of 2560"),
            500_000,
            True,
            Trained(
                budget=20_000,
                batch=4,
                schedule="cosine",
                task_options={"output_activation": "identity"},
            ),
        ),
        _adding(500, PaperResult(10, 100.0, 209_000, 93, "0 wrong of 2560"), 2_000_000, True),
        _adding(1000, PaperResult(10, 100.0, 853_000, 93, "1 wrong of 2560"), 5_000_000),
        _multiplication(140, PaperResult(10, 100.0, 482_000, 93, "139 wrong, MSE 0.0223"), True),
        _multiplication(13, PaperResult(10, 100.0, 1_273_000, 93, "14 wrong, MSE 0.0139")),
        _temporal_order(
            "6a",
            2,
            0.5,
            PaperResult(20, 100.0, 31_390, 156, "1 wrong of 2560"),
            trained=Trained(batch=4, lr=0.03),
        ),
        _temporal_order("6b", 3, 0.1, PaperResult(10, 100.0, 571_100, 308, "2 wrong of 2560")),
        _adding(2000, None, 5_000_000, trained=Trained(budget=200_000)),
        _adding(5000, None, 10_000_000, trained=Trained(budget=200_000)),
        _adding(10_000, None, 20_000_000, trained=Trained(budget=200_000)),
    )
}
"""Every row, by name, in the paper's order; the rows beyond the paper last."""

GROUPS: dict[str, list[str]] = {}
for _name, _row in EXPERIMENTS.items():
    GROUPS.setdefault(_row.group, []).append(_name)

ALIASES = {
    "reber": "1", "long-lag": "2a", "adding": "4", "multiplication": "5",
    "two-sequence": "3a", "temporal-order": "6a",
}  # fmt: skip
"""Task names that stand for an experiment group."""

QUICK = ("1-3x2-lr0.5", "2a-p100", "2c-q100-p100", "3a-T100-N3", "4-T100", "6a")
"""The rows of ``carousel reproduce all --quick``."""


def experiment(name: str) -> Experiment:
    """Row ``name`` of :data:`EXPERIMENTS`, or a variant of one: ``ROW@key=value,key=value``.

    Each key is a field of the row's :class:`~carousel.experiments.faithful.Faithful` settings
    (``plateau.window``, ``plateau.patience``, ``plateau.threshold`` for those of its
    :class:`~carousel.experiments.faithful.Plateau`) or an option of its task; each value a
    Python literal (``1.0``, ``False``, ``(-1.0, -2.0)``; a bare word is a string). The variant
    keeps ``name`` as its name, so its trials are told apart from the row's. E.g.
    ``1-3x2-lr0.5@error_factor=1.0``, ``2a-p100@staged=False``,
    ``1-3x2-lr0.5@sampling=epochs,input_gate_bias_range=None``.
    """
    base, _, changes = name.partition("@")
    if base not in EXPERIMENTS:
        raise ValueError(f"unknown row {base!r} in experiment {name!r} (carousel reproduce --list)")
    row = EXPERIMENTS[base]
    if not changes:
        return row
    from carousel.tasks import TASKS

    settings = {f.name for f in dataclasses.fields(Faithful)} - {"plateau"}
    plateau_fields = {f.name for f in dataclasses.fields(row.faithful.plateau)}
    task_options = {f.name for f in dataclasses.fields(TASKS[row.task].Options)}
    faithful, plateau, options = {}, {}, dict(row.options)
    for item in re.split(r",(?=\s*[A-Za-z_][\w.]*\s*=)", changes):
        key, equals, text = (part.strip() for part in item.partition("="))
        if not equals:
            raise ValueError(f"experiment {name!r}: a change must read key=value; got {item!r}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        if key.startswith("plateau.") and key[len("plateau.") :] in plateau_fields:
            plateau[key[len("plateau.") :]] = value
        elif key in settings:
            faithful[key] = value
        elif key in task_options:
            options[key] = value
        else:
            raise ValueError(
                f"experiment {name!r}: {key!r} is neither a faithful setting ({sorted(settings)}, "
                f"plateau.{{{', '.join(sorted(plateau_fields))}}}) nor an option of task "
                f"{row.task!r} ({sorted(task_options)})"
            )
    settings = dataclasses.replace(
        row.faithful,
        **faithful,
        plateau=dataclasses.replace(row.faithful.plateau, **plateau),
    )
    return dataclasses.replace(row, name=name, options=options, faithful=settings)


def select(name: str) -> list[Experiment]:
    """The rows ``name`` stands for: a row, a group, an alias, ``"all"`` (every row of the
    paper's tables), or a variant of a row (:func:`experiment`)."""
    if "@" in name:
        return [experiment(name)]
    name = ALIASES.get(name, name)
    if name == "all":
        return [row for row in EXPERIMENTS.values() if row.paper]
    if name in GROUPS:
        return [EXPERIMENTS[row] for row in GROUPS[name]]
    if name in EXPERIMENTS:
        return [EXPERIMENTS[name]]
    raise ValueError(
        f"unknown experiment {name!r}; choose all, a group ({', '.join(GROUPS)}), "
        f"an alias ({', '.join(ALIASES)}) or a row (carousel reproduce --list)"
    )
