"""``carousel inspect``: gate traces and retention times of tiny trained runs, and clean errors."""

from __future__ import annotations

import csv
import dataclasses
import shutil

import numpy as np
import pytest
import torch

from carousel.cli import main
from carousel.diagnostics import gate_traces, retention_time
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


def test_inspect_writes_gates_retention_and_picture(runs, tmp_path, capsys):
    run_dir, out = runs / "vanilla", tmp_path / "out"
    config = adding_config()
    task = build_task(config.task, config.task_options, config.train.seed)
    mask = task.eval_batches()[0].mask
    sequence = int(torch.nonzero(mask.sum(1) < mask.shape[1])[0])  # a padded sequence
    assert main(["inspect", str(run_dir), "--sequence", str(sequence), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (out / "gates.png").stat().st_size > 0

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


def test_cells_without_forget_gate_keep_everything(runs, capsys):
    run_dir = runs / "1997"
    assert main(["inspect", str(run_dir), "--no-plots"]) == 0
    out = run_dir / "inspect"  # the default
    assert sorted(path.name for path in out.iterdir()) == ["gates.csv", "retention.csv"]
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


def test_gru_runs_are_refused_in_one_line(runs, capsys):
    assert main(["inspect", str(runs / "gru")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("carousel inspect: error: gate traces apply to LSTM cells")
    assert "gru" in err and err.count("\n") == 1
    assert not (runs / "gru" / "inspect").exists()


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
