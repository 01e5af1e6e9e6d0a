"""Experiment 2's generators (tasks 2a, 2b, 2c) against their definitions (Hochreiter &
Schmidhuber 1997, section 5.2)."""

from __future__ import annotations

import pytest
import torch

from carousel.tasks import LongLagTask, build_task, longlag
from carousel.tasks.longlag import LongLagOptions


def symbols(batch):
    """The input symbol ids ``(B, T)``, -1 after the end."""
    return torch.where(batch.mask, batch.x.argmax(-1), -1)


def test_2a_is_one_of_two_fixed_sequences_predicted_at_every_step():
    p = 6
    task = LongLagTask(LongLagOptions(problem="2a", p=p), seed=0)
    batch = task.train_batch(0, 400)
    assert task.io.head == "tagger" and task.io.input_size == task.io.output_size == p + 1
    assert batch.x.shape == (400, p, p + 1) and batch.y.shape == (400, p, p + 1)
    assert bool(batch.mask.all()) and bool((batch.x.sum(-1) == 1).all())
    inputs, targets = symbols(batch), batch.y.argmax(-1)
    assert bool((batch.y.sum(-1) == 1).all())
    first = inputs[:, 0]
    assert set(first.tolist()) == {p - 1, p}, "the first symbol is x (p - 1) or y (p)"
    assert 0.4 < float((first == p).float().mean()) < 0.6
    middle = torch.arange(p - 1).expand(400, p - 1)  # a_1 .. a_{p-1}
    assert torch.equal(inputs[:, 1:], middle)
    assert torch.equal(targets[:, :-1], inputs[:, 1:]), "the target is the next symbol"
    assert torch.equal(targets[:, -1], first), "the last symbol repeats the first"


def test_2b_has_a_random_middle_and_its_target_at_the_end():
    p = 5
    task = LongLagTask(LongLagOptions(problem="2b", p=p), seed=0)
    batch = task.train_batch(0, 600)
    assert task.io.head == "regressor" and task.io.output_size == p + 1
    assert batch.y.shape == (600, p + 1) and bool((batch.y.sum(-1) == 1).all())
    inputs = symbols(batch)
    assert set(inputs[:, 0].tolist()) == {p - 1, p}
    assert set(inputs[:, 1:].flatten().tolist()) == set(range(p - 1)), "all of a_1 .. a_{p-1}"
    assert torch.equal(batch.y.argmax(-1), inputs[:, 0])
    assert len({tuple(row) for row in inputs[:, 1:].tolist()}) > 100, "the middles differ"


def test_2b_with_targets_at_every_step_is_judged_at_the_end():
    p = 5
    task = LongLagTask(LongLagOptions(problem="2b", p=p, targets="every"), seed=0)
    batch = task.train_batch(0, 300)
    assert task.io.head == "tagger" and batch.y.shape == (300, p, p + 1)
    inputs, targets = symbols(batch), batch.y.argmax(-1)
    assert torch.equal(targets[:, :-1], inputs[:, 1:]), "the target is the next element"
    assert torch.equal(targets[:, -1], inputs[:, 0]), "the last repeats the first"
    end_only = LongLagTask(LongLagOptions(problem="2b", p=p), seed=0).train_batch(0, 300)
    assert torch.equal(batch.x, end_only.x) and torch.equal(batch.y[:, -1], end_only.y)
    output = batch.y.clone()
    output[0, :-1] = 0.5  # every middle prediction off by 0.5: still correct
    output[1, -1, 0] = 0.3  # one output off at the end: wrong
    scores = task.scores(output[:3], batch_of(batch, 3))
    assert scores["correct"].tolist() == [1, 0, 1]
    torch.testing.assert_close(scores["abs_error"][1], torch.tensor(0.3))
    assert float(scores["loss"][0]) == pytest.approx(float((0.5 - batch.y[0, :-1]).square().sum()))
    with pytest.raises(ValueError, match="longlag option targets must be 'end' unless problem"):
        LongLagTask(LongLagOptions(problem="2a", targets="every"))


def batch_of(batch, count):
    """The first ``count`` sequences of ``batch``."""
    return type(batch)(x=batch.x[:count], y=batch.y[:count], mask=batch.mask[:count])


@pytest.fixture(scope="module")
def distractors():
    task = LongLagTask(LongLagOptions(problem="2c", p=30, q=5), seed=0)
    return task, task.train_batch(0, 4000)


