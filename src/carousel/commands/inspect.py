"""``carousel inspect DIR``: gate traces and retention times of a trained run's LSTM.

The command loads a checkpoint of the run in DIR, takes sequence K of its task's test set
(``task.eval_batches()``, sequences counted across the batches, cut to the sequence's length)
and runs the model's first recurrent layer (its forward direction, from a zero state) over it
step by step (:func:`carousel.diagnostics.gate_traces`). It writes to OUTDIR (default
``DIR/inspect``):

- ``gates.csv``: one row per step ``t = 0 .. L-1``; columns ``step``, then
  ``input_gate_<u>``, ``forget_gate_<u>``, ``output_gate_<u>`` for every gate unit (memory
  block) ``u`` whose cell has that gate, then ``cell_<j>`` (the cell state :math:`c_t`) for every
  cell ``j``;
- ``retention.csv``: one row per cell: ``cell``, ``block`` (its gate unit), ``retention``
  (:func:`carousel.diagnostics.retention_time`: steps the cell keeps half its content, from the
  geometric mean ``forget_gate_mean`` of its forget gate over the sequence) and ``note``.
  ``inf`` means the cell keeps everything: it has no forget gate (the 1997 cell, NFG;
  ``forget_gate_mean`` is then empty) or its forget gate stays exactly 1; ``0`` means the gate
  closes completely (:math:`f_t = 0`) at some step;
- ``gates.png``: the heatmaps of :func:`carousel.diagnostics.plots.plot_gate_traces`, unless
  ``--no-plots``;

and prints a summary: each cell's retention time and the steps where the mean input gate is
largest (for the adding problem, with the marked positions, which is where a trained model's
input gates should open).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch

from carousel.cli import UsageError

TOP_STEPS = 2
"""How many steps of the largest mean input gate the summary names."""


def add_parser(subparsers) -> None:
    """Register ``carousel inspect``."""
    parser = subparsers.add_parser(
        "inspect",
        help="gate traces and retention times of a run's LSTM on one test sequence",
        description="Trace the gates and cells of the first recurrent layer of the run in DIR "
        "over one sequence of its task's test set; write gates.csv, retention.csv and gates.png.",
    )
    parser.add_argument("run_dir", metavar="DIR", help="the run directory")
    parser.add_argument(
        "--checkpoint",
        default="latest",
        metavar="WHICH",
        help="latest (default), best, or the path of a checkpoint's .json",
    )
    parser.add_argument(
        "--sequence",
        type=int,
        default=0,
        metavar="K",
        help="which sequence of the test set, counted from 0 (default: 0)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, metavar="OUTDIR", help="output directory (DIR/inspect)"
    )
    parser.add_argument("--no-plots", action="store_true", help="write the CSV files only")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the model, trace the sequence, write the files, print the summary."""
    from carousel.diagnostics import gate_traces, retention_time
    from carousel.tasks import build_task
    from carousel.train.checkpoint import CheckpointError, load_trained_model
    from carousel.train.distributed import resolve_device

    device = resolve_device(args.device)
    try:
        config, model, info = load_trained_model(args.run_dir, args.checkpoint, device)
    except CheckpointError as error:
        raise UsageError(f"{_blamed_argument(args)}: {error}") from None
    encoder = model.encoder  # every head reads its input through an Encoder
    layer = encoder.layer
    if layer.spec.family != "lstm":
        raise UsageError(
            f"gate traces apply to LSTM cells; the run in {args.run_dir!r} uses a "
            f"{layer.spec.family} cell (variant {layer.spec.variant!r})"
        )
    task = build_task(config.task, config.task_options, config.train.seed)
    source, total = _test_sequence(task, args.sequence)  # (1, L, ...)
    with torch.no_grad():
        layer_input = source.to(device)
        if encoder.embedding is not None:
            layer_input = encoder.embedding(layer_input)  # (1, L, E)
        param = next(layer.parameters())
        traces = gate_traces(layer, layer_input.to(param.dtype))
    retention = retention_time(traces)  # (U,)

    out = args.out if args.out is not None else Path(args.run_dir) / "inspect"
    out.mkdir(parents=True, exist_ok=True)
    written = [_write_gates_csv(out / "gates.csv", traces)]
    written.append(_write_retention_csv(out / "retention.csv", traces, retention))
    if not args.no_plots:
        from carousel.diagnostics.plots import plot_gate_traces

        inputs = None if encoder.embedding is not None else source[0].double().numpy()
        try:
            written.append(
                plot_gate_traces(
                    traces,
                    out / "gates.png",
                    inputs=inputs,
                    title=f"{config.task}, step {info['step']}, test sequence {args.sequence}: "
                    f"{config.model.variant} LSTM, first layer",
                )
            )
        except ImportError as error:
            raise UsageError(f"{error}; or pass --no-plots") from None

    _print_summary(args, config, info, layer, traces, retention, source, total)
    for path in written:
        print(f"wrote {path}")
    return 0


