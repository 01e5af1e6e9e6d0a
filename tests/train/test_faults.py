"""Faults injected on purpose: random SIGKILLs, two processes on one run directory, corrupt
checkpoints and metrics, a resume with fewer steps, a signal while a finished run shuts down.
Each ends in a clean result, or in a one-line refusal that leaves the run as it was."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import random
import shutil
import signal
import socket
import time
from pathlib import Path

import pytest
import torch

from carousel.cli import main
from carousel.train import Config, ModelConfig, OptimConfig, TrainConfig, train
from carousel.train import checkpoint as ckpt
from carousel.train.run_dir import LOCK_NAME
from carousel.train.schema import PROGRESS_SCHEMA
from tests.train.runs import (
    adding_config,
    final_tensors,
    metrics_without_time,
    one_thread,  # noqa: F401  (a fixture)
    snapshot,
)

pytestmark = pytest.mark.usefixtures("one_thread")

KILLS = 10
PRELOAD = ["carousel.train.loop", "carousel.tasks", "torch._dynamo", "matplotlib.pyplot"]
"""Imported once by the fork server, so that each killed process starts in a fraction of a
second (the optimiser imports torch._dynamo, the end of a run matplotlib)."""


def small_config(steps: int = 400) -> Config:
    """A quick run: a forget-gate LSTM on a short adding problem, a checkpoint every 5 steps."""
    return Config(
        "adding",
        {"length": 12, "test_size": 64},
        ModelConfig(hidden_size=8, backend="torch-native"),
        OptimConfig(lr=0.003, clip_norm=1.0),
        TrainConfig(steps=steps, batch_size=4, checkpoint_every=5, eval_every=50, log_every=5),
    )


def _train_in_child(config: Config, run_dir: Path, resume: bool) -> None:
    """Train in a process of its own (the target of the fork server's processes)."""
    from carousel.train import logging

    torch.set_num_threads(1)
    # TensorBoard's writer keeps its queue in named semaphores, which every SIGKILL would leak.
    logging._tensorboard_writer = lambda *args: None
    train(config, run_dir, resume=resume, quiet=True)


@pytest.fixture(scope="module")
def processes():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def latest_step(run_dir: Path) -> int:
    latest = ckpt.latest(run_dir / "checkpoints")
    return -1 if latest is None else int(latest.stem.removeprefix("step-"))


def start_and_wait(processes, config: Config, run_dir: Path, resume: bool, past: int):
    """A process training ``config`` in ``run_dir``, once it has checkpointed a step after
    ``past``."""
    child = processes.Process(target=_train_in_child, args=(config, run_dir, resume))
    child.start()
    deadline = time.monotonic() + 120
    while latest_step(run_dir) <= past and child.is_alive():
        assert time.monotonic() < deadline, "the training process makes no progress"
        time.sleep(0.005)
    return child


def test_runs_killed_at_random_moments_resume_bit_identical(processes, tmp_path):
    config = small_config()
    run_dir = tmp_path / "killed"
    chance = random.Random(18)
    last = -1
    for kill in range(KILLS):
        child = start_and_wait(processes, config, run_dir, resume=kill > 0, past=last)
        time.sleep(chance.uniform(0, 0.1))  # mid-step, mid-write, mid-prune: wherever it is
        assert child.is_alive(), f"kill {kill + 1}: the run ended before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert child.exitcode == -signal.SIGKILL
        last = latest_step(run_dir)
    assert 0 < last < config.train.steps
    train(config, run_dir, resume=True, quiet=True)
    train(config, tmp_path / "whole", quiet=True)
    steps = config.train.steps
    expected, actual = final_tensors(tmp_path / "whole", steps), final_tensors(run_dir, steps)
    assert actual.keys() == expected.keys()
    for name in expected:  # weights, optimiser state, recent scores
        assert torch.equal(actual[name], expected[name]), name
    assert metrics_without_time(run_dir) == metrics_without_time(tmp_path / "whole")
    assert not [p for p in (run_dir / "checkpoints").iterdir() if ".tmp-" in p.name]


def test_a_second_process_on_a_run_directory_is_refused_and_writes_nothing(
    processes, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    holder = start_and_wait(processes, small_config(steps=100_000), run_dir, False, past=-1)
    try:
        os.kill(holder.pid, signal.SIGSTOP)  # hold still while the others try
        lock = (run_dir / LOCK_NAME).read_text()
        assert lock == f"{holder.pid} {socket.gethostname()}\n"
        before = snapshot(run_dir)
        for extra in ([], ["--resume"]):  # a second fresh run, a resume
            assert main(["train", "adding", "--out", str(run_dir), "--quiet", *extra]) == 2
            err = capsys.readouterr().err
            assert err == (
                f"carousel train: error: run directory {str(run_dir)!r} is in use by another "
                f"process (pid {holder.pid} on {socket.gethostname()}); wait for it to end, or "
                "choose another --out\n"
            )
            assert snapshot(run_dir) == before
            assert (run_dir / LOCK_NAME).read_text() == lock
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()
    # The lock died with its holder: the run resumes at once.
    step = latest_step(run_dir)
    summary = train(small_config(steps=step + 5), run_dir, resume=True, quiet=True)
    assert summary["step"] == step + 5


# ---- corrupt checkpoints and metrics -------------------------------------------------------

RECORD = "checkpoints/step-00000008.json"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    train(adding_config(steps=8, checkpoint_every=4, eval_every=4), run_dir, quiet=True)
    return run_dir


@pytest.fixture
def run_copy(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def _edit(field: str, value):
    """An edit setting the dotted ``field`` of the record to ``value``."""

    def edit(info: dict) -> None:
        *parents, last = field.split(".")
        target = info
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return edit


SHORT_RNG = base64.b64encode(bytes(100)).decode()

CORRUPTIONS = {
    "step-as-string": (_edit("progress.step", "8"), "progress.step: '8' is not of type 'integer'"),
    "step-as-float": (_edit("step", 8.0), "step: 8.0 is not of type 'integer'"),
    "rng-too-short": (
        _edit("rng.0.torch", SHORT_RNG),
        "rng.0.torch: holds 100 bytes; a CPU generator's state has 5056",
    ),
    "rng-empty": (_edit("rng.0", {}), "rng.0: 'torch' is a required property"),
    "rng-not-base64": (_edit("rng.0.torch", "@@@@"), "rng.0.torch: '@@@@' does not match"),
    "rng-bad-padding": (_edit("rng.0.torch", "AAAAA"), "rng.0.torch: is not base64"),
    "param-groups-string": (
        _edit("optimizer.param_groups", "x"),
        "optimizer.param_groups: 'x' is not of type 'array'",
    ),
    "carried-inconsistent": (
        _edit("carried", "tensor"),
        "carried: 'tensor' does not match the carried-state tensors []",
    ),
    "negative-sequences": (_edit("progress.sequences", -1), "progress.sequences: -1 is less"),
    "sequences-inconsistent": (
        _edit("progress.sequences", 7),
        "progress.sequences: 7 is not progress.step (8) batches of 1",
    ),
    "best-after-step": (_edit("progress.best_step", 9), "progress.best_step: 9 lies after step 8"),
    "tensors-of-another-step": (
        _edit("tensors", "step-00000004.safetensors"),
        "tensors: 'step-00000004.safetensors' is not the tensors file of step 8",
    ),
    "unknown-field": (_edit("extra", 1), "the record: Additional properties are not allowed"),
    "config": (
        _edit("config.model.hidden_size", "4"),
        "config: [model] option 'hidden_size' must be int; got str '4'",
    ),
}


def _refused(run_dir: Path, capsys, message: str, *extra: str) -> None:
    """``carousel train --resume`` in ``run_dir`` fails with one line holding ``message``, exit
    status 2, and leaves every file as it was."""
    before = snapshot(run_dir)
    status = main(["train", "adding", "--out", str(run_dir), "--resume", "--quiet", *extra])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("carousel train: error: ") and err.count("\n") == 1
    assert message in err, err
    assert snapshot(run_dir) == before, "a refused resume must not touch the run directory"


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_a_corrupt_checkpoint_record_is_refused_naming_file_and_field(name, run_copy, capsys):
    edit, message = CORRUPTIONS[name]
    path = run_copy / RECORD
    info = json.loads(path.read_text())
    edit(info)
    info["digest"] = ckpt.digest(info)  # consistent with itself: the field checks must find it
    path.write_text(json.dumps(info))
    _refused(run_copy, capsys, f"checkpoint {str(path)!r} is corrupt: {message}", "--steps", "12")
    # eval reads it through the same checks
    assert main(["eval", str(run_copy)]) == 2
    assert message in capsys.readouterr().err


def test_an_edited_record_fails_its_digest(run_copy, capsys):
    path = run_copy / RECORD
    info = json.loads(path.read_text())
    info["progress"]["seconds"] += 1.0
    path.write_text(json.dumps(info))
    _refused(run_copy, capsys, "is corrupt: digest: the record does not match the SHA-256")


def test_a_record_of_another_format_version_is_refused(run_copy, capsys):
    path = run_copy / RECORD
    info = json.loads(path.read_text())
    info["version"] = 1
    path.write_text(json.dumps(info))
    _refused(run_copy, capsys, "has format version 1; this carousel reads 2")


@pytest.mark.parametrize(
    "line, message",
    [
        ("abc,1,2,3", "line 3, column step: expected a whole number; got 'abc'"),
        ("1,2", "line 3: 2 cells; the header has"),
    ],
)
def test_a_garbage_metrics_file_is_refused_before_anything_is_written(
    line, message, run_copy, capsys
):
    metrics = run_copy / "metrics.csv"
    rows = metrics.read_text().splitlines()
    if line.startswith("abc"):
        line = "abc," + rows[2].split(",", 1)[1]
    metrics.write_text("\n".join([*rows[:2], line, *rows[3:]]) + "\n")
    _refused(run_copy, capsys, f"metrics file {str(metrics)!r} is corrupt: {message}")


def test_a_corrupt_best_record_is_refused(run_copy, capsys):
    (run_copy / "checkpoints" / "best.json").write_text(
        '{"checkpoint": "../x.json", "step": 4, "loss": 0.1}'
    )
    assert main(["eval", str(run_copy), "--checkpoint", "best"]) == 2
    assert "is corrupt: checkpoint: '../x.json' does not match" in capsys.readouterr().err


def test_resuming_with_fewer_steps_than_done_is_refused_and_keeps_the_target(run_copy, capsys):
    _refused(
        run_copy,
        capsys,
        "steps (4) is below the step of checkpoint",
        "--steps",
        "4",
    )
    assert json.loads((run_copy / "config.json").read_text())["train"]["steps"] == 8


# ---- signals at the end of a run -----------------------------------------------------------


def test_a_signal_while_a_finished_run_shuts_down_does_not_fail_it(tmp_path, monkeypatch):
    from carousel.train import logging

    draw = logging.plot_curves

    def interrupted_plot(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        draw(*args, **kwargs)

    monkeypatch.setattr(logging, "plot_curves", interrupted_plot)
    config = adding_config(steps=4, checkpoint_every=4, eval_every=4)
    assert train(config, tmp_path / "run", quiet=True)["step"] == 4
    args = ["train", "adding", "--out", str(tmp_path / "cli"), "--length", "12", "--steps", "3"]
    assert main([*args, "--test-size", "64", "--hidden-size", "4", "--quiet"]) == 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_signal_during_the_last_step_lets_the_run_finish(tmp_path):
    from tests.train.test_resume import task_that

    config = adding_config(steps=6, checkpoint_every=4, eval_every=4)
    interrupt = lambda: os.kill(os.getpid(), signal.SIGINT)  # noqa: E731
    summary = train(config, tmp_path / "run", quiet=True, task=task_that(config, 5, interrupt))
    assert summary["step"] == 6 and summary["evaluation"] is not None
    assert ckpt.latest(tmp_path / "run" / "checkpoints").name == "step-00000006.json"


def test_the_schema_names_every_field_of_the_progress_record():
    import dataclasses

    from carousel.train.state import Progress

    fields = {field.name for field in dataclasses.fields(Progress)}
    assert set(PROGRESS_SCHEMA["properties"]) == fields
    assert set(PROGRESS_SCHEMA["required"]) == fields
