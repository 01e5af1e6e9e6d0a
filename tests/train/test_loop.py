"""The loop's pieces: schedules, clipping, carried state, early stopping, evaluation, logs."""

from __future__ import annotations

import math
import struct

import pytest
import torch

from carousel.tasks import TASKS
from carousel.tasks.adding import AddingTask
from carousel.train import OptimConfig, TrainResult, train
from carousel.train.logging import read_metrics
from carousel.train.optim import clip_gradients, learning_rate
from carousel.train.state import continue_state
from tests.train.runs import (
    adding_config,
    charlm_config,
    final_tensors,
    one_thread,  # noqa: F401  (a fixture)
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_learning_rate_schedules():
    steps = 110
    warm = OptimConfig(lr=1.0, warmup_steps=10, schedule="cosine")
    assert [learning_rate(warm, s, steps) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert learning_rate(warm, 10, steps) == 1.0
    assert learning_rate(warm, 60, steps) == pytest.approx(0.5)
    assert learning_rate(warm, 109, steps) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.99)))
    linear = OptimConfig(lr=2.0, schedule="linear")
    assert learning_rate(linear, 55, steps) == pytest.approx(1.0)
    assert learning_rate(OptimConfig(lr=0.3), 99, steps) == 0.3


def test_clipping_by_value_then_norm():
    model = torch.nn.Linear(3, 1, bias=False)
    model.weight.grad = torch.tensor([[3.0, -4.0, 0.5]])
    norm = clip_gradients(model, OptimConfig(clip_value=1.0))
    assert torch.equal(model.weight.grad, torch.tensor([[1.0, -1.0, 0.5]]))
    assert norm == pytest.approx(1.5)
    model.weight.grad = torch.tensor([[3.0, 4.0, 0.0]])
    assert clip_gradients(model, OptimConfig(clip_norm=1.0)) == pytest.approx(5.0)
    torch.testing.assert_close(model.weight.grad, torch.tensor([[0.6, 0.8, 0.0]]))
    model.weight.grad = torch.tensor([[3.0, 4.0, 0.0]])
    clip_gradients(model, OptimConfig())
    assert torch.equal(model.weight.grad, torch.tensor([[3.0, 4.0, 0.0]]))


def test_carried_state_is_zeroed_where_a_sequence_restarts():
    h, c = torch.ones(2, 3, 4), torch.full((2, 3, 4), 2.0)
    reset = torch.tensor([False, True, False])
    new_h, new_c = continue_state((h, c), reset)
    assert torch.equal(new_h[:, 1], torch.zeros(2, 4)) and torch.equal(new_c[:, 0], c[:, 0])
    assert continue_state((h, c), torch.ones(3, dtype=torch.bool)) is None
    assert continue_state((h, c), None) is None
    assert torch.equal(continue_state(h, reset)[:, 2], h[:, 2])


class _SolvedAfter(AddingTask):
    """Solved as soon as it has seen ``stop_window`` training sequences."""

    name = "solved-after"

    def solved(self, recent, evaluation):
        return len(recent["loss"]) >= self.window


@pytest.mark.parametrize("batch_size, steps, sequences", [(1, 5, 5), (2, 3, 6)])
def test_stopping_on_the_task_criterion_counts_sequences_exactly(
    batch_size, steps, sequences, tmp_path, monkeypatch
):
    monkeypatch.setitem(TASKS, "solved-after", _SolvedAfter)
    config = adding_config(batch_size=batch_size, steps=50)
    config.task = "solved-after"
    summary = train(config, tmp_path / "run", quiet=True)
    assert (summary["step"], summary["solved_step"], summary["solved_sequences"]) == (
        steps,
        steps,
        sequences,
    )
    assert (tmp_path / "run" / "checkpoints" / f"step-{steps:08d}.json").exists()
    assert summary["evaluation"] is not None, "a final evaluation runs when the task is solved"
    config.train.stop_when_solved = False
    summary = train(config, tmp_path / "on", quiet=True)
    assert summary["step"] == 50 and summary["solved_sequences"] == sequences


def _tensorboard_scalars(directory) -> dict[str, list[tuple[int, float]]]:
    """Scalars in the TFRecord event files of ``directory`` (length, crc, Event proto, crc)."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_reports_csv_tensorboard_and_curve(tmp_path):
    summary = train(charlm_config(), tmp_path / "run", quiet=True)
    run_dir = tmp_path / "run"
    lines = (run_dir / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[:5] == ["step", "sequences", "seconds", "lr", "grad_norm"]
    assert "train_bpc" in header and "eval_bpc" in header
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8, 10, 12]
    assert [int(r["sequences"]) for r in rows] == [8, 16, 24, 32, 40, 48]
    assert [r["eval_loss"] != "" for r in rows] == [False, False, True, False, False, True]
    assert float(rows[-1]["eval_loss"]) == pytest.approx(summary["evaluation"]["loss"])
    scalars = _tensorboard_scalars(run_dir / "tensorboard")
    assert [step for step, _ in scalars["eval/loss"]] == [6, 12]
    assert scalars["train/loss"][-1][1] == pytest.approx(float(rows[-1]["train_loss"]), rel=1e-6)
    assert (run_dir / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run_dir / "vocab.json").exists()


def test_progress_bar_and_messages_unless_quiet(tmp_path, capsys):
    train(charlm_config(steps=6), tmp_path / "loud")
    err = capsys.readouterr().err
    assert "6/6" in err and "step 6: test loss" in err
    train(charlm_config(steps=6), tmp_path / "quiet", quiet=True)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_threads_setting_sets_the_thread_count(tmp_path):
    import carousel

    before = torch.get_num_threads()
    try:
        train(charlm_config(steps=3, threads=1), tmp_path / "run", quiet=True)
        assert torch.get_num_threads() == 1 and carousel.get_num_threads() == 1
    finally:
        carousel.set_num_threads(before)


def test_train_returns_the_summary_the_trained_model_and_the_learning_curve(tmp_path):
    result = train(charlm_config(), tmp_path / "run", quiet=True)
    assert isinstance(result, TrainResult) and dict(result) == result.summary
    assert set(result) == {
        "step", "sequences", "seconds", "solved", "solved_step", "solved_sequences",
        "best_step", "best_loss", "evaluation",
    }  # fmt: skip
    assert result["step"] == 12 and {**result}["evaluation"] == result.summary["evaluation"]
    assert result.curve == read_metrics(tmp_path / "run" / "metrics.csv")
    assert [row["step"] for row in result.curve] == [2, 4, 6, 8, 10, 12]
    assert "eval_loss" in result.curve[2] and "eval_loss" not in result.curve[1]
    weights = final_tensors(tmp_path / "run", 12)
    assert not result.model.training
    for name, value in result.model.state_dict().items():
        assert torch.equal(value, weights[f"model.{name}"]), name