def test_2c_layout_b_then_x_or_y_then_distractors_then_e(distractors):
    task, batch = distractors
    p, q = 30, 5
    assert task.io.head == "regressor" and (task.io.input_size, task.io.output_size) == (p + 4, 2)
    e, b, x, y = p, p + 1, p + 2, p + 3
    inputs, lengths = symbols(batch), batch.mask.sum(1)
    rows = torch.arange(batch.size)
    assert bool((batch.x[~batch.mask] == 0).all()) and bool(
        (batch.x[batch.mask].sum(-1) == 1).all()
    )
    assert bool((inputs[:, 0] == b).all())
    assert set(inputs[:, 1].tolist()) == {x, y}
    assert bool((inputs[rows, lengths - 1] == e).all())
    middle = batch.mask.clone()
    middle[:, :2] = False
    middle[rows, lengths - 1] = False
    assert set(inputs[middle].tolist()) == set(range(p)), "distractors run over a_1 .. a_p"
    assert torch.equal(batch.y.argmax(-1), inputs[:, 1] - x), "the target is the second symbol"
    assert bool((batch.y.sum(-1) == 1).all())
    assert int(lengths.min()) == q + 3, "b, x|y, q distractors, e"


def test_2c_further_distractors_are_geometric_with_probability_9_in_10(distractors):
    _, batch = distractors
    extra = (batch.mask.sum(1) - (5 + 3)).double()  # k
    assert float(extra.min()) == 0
    assert abs(float(extra.mean()) - 9.0) < 0.8, "E[k] = 9: expected input length q + 12"
    assert abs(float((extra == 0).double().mean()) - 0.1) < 0.02
    assert abs(float((extra >= 10).double().mean()) - 0.9**10) < 0.03


def test_2c_caps_the_further_distractors(monkeypatch):
    monkeypatch.setattr(longlag, "EXTRA_CAP", 3)
    batch = LongLagTask(LongLagOptions(problem="2c", p=4, q=2)).train_batch(0, 500)
    lengths = batch.mask.sum(1)
    assert int(lengths.max()) == 2 + 3 + 3, "at most 3 further distractors, then e"
    assert bool((symbols(batch)[torch.arange(500), lengths - 1] == 4).all())


@pytest.mark.parametrize(
    "problem, tolerance", [("2a", 0.25), ("2b", 0.25), ("2c", 0.2)], ids=["2a", "2b", "2c"]
)
def test_correct_means_every_output_error_below_the_tolerance(problem, tolerance):
    task = LongLagTask(LongLagOptions(problem=problem, p=4, q=3))
    batch = task.train_batch(0, 3)
    output = batch.y[..., : task.io.output_size].clone()
    output[0] += tolerance - 0.01
    output.view(3, -1)[1, -1] += tolerance + 0.01  # one output, at the end
    output.view(3, -1)[2, 0] -= tolerance + 0.01  # one output, first step in 2a
    scores = task.scores(output, batch)
    assert scores["correct"].tolist() == [1, 0, 0]
    torch.testing.assert_close(scores["abs_error"][1], torch.tensor(tolerance + 0.01))


def test_solved_needs_10000_sequences_all_correct():
    task = LongLagTask(LongLagOptions(problem="2c", p=4, q=3))
    assert task.window == 10000
    good = {"loss": torch.full((10000,), 5.0), "correct": torch.ones(10000)}
    assert task.solved(good, None), "no condition on the mean error"
    assert not task.solved({k: v[1:] for k, v in good.items()}, None)
    wrong = good["correct"].clone()
    wrong[1234] = 0
    assert not task.solved({**good, "correct": wrong}, None)
    # the paper judges success on 10,000 sequences after training: they are not counted
    assert task.count_before_window and task.to_success(25_000) == 15_000


@pytest.mark.parametrize("problem", ["2a", "2b", "2c"])
def test_batches_are_pure_functions_of_seed_and_index(problem):
    options = {"problem": problem, "p": 8, "q": 10}
    task, again = build_task("longlag", options, seed=4), build_task("longlag", options, seed=4)
    assert torch.equal(task.train_batch(3, 16).y, again.train_batch(3, 16).y)
    assert torch.equal(task.eval_batches()[0].x, again.eval_batches()[0].x)
    if problem != "2a":  # 2a has only two sequences
        assert not torch.equal(task.train_batch(3, 16).x, task.train_batch(4, 16).x)
    assert sum(b.size for b in task.eval_batches()) == 256


@pytest.mark.parametrize(
    "options, message",
    [
        ({"problem": "2d"}, "option 'problem' must be one of"),
        ({"problem": "2a", "p": 1}, "longlag option p must be at least 2"),
        ({"problem": "2c", "p": 0}, "longlag option p must be at least 1"),
        ({"problem": "2c", "q": -1}, "longlag option q must be >= 0"),
        ({"stop_window": -1}, "longlag option stop_window"),
    ],
)
def test_bad_options_are_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        build_task("longlag", options)
    with pytest.raises(ValueError, match="problem"):
        LongLagTask(LongLagOptions(problem="2d"))