def _blamed_argument(args: argparse.Namespace) -> str:
    """The argument a checkpoint that cannot be loaded is the fault of."""
    if args.checkpoint not in ("latest", "best"):
        return "--checkpoint"  # a path: loaded whatever DIR holds
    if args.checkpoint == "best" and (Path(args.run_dir) / "config.json").exists():
        return "--checkpoint best"
    return "DIR"


def _test_sequence(task, index: int) -> tuple[torch.Tensor, int]:
    """Sequence ``index`` of the task's test set, ``(1, L, ...)`` cut to its length, and the
    number of sequences in the test set."""
    batches = list(task.eval_batches())
    total = sum(batch.size for batch in batches)
    if not 0 <= index < total:
        raise UsageError(
            f"--sequence must lie in [0, {total - 1}] (the test set of task {task.name!r} has "
            f"{total} sequences); got {index}"
        )
    for batch in batches:
        if index < batch.size:
            x = batch.x[0] if isinstance(batch.x, tuple) else batch.x  # seq2seq: the source
            length = int(batch.mask[index].sum())
            return x[index : index + 1, :length], total
        index -= batch.size
    raise AssertionError("unreachable: index was checked against the total")


def _gate_columns(traces) -> list[tuple[str, np.ndarray]]:
    """``(name, (L, U) values)`` of the gates the cell has, in the order i, f, o."""
    gates = [
        ("input_gate", traces.input_gate),
        ("forget_gate", traces.forget_gate),
        ("output_gate", traces.output_gate),
    ]
    return [(name, values[:, 0]) for name, values in gates if values is not None]


def _write_gates_csv(path: Path, traces) -> Path:
    gates = _gate_columns(traces)
    cell = traces.cell[:, 0]  # (L, H)
    header = ["step"]
    for name, values in gates:
        header += [f"{name}_{unit}" for unit in range(values.shape[1])]
    header += [f"cell_{j}" for j in range(cell.shape[1])]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for step in range(cell.shape[0]):
            row = [step]
            for _, values in gates:
                row += [float(v) for v in values[step]]
            writer.writerow(row + [float(v) for v in cell[step]])
    return path


def _forget_gate_mean(traces) -> np.ndarray | None:
    """``(U,)`` geometric mean of each unit's forget gate over the trace, or ``None``."""
    if traces.forget_gate is None:
        return None
    with np.errstate(divide="ignore"):
        return np.exp(np.log(traces.forget_gate.astype(np.float64)).mean(axis=(0, 1)))


def _note(retention: float, forget_mean: float | None) -> str:
    if forget_mean is None:
        return "no forget gate: keeps everything"
    if retention == 0:
        return "forget gate closes completely at some step"
    if np.isinf(retention):
        return "forget gate stays 1: keeps everything"
    return ""


def _write_retention_csv(path: Path, traces, retention: np.ndarray) -> Path:
    means = _forget_gate_mean(traces)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cell", "block", "retention", "forget_gate_mean", "note"])
        for cell in range(traces.cell.shape[-1]):
            block = cell // traces.block_size
            mean = None if means is None else float(means[block])
            writer.writerow(
                [
                    cell,
                    block,
                    float(retention[block]),
                    "" if mean is None else mean,
                    _note(float(retention[block]), mean),
                ]
            )
    return path


def _print_summary(args, config, info, layer, traces, retention, source, total) -> None:
    steps, cells = traces.cell.shape[0], traces.cell.shape[-1]
    where = "the only layer" if layer.num_layers == 1 else f"layer 0 of {layer.num_layers}"
    if layer.bidirectional:
        where += ", forward direction"
    print(
        f"{config.task}, step {info['step']}: test sequence {args.sequence} of {total}, "
        f"{steps} steps; {config.model.variant} LSTM, {cells} cells ({where}; traces start "
        "from a zero state)"
    )
    if config.task == "adding":
        marked = torch.nonzero(source[0, :, 1] == 1).flatten().tolist()
        print(f"marked positions (x[..., 1] == 1): steps {', '.join(map(str, marked))}")
    if traces.input_gate is None:
        print("input gate: the cell has none")
    else:
        mean_input = traces.input_gate[:, 0].mean(axis=1)  # (L,)
        top = np.argsort(-mean_input, kind="stable")[:TOP_STEPS]
        shown = ", ".join(f"{t} ({mean_input[t]:.3f})" for t in top)
        print(f"input gate opens most (mean over units) at steps: {shown}")
    means = _forget_gate_mean(traces)
    print("retention time (steps a cell keeps half its content; inf: keeps everything):")
    print(f"  {'cell':>4s} {'block':>5s} {'retention':>10s} {'f mean':>8s}")
    for cell in range(cells):
        block = cell // traces.block_size
        mean = "-" if means is None else f"{means[block]:.4f}"
        note = _note(float(retention[block]), None if means is None else float(means[block]))
        line = f"  {cell:4d} {block:5d} {retention[block]:10.3g} {mean:>8s}"
        print(f"{line}  {note}" if note else line)
