"""The digits task: the data is scikit-learn's, the split is fixed and disjoint, the training
stream visits each training image once per epoch, the metrics count images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import carousel.tasks
from carousel.tasks.digits import SPLIT_SEED, DigitsOptions, DigitsTask, stratified_split

sklearn_datasets = pytest.importorskip("sklearn.datasets")


@pytest.fixture(scope="module")
def digits():
    data = sklearn_datasets.load_digits()
    return data.images, data.target


@pytest.fixture(scope="module")
def task():
    return DigitsTask(DigitsOptions(), seed=3)


def test_split_is_disjoint_covers_the_data_is_stratified_and_fixed(task, digits):
    splits = task.splits
    everything = np.concatenate([splits["train"], splits["valid"], splits["test"]])
    assert len(everything) == len(set(everything.tolist())) == 1797
    assert {k: len(v) for k, v in splits.items()} == {"train": 1079, "valid": 359, "test": 359}
    labels = digits[1]
    for label in range(10):
        members = int((labels == label).sum())
        assert int((labels[splits["test"]] == label).sum()) == round(0.2 * members)
        assert int((labels[splits["valid"]] == label).sum()) == round(0.2 * members)
    other_seed = DigitsTask(DigitsOptions(order="pixels"), seed=11)
    for name in splits:
        assert np.array_equal(other_seed.splits[name], splits[name]), "the split ignores the seed"
    assert not np.array_equal(stratified_split(labels, SPLIT_SEED + 1)["test"], splits["test"])


def test_inputs_are_the_sklearn_pixels_over_16_in_both_orders(task, digits):
    images, labels = digits
    batch = task.test_batches()[0]
    indices = task.splits["test"][: batch.size]
    assert batch.x.shape == (256, 8, 8) and batch.mask.all()
    np.testing.assert_allclose(batch.x.numpy(), images[indices] / 16, rtol=0, atol=1e-7)
    assert batch.y.tolist() == labels[indices].tolist()
    pixels = DigitsTask(DigitsOptions(order="pixels")).test_batches()[0]
    assert pixels.x.shape == (256, 64, 1) and pixels.mask.shape == (256, 64)
    assert torch.equal(pixels.x[:, :, 0], batch.x.reshape(256, 64)), "row-major pixel order"
    assert task.io.head == "classifier" and task.io.input_size == 8 and task.io.output_size == 10


def test_validation_and_test_batches_are_their_splits_in_order(task):
    for batches, name in ((task.eval_batches(), "valid"), (task.test_batches(), "test")):
        images, labels = task.split(name)
        assert torch.equal(torch.cat([b.x for b in batches]), torch.as_tensor(images))
        assert torch.equal(torch.cat([b.y for b in batches]), torch.as_tensor(labels))
    assert task.eval_batches() is task.eval_batches()


def test_training_stream_is_seeded_epochs_of_the_training_images(task):
    count = len(task.splits["train"])  # 1079 = 13 * 83
    batches = [task.train_batch(i, 83) for i in range(14)]
    epoch = torch.cat([b.x for b in batches[:13]])  # (1079, 8, 8)
    train_images = torch.as_tensor(task.split("train")[0])
    key = lambda images: sorted(map(tuple, images.reshape(len(images), -1).tolist()))  # noqa: E731
    assert key(epoch) == key(train_images), "each training image exactly once per epoch"
    assert torch.equal(task.train_batch(5, 83).x, batches[5].x), "a pure function of the index"
    assert not torch.equal(batches[13].x, batches[0].x), "the next epoch has another order"
    assert torch.equal(torch.as_tensor(task.images[task.epoch(1)[:83]]), batches[13].x), (
        "epoch 1 starts at position 1079"
    )
    straddling = task.train_batch(count // 50, 50)  # positions 1050..1099 cross the epoch
    expected = np.concatenate([task.epoch(0)[1050:], task.epoch(1)[:21]])
    assert straddling.y.tolist() == task.labels[expected].tolist()
    reseeded = DigitsTask(DigitsOptions(), seed=4)
    assert not torch.equal(reseeded.train_batch(0, 83).x, batches[0].x)


def test_loss_scores_and_metrics_on_hand_made_logits(task):
    batch = task.eval_batches()[1]  # the last 103 validation images
    logits = torch.zeros(batch.size, 10)
    torch.testing.assert_close(task.loss(logits, batch), torch.tensor(math.log(10)))
    logits[torch.arange(batch.size), batch.y] = 5.0
    logits[:7, :] = 0.0
    logits[torch.arange(7), (batch.y[:7] + 1) % 10] = 5.0  # 7 images wrong
    scores = task.scores(logits, batch)
    assert scores["correct"].tolist() == [0.0] * 7 + [1.0] * (batch.size - 7)
    totals = {name: float(value.sum()) for name, value in scores.items()}
    metrics = task.metrics(totals, batch.size)
    assert metrics["errors"] == 7
    assert metrics["accuracy"] == pytest.approx((batch.size - 7) / batch.size)
    expected = float(torch.nn.functional.cross_entropy(logits, batch.y))
    assert metrics["loss"] == pytest.approx(expected)
    assert task.solved({}, metrics) is False
    high = DigitsTask(DigitsOptions(max_images=20, target_accuracy=0.9))
    assert high.solved({}, {"accuracy": 0.95}) and not high.solved({}, {"accuracy": 0.85})
    assert not high.solved({}, None)


def test_options(monkeypatch):
    small = carousel.tasks.build_task("digits", {"max_images": 30, "order": "pixels"})
    assert {k: len(v) for k, v in small.splits.items()} == {"train": 30, "valid": 30, "test": 30}
    assert np.array_equal(small.splits["test"], stratified_split(small.labels)["test"][:30])
    with pytest.raises(ValueError, match="order"):
        carousel.tasks.build_task("digits", {"order": "columns"})
    with pytest.raises(ValueError, match="max_images"):
        DigitsTask(DigitsOptions(max_images=-1))
    with pytest.raises(ValueError, match="target_accuracy"):
        DigitsTask(DigitsOptions(target_accuracy=1.5))
