"""The pocket calculator task against the ECE 417 lecture's definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from carousel.diagnostics.calculator import CALCULATOR_INPUT, CALCULATOR_TARGET, calculator
from carousel.tasks import CalculatorTask, build_task
from carousel.tasks.calculator import CalculatorOptions, printed_values


def test_the_lectures_example():
    x = torch.tensor(CALCULATOR_INPUT, dtype=torch.float32).unsqueeze(0)
    assert printed_values(x)[0].tolist() == CALCULATOR_TARGET.tolist() == [0, 0, 0, 4, 0, 0, 0, 3]


@pytest.fixture(scope="module")
def batch():
    return CalculatorTask(seed=2).train_batch(0, 2000)


def test_inputs_follow_the_defaults(batch):
    x, mask = batch.x[..., 0], batch.mask
    lengths = mask.sum(1)
    assert set(lengths.tolist()) == set(range(8, 17))
    assert torch.equal(mask, torch.arange(mask.shape[1]) < lengths.unsqueeze(1))
    assert set(x[mask].tolist()) == {0.0, 1.0, 2.0, 3.0}
    assert bool((x[~mask] == 0).all()) and bool((batch.y[~mask] == 0).all())
    rows = torch.arange(batch.size)
    assert bool((x[rows, lengths - 1] == 0).all()), "every sequence ends with '='"
    before_last = mask.clone()
    before_last[rows, lengths - 1] = False
    assert abs(float((x[before_last] == 0).float().mean()) - 0.3) < 0.02


def test_targets_are_the_lectures_calculator(batch):
    for row in range(0, batch.size, 50):
        steps = int(batch.mask[row].sum())
        printed, _ = calculator(batch.x[row, :steps, 0].double().numpy())
        np.testing.assert_array_equal(batch.y[row, :steps, 0].double().numpy(), printed)


def test_printed_steps_are_scored_where_something_is_printed(batch):
    printed, scored = batch.y[..., 0], batch.y[..., 1]
    assert torch.equal(scored, ((printed > 0) & batch.mask).float())
    assert bool((printed[batch.x[..., 0] != 0] == 0).all()), "nothing printed while adding"
    every = CalculatorTask(CalculatorOptions(scored="every"), seed=2).train_batch(0, 2000)
    assert torch.equal(every.x, batch.x) and torch.equal(every.y[..., 0], printed)
    assert torch.equal(every.y[..., 1], batch.mask.float())


def test_correct_means_every_scored_output_within_0_5():
    printed_task = CalculatorTask(seed=1)
    every_task = CalculatorTask(CalculatorOptions(scored="every"), seed=1)
    batch = printed_task.train_batch(0, 3)
    scored = batch.y[..., 1:] > 0
    output = torch.where(scored, batch.y[..., :1], 7.0)  # right where scored, junk elsewhere
    output[1] = torch.where(scored[1], batch.y[1, :, :1] + 0.49, 7.0)
    last = int(batch.mask[2].sum()) - 1  # the final print is scored (its tally is > 0)
    assert bool(scored[2, last])
    output[2, last] += 0.51
    scores = printed_task.scores(output, batch)
    assert scores["correct"].tolist() == [1, 1, 0]
    expected = ((output - batch.y[..., :1]) * scored).square().sum((1, 2))
    torch.testing.assert_close(scores["loss"], expected)
    every = every_task.train_batch(0, 3)
    assert every_task.scores(output, every)["correct"].tolist() == [0, 0, 0], "junk is scored"


def test_solved_needs_the_last_1000_sequences_correct():
    task = CalculatorTask()
    assert task.window == 1000
    good = {"loss": torch.full((1000,), 2.0), "correct": torch.ones(1000)}
    assert task.solved(good, None)
    assert not task.solved({k: v[:999] for k, v in good.items()}, None)
    assert not task.solved({**good, "correct": torch.cat([torch.zeros(1), torch.ones(999)])}, None)


def test_batches_are_pure_functions_of_seed_and_index():
    task, again = CalculatorTask(seed=5), build_task("calculator", {}, seed=5)
    assert torch.equal(task.train_batch(7, 4).x, again.train_batch(7, 4).x)
    assert not torch.equal(task.train_batch(7, 4).x, task.train_batch(8, 4).x)
    assert torch.equal(task.eval_batches()[1].y, again.eval_batches()[1].y)
    assert sum(b.size for b in task.eval_batches()) == 1000


@pytest.mark.parametrize(
    "options, message",
    [
        ({"min_length": 0}, "calculator option min_length must be >= 1"),
        ({"min_length": 9, "max_length": 8}, "calculator option max_length must be >= min_length"),
        ({"max_digit": 0}, "calculator option max_digit"),
        ({"zero_probability": 1.5}, "calculator option zero_probability must be in"),
        ({"scored": "some"}, "option 'scored' must be one of"),
    ],
)
def test_bad_options_are_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        build_task("calculator", options)
