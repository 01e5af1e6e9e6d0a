"""Data parallelism: two processes under torchrun (gloo, CPU) match one process."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import carousel
from carousel.train import train
from tests.train.runs import (
    charlm_config,
    final_tensors,
    one_thread,  # noqa: F401  (a fixture)
)

pytestmark = pytest.mark.usefixtures("one_thread")

SRC = str(Path(carousel.__file__).parents[1])


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "carousel", "train", "charlm", *args]
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def _column(run_dir: Path, name: str) -> list[float]:
    with open(run_dir / "metrics.csv", newline="") as file:
        return [float(row[name]) for row in csv.DictReader(file) if row[name]]


def test_two_processes_match_one_and_resume(tmp_path):
    config = charlm_config(steps=6)
    config.model.dropout = 0.0  # dropout draws differ between processes by design
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config.to_dict()))
    train(config, tmp_path / "one", quiet=True)
    config.train.steps = 12  # (the cosine schedule stretches to the new length)
    train(config, tmp_path / "one", resume=True, quiet=True)

    first = _torchrun("--out", str(tmp_path / "two"), "--config", str(config_file), "--quiet")
    assert first.returncode == 0, first.stderr[-3000:]
    second = _torchrun("--out", str(tmp_path / "two"), "--resume", "--steps", "12")
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("run ") == 1, "only rank 0 reports"
    assert "resuming" in second.stderr

    for column in ("train_loss", "eval_loss", "grad_norm"):
        assert _column(tmp_path / "two", column) == pytest.approx(
            _column(tmp_path / "one", column), rel=1e-4
        )
    one, two = final_tensors(tmp_path / "one", 12), final_tensors(tmp_path / "two", 12)
    for name in one:
        if name.startswith("model."):
            torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5, msg=name)
    events = list((tmp_path / "two" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 2, "one event file per launch, written by rank 0 only"
    record = json.loads((tmp_path / "two" / "checkpoints" / "step-00000012.json").read_text())
    assert record["world_size"] == 2 and len(record["rng"]) == 2
