"""``carousel inspect DIR``: gate traces, retention times and gradient flow of a trained run.

The command loads a checkpoint of the run in DIR, takes sequence K of its task's test set
(``task.eval_batches()``, sequences counted across the batches, cut to the sequence's length)
and, for an LSTM-family run, runs the model's first recurrent layer (its forward direction,
from a zero state) over it step by step (:func:`carousel.diagnostics.gate_traces`). For every
cell family it measures how far back the run's own loss reaches on that sequence:
:func:`carousel.diagnostics.gradient_flow` of the model's recurrent layer, with the task's loss
(:meth:`carousel.tasks.Task.loss`) on this one sequence computed from the layer's output through
the model's head (a regressor's or classifier's decoder reads the final output, a tagger's or
language model's every step). The norms of :math:`\\partial L/\\partial h_{T-q}` and
:math:`\\partial L/\\partial c_{T-q}` are those of the states of the last layer (its forward
direction), computed in float64 on a copy of the model, as ``carousel gradflow`` does. It writes
to OUTDIR (default ``DIR/inspect``):

- ``gates.csv`` (LSTM family): one row per step ``t = 0 .. L-1``; columns ``step``, then
  ``input_gate_<u>``, ``forget_gate_<u>``, ``output_gate_<u>`` for every gate unit (memory
  block) ``u`` whose cell has that gate, then ``cell_<j>`` (the cell state :math:`c_t`) for every
  cell ``j``;
- ``retention.csv`` (LSTM family): one row per cell: ``cell``, ``block`` (its gate unit),
  ``retention`` (:func:`carousel.diagnostics.retention_time`: steps the cell keeps half its
  content, from the geometric mean ``forget_gate_mean`` of its forget gate over the sequence) and
  ``note``. ``inf`` means the cell keeps everything: it has no forget gate (the 1997 cell, NFG;
  ``forget_gate_mean`` is then empty) or its forget gate stays exactly 1; ``0`` means the gate
  closes completely (:math:`f_t = 0`) at some step;
- ``gradflow.csv``: one row per lag ``q = 0 .. L``: ``lag``, ``hidden``
  (:math:`\\|\\partial L/\\partial h_{L-q}\\|`), ``hidden_relative`` (divided by its value at
  lag 0), ``cell`` and ``cell_relative`` (the same for :math:`c`; empty for GRU and Elman cells);
- ``gates.png`` (LSTM family) and ``gradflow.png``: the heatmaps of
  :func:`carousel.diagnostics.plots.plot_gate_traces` and the log-scale curves of
  :func:`carousel.diagnostics.plots.plot_gradient_flow`, unless ``--no-plots``;

and prints a summary: each cell's retention time, the steps where the mean input gate is
largest (for the adding problem, with the marked positions, which is where a trained model's
input gates should open) and the lags where :math:`\\|\\partial L/\\partial h\\|` and
:math:`\\|\\partial L/\\partial c\\|` first fall below :data:`GRADIENT_FRACTION` of their value at
lag 0. A seq2seq run's loss reaches its encoder through the final state, not through the
layer's output, so its gradient flow is left out.
"""

from __future__ import annotations

import argparse
import copy
import csv
from pathlib import Path

import numpy as np
import torch

from carousel.cli import UsageError
from carousel.commands import add_command, add_device_argument, add_out_argument, add_run_arguments
from carousel.diagnostics.gates import forget_gate_mean

TOP_STEPS = 2
"""How many steps of the largest mean input gate the summary names."""
GRADIENT_FRACTION = 1e-3
"""The summary names the first lag where a gradient norm falls below this fraction of lag 0's."""
PER_STEP_HEADS = ("tagger", "language_model")
"""Heads with a target at every step (cut to the sequence's length with it)."""
FAMILY_NAMES = {"lstm": "LSTM", "gru": "GRU", "elman": "Elman RNN", "slstm": "sLSTM"}


def add_parser(subparsers) -> None:
    """Register ``carousel inspect``."""
    parser = add_command(
        subparsers,
        run,
        "gate traces, retention times and gradient flow of a run on one test sequence",
        description="Trace the gates and cells of the first recurrent layer of the run in DIR "
        "over one sequence of its task's test set (LSTM family) and measure how far back the "
        "task's loss reaches on it; write gates.csv, retention.csv, gates.png, gradflow.csv and "
        "gradflow.png.",
    )
    add_run_arguments(parser)
    parser.add_argument(
        "--sequence",
        type=int,
        default=0,
        metavar="K",
        help="which sequence of the test set, counted from 0 (default: 0)",
    )
    add_out_argument(parser, None, "output directory (DIR/inspect)", metavar="OUTDIR")
    parser.add_argument("--no-plots", action="store_true", help="write the CSV files only")
    add_device_argument(parser, "cpu")


