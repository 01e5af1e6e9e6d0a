"""The temporal order problem (tasks 6a, 6b) against its definition (Hochreiter & Schmidhuber
1997, section 5.6)."""

from __future__ import annotations

import pytest
import torch

from carousel.tasks import TemporalOrderTask, build_task
from carousel.tasks.temporal_order import SYMBOLS, TemporalOrderOptions

E, B, X, Y = (SYMBOLS.index(s) for s in "EBXY")
RANGES = {"6a": [(10, 20), (50, 60)], "6b": [(10, 20), (33, 43), (66, 76)]}


@pytest.mark.parametrize("problem", ["6a", "6b"])
def test_sequences_follow_the_definition(problem):
    task = TemporalOrderTask(TemporalOrderOptions(problem=problem), seed=2)
    batch = task.train_batch(0, 3000)
    relevant_count = len(RANGES[problem])
    assert task.io.head == "regressor" and task.io.input_size == 8
    assert task.io.output_size == 2**relevant_count
    lengths = batch.mask.sum(1)
    assert set(lengths.tolist()) == set(range(100, 111))
    assert bool((batch.x[~batch.mask] == 0).all()) and bool(
        (batch.x[batch.mask].sum(-1) == 1).all()
    )
    symbols = batch.x.argmax(-1)
    rows = torch.arange(batch.size)
    assert bool((symbols[:, 0] == E).all()) and bool((symbols[rows, lengths - 1] == B).all())
    middle = batch.mask.clone()
    middle[:, 0] = False
    middle[rows, lengths - 1] = False
    relevant = middle & ((symbols == X) | (symbols == Y))
    fillers = symbols[middle & ~relevant]
    assert set(fillers.tolist()) == {2, 3, 4, 5}, "fillers from a, b, c, d"
    assert bool((relevant.sum(1) == relevant_count).all())
    positions = relevant.nonzero()[:, 1].view(-1, relevant_count) + 1  # counted from 1
    for k, (low, high) in enumerate(RANGES[problem]):
        assert set(positions[:, k].tolist()) == set(range(low, high + 1))
    bits = (symbols[relevant] == Y).long().view(-1, relevant_count)  # X = 0, Y = 1
    label = sum(bits[:, k] << (relevant_count - 1 - k) for k in range(relevant_count))
    assert torch.equal(batch.y, torch.nn.functional.one_hot(label, 2**relevant_count).float())
    assert set(label.tolist()) == set(range(2**relevant_count))


def test_the_classes_of_6a_are_xx_xy_yx_yy_in_that_order():
    batch = TemporalOrderTask(seed=0).train_batch(0, 200)
    symbols = batch.x.argmax(-1)
    names = ["XX", "XY", "YX", "YY"]
    for row in range(batch.size):
        order = "".join(SYMBOLS[s] for s in symbols[row].tolist() if s in (X, Y))
        assert names[int(batch.y[row].argmax())] == order


def test_correct_means_every_output_error_below_0_3():
    task = TemporalOrderTask(TemporalOrderOptions(problem="6b"))
    batch = task.train_batch(0, 4)
    output = batch.y.clone()
    output[0] = torch.where(batch.y[0] > 0, 0.71, 0.29)
    output[1, 3] += 0.31 * (1 - 2 * batch.y[1, 3])  # one output off by 0.31
    output[2] = torch.where(batch.y[2] > 0, 0.69, 0.0)
    scores = task.scores(output, batch)
    assert scores["correct"].tolist() == [1, 0, 0, 1]
    torch.testing.assert_close(scores["loss"], (output - batch.y).square().sum(1))


def test_solved_needs_2000_correct_and_mean_loss_below_0_1():
    task = TemporalOrderTask()
    assert task.window == 2000
    good = {"loss": torch.full((2000,), 0.09), "correct": torch.ones(2000)}
    assert task.solved(good, None)
    assert not task.solved({**good, "loss": torch.full((2000,), 0.11)}, None)
    assert not task.solved({k: v[:1999] for k, v in good.items()}, None)
    wrong = good["correct"].clone()
    wrong[-1] = 0
    assert not task.solved({**good, "correct": wrong}, None)


def test_batches_are_pure_functions_of_seed_and_index():
    task, again = TemporalOrderTask(seed=5), build_task("temporal_order", {}, seed=5)
    assert torch.equal(task.train_batch(7, 4).x, again.train_batch(7, 4).x)
    assert not torch.equal(task.train_batch(7, 4).x, task.train_batch(8, 4).x)
    assert not torch.equal(task.train_batch(7, 4).x, TemporalOrderTask(seed=6).train_batch(7, 4).x)
    assert sum(b.size for b in task.eval_batches()) == 2560


@pytest.mark.parametrize(
    "options, message",
    [
        ({"problem": "6c"}, "option 'problem' must be one of"),
        ({"test_size": 0}, "temporal_order option test_size must be >= 1"),
        ({"stop_window": -5}, "temporal_order option stop_window"),
    ],
)
def test_bad_options_are_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        build_task("temporal_order", options)
    with pytest.raises(ValueError, match="temporal_order option problem"):
        TemporalOrderTask(TemporalOrderOptions(problem="6c"))
