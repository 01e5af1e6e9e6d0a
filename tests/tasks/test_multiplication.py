"""The multiplication problem against its definition (Hochreiter & Schmidhuber 1997, exp. 5)."""

from __future__ import annotations

import pytest
import torch

from carousel.tasks import MultiplicationTask, build_task
from carousel.tasks.adding import marked_pairs
from carousel.tasks.multiplication import MultiplicationOptions


@pytest.fixture(scope="module")
def batch():
    return MultiplicationTask(MultiplicationOptions(length=100), seed=3).train_batch(0, 2000)


def test_values_markers_and_the_product_follow_the_definition(batch):
    values, markers = batch.x[..., 0], batch.x[..., 1]
    lengths = batch.mask.sum(1)
    assert set(lengths.tolist()) == set(range(100, 111))
    assert bool((values >= 0).all() and (values <= 1).all()), "values in [0, 1]"
    assert float(values[batch.mask].min()) < 0.01 and float(values[batch.mask].max()) > 0.99
    assert bool((batch.x[~batch.mask] == 0).all()), "padding is zero"
    rows = torch.arange(batch.size)
    assert bool((markers[rows, lengths - 1] == -1).all())
    marked = markers == 1
    assert bool((marked.sum(1) == 2).all())
    positions = marked.nonzero()[:, 1].view(-1, 2)
    assert bool((positions[:, 0] < 10).all()) and bool((positions[:, 1] < 50).all())
    first_marked = markers[:, 0] == 1
    assert 0 < int(first_marked.sum()) < 2000 * 0.2
    assert bool((markers[~first_marked, 0] == -1).all())
    assert bool((values[first_marked, 0] == 1).all()), "a marked first pair is the identity 1.0"
    product = torch.where(marked, values, 1.0).prod(1)
    torch.testing.assert_close(batch.y[:, 0], product)


def test_the_marker_placement_is_the_adding_problems():
    adding = marked_pairs(
        500, 40, torch.Generator().manual_seed(7), low=-1.0, high=1.0, identity=0.0
    )
    product = marked_pairs(
        500, 40, torch.Generator().manual_seed(7), low=0.0, high=1.0, identity=1.0
    )
    assert torch.equal(adding.markers, product.markers) and torch.equal(adding.mask, product.mask)
    assert torch.equal(adding.first, product.first) and torch.equal(adding.second, product.second)
    unmarked = adding.markers[:, 0] != 1
    torch.testing.assert_close(product.values[unmarked], (adding.values[unmarked] + 1) / 2)


def test_correct_means_absolute_error_below_0_04():
    task = MultiplicationTask()
    batch = task.train_batch(0, 4)
    output = batch.y + torch.tensor([[0.039], [-0.039], [0.041], [-0.5]])
    scores = task.scores(output, batch)
    assert scores["correct"].tolist() == [1, 1, 0, 0]
    torch.testing.assert_close(scores["loss"], (output - batch.y).square()[:, 0])


@pytest.mark.parametrize("n_seq", [140, 13])
def test_solved_when_fewer_than_n_seq_of_the_last_2000_are_wrong(n_seq):
    task = MultiplicationTask(MultiplicationOptions(n_seq=n_seq))
    assert task.window == 2000

    def recent(wrong: int, size: int = 2000) -> dict[str, torch.Tensor]:
        correct = torch.ones(size, dtype=torch.float64)
        correct[:wrong] = 0
        return {"loss": torch.full((size,), 0.5, dtype=torch.float64), "correct": correct}

    assert task.solved(recent(n_seq - 1), None), "no condition on the mean error"
    assert not task.solved(recent(n_seq), None)
    assert not task.solved(recent(0, 1999), None), "the window must be full"


def test_batches_are_pure_functions_of_seed_and_index():
    task, again = MultiplicationTask(seed=5), build_task("multiplication", {}, seed=5)
    assert torch.equal(task.train_batch(7, 4).x, again.train_batch(7, 4).x)
    assert not torch.equal(task.train_batch(7, 4).x, task.train_batch(8, 4).x)
    assert not torch.equal(task.train_batch(7, 4).x, MultiplicationTask(seed=6).train_batch(7, 4).x)
    assert sum(b.size for b in task.eval_batches()) == 2560
    assert torch.equal(task.eval_batches()[2].x, again.eval_batches()[2].x)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"length": 11}, "multiplication option length must be at least 12"),
        ({"n_seq": 0}, "multiplication option n_seq must be >= 1"),
        ({"output_activation": "tanh"}, "output_activation' must be one of"),
        ({"n_seq": 1.5}, "must be int"),
    ],
)
def test_bad_options_are_rejected(options, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build_task("multiplication", options)
