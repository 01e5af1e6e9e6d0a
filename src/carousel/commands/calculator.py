"""``carousel calculator``: the ECE 417 lecture's pocket calculator, worked through as tables.

Prints the memorizer network's gradient (formula, autograd and explicit backprop), then the
calculator on the lecture's input ``1, 2, 1, 0, 1, 1, 1, 0``: the one-node linear RNN for
u = 0.5, 1, 1.7 with its forward and backprop tables, the forget-gate RNN with a CReLU gate and
what went wrong, the lecture's knowledge-based LSTM (and an input where it fails), a corrected
two-cell LSTM, and an LSTM trained on random examples (see :mod:`carousel.diagnostics.calculator`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from carousel.commands import add_command, add_seed_argument
from carousel.diagnostics import calculator as worked
from carousel.diagnostics import gate_traces, memorizer
from carousel.diagnostics.calculator_training import model_walkthrough, train_lstm

OUT_OF_DOMAIN_INPUT = (0.5, 0.5, 0.0, 1.0, 0.0)
"""An input with values between 0 and 1, outside the lecture's domain."""


def add_parser(subparsers) -> None:
    """Register ``carousel calculator``."""
    parser = add_command(
        subparsers, run, "the ECE 417 lecture's pocket-calculator walkthrough, printed as tables"
    )
    parser.add_argument(
        "--updates",
        type=int,
        default=3000,
        help="training updates of the learned LSTM (0: skip training)",
    )
    add_seed_argument(parser, "the trained LSTM")
    parser.add_argument(
        "--plots", type=Path, default=None, help="also write gate-trace heatmaps to this directory"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar while the LSTM trains"
    )


def format_table(walkthrough: worked.Walkthrough) -> str:
    """The walkthrough's table, one row per step, numbers with up to 4 significant digits."""
    columns = walkthrough.table
    cells = {
        name: [_number(v) for v in values] for name, values in columns.items()
    }  # name -> texts
    widths = {name: max(len(name), *(len(t) for t in texts)) for name, texts in cells.items()}
    lines = ["  " + "  ".join(f"{name:>{widths[name]}s}" for name in cells)]
    for row in range(len(next(iter(cells.values())))):
        lines.append("  " + "  ".join(f"{cells[n][row]:>{widths[n]}s}" for n in cells))
    return "\n".join(lines)


def _number(value: float) -> str:
    value = float(value)
    if value == 0:
        return "0"
    if value == round(value) and abs(value) < 1e6:
        return str(round(value))
    return f"{value:.4g}"


def _print_walkthrough(walkthrough: worked.Walkthrough) -> None:
    print(f"\n{walkthrough.title}")
    print(format_table(walkthrough))
    line = f"  E = {_number(walkthrough.error)}"
    for name, value in walkthrough.gradients.items():
        line += (
            f"   dE/d{name}: backprop {_number(value)}, "
            f"autograd {_number(walkthrough.autograd[name])}"
        )
    print(line)