def run(args: argparse.Namespace) -> int:
    """Load the model, trace the sequence, measure its gradient flow, write the files, print
    the summary."""
    from carousel.diagnostics import gate_traces, gradient_flow, retention_time
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
    task = build_task(config.task, config.task_options, config.train.seed)
    sequence, total = _test_sequence(task, args.sequence)
    source = sequence.x[0] if isinstance(sequence.x, tuple) else sequence.x  # (1, L, ...)
    traces = retention = None
    if layer.spec.family == "lstm":
        with torch.no_grad():
            param = next(layer.parameters())
            traces = gate_traces(layer, _layer_input(encoder, source.to(device), param.dtype))
        retention = retention_time(traces)  # (U,)

    flow = None
    model64 = copy.deepcopy(model).to(torch.float64)  # float32 underflows near 1e-38
    loss_fn = _task_loss(model64, task, sequence.to(device))
    if loss_fn is not None:
        with torch.no_grad():
            layer_input = _layer_input(model64.encoder, source.to(device), torch.float64)
        flow = gradient_flow(model64.encoder.layer, layer_input, loss_fn)

    out = args.out if args.out is not None else Path(args.run_dir) / "inspect"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if traces is not None:
        written.append(_write_gates_csv(out / "gates.csv", traces))
        written.append(_write_retention_csv(out / "retention.csv", traces, retention))
    if flow is not None:
        written.append(_write_gradflow_csv(out / "gradflow.csv", flow))
    if not args.no_plots:
        from carousel.diagnostics.plots import plot_gate_traces, plot_gradient_flow

        heading = f"{config.task}, step {info['step']}, test sequence {args.sequence}"
        try:
            if traces is not None:
                inputs = None if encoder.embedding is not None else source[0].double().numpy()
                written.append(
                    plot_gate_traces(
                        traces,
                        out / "gates.png",
                        inputs=inputs,
                        title=f"{heading}: {config.model.variant} LSTM, first layer",
                    )
                )
            if flow is not None:
                family = FAMILY_NAMES[layer.spec.family]
                variant = layer.spec.variant
                name = family if variant == layer.spec.family else f"{variant} {family}"
                written.append(
                    plot_gradient_flow(
                        {f"{name}, {_measured_states(layer)}": flow},
                        out / "gradflow.png",
                        title=f"{heading}: gradient flow of the task's loss",
                        floor=_plot_floor(flow),
                    )
                )
        except ImportError as error:
            raise UsageError(f"{error}; or pass --no-plots") from None

    _print_header(config, info, layer, args.sequence, total, source.shape[1])
    if traces is None:
        print(
            "gate traces: skipped (they need LSTM cells; this run's cell is "
            f"{_article(FAMILY_NAMES[layer.spec.family])})"
        )
    else:
        _print_gates(config, traces, retention, source)
    _print_gradient_flow(config, layer, flow)
    for path in written:
        print(f"wrote {path}")
    return 0


def _task_loss(model, task, sequence):
    """The run's loss on one sequence as a function of the recurrent layer's output.

    Args:
        model: a :class:`~carousel.models.Regressor` (or ``Classifier``) or
            :class:`~carousel.models.Tagger` (or ``LanguageModel``).
        task: the run's task; its :meth:`~carousel.tasks.Task.loss` is applied.
        sequence: the :class:`~carousel.tasks.Batch` of the one sequence, cut to its length ``L``.

    Returns:
        ``output (1, L, D * H_out) -> scalar``, the head applied to ``output`` as the model's
        ``forward`` applies it to its layer's output (a regressor reads the final output of every
        direction, a tagger every step), then ``task.loss``; ``None`` for a seq2seq model, whose
        loss reads the encoder's final state rather than its output.
    """
    from carousel.models.heads import Head

    if not isinstance(model, Head):
        return None
    return lambda output: task.loss(model.readout(output), sequence)


