"""Modular arithmetic without brackets and parity: targets recomputed from the one-hot inputs,
lengths, the fixed test sets, metrics and the success rule."""

from __future__ import annotations

import pytest
import torch

from carousel.tasks import build_task
from carousel.tasks.modular_arithmetic import evaluate


def test_evaluation_follows_deletang_et_al():
    """Their examples (mod 5): multiplication binds first, subtraction is mod m."""
    assert evaluate([1, 2, 3], ["+", "*"], 5) == 2
    assert evaluate([1, 1, 1], ["-", "-"], 5) == 4
    assert evaluate([0, 1, 4, 3, 2], ["*", "+", "*", "-"], 5) == 0
    assert evaluate([1, 0, 1, 1], [], 2) == 1  # parity


def _decode(batch, modulus, operators):
    """Each sequence's symbols, from the one-hot features."""
    symbols = [str(d) for d in range(modulus)] + list(operators)
    rows = []
    for row in range(batch.size):
        length = int(batch.mask[row].sum())
        rows.append([symbols[k] for k in batch.x[row, :length].argmax(-1).tolist()])
    return rows


def _python_value(symbols, modulus):
    """The expression's value by Python's own precedence (``*`` before ``+``/``-``)."""
    return eval("".join(symbols)) % modulus


@pytest.mark.parametrize("modulus", [3, 5])
def test_expressions_and_their_values(modulus):
    task = build_task("modular_arithmetic", {"modulus": modulus}, seed=1)
    batch = task.train_batch(0, 64)
    assert batch.x.shape[-1] == modulus + 3
    assert bool((batch.x.sum(-1) == batch.mask.float()).all())  # one-hot where it exists
    lengths = batch.mask.sum(1)
    assert bool((lengths % 2 == 1).all()) and int(lengths.min()) >= 3
    assert int(lengths.max()) <= 40
    for symbols, target in zip(_decode(batch, modulus, "+-*"), batch.y.tolist(), strict=True):
        assert all(s.isdigit() for s in symbols[::2]) and all(s in "+-*" for s in symbols[1::2])
        assert _python_value(symbols, modulus) == target


def test_parity_is_the_count_of_ones_mod_two():
    task = build_task("modular_arithmetic", {"modulus": 2, "operators": ""}, seed=2)
    batch = task.train_batch(3, 128)
    assert batch.x.shape[-1] == 2
    ones = (batch.x[..., 1] * batch.mask).sum(1).long()
    assert torch.equal(batch.y, ones % 2)
    assert len(set(batch.mask.sum(1).tolist())) > 10  # lengths vary, even ones included


def test_batches_are_seeded_and_the_test_set_is_short_then_long():
    task = build_task("modular_arithmetic", {"test_size": 300}, seed=0)
    again = build_task("modular_arithmetic", {"test_size": 300}, seed=0)
    assert torch.equal(task.train_batch(5, 8).x, again.train_batch(5, 8).x)
    assert not torch.equal(task.train_batch(5, 8).x, task.train_batch(6, 8).x)
    batches = task.eval_batches()
    lengths = torch.cat([b.mask.sum(1) for b in batches])
    assert len(lengths) == 600
    assert int(lengths[:300].max()) <= 40 and int(lengths[300:].min()) >= 41
    assert int(lengths[300:].max()) <= 256
    assert task.eval_batches() is batches


def test_metrics_count_errors_at_training_and_longer_lengths():
    task = build_task("modular_arithmetic", {"modulus": 2, "operators": "", "test_size": 4})
    short, long = task.eval_batches()
    totals: dict[str, float] = {}
    for batch, wrong in ((short, [0]), (long, [1, 2])):
        logits = torch.nn.functional.one_hot(batch.y, 2).float() * 10
        logits[wrong] = logits[wrong].flip(-1)  # misclassify these rows
        for name, value in task.scores(logits, batch).items():
            totals[name] = totals.get(name, 0.0) + float(value.sum())
    metrics = task.metrics(totals, 8)
    assert metrics["errors_short"] == 1 and metrics["errors_long"] == 2
    assert metrics["accuracy"] == 5 / 8
    assert not task.solved({}, metrics)
    assert task.solved({}, {**metrics, "errors_short": 0.0, "errors_long": 0.0})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"modulus": 1}, "modulus must be >= 2"),
        ({"operators": "+/"}, "operators must be distinct characters"),
        ({"train_max": 2, "train_min": 3}, "train_max must be >= train_min"),
        ({"test_min": 0}, "test_min must be >= 1"),
    ],
)
def test_bad_options_name_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        build_task("modular_arithmetic", options)