def run(args: argparse.Namespace) -> None:
    """Print every table; train the LSTM unless ``--updates 0``; write plots if asked."""
    if args.updates < 0:
        raise ValueError(f"--updates must be >= 0; got {args.updates}")
    print("memorizer y[n] = w x[n] + u y[n-1], x0 = 1 at n = 0, w = 0.5, read at m = 10:")
    print(f"  {'u':>4s}  {'y[m]':>10s}  {'x0(y[m]-x0)u^m':>15s}  {'autograd':>15s}  {'BPTT':>15s}")
    for u in (0.5, 1.0, 1.7):
        result = memorizer(u)
        print(
            f"  {u:4g}  {result.outputs[-1]:10.4g}  {result.analytic:15.6g}  "
            f"{result.autograd:15.6g}  {result.bptt:15.6g}"
        )

    print(
        "\npocket calculator, input x = 1, 2, 1, 0, 1, 1, 1, 0, target y = 0, 0, 0, 4, 0, 0, 0, 3"
    )
    for u in (0.5, 1.0, 1.7):
        _print_walkthrough(worked.linear_rnn(u))
    _print_walkthrough(worked.forget_gate_rnn())
    print(
        "  what went wrong: the gate forgets at the step that should print (f = 0 when x = 0),\n"
        "  so both printed values are 0; and its net input only takes the values 0, 1, 2 (the\n"
        "  CReLU's kinks and flat part), so every gate gradient is 0 and training cannot fix it."
    )

    seed_lstm = worked.seed_lstm()
    _print_walkthrough(
        worked.lstm_walkthrough(
            seed_lstm,
            title="the lecture's LSTM: i = CReLU(1), o = CReLU(1 - x), f = CReLU(1 - h[t-1]), "
            "h = o c",
        )
    )
    print(
        "  it prints the targets, but its cell keeps the tally at the print step (c = 4, 3 where\n"
        "  the calculator resets to 0) and forgets one step later, because its own output was >= 1."
    )
    _print_walkthrough(
        worked.lstm_walkthrough(
            seed_lstm,
            OUT_OF_DOMAIN_INPUT,
            title="the lecture's LSTM on inputs below 1 (outside the lecture's domain)",
        )
    )
    print(
        "  inputs below 1 open the output gate (o = 1 - x) and partly close the forget gate\n"
        "  (f = 1 - h): it prints while accumulating and loses part of the tally."
    )
    corrected = worked.corrected_lstm()
    _print_walkthrough(
        worked.lstm_walkthrough(
            corrected,
            output_unit=1,
            title="corrected LSTM: cell 0 = tally (f = CReLU(x)), cell 1 = display "
            "(i = CReLU(1 - x), g = h0[t-1]); output h1",
        )
    )
    print("  cell 0 equals the calculator's tally at every step; h1 prints it at x = 0.")

    trained = None
    if args.updates > 0:
        from tqdm import tqdm

        with tqdm(
            total=args.updates, desc="training the LSTM", unit="update", disable=args.quiet,
            file=sys.stderr, leave=False, dynamic_ncols=True,
        ) as bar:  # fmt: skip
            trained = train_lstm(args.updates, seed=args.seed, progress=bar.update)
        _print_walkthrough(model_walkthrough(trained.model))
        print(
            f"  trained with Adam for {args.updates} updates on random sequences of 12 inputs "
            f"from {{0, 1, 2, 3}};\n  final training loss {trained.losses[-1]:.2e}; on 1000 new "
            f"sequences mean |error| {trained.test_error:.3f}, all outputs right after "
            f"rounding in {100 * trained.test_exact:.1f}% of them"
        )

    if args.plots is not None:
        from carousel.diagnostics.plots import plot_gate_traces

        x = torch.tensor(worked.CALCULATOR_INPUT).view(-1, 1, 1)
        paths = [
            plot_gate_traces(
                gate_traces(seed_lstm, x),
                args.plots / "calculator_lecture_lstm.png",
                inputs=worked.CALCULATOR_INPUT,
                title="the lecture's LSTM on 1, 2, 1, 0, 1, 1, 1, 0",
            ),
            plot_gate_traces(
                gate_traces(corrected, x),
                args.plots / "calculator_corrected_lstm.png",
                inputs=worked.CALCULATOR_INPUT,
                title="corrected LSTM (cell 0 tally, cell 1 display)",
            ),
        ]
        if trained is not None:
            paths.append(
                plot_gate_traces(
                    gate_traces(trained.model.lstm, x.float()),
                    args.plots / "calculator_trained_lstm.png",
                    inputs=worked.CALCULATOR_INPUT,
                    title=f"trained LSTM ({trained.model.lstm.hidden_size} cells) on the "
                    "lecture's input",
                )
            )
        for path in paths:
            print(f"wrote {path}")
