"""Checkpoints: atomic writes survive SIGKILL, corrupt or foreign checkpoints are refused cleanly
and touch nothing, run directories are never silently overwritten."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import carousel
from carousel.models import Classifier, Encoder
from carousel.nn import Recurrent
from carousel.train import CheckpointError, train
from carousel.train import checkpoint as ckpt
from carousel.train.checkpoint import load_trained_model
from tests.train.runs import (  # one_thread: a fixture
    adding_config,
    charlm_config,
    final_tensors,
    one_thread,  # noqa: F401
    snapshot,
)

SRC = str(Path(carousel.__file__).parents[1])

pytestmark = pytest.mark.usefixtures("one_thread")

# Trains, and hangs half-way through writing one file (argv[2]) so that the test can kill it then.
KILLED_MID_WRITE = """
import sys, time
from carousel.train import checkpoint, train
from tests.train.runs import charlm_config

target = sys.argv[2]
write = checkpoint.atomic_write

def slow_write(path, data):
    if path.name == target:
        temporary = path.with_name("." + path.name + ".tmp-1")
        temporary.write_bytes(data[: len(data) // 2])
        print("writing", flush=True)
        time.sleep(60)
    write(path, data)

checkpoint.atomic_write = slow_write
train(charlm_config(), sys.argv[1], quiet=True)
"""


@pytest.mark.parametrize("file", ["step-00000008.safetensors", "step-00000008.json"])
def test_sigkill_mid_write_leaves_the_last_good_checkpoint(file, tmp_path):
    run_dir = tmp_path / "run"
    root = str(Path(__file__).parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, root]), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_MID_WRITE, str(run_dir), file],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line == "writing\n", process.stderr.read()
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    directory = run_dir / "checkpoints"
    assert ckpt.latest(directory).name == "step-00000006.json"  # 6: the best after evaluation
    tensors, info = ckpt.load(ckpt.latest(directory))
    assert info["step"] == 6 and "model.decoder.weight" in tensors
    # Resuming from it finishes exactly as an uninterrupted run.
    train(charlm_config(), run_dir, resume=True, quiet=True)
    train(charlm_config(), tmp_path / "whole", quiet=True)
    expected, actual = final_tensors(tmp_path / "whole", 12), final_tensors(run_dir, 12)
    assert all(torch.equal(actual[name], expected[name]) for name in expected)
    assert not [p for p in directory.iterdir() if ".tmp-" in p.name], "stale temporary files pruned"


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


def _refused(run_dir: Path, config, match: str) -> None:
    before = snapshot(run_dir)
    with pytest.raises(CheckpointError, match=match):
        train(config, run_dir, resume=True, quiet=True)
    assert snapshot(run_dir) == before, "a refused resume must not touch the run directory"


def test_corrupt_tensors_are_refused_and_nothing_is_touched(run_copy):
    tensors = run_copy / "checkpoints" / "step-00000008.safetensors"
    data = bytearray(tensors.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tensors.write_bytes(bytes(data))
    _refused(
        run_copy, adding_config(steps=12, checkpoint_every=4, eval_every=4), "corrupt.*SHA-256"
    )
    with pytest.raises(CheckpointError, match="corrupt"):
        load_trained_model(run_copy)


def test_corrupt_json_is_refused(run_copy):
    record = run_copy / "checkpoints" / "step-00000008.json"
    record.write_text(record.read_text()[:40])
    _refused(run_copy, adding_config(steps=12, checkpoint_every=4, eval_every=4), "corrupt")


def test_other_settings_are_refused(run_copy):
    config = adding_config(steps=12, checkpoint_every=4, eval_every=4)
    config.model.hidden_size = 8
    _refused(run_copy, config, r"model.hidden_size: 8 != 4")


def test_a_checkpoint_from_another_run_is_refused(run_copy, tmp_path):
    other = adding_config(steps=8, checkpoint_every=4, eval_every=4)
    other.train.seed = 1
    train(other, tmp_path / "other", quiet=True)
    for suffix in (".json", ".safetensors"):
        shutil.copy(
            tmp_path / "other" / "checkpoints" / f"step-00000008{suffix}",
            run_copy / "checkpoints" / f"step-00000008{suffix}",
        )
    _refused(
        run_copy, adding_config(steps=12, checkpoint_every=4, eval_every=4), "train.seed: 0 != 1"
    )


def test_weights_of_another_model_are_refused():
    def classifier(hidden):
        return Classifier(Encoder(Recurrent(3, hidden, batch_first=True)), 2)

    tensors = ckpt.model_tensors(classifier(4))
    with pytest.raises(CheckpointError, match=r"another model.*shapes differ"):
        ckpt.load_model(classifier(5), tensors, "'x'")
    with pytest.raises(CheckpointError, match="missing"):
        ckpt.load_model(
            classifier(4), {k: v for k, v in tensors.items() if "decoder" not in k}, "'x'"
        )


def test_run_directories_are_never_silently_overwritten(finished_run, tmp_path):
    before = snapshot(finished_run)
    with pytest.raises(CheckpointError, match="not empty; pass --resume"):
        train(adding_config(), finished_run, quiet=True)
    assert snapshot(finished_run) == before
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        train(adding_config(), tmp_path / "file", quiet=True)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(adding_config(), tmp_path / "empty", resume=True, quiet=True)
    assert not (tmp_path / "empty").exists()


def test_checkpoints_keep_the_last_k_and_the_best(tmp_path):
    config = charlm_config(steps=12, checkpoint_every=2, eval_every=3, keep_last=2)
    train(config, tmp_path / "run", quiet=True)
    directory = tmp_path / "run" / "checkpoints"
    best = json.loads((directory / "best.json").read_text())
    steps = sorted(step for step, _ in ckpt.step_checkpoints(directory))
    assert steps[-2:] == [10, 12]
    assert set(steps) == {10, 12, best["step"]}
    assert sorted(p.name for p in directory.glob("*.safetensors")) == [
        f"step-{s:08d}.safetensors" for s in steps
    ]
    model = load_trained_model(tmp_path / "run", "best")[1]
    assert not model.training


def test_atomic_write_replaces_whole_files(tmp_path):
    path = tmp_path / "a.json"
    ckpt.write_json(path, {"x": 1})
    ckpt.write_json(path, {"x": 2})
    assert json.loads(path.read_text()) == {"x": 2}
    assert os.listdir(tmp_path) == ["a.json"]


def test_a_checkpoint_record_missing_fields_is_refused(run_copy):
    record = run_copy / "checkpoints" / "step-00000008.json"
    info = json.loads(record.read_text())
    del info["progress"]
    record.write_text(json.dumps(info))
    _refused(
        run_copy,
        adding_config(steps=12, checkpoint_every=4, eval_every=4),
        "is corrupt: the record: 'progress' is a required property",
    )
