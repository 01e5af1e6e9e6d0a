"""The strongly delayed XOR against its definition (Hochreiter & Schmidhuber 1997, section 6)."""

from __future__ import annotations

import pytest
import torch

from carousel.tasks import DelayedXorTask, build_task
from carousel.tasks.delayed_xor import DelayedXorOptions


@pytest.fixture(scope="module")
def batch():
    return DelayedXorTask(DelayedXorOptions(length=40), seed=3).train_batch(0, 4000)


def test_two_marked_bits_far_apart_in_noise(batch):
    values, markers = batch.x[..., 0], batch.x[..., 1]
    assert batch.x.shape[1] == 40 and bool(batch.mask.all())
    marked = markers == 1
    assert bool((marked.sum(1) == 2).all()) and bool(((markers == 0) | marked).all())
    positions = marked.nonzero()[:, 1].view(-1, 2)
    assert set(positions[:, 0].tolist()) == set(range(0, 10)), "first bit in [0, T/4)"
    assert set(positions[:, 1].tolist()) == set(range(20, 30)), "second bit in [T/2, 3T/4)"
    assert set(values[marked].tolist()) == {-1.0, 1.0}
    noise = values[~marked]
    assert bool((noise.abs() <= 1).all()) and abs(float(noise.mean())) < 0.01
    assert abs(float(noise.var()) - 1 / 3) < 0.01, "uniform in [-1, 1]"


def test_the_target_is_the_xor_and_no_single_bit_tells_it(batch):
    marked = batch.x[..., 1] == 1
    bits = (batch.x[..., 0][marked] > 0).long().view(-1, 2)
    assert torch.equal(batch.y[:, 0], (bits[:, 0] ^ bits[:, 1]).float())
    pairs = set(map(tuple, bits.tolist()))
    assert pairs == {(0, 0), (0, 1), (1, 0), (1, 1)}
    for k in range(2):
        for bit in range(2):
            rate = float(batch.y[bits[:, k] == bit, 0].mean())
            assert abs(rate - 0.5) < 0.05, "each bit alone is uninformative"


def test_correct_means_absolute_error_below_0_5():
    task = DelayedXorTask()
    batch = task.train_batch(0, 4)
    away = 1 - 2 * batch.y  # towards the wrong answer
    output = batch.y + away * torch.tensor([[0.49], [0.1], [0.51], [1.0]])
    scores = task.scores(output, batch)
    assert scores["correct"].tolist() == [1, 1, 0, 0]
    torch.testing.assert_close(scores["loss"], (output - batch.y).square()[:, 0])


def test_solved_needs_the_last_2000_sequences_correct():
    task = DelayedXorTask()
    assert task.window == 2000
    good = {"loss": torch.full((2000,), 0.2), "correct": torch.ones(2000)}
    assert task.solved(good, None)
    assert not task.solved({k: v[1:] for k, v in good.items()}, None)
    assert not task.solved({**good, "correct": torch.cat([torch.ones(1999), torch.zeros(1)])}, None)


def test_batches_are_pure_functions_of_seed_and_index():
    task, again = DelayedXorTask(seed=5), build_task("delayed_xor", {}, seed=5)
    assert torch.equal(task.train_batch(7, 4).x, again.train_batch(7, 4).x)
    assert not torch.equal(task.train_batch(7, 4).x, task.train_batch(8, 4).x)
    assert not torch.equal(task.train_batch(7, 4).x, DelayedXorTask(seed=6).train_batch(7, 4).x)
    assert sum(b.size for b in task.eval_batches()) == 2560


@pytest.mark.parametrize(
    "options, message",
    [
        ({"length": 3}, "delayed_xor option length must be at least 4"),
        ({"test_size": 0}, "delayed_xor option test_size"),
        ({"length": "long"}, "must be int"),
    ],
)
def test_bad_options_are_rejected(options, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build_task("delayed_xor", options)
