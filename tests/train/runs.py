"""Small, fast run configurations and helpers shared by the training tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from carousel.train import Config, ModelConfig, OptimConfig, TrainConfig
from carousel.train.run_dir import LOCK_NAME


@pytest.fixture(scope="module")
def one_thread():
    """Run a test's tiny models on one intra-op thread, restoring the count afterwards.

    The models here are so small that a second thread only adds synchronisation, and on a
    shared, busy machine spinning threads slow such tests down by an order of magnitude.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def charlm_config(**train) -> Config:
    """Stateful LM: two layers with dropout, Adam with warm-up and cosine decay, clipping."""
    return Config(
        "charlm",
        {"max_chars": 3000, "seq_len": 16, "eval_streams": 2},
        ModelConfig(hidden_size=16, num_layers=2, dropout=0.2),
        OptimConfig(lr=0.01, schedule="cosine", warmup_steps=2, clip_norm=1.0),
        TrainConfig(
            **{
                "steps": 12,
                "batch_size": 4,
                "eval_every": 6,
                "log_every": 2,
                "checkpoint_every": 4,
                **train,
            }
        ),
    )


def adding_config(**train) -> Config:
    """Online training of the 1997 cell (batch size 1, SGD with momentum) on a short adding problem."""
    return Config(
        "adding",
        {"length": 12, "test_size": 64, "stop_window": 5, "stop_error": 1e-9},
        ModelConfig(variant="1997", hidden_size=4, block_size=2),
        OptimConfig(optimizer="sgd", lr=0.5, momentum=0.9, clip_value=1.0),
        TrainConfig(
            **{
                "steps": 30,
                "batch_size": 1,
                "eval_every": 10,
                "log_every": 5,
                "checkpoint_every": 8,
                **train,
            }
        ),
    )


def final_tensors(run_dir: Path, step: int) -> dict:
    """Every tensor of the run's checkpoint after ``step`` steps."""
    return load_file(run_dir / "checkpoints" / f"step-{step:08d}.safetensors")


def metrics_without_time(run_dir: Path) -> list[list[str]]:
    """metrics.csv without its wall-clock column."""
    rows = [line.split(",") for line in (run_dir / "metrics.csv").read_text().splitlines()]
    drop = rows[0].index("seconds")
    return [row[:drop] + row[drop + 1 :] for row in rows]


def snapshot(directory: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``directory`` with its modification time and content hash; the run's
    lock file only by its presence (each process that takes the lock writes its pid into it)."""
    return {
        str(path.relative_to(directory)): (
            path.stat().st_mtime_ns,
            hashlib.sha256(path.read_bytes()).hexdigest(),
        )
        if path.name != LOCK_NAME
        else "lock"
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }
