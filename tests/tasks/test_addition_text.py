"""Written addition as seq2seq: encoding, targets, the fixed disjoint splits, metrics."""

from __future__ import annotations

import math

import pytest
import torch

from carousel.tasks import build_task
from carousel.tasks.addition_text import (
    END,
    START,
    VOCABULARY,
    AdditionTextOptions,
    AdditionTextTask,
    digit_count,
    splitmix64,
    sum_without_carries,
)


def _pairs(a, b):
    return list(zip(a.tolist(), b.tolist(), strict=True))


def _text(task, ids, mask):
    return task.decode(ids[mask])


def test_a_batch_writes_the_problem_and_its_sum_then_the_end_token():
    task = AdditionTextTask(AdditionTextOptions(max_digits=3))
    batch = task.batch(torch.tensor([357, 5, 999]), torch.tensor([68, 0, 1]))
    source, decoder_input = batch.x
    assert [_text(task, source[i], batch.mask[i]) for i in range(3)] == ["357+68", "5+0", "999+1"]
    targets = [batch.y[i][batch.target_mask[i]].tolist() for i in range(3)]
    assert [task.decode(torch.tensor(t)) for t in targets] == ["425", "5", "1000"]
    assert all(t[-1] == END for t in targets), "every target ends with the end token"
    assert batch.target_mask.sum(1).tolist() == [4, 2, 5]
    assert batch.mask.sum(1).tolist() == [6, 3, 5]
    assert bool((decoder_input[:, 0] == START).all())
    assert torch.equal(decoder_input[:, 1:], batch.y[:, :-1]), "teacher forcing: shifted targets"
    assert VOCABULARY[START] == "<s>" and VOCABULARY[END] == "</s>"
    assert task.vocabulary == VOCABULARY and task.io.input_size == len(VOCABULARY) == 13


def test_reverse_source_reverses_only_the_source():
    plain = AdditionTextTask(AdditionTextOptions())
    reverse = AdditionTextTask(AdditionTextOptions(reverse_source=True))
    a, b = torch.tensor([357, 12]), torch.tensor([68, 3])
    forward, backward = plain.batch(a, b), reverse.batch(a, b)
    assert _text(reverse, backward.x[0][0], backward.mask[0]) == "86+753"
    assert torch.equal(forward.y, backward.y) and torch.equal(forward.x[1], backward.x[1])


def test_training_batches_are_seeded_and_follow_the_digit_distribution():
    task = AdditionTextTask(AdditionTextOptions(max_digits=3), seed=5)
    first, again = task.train_batch(7, 64), task.train_batch(7, 64)
    assert torch.equal(first.x[0], again.x[0]) and torch.equal(first.y, again.y)
    assert not torch.equal(task.train_batch(8, 64).x[0], first.x[0])
    a, b = task.operands(30000, torch.Generator().manual_seed(0))
    lengths = digit_count(torch.cat([a, b]))
    shares = torch.bincount(lengths, minlength=4)[1:].double() / len(lengths)
    torch.testing.assert_close(
        shares, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.01, rtol=0
    )
    assert int(a.min()) == 0 and int(a.max()) == 999
    # a 2-digit operand is never below 10
    two = torch.cat([a, b])[lengths == 2]
    assert int(two.min()) >= 10 and int(two.max()) <= 99


def test_splits_are_disjoint_fixed_and_ignore_operand_order():
    task = AdditionTextTask(AdditionTextOptions(max_digits=2, valid_size=150, test_size=150))
    other_seed = AdditionTextTask(AdditionTextOptions(max_digits=2), seed=9)
    a = torch.arange(100).repeat_interleave(100)
    b = torch.arange(100).repeat(100)
    split = task.split_of(a, b)
    assert torch.equal(split, other_seed.split_of(a, b)), (
        "the partition does not depend on the seed"
    )
    assert torch.equal(split, task.split_of(b, a)), "a + b and b + a share a part"
    counts = torch.bincount(split, minlength=3).double() / len(split)
    assert 0.85 < float(counts[0]) < 0.95 and 0.02 < float(counts[1]) < 0.08
    assert 0.02 < float(counts[2]) < 0.08
    parts = {name: set(_pairs(*task.problems(name))) for name in ("valid", "test")}
    assert len(parts["valid"]) == 150 and len(parts["test"]) == 150, "distinct problems"
    assert not parts["valid"] & parts["test"]
    lookup = {pair: int(s) for pair, s in zip(_pairs(a, b), split, strict=True)}
    assert {lookup[p] for p in parts["valid"]} == {1} and {lookup[p] for p in parts["test"]} == {2}
    trained = set()
    for index in range(40):
        source, _ = task.train_batch(index, 64).x
        for row in source:
            text = task.decode(row)
            left, right = text.split("+")
            trained.add((int(left), int(right)))
    assert {lookup[p] for p in trained} == {0}, "training problems come from the training part"
    assert len(trained) > 1000


def test_fixed_sets_are_the_same_on_every_call_and_the_long_set_is_longer():
    task = AdditionTextTask(AdditionTextOptions(max_digits=2, valid_size=40, test_size=60))
    assert task.eval_batches() is task.eval_batches()
    rebuilt = AdditionTextTask(AdditionTextOptions(max_digits=2, valid_size=40, test_size=60))
    assert torch.equal(task.test_batches()[0].x[0], rebuilt.test_batches()[0].x[0])
    assert sum(batch.size for batch in task.test_batches()) == 60
    a, b = task.problems("long")
    assert len(set(_pairs(a, b))) == 1000
    assert bool((digit_count(a) == 3).all() and (digit_count(b) == 3).all())
    five = AdditionTextTask(AdditionTextOptions(max_digits=2, test_digits=5, long_size=20))
    assert bool((digit_count(five.problems("long")[0]) == 5).all())


def test_too_many_distinct_problems_names_the_option():
    task = AdditionTextTask(AdditionTextOptions(max_digits=1, test_size=500))
    with pytest.raises(ValueError, match="test_size"):
        task.test_batches()


def test_loss_and_metrics_per_target_token():
    task = AdditionTextTask(AdditionTextOptions())
    batch = task.batch(torch.tensor([357, 5]), torch.tensor([68, 0]))  # "425</s>", "5</s>"
    vocab = len(VOCABULARY)
    uniform = torch.zeros(*batch.y.shape, vocab)
    torch.testing.assert_close(task.loss(uniform, batch), torch.tensor(math.log(vocab)))
    perfect = torch.nn.functional.one_hot(batch.y, vocab).float() * 20
    almost = perfect.clone()
    almost[0, 1] = 0.0
    almost[0, 1, 3] = 20.0  # the second digit of 425 wrong
    scores = task.scores(almost, batch)
    assert scores["tokens"].tolist() == [4, 2] and scores["correct"].tolist() == [3, 2]
    assert scores["exact"].tolist() == [0.0, 1.0]
    metrics = task.metrics({k: float(v.sum()) for k, v in scores.items()}, batch.size)
    assert metrics["accuracy"] == pytest.approx(5 / 6) and metrics["exact"] == 0.5
    assert metrics["loss"] == pytest.approx(float(scores["nll"].sum()) / 6)
    assert task.solved({}, {"exact": 0.99}) is False
    goal = AdditionTextTask(AdditionTextOptions(target_exact=0.9))
    assert goal.solved({}, {"exact": 0.95}) and not goal.solved({}, {"exact": 0.85})


def test_helpers():
    assert digit_count(torch.tensor([0, 9, 10, 999, 1000])).tolist() == [1, 1, 2, 3, 4]
    assert sum_without_carries(57, 68) == 15
    assert sum_without_carries(50, 50) == 0
    assert sum_without_carries(123, 4) == 127
    assert sum_without_carries(999, 1) == 990
    values = splitmix64(torch.arange(5).numpy())
    assert len(set(values.tolist())) == 5 and values.dtype.name == "uint64"
    # SplitMix64's first output from state 0 (Vigna's reference implementation)
    assert int(splitmix64(torch.tensor([0]).numpy())[0]) == 0xE220A8397B1DCDAF


def test_bad_options_name_the_option():
    for options, name in (
        ({"max_digits": 0}, "max_digits"),
        ({"max_digits": 3, "test_digits": 3}, "test_digits"),
        ({"valid_fraction": 0.0}, "valid_fraction"),
        ({"valid_fraction": 0.3, "test_fraction": 0.3}, "test_fraction"),
        ({"long_size": 0}, "long_size"),
    ):
        with pytest.raises(ValueError, match=name):
            build_task("addition_text", options)
    assert build_task("addition_text", {"max_digits": 2}).test_digits == 3
