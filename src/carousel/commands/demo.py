"""``carousel demo``: the 1997 LSTM bridges a long time lag that an Elman RNN cannot.

Both learn the adding problem (Hochreiter & Schmidhuber 1997, experiment 4: sum the two marked
values of a sequence of about 100 random ones; the answer is wanted at the end, at least 50
steps after the second mark). The LSTM is the paper's own: 2 memory blocks of 2 cells, 93
weights, online gradient descent at learning rate 0.5 with the truncated gradient, compiled by
:mod:`carousel.experiments.faithful`. The Elman RNN gets today's help: 32 tanh units, full
backpropagation through time, Adam, minibatches of 16, gradient clipping, and more sequences.
Each stops when the paper's rule holds (the last 2,000 training sequences correct, error below
0.04, and their mean squared error below 0.01).

The run directory gets ``summary.json``, ``curves.png`` (training error against sequences seen)
and ``gradflow.png`` (how much of the final error reaches each earlier step in the trained
networks), and the Elman run's own directory ``elman/``.

The numbers are the same on every run for a given ``--seed`` and ``--threads``: every generator
is seeded, and the thread count (default 1) is fixed, because it sets the order in which the
matrix products sum, and the Elman network's 4,000 Adam steps amplify a difference in the last
bit into a different model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from carousel.commands import (
    add_command,
    add_out_argument,
    add_seed_argument,
    positive_int,
)
from carousel.experiments.reproduce import MODERN_OPTIM
from carousel.experiments.suite import EXPERIMENTS, Trained
from carousel.experiments.trial import Trial, run_faithful, run_trainer
from carousel.tasks import build_task

LSTM_BUDGET, ELMAN_BUDGET = 300_000, 64_000


def add_parser(subparsers) -> None:
    """Register ``carousel demo``."""
    parser = add_command(
        subparsers, run, "an Elman RNN and the 1997 LSTM on the adding problem, in under a minute"
    )
    add_out_argument(parser, Path("runs/demo"), "run directory")
    add_seed_argument(parser, "data and weights")
    parser.add_argument(
        "--lstm-budget", type=positive_int, default=LSTM_BUDGET, help="most LSTM sequences"
    )
    parser.add_argument(
        "--elman-budget", type=positive_int, default=ELMAN_BUDGET, help="most Elman sequences"
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="CPU threads (default 1; the numbers depend on the thread count)",
    )
    parser.add_argument("--no-plots", action="store_true", help="write summary.json only")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> None:
    """Train both networks, print who solved the task, write the pictures."""
    from tqdm import tqdm

    from carousel import set_num_threads

    out = args.out
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out {str(out)!r} is not empty; choose another directory")
    out.mkdir(parents=True, exist_ok=True)
    set_num_threads(args.threads)
    row = EXPERIMENTS["4-T100"]
    task = build_task(row.task, row.options, seed=args.seed)
    say = (lambda *_: None) if args.quiet else print
    say("The adding problem, T = 100: the target needs two values seen 50 to 110 steps earlier.")

    bar = tqdm(total=args.lstm_budget, desc="LSTM 1997, online SGD", unit="seq", disable=args.quiet)
    lstm = run_faithful(
        task, row.faithful, seed=args.seed, budget=args.lstm_budget, chunk=row.chunk,
        progress=lambda seen: bar.update(seen - bar.n),
    )  # fmt: skip
    bar.close()
    say(_line("LSTM (1997 cell, 93 weights)", lstm))

    trained = Trained()  # the suite's defaults: 32 units, Adam at 0.01, batch 16
    say(f"Elman RNN, {trained.hidden} units, full BPTT with Adam (progress below):")
    elman = run_trainer(
        row.task, row.options, model={"variant": "elman", "hidden_size": trained.hidden},
        optim={**MODERN_OPTIM, "lr": trained.lr}, batch_size=trained.batch, seed=args.seed,
        budget=args.elman_budget, eval_every=16_000, run_dir=str(out / "elman"), quiet=args.quiet,
    )  # fmt: skip
    say(_line(f"Elman RNN ({elman.weights} weights)", elman))

    flows = _gradient_flows(task, lstm, out)
    lag = task.options.length
    reaching = {
        "lag": lag,
        "lstm_cell": float(flows["LSTM 1997 (trained)"].relative().cell[lag]),
        "elman_hidden": float(flows["Elman RNN (trained)"].relative().hidden[lag]),
    }
    say(
        f"error reaching the state {lag} steps back, relative to the last step: LSTM cell "
        f"{reaching['lstm_cell']:.3g}, Elman {reaching['elman_hidden']:.2g}"
    )
    summary = {
        "task": "adding, T = 100",
        "threads": args.threads,
        "lstm_1997": lstm.to_dict(),
        "elman": elman.to_dict(),
        "gradient_flow": reaching,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if not args.no_plots:
        from carousel.diagnostics.plots import plot_gradient_flow

        _plot_curves({"LSTM 1997 (online SGD)": lstm, "Elman RNN (Adam)": elman}, out)
        plot_gradient_flow(
            flows, out / "gradflow.png",
            title="How much of the final error reaches step T - q (relative to q = 0)",
            floor=None,
        )  # fmt: skip
    say(f"wrote {out}/summary.json" + ("" if args.no_plots else ", curves.png, gradflow.png"))


def _line(name: str, trial: Trial) -> str:
    result = (
        f"solved after {trial.sequences:,} sequences"
        if trial.solved
        else f"not solved in {trial.sequences:,} sequences"
    )
    test = trial.test
    return (
        f"{name}: {result} ({trial.seconds:.0f} s); test set: {test['wrong']:.0f} of "
        f"{trial.test_size} wrong, mean squared error {test['loss']:.2g}"
    )


def _plot_curves(trials: dict[str, Trial], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for name, trial in trials.items():
        seen, loss, _ = zip(*trial.curve, strict=True)
        axes.plot(seen, loss, label=name + (" - solved" if trial.solved else " - not solved"))
    axes.axhline(0.01, color="0.6", linestyle="--", linewidth=1, label="stopping rule: MSE 0.01")
    axes.set_yscale("log")
    axes.set_xlabel("training sequences")
    axes.set_ylabel("training mean squared error")
    axes.set_title("The adding problem, T = 100")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "curves.png", dpi=110)
    plt.close(figure)


def _gradient_flows(task, lstm: Trial, out: Path) -> dict:
    """Gradient flow through the trained networks, on test sequences of exactly 100 steps."""
    from carousel.diagnostics import gradient_flow
    from carousel.train.checkpoint import load_trained_model

    batch = task.eval_batches()[0]
    rows = batch.mask.sum(1) == task.options.length
    x = batch.x[rows][:, : task.options.length].transpose(0, 1).double()  # (T, N, 2)
    target = batch.y[rows].double()  # (N, 1)
    net = lstm.network
    layer = net.layer(truncate_gradient=False)
    out_weight, out_bias = torch.from_numpy(net.out_weight), torch.from_numpy(net.out_bias)
    flows = {
        "LSTM 1997 (trained)": gradient_flow(
            layer,
            x,
            lambda output: ((output[-1] @ out_weight.T + out_bias) - target).square().sum(),
        )
    }
    _, model, _ = load_trained_model(out / "elman")
    model = model.double()

    def elman_loss(output):  # the layer is batch-first
        return (model.decoder(output[:, -1]) - target).square().sum()

    flows["Elman RNN (trained)"] = gradient_flow(model.encoder.layer, x.transpose(0, 1), elman_loss)
    return flows
