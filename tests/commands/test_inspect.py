"""``carousel inspect``: gate traces, retention times and gradient flow of tiny trained runs, and
clean errors."""

from __future__ import annotations

import csv
import dataclasses
import shutil

import numpy as np
import pytest
import torch

from carousel import models
from carousel.cli import main
from carousel.commands.inspect import _task_loss, _test_sequence
from carousel.diagnostics import gate_traces, gradient_flow, retention_time, unroll
from carousel.models.heads import OUTPUT_ACTIVATIONS
from carousel.tasks import build_task
from carousel.train import ModelConfig, train
from carousel.train.checkpoint import load_trained_model
from tests.train.runs import (
    adding_config,
    one_thread,  # noqa: F401  (a fixture)
)

pytestmark = pytest.mark.usefixtures("one_thread")

TEST_SIZE = 64  # adding_config's test set


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Four-step adding runs: a vanilla LSTM, the 1997 cell (blocks of 2, no forget gate), a GRU."""
    root = tmp_path_factory.mktemp("inspect")
    models = {
        "vanilla": ModelConfig(hidden_size=3, backend="reference"),
        "1997": ModelConfig(variant="1997", hidden_size=4, block_size=2, backend="reference"),
        "gru": ModelConfig(variant="gru", hidden_size=3, backend="reference"),
    }
    for name, model in models.items():
        config = adding_config(steps=4, eval_every=4, checkpoint_every=4)
        train(dataclasses.replace(config, model=model), root / name, quiet=True)
    return root


def read_csv(path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def direct_traces(run_dir, sequence: int):
    """The sequence (cut to its length) and its traces, computed without the command."""
    config, model, _ = load_trained_model(run_dir)
    task = build_task(config.task, config.task_options, config.train.seed)
    batch = task.eval_batches()[0]  # adding_config's 64 sequences fit one batch
    x = batch.x[sequence : sequence + 1, : int(batch.mask[sequence].sum())]  # (1, L, 2)
    return x, gate_traces(model.encoder.layer, x)


def direct_gradient_flow(run_dir, sequence: int):
    """The gradient flow of the run's loss on the sequence (cut to its length), computed without
    the command: the regressor's decoder and output activation on the last output, the task's
    loss on the one-sequence batch, in float64."""
    config, model, _ = load_trained_model(run_dir)
    model = model.double()
    task = build_task(config.task, config.task_options, config.train.seed)
    batch = task.eval_batches()[0]
    length = int(batch.mask[sequence].sum())
    one = batch.map(lambda tensor: tensor[sequence : sequence + 1])
    one = dataclasses.replace(one, x=one.x[:, :length], mask=one.mask[:, :length])
    x = one.x.double()  # (1, L, 2)
    activation = OUTPUT_ACTIVATIONS[model.output_activation]

    def loss(output):  # (1, L, H)
        return task.loss(activation(model.decoder(output[:, -1])), one)

    with torch.no_grad():  # the loss is the model's own on this sequence
        assert float(loss(model.encoder.layer(x)[0])) == pytest.approx(
            float(task.loss(model(x)[0], one)), rel=1e-12
        )
    return gradient_flow(model.encoder.layer, x, loss)


def assert_gradflow_csv(path, flow):
    rows = read_csv(path)
    assert len(rows) == len(flow.lags)
    assert list(rows[0]) == ["lag", "hidden", "hidden_relative", "cell", "cell_relative"]
    assert [int(row["lag"]) for row in rows] == list(range(len(rows)))
    relative = flow.relative()
    for name, curve, scaled in (
        ("hidden", flow.hidden, relative.hidden),
        ("cell", flow.cell, relative.cell),
    ):
        if curve is None:
            assert all(row[name] == row[f"{name}_relative"] == "" for row in rows)
        else:
            np.testing.assert_allclose([float(row[name]) for row in rows], curve, rtol=1e-12)
            np.testing.assert_allclose(
                [float(row[f"{name}_relative"]) for row in rows], scaled, rtol=1e-12
            )
    assert flow.hidden[0] > 0 and float(rows[0]["hidden_relative"]) == 1


def lag_text(flow, curve: str) -> str:
    lag = flow.first_lag_below(1e-3, curve)
    return "never" if lag is None else f"at lag {lag}"


def test_inspect_writes_gates_retention_and_picture(runs, tmp_path, capsys):
    run_dir, out = runs / "vanilla", tmp_path / "out"
    config = adding_config()
    task = build_task(config.task, config.task_options, config.train.seed)
    mask = task.eval_batches()[0].mask
    sequence = int(torch.nonzero(mask.sum(1) < mask.shape[1])[0])  # a padded sequence
    assert main(["inspect", str(run_dir), "--sequence", str(sequence), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (out / "gates.png").stat().st_size > 0
    assert (out / "gradflow.png").stat().st_size > 0

    x, traces = direct_traces(run_dir, sequence)
    steps = x.shape[1]
    rows = read_csv(out / "gates.csv")
    assert len(rows) == steps < mask.shape[1]
    gates = [f"{g}_gate_{u}" for g in ("input", "forget", "output") for u in range(3)]
    assert list(rows[0]) == ["step", *gates, *(f"cell_{j}" for j in range(3))]
    assert [int(row["step"]) for row in rows] == list(range(steps))
    values = np.array([[float(row[name]) for name in gates] for row in rows])
    assert np.all((values >= 0) & (values <= 1))
    np.testing.assert_allclose(values[:, :3], traces.input_gate[:, 0], rtol=1e-6)
    cells = np.array([[float(row[f"cell_{j}"]) for j in range(3)] for row in rows])
    np.testing.assert_allclose(cells, traces.cell[:, 0], rtol=1e-6, atol=1e-7)

    retention = read_csv(out / "retention.csv")
    assert [row["cell"] for row in retention] == ["0", "1", "2"]
    np.testing.assert_allclose(
        [float(row["retention"]) for row in retention], retention_time(traces), rtol=1e-12
    )
    assert all(0 < float(row["forget_gate_mean"]) < 1 for row in retention)

    marked = torch.nonzero(x[0, :, 1] == 1).flatten().tolist()
    assert len(marked) == 2
    assert f"marked positions (x[..., 1] == 1): steps {marked[0]}, {marked[1]}" in printed
    top = int(np.argmax(traces.input_gate[:, 0].mean(1)))
    assert f"input gate opens most (mean over units) at steps: {top} (" in printed
    assert f"test sequence {sequence} of {TEST_SIZE}, {steps} steps" in printed
    assert "(the only layer;" in printed

    flow = direct_gradient_flow(run_dir, sequence)
    assert len(flow.lags) == steps + 1
    assert_gradflow_csv(out / "gradflow.csv", flow)
    assert (
        f"gradient flow of the adding loss (states of the only layer, lags 0..{steps}): first "
        f"below 0.001 of lag 0: |dL/dh| {lag_text(flow, 'hidden')}, "
        f"|dL/dc| {lag_text(flow, 'cell')}\n"
    ) in printed


def test_cells_without_forget_gate_keep_everything(runs, capsys):
    run_dir = runs / "1997"
    assert main(["inspect", str(run_dir), "--no-plots"]) == 0
    out = run_dir / "inspect"  # the default
    assert sorted(path.name for path in out.iterdir()) == [
        "gates.csv",
        "gradflow.csv",
        "retention.csv",
    ]
    columns = list(read_csv(out / "gates.csv")[0])
    assert columns == [
        "step",
        "input_gate_0",
        "input_gate_1",
        "output_gate_0",
        "output_gate_1",
        *(f"cell_{j}" for j in range(4)),
    ]
    retention = read_csv(out / "retention.csv")
    assert [(row["cell"], row["block"]) for row in retention] == [
        ("0", "0"),
        ("1", "0"),
        ("2", "1"),
        ("3", "1"),
    ]
    _, traces = direct_traces(run_dir, 0)
    assert np.all(np.isinf(retention_time(traces)))
    for row in retention:
        assert row["retention"] == "inf" and row["forget_gate_mean"] == ""
        assert row["note"] == "no forget gate: keeps everything"
    assert "no forget gate: keeps everything" in capsys.readouterr().out


def test_gru_runs_get_gradient_flow_but_no_gates(runs, capsys):
    run_dir = runs / "gru"
    assert main(["inspect", str(run_dir), "--no-plots"]) == 0
    printed = capsys.readouterr().out
    out = run_dir / "inspect"
    assert sorted(path.name for path in out.iterdir()) == ["gradflow.csv"]
    config = adding_config()
    task = build_task(config.task, config.task_options, config.train.seed)
    steps = int(task.eval_batches()[0].mask[0].sum())
    flow = direct_gradient_flow(run_dir, 0)
    assert flow.cell is None and len(flow.lags) == steps + 1
    assert_gradflow_csv(out / "gradflow.csv", flow)
    lines = printed.splitlines()
    assert lines[0].endswith(f"{steps} steps; GRU, 3 units")
    assert lines[1] == "gate traces: skipped (they need LSTM cells; this run's cell is a GRU)"
    assert lines[2].startswith("gradient flow of the adding loss (states of the only layer")
    assert lines[2].endswith(f"|dL/dh| {lag_text(flow, 'hidden')}")
    assert "retention" not in printed and "|dL/dc|" not in printed


@pytest.mark.parametrize(
    "task_name, options, model",
    [
        ("adding", {"length": 12, "test_size": 4}, ModelConfig(num_layers=2, bidirectional=True)),
        ("reber", {"test_size": 4}, ModelConfig(variant="elman")),
        ("charlm", {"max_chars": 3000, "seq_len": 8, "eval_streams": 2}, ModelConfig()),
    ],
    ids=["regressor-bidirectional", "tagger", "language-model"],
)
def test_task_loss_is_the_models_loss(task_name, options, model):
    """The loss the command differentiates, from the layer's output through the head, equals the
    task's loss on the model's own output, for each kind of head."""
    task = build_task(task_name, options, 0)
    config = dataclasses.replace(model, hidden_size=3, backend="reference")
    torch.manual_seed(0)
    network = models.build(task.io, config).double().eval()
    mask = task.eval_batches()[0].mask
    padded = torch.nonzero(mask.sum(1) < mask.shape[1]).flatten()
    index = int(padded[0]) if len(padded) else 0  # where a tagger's targets must be cut too
    sequence, _ = _test_sequence(task, index)
    x = sequence.x if sequence.x.dtype == torch.long else sequence.x.double()
    loss_fn = _task_loss(network, task, sequence)
    encoder = network.encoder
    layer_input = x if encoder.embedding is None else encoder.embedding(x)
    with torch.no_grad():
        expected = task.loss(network(x, sequence.mask)[0], sequence)
        assert float(loss_fn(unroll(encoder.layer, layer_input).output)) == pytest.approx(
            float(expected), rel=1e-12
        )
    assert sequence.mask.all() and sequence.mask.shape[1] == x.shape[1]
    if task_name == "reber":
        assert x.shape[1] < mask.shape[1] and sequence.y.shape[1] == x.shape[1]
    flow = gradient_flow(encoder.layer, layer_input, loss_fn)
    assert len(flow.lags) == x.shape[1] + 1 and flow.hidden[0] > 0


@pytest.mark.parametrize(
    "case, argument, message",
    [
        ("not a run", "DIR", "is not a run directory"),
        ("no checkpoint", "DIR", "has no checkpoint yet"),
        ("missing checkpoint", "--checkpoint", "does not exist"),
        ("sequence too large", "--sequence", f"[0, {TEST_SIZE - 1}]"),
        ("negative sequence", "--sequence", "got -1"),
    ],
)
def test_bad_input_names_the_argument(runs, tmp_path, capsys, case, argument, message):
    run_dir = runs / "vanilla"
    args = {
        "not a run": [str(tmp_path)],
        "no checkpoint": [str(tmp_path / "fresh")],
        "missing checkpoint": [str(run_dir), "--checkpoint", str(tmp_path / "none.json")],
        "sequence too large": [str(run_dir), "--sequence", str(TEST_SIZE)],
        "negative sequence": [str(run_dir), "--sequence", "-1"],
    }[case]
    (tmp_path / "fresh").mkdir()
    shutil.copy(run_dir / "config.json", tmp_path / "fresh" / "config.json")
    assert main(["inspect", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"carousel inspect: error: {argument}") and message in err
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()
