"""The two-sequence problem (tasks 3a, 3b, 3c) against its definition (Hochreiter & Schmidhuber
1997, section 5.3)."""

from __future__ import annotations

import pytest
import torch

from carousel.tasks import AddingTask, TwoSequenceTask, build_task
from carousel.tasks.two_sequence import TwoSequenceOptions


def draw(problem: str, count: int = 2000, **options):
    task = TwoSequenceTask(TwoSequenceOptions(problem=problem, **options), seed=1)
    return task, task.train_batch(0, count)


@pytest.mark.parametrize("problem", ["3a", "3b", "3c"])
def test_lengths_classes_and_noise_follow_the_definition(problem):
    task, batch = draw(problem, length=50, informative=3)
    assert task.io.head == "regressor" and task.io.input_size == task.io.output_size == 1
    lengths = batch.mask.sum(1)
    assert set(lengths.tolist()) == set(range(50, 56)), "uniform in [T, T + T//10]"
    assert torch.equal(batch.mask, torch.arange(batch.mask.shape[1]) < lengths.unsqueeze(1))
    x = batch.x[..., 0]
    assert bool((x[~batch.mask] == 0).all()), "padding is zero"
    clean = batch.y[:, 1]
    first_class = clean == (0.2 if problem == "3c" else 1.0)
    assert bool((first_class | (clean == (0.8 if problem == "3c" else 0.0))).all())
    assert 0.45 < float(first_class.float().mean()) < 0.55
    sign = torch.where(first_class, 1.0, -1.0).unsqueeze(1)
    informative = x[:, :3] - sign
    if problem == "3b":
        assert abs(float(informative.var()) - 0.2) < 0.02, "noise of variance 0.2 on them"
    else:
        assert bool((informative == 0).all()), "the first N elements are exactly +1 / -1"
    later = x[:, 3:][batch.mask[:, 3:]]
    assert abs(float(later.mean())) < 0.01 and abs(float(later.var()) - 0.2) < 0.005


def test_3a_and_3b_targets_are_1_and_0_without_noise():
    for problem in ("3a", "3b"):
        _, batch = draw(problem, count=200)
        assert batch.y.shape == (200, 2) and torch.equal(batch.y[:, 0], batch.y[:, 1])


def test_3c_targets_are_0_2_and_0_8_plus_noise_of_variance_0_1():
    _, batch = draw("3c", count=4000)
    first_class = batch.x[:, 0, 0] > 0
    assert torch.equal(batch.y[:, 1], torch.where(first_class, 0.2, 0.8))
    noise = batch.y[:, 0] - batch.y[:, 1]
    assert abs(float(noise.mean())) < 0.02 and abs(float(noise.var()) - 0.1) < 0.01


def test_correct_is_judged_against_the_noise_free_target():
    task, batch = draw("3c", count=4)
    clean = batch.y[:, 1:]
    output = clean + torch.tensor([[0.09], [-0.09], [0.11], [-0.3]])
    scores = task.scores(output, batch)
    assert scores["correct"].tolist() == [1, 1, 0, 0]
    torch.testing.assert_close(scores["abs_error"], (output - clean).abs()[:, 0])
    torch.testing.assert_close(scores["loss"], (output - batch.y[:, :1]).square()[:, 0])
    task, batch = draw("3a", count=3)
    output = batch.y[:, :1] + torch.tensor([[0.19], [-0.19], [0.21]])
    assert task.scores(output, batch)["correct"].tolist() == [1, 1, 0]


def test_the_check_set_has_256_fixed_sequences():
    task = TwoSequenceTask(seed=3)
    assert sum(b.size for b in task.eval_batches()) == 256 and task.window == 0
    assert torch.equal(
        task.eval_batches()[0].x, build_task("two_sequence", {}, 3).eval_batches()[0].x
    )
    small = TwoSequenceTask(TwoSequenceOptions(check_size=10))
    assert sum(b.size for b in small.eval_batches()) == 10


def _evaluation(wrong: float, error: float) -> dict[str, float]:
    return {"loss": 0.1, "abs_error": error, "accuracy": 1 - wrong / 256, "wrong": wrong}


def test_finished_networks_are_scored_on_2560_other_sequences():
    task = TwoSequenceTask(seed=4)
    final = task.final_batches()
    assert sum(batch.size for batch in final) == 2560 and final is task.final_batches()
    assert not torch.equal(final[0].x[:, :50], task.eval_batches()[0].x[:, :50])
    adding = AddingTask()
    assert adding.final_batches() is adding.eval_batches()


def test_3a_milestones():
    task = TwoSequenceTask(TwoSequenceOptions(problem="3a"))
    assert task.milestones({}, _evaluation(0, 0.009)) == {"ST1": True, "ST2": True}
    assert task.milestones({}, _evaluation(0, 0.011)) == {"ST1": True, "ST2": False}
    assert task.milestones({}, _evaluation(1, 0.001)) == {"ST1": False, "ST2": False}
    assert task.milestones({}, None) == {"ST1": False, "ST2": False}
    assert task.solved({}, _evaluation(0, 0.009)) and not task.solved({}, _evaluation(0, 0.011))
    assert not task.solved({}, None)


def test_3b_milestones():
    task = TwoSequenceTask(TwoSequenceOptions(problem="3b"))
    assert task.milestones({}, _evaluation(5, 0.039)) == {"ST1": True, "ST2": True}
    assert task.milestones({}, _evaluation(5, 0.041)) == {"ST1": True, "ST2": False}
    assert task.milestones({}, _evaluation(6, 0.01)) == {"ST1": False, "ST2": False}
    assert task.solved({}, _evaluation(5, 0.039)) and not task.solved({}, _evaluation(6, 0.01))


def test_3c_stops_with_none_wrong_and_mean_deviation_below_0_015():
    task = TwoSequenceTask(TwoSequenceOptions(problem="3c"))
    assert task.milestones({}, _evaluation(0, 0.014)) == {"stop": True}
    assert task.milestones({}, _evaluation(0, 0.016)) == {"stop": False}
    assert task.milestones({}, _evaluation(1, 0.001)) == {"stop": False}
    assert task.solved({}, _evaluation(0, 0.014)) and not task.solved({}, _evaluation(1, 0.001))


def test_tasks_without_milestones_report_none():
    assert AddingTask().milestones({}, _evaluation(0, 0.0)) == {}


def test_batches_are_pure_functions_of_seed_and_index():
    task, again = TwoSequenceTask(seed=5), build_task("two_sequence", {}, seed=5)
    assert torch.equal(task.train_batch(2, 8).x, again.train_batch(2, 8).x)
    assert not torch.equal(task.train_batch(2, 8).x, task.train_batch(3, 8).x)
    assert not torch.equal(task.train_batch(2, 8).x, TwoSequenceTask(seed=6).train_batch(2, 8).x)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"problem": "3d"}, "option 'problem' must be one of"),
        ({"informative": 0}, "two_sequence option informative must be >= 1"),
        ({"length": 2, "informative": 3}, "two_sequence option length must be at least"),
        ({"check_size": 0}, "two_sequence option check_size"),
    ],
)
def test_bad_options_are_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        build_task("two_sequence", options)
    with pytest.raises(ValueError, match="two_sequence option problem"):
        TwoSequenceTask(TwoSequenceOptions(problem="3d"))
