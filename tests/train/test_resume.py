"""Resuming: an interrupted and resumed CPU run ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from carousel.tasks import build_task
from carousel.train import train
from carousel.train.logging import read_metrics
from tests.train.runs import (
    adding_config,
    charlm_config,
    final_tensors,
    metrics_without_time,
    one_thread,  # noqa: F401  (a fixture)
)

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = {"charlm": charlm_config, "adding-1997-online": adding_config}


class Crash(Exception):
    """Stands for a crash in the middle of a run."""


def task_that(config, at_index: int, action):
    """The config's task, doing ``action()`` when the loop asks for training batch ``at_index``."""
    task = build_task(config.task, config.task_options, config.train.seed)
    original = task.train_batch

    def train_batch(index, batch_size):
        if index == at_index:
            action()
        return original(index, batch_size)

    task.train_batch = train_batch
    return task


def assert_same_run(resumed, uninterrupted, steps):
    expected = final_tensors(uninterrupted, steps)
    actual = final_tensors(resumed, steps)
    assert actual.keys() == expected.keys()
    for name in expected:  # weights, optimiser state, carried state, recent scores
        assert torch.equal(actual[name], expected[name]), name
    assert metrics_without_time(resumed) == metrics_without_time(uninterrupted)
    assert (resumed / "checkpoints" / "best.json").read_text() == (
        uninterrupted / "checkpoints" / "best.json"
    ).read_text()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_crashed_and_resumed_run_is_bit_identical(name, tmp_path):
    config = CONFIGS[name]()
    steps = config.train.steps
    train(config, tmp_path / "whole", quiet=True)

    def crash():
        raise Crash

    with pytest.raises(Crash):  # after step 10 (charlm) / 22 (adding); last checkpoint before it
        train(
            config,
            tmp_path / "crashed",
            quiet=True,
            task=task_that(config, steps - 2 - steps % 4, crash),
        )
    summary = train(config, tmp_path / "crashed", resume=True, quiet=True)
    assert summary["step"] == steps
    assert_same_run(tmp_path / "crashed", tmp_path / "whole", steps)


def test_sigint_writes_a_checkpoint_after_the_current_step_and_resume_continues(tmp_path):
    config = charlm_config()
    train(config, tmp_path / "whole", quiet=True)
    interrupt = lambda: os.kill(os.getpid(), signal.SIGINT)  # noqa: E731
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "stopped", quiet=True, task=task_that(config, 6, interrupt))
    assert (tmp_path / "stopped" / "checkpoints" / "step-00000007.json").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    train(config, tmp_path / "stopped", resume=True, quiet=True)
    assert_same_run(tmp_path / "stopped", tmp_path / "whole", config.train.steps)


def test_resume_may_extend_the_run(tmp_path):
    config = charlm_config(steps=6)
    first = train(config, tmp_path / "run", quiet=True)
    assert first["step"] == 6
    again = train(config, tmp_path / "run", resume=True, quiet=True)  # finished: nothing to do
    assert again["step"] == 6 and again["evaluation"] == first["evaluation"]
    longer = charlm_config(steps=8)
    assert train(longer, tmp_path / "run", resume=True, quiet=True)["step"] == 8
    assert (tmp_path / "run" / "config.json").read_text().count('"steps": 8') == 1


def test_a_resumed_run_returns_the_whole_learning_curve(tmp_path):
    train(charlm_config(steps=6), tmp_path / "run", quiet=True)
    result = train(charlm_config(steps=10), tmp_path / "run", resume=True, quiet=True)
    assert [row["step"] for row in result.curve] == [2, 4, 6, 8, 10]
    assert result.curve == read_metrics(tmp_path / "run" / "metrics.csv")
