"""The adding problem's generator against its definition (Hochreiter & Schmidhuber 1997, exp. 4)."""

from __future__ import annotations

import pytest
import torch

from carousel.tasks import AddingTask, build_task
from carousel.tasks.adding import AddingOptions


@pytest.fixture(scope="module")
def batch():
    return AddingTask(AddingOptions(length=100), seed=3).train_batch(0, 2000)


def test_lengths_are_uniform_between_t_and_t_plus_t_over_10(batch):
    lengths = batch.mask.sum(1)
    assert set(lengths.tolist()) == set(range(100, 111))
    prefix = torch.arange(batch.mask.shape[1]) < lengths.unsqueeze(1)
    assert torch.equal(batch.mask, prefix)


def test_markers_values_and_target_follow_the_definition(batch):
    values, markers = batch.x[..., 0], batch.x[..., 1]
    lengths = batch.mask.sum(1)
    assert bool((values.abs() <= 1).all())
    assert bool((batch.x[~batch.mask] == 0).all()), "padding must be zero"
    rows = torch.arange(batch.size)
    assert bool((markers[rows, lengths - 1] == -1).all()), "the last pair carries -1"
    marked = markers == 1
    assert bool((marked.sum(1) == 2).all()), "exactly two pairs are marked"
    positions = marked.nonzero()[:, 1].view(-1, 2)  # (B, 2), in order
    first, second = positions[:, 0], positions[:, 1]
    assert bool((first < 10).all()), "X1 is among the first ten pairs"
    assert bool((second < 50).all()), "X2 is among the first T/2 - 1 unmarked pairs"
    # The first pair carries -1, unless it is marked (then X1 = 0).
    first_marked = markers[:, 0] == 1
    assert bool((markers[~first_marked, 0] == -1).all())
    assert bool((values[first_marked, 0] == 0).all())
    assert 0 < int(first_marked.sum()) < 2000 * 0.2, "the first pair is marked about 1 time in 10"
    others = ~marked & batch.mask
    others[rows, lengths - 1] = False
    others[:, 0] = False
    assert bool((markers[others] == 0).all())
    expected = 0.5 + (values * marked).sum(1) / 4
    torch.testing.assert_close(batch.y[:, 0], expected)


def test_marked_positions_cover_their_ranges():
    batch = AddingTask(AddingOptions(length=30), seed=0).train_batch(1, 3000)
    marked = batch.x[..., 1] == 1
    first_positions = {int(row.nonzero()[0]) for row in marked}
    all_positions = {int(p) for row in marked for p in row.nonzero()[:, 0]}
    assert first_positions <= set(range(10))
    # X2 in the first T/2 - 1 = 14 still-unmarked pairs: positions 0..14 without X1's.
    assert all_positions == set(range(15))


def test_batches_are_pure_functions_of_seed_and_index():
    task = AddingTask(seed=5)
    again = build_task("adding", {}, seed=5)
    assert torch.equal(task.train_batch(7, 4).x, again.train_batch(7, 4).x)
    assert not torch.equal(task.train_batch(7, 4).x, task.train_batch(8, 4).x)
    assert not torch.equal(task.train_batch(7, 4).x, AddingTask(seed=6).train_batch(7, 4).x)
    test_set = task.eval_batches()
    assert sum(b.size for b in test_set) == 2560
    assert torch.equal(test_set[3].x, again.eval_batches()[3].x)


def test_correct_means_absolute_error_below_0_04():
    task = AddingTask()
    batch = task.train_batch(0, 4)
    output = batch.y + torch.tensor([[0.039], [-0.039], [0.041], [-0.5]])
    scores = task.scores(output, batch)
    assert scores["correct"].tolist() == [1, 1, 0, 0]
    metrics = task.metrics({k: float(v.sum()) for k, v in scores.items()}, 4)
    assert metrics["accuracy"] == 0.5 and metrics["wrong"] == 2
    torch.testing.assert_close(task.loss(output, batch), (output - batch.y).square().mean())


def test_solved_needs_a_full_window_all_correct_and_a_low_error():
    task = AddingTask(AddingOptions(stop_window=4, stop_error=0.01))
    good = {"loss": torch.full((4,), 0.001), "correct": torch.ones(4)}
    assert task.solved(good, None)
    assert not task.solved({k: v[:3] for k, v in good.items()}, None)
    assert not task.solved({**good, "correct": torch.tensor([1.0, 1, 0, 1])}, None)
    assert not task.solved({**good, "loss": torch.full((4,), 0.02)}, None)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"length": 11}, "at least 12"),
        ({"nope": 1}, "unknown option"),
        ({"length": "9"}, "must be int"),
    ],
)
def test_bad_options_are_rejected(options, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build_task("adding", options)