def _layer_input(encoder, source: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """What the encoder's recurrent layer reads for ``source``: ``(1, L, H_in)`` of ``dtype``."""
    if encoder.embedding is None:
        return source.to(dtype)
    return encoder.embedding(source).to(dtype)  # (1, L, E)


def _blamed_argument(args: argparse.Namespace) -> str:
    """The argument a checkpoint that cannot be loaded is the fault of."""
    if args.checkpoint not in ("latest", "best"):
        return "--checkpoint"  # a path: loaded whatever DIR holds
    if args.checkpoint == "best" and (Path(args.run_dir) / "config.json").exists():
        return "--checkpoint best"
    return "DIR"


def _test_sequence(task, index: int):
    """Sequence ``index`` of the task's test set as a one-sequence
    :class:`~carousel.tasks.Batch` cut to its length ``L`` (``x`` ``(1, L, ...)``, per-step
    targets ``(1, L, ...)``, zero initial state), and the number of sequences in the test set."""
    from carousel.tasks import Batch

    batches = list(task.eval_batches())
    total = sum(batch.size for batch in batches)
    if not 0 <= index < total:
        raise UsageError(
            f"--sequence must lie in [0, {total - 1}] (the test set of task {task.name!r} has "
            f"{total} sequences); got {index}"
        )
    position = index
    for batch in batches:  # the batch that holds the sequence
        if position < batch.size:
            break
        position -= batch.size
    row = batch.map(lambda tensor: tensor[position : position + 1])
    length = int(row.mask.sum())

    def cut(tensor: torch.Tensor) -> torch.Tensor:
        return tensor[:, :length]

    # seq2seq: only the source has the mask's length
    x = (cut(row.x[0]), *row.x[1:]) if isinstance(row.x, tuple) else cut(row.x)
    y = cut(row.y) if task.io.head in PER_STEP_HEADS else row.y
    return Batch(x, y, cut(row.mask), row.target_mask), total


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


def _note(retention: float, forget_mean: float | None) -> str:
    if forget_mean is None:
        return "no forget gate: keeps everything"
    if retention == 0:
        return "forget gate closes completely at some step"
    if np.isinf(retention):
        return "forget gate stays 1: keeps everything"
    return ""


def _write_retention_csv(path: Path, traces, retention: np.ndarray) -> Path:
    means = forget_gate_mean(traces)
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


def _write_gradflow_csv(path: Path, flow) -> Path:
    relative = flow.relative()
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["lag", "hidden", "hidden_relative", "cell", "cell_relative"])
        for q in flow.lags:
            hidden = [float(flow.hidden[q]), float(relative.hidden[q])]
            cell = ["", ""] if flow.cell is None else [float(flow.cell[q]), float(relative.cell[q])]
            writer.writerow([int(q), *hidden, *cell])
    return path


def _plot_floor(flow) -> float:
    """The bottom of the log axis: a tenth of the smallest positive relative norm (at least
    1e-30, the axis of ``carousel gradflow``), so that a short trained run's curves are not
    flattened against an axis of 30 decades."""
    relative = flow.relative()
    values = np.concatenate(
        [curve for curve in (relative.hidden, relative.cell) if curve is not None]
    )
    positive = values[np.isfinite(values) & (values > 0)]
    return max(1e-30, float(positive.min()) / 10) if positive.size else 1e-30


def _measured_states(layer) -> str:
    """Whose states :func:`carousel.diagnostics.gradient_flow` measures by default."""
    layers = layer.num_layers
    where = "the only layer" if layers == 1 else f"layer {layers - 1} of {layers} (the last)"
    return f"{where}, forward direction" if layer.bidirectional else where


def _article(name: str) -> str:
    return f"an {name}" if name[0] in "AEIOU" else f"a {name}"


def _print_header(config, info, layer, sequence: int, total: int, steps: int) -> None:
    family = layer.spec.family
    units = layer.hidden_size
    if family == "lstm":
        where = "the only layer" if layer.num_layers == 1 else f"layer 0 of {layer.num_layers}"
        if layer.bidirectional:
            where += ", forward direction"
        model = (
            f"{config.model.variant} LSTM, {units} cells ({where}; traces start from a zero state)"
        )
    else:
        model = f"{FAMILY_NAMES[family]}, {units} units"
    print(
        f"{config.task}, step {info['step']}: test sequence {sequence} of {total}, "
        f"{steps} steps; {model}"
    )


def _print_gates(config, traces, retention, source) -> None:
    cells = traces.cell.shape[-1]
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
    means = forget_gate_mean(traces)
    print("retention time (steps a cell keeps half its content; inf: keeps everything):")
    print(f"  {'cell':>4s} {'block':>5s} {'retention':>10s} {'f mean':>8s}")
    for cell in range(cells):
        block = cell // traces.block_size
        mean = "-" if means is None else f"{means[block]:.4f}"
        note = _note(float(retention[block]), None if means is None else float(means[block]))
        line = f"  {cell:4d} {block:5d} {retention[block]:10.3g} {mean:>8s}"
        print(f"{line}  {note}" if note else line)


def _print_gradient_flow(config, layer, flow) -> None:
    """One line: the lags where the gradient norms first fall below :data:`GRADIENT_FRACTION`
    of their lag-0 value."""
    if flow is None:
        print(
            "gradient flow: skipped (a seq2seq loss reaches the encoder through its final "
            "state, not its output)"
        )
        return
    curves = [("|dL/dh|", "hidden")] + ([("|dL/dc|", "cell")] if flow.cell is not None else [])
    found = []
    for label, curve in curves:
        if getattr(flow, curve)[0] == 0:
            found.append(f"{label} is 0 at lag 0")
            continue
        lag = flow.first_lag_below(GRADIENT_FRACTION, curve)
        found.append(f"{label} at lag {lag}" if lag is not None else f"{label} never")
    print(
        f"gradient flow of the {config.task} loss (states of {_measured_states(layer)}, lags "
        f"0..{len(flow.lags) - 1}): first below {GRADIENT_FRACTION:g} of lag 0: " + ", ".join(found)
    )
