"""``carousel gradflow``: how far back the error reaches, for the family's cells, at initialisation.

Every model reads the same batch of the adding problem (Hochreiter & Schmidhuber 1997,
experiment 4) through a fixed random linear read-out of its last output; the loss is the squared
error against the task's target. For each model the command measures
:math:`\\|\\partial L/\\partial h_{T-q}\\|` and :math:`\\|\\partial L/\\partial c_{T-q}\\|` for every
lag ``q`` (:func:`carousel.diagnostics.gradient_flow`) and writes

- ``gradflow.csv`` and ``gradflow.png`` (log scale, relative to lag 0);
- ``error_flow.csv`` and ``error_flow.png``: Hochreiter's error-flow factor for a single linear
  unit with self-weight 0.5, 1 (the constant error carousel) and 1.7, and the largest factor
  :math:`|\\partial\\vartheta_v(t-q)/\\partial\\vartheta_u(t)|` of the Elman models (over all
  unit pairs, on the batch's first sequence);

and prints a summary, with the constant-error-carousel check of
:func:`carousel.diagnostics.cec_comparison`.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from carousel.cells import init
from carousel.commands import (
    add_command,
    add_out_argument,
    add_seed_argument,
    positive_int,
)
from carousel.diagnostics import cec_comparison, elman_net_inputs, error_flow, gradient_flow
from carousel.nn import GRU, LSTM, RNN, Recurrent

ELMAN_SCALES = (0.5, 1.0, 2.0)
"""Gains of the orthogonal recurrent weights of the Elman models."""
REPORTED_LAGS = (10, 50, 100)


def add_parser(subparsers) -> None:
    """Register ``carousel gradflow``."""
    parser = add_command(
        subparsers, run, "gradient flow across time for Elman, GRU and LSTM cells (CSV and plots)"
    )
    add_out_argument(parser, Path("runs/gradflow"), "output directory")
    parser.add_argument("--steps", type=positive_int, default=200, help="sequence length T")
    parser.add_argument("--batch", type=positive_int, default=16, help="sequences in the batch")
    parser.add_argument("--hidden", type=positive_int, default=32, help="units per model")
    add_seed_argument(parser, "weights and data")
    parser.add_argument(
        "--cec-steps", type=positive_int, default=1000, help="length of the CEC check"
    )
    parser.add_argument("--no-plots", action="store_true", help="write the CSV files only")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def adding_problem(
    steps: int, batch: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of the adding problem: ``(x, target)``, ``(T, N, 2)`` and ``(N, 1)``.

    Each step carries a value in [-1, 1] and a marker; one of the first 10 steps and one of the
    first ``T/2 - 1`` others are marked 1, the first and last steps -1 unless marked; the target
    is :math:`0.5 + (X_1 + X_2)/4` (a marked first step counts as :math:`X_1 = 0`).
    """
    if steps < 12:
        raise ValueError(f"steps must be at least 12 for the adding problem; got {steps}")
    values = torch.rand(steps, batch, generator=generator) * 2 - 1
    markers = torch.zeros(steps, batch)
    markers[0] = markers[-1] = -1
    rows = torch.arange(batch)
    first = torch.randint(0, 10, (batch,), generator=generator)
    second = torch.randint(0, steps // 2 - 2, (batch,), generator=generator)
    second = second + (second >= first).long()  # any of the first T/2 - 1 steps but `first`
    markers[first, rows] = 1
    markers[second, rows] = 1
    values[0] = torch.where(first == 0, 0.0, values[0])
    target = 0.5 + (values[first, rows] + values[second, rows]) / 4
    return torch.stack((values, markers), dim=-1), target.unsqueeze(-1)


def models(hidden: int, steps: int, dtype: torch.dtype = torch.float64) -> dict[str, Recurrent]:
    """The compared models, freshly initialised from the current random state."""
    compared: dict[str, Recurrent] = {
        f"elman, R orthogonal x{scale:g}": RNN(
            2, hidden, dtype=dtype, init=init.orthogonal_recurrent(gain=scale)
        )
        for scale in ELMAN_SCALES
    }
    compared["gru"] = GRU(2, hidden, dtype=dtype)
    compared["lstm, no forget gate"] = LSTM(2, hidden, dtype=dtype, variant="nfg", peepholes=False)
    compared["lstm"] = LSTM(2, hidden, dtype=dtype)
    compared["lstm, forget bias 1"] = LSTM(2, hidden, dtype=dtype, init=init.forget_bias(1.0))
    compared["lstm, chrono"] = LSTM(2, hidden, dtype=dtype, init=init.chrono(t_max=steps))
    return compared


def run(args: argparse.Namespace) -> None:
    """Measure, write the CSV files and plots, print the summary."""
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    x, target = adding_problem(args.steps, args.batch, generator)
    x, target = x.double(), target.double()  # float64: float32 underflows near 1e-38
    readout = nn.Linear(args.hidden, 1, dtype=torch.float64)
    args.out.mkdir(parents=True, exist_ok=True)

    def loss(output: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(readout(output[-1]), target)

    from tqdm import tqdm

    compared = models(args.hidden, args.steps)
    bar = tqdm(total=len(compared) + 1, unit="model", disable=args.quiet, file=sys.stderr,
               leave=False, dynamic_ncols=True)  # fmt: skip
    flows, factors = {}, {}
    for name, layer in compared.items():
        bar.set_description(name)
        flows[name] = gradient_flow(layer.eval(), x, loss)
        if layer.spec.family == "elman":
            nets = elman_net_inputs(layer, x)[0]  # first sequence
            weight = layer.weight_hh_l0.detach().double().numpy()
            factors[f"{name}, largest"] = np.abs(error_flow(weight, nets, "tanh")).max(axis=(1, 2))
        bar.update()
    lags = np.arange(args.steps)
    for weight in (0.5, 1.0, 1.7):
        label = f"linear unit, w = {weight:g}" + (" (CEC)" if weight == 1 else "")
        factors[label] = error_flow([[weight]], np.zeros((args.steps, 1)), "identity")[:, 0, 0]

    _write_gradient_csv(args.out / "gradflow.csv", flows)
    _write_columns_csv(args.out / "error_flow.csv", lags, factors)
    written = [args.out / "gradflow.csv", args.out / "error_flow.csv"]
    if not args.no_plots:
        from carousel.diagnostics.plots import plot_error_flow, plot_gradient_flow

        written.append(
            plot_gradient_flow(
                flows,
                args.out / "gradflow.png",
                title=f"gradient flow at initialisation, adding problem, T = {args.steps}, "
                f"{args.hidden} units",
            )
        )
        written.append(
            plot_error_flow(
                factors,
                args.out / "error_flow.png",
                title=r"error scaling $\partial\vartheta_v(t-q) / \partial\vartheta_u(t)$",
            )
        )

    lags_shown = [q for q in REPORTED_LAGS if q < args.steps] + [args.steps]
    print(f"gradient norm at lag q relative to lag 0 (adding problem, T = {args.steps}):")
    header = f"  {'model':30s} " + " ".join(f"{'h q=' + str(q):>10s}" for q in lags_shown)
    print(header + " " + " ".join(f"{'c q=' + str(q):>10s}" for q in lags_shown))
    for name, flow in flows.items():
        relative = flow.relative()
        row = f"  {name:30s} " + " ".join(f"{relative.hidden[q]:10.2e}" for q in lags_shown)
        if relative.cell is not None:
            row += " " + " ".join(f"{relative.cell[q]:10.2e}" for q in lags_shown)
        print(row)

    bar.set_description(f"constant error carousel, {args.cec_steps} steps")
    cec = cec_comparison(steps=args.cec_steps, seed=args.seed)
    bar.update()
    bar.close()
    cell = cec["cec"].cell
    below = cec["elman"].first_lag_below(1e-10)
    print(
        f"constant error carousel (f = 1, i = 0), {args.cec_steps} steps: cell gradient at lag "
        f"{args.cec_steps} / lag 0 = {cell[-1] / cell[0]:.17g}, largest deviation "
        f"{np.abs(cell - cell[0]).max():.1e}"
    )
    print(
        "Elman (tanh, torch's init): gradient below 1e-10 of its start from lag "
        + (str(below) if below is not None else f"> {args.cec_steps} (never)")
    )
    for path in written:
        print(f"wrote {path}")


def _write_gradient_csv(path: Path, flows) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", "lag", "hidden", "hidden_relative", "cell", "cell_relative"])
        for name, flow in flows.items():
            relative = flow.relative()
            for q in flow.lags:
                cell = () if flow.cell is None else (float(flow.cell[q]), float(relative.cell[q]))
                hidden = (float(flow.hidden[q]), float(relative.hidden[q]))
                writer.writerow([name, int(q), *hidden, *(cell or ("", ""))])


def _write_columns_csv(path: Path, lags: np.ndarray, columns: dict) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["lag", *columns])
        for q in lags:
            writer.writerow([int(q), *(float(values[q]) for values in columns.values())])
