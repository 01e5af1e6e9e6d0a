"""Trials: exact sequence counts, budgets, milestones, and the trainer path."""

from __future__ import annotations

import pytest
import torch

from carousel.experiments.faithful import Faithful, Plateau
from carousel.experiments.trial import Recent, run_faithful, run_trainer
from carousel.tasks import Batch, ModelIO, build_task
from carousel.tasks.paper import SequenceTask

SMALL = Faithful(blocks=1, block_size=2, lr=0.5)


class Counting(SequenceTask):
    """Sequence ``n`` of the stream is correct iff ``n >= start``; its first input is ``n``."""

    name = "counting"

    def __init__(self, start: int, window: int, seed: int = 0) -> None:
        super().__init__(None, seed)
        self.io = ModelIO("regressor", 1, 1)
        self.start, self.window, self.test_size = start, window, 16

    def train_batch(self, index: int, batch_size: int) -> Batch:
        first = sum(self.sizes[:index]) if hasattr(self, "sizes") else 0
        self.sizes = [*getattr(self, "sizes", [])[:index], batch_size]
        numbers = torch.arange(first, first + batch_size, dtype=torch.float32)
        return self._batch(numbers)

    def sequences(self, count: int, rng) -> Batch:
        return self._batch(torch.full((count,), -1.0))

    def _batch(self, numbers):
        x = torch.zeros(len(numbers), 3, 1)
        x[:, 0, 0] = numbers
        return Batch(
            x=x, y=torch.zeros(len(numbers), 1), mask=torch.ones(len(numbers), 3, dtype=torch.bool)
        )

    def scores(self, output, batch):
        scores = super().scores(output, batch)
        return {**scores, "correct": (batch.x[:, 0, 0] >= self.start).double()}

    def milestones(self, recent, evaluation):
        return {"half": bool(recent) and float(recent["correct"].mean()) >= 0.5}


def test_the_count_is_exact_within_a_chunk():
    task = Counting(start=537, window=10)
    trial = run_faithful(task, SMALL, seed=0, budget=5000, chunk=100)
    assert trial.solved
    assert trial.sequences == 547  # sequences 537..546 make the first full correct window
    assert trial.milestones == {"half": 600}  # milestones are checked at chunk ends
    assert trial.test_size == 16 and trial.weights > 0
    assert trial.curve[-1][0] == 547


def test_a_rule_judged_after_training_counts_the_sequences_before_its_window():
    task = Counting(start=537, window=10)
    task.count_before_window = True  # experiment 2's convention
    trial = run_faithful(task, SMALL, seed=0, budget=5000, chunk=100)
    assert trial.solved and trial.sequences == 537  # sequences 0..536 came before the window
    unsolved = run_faithful(Counting(start=10**9, window=10), SMALL, seed=0, budget=250)
    assert unsolved.sequences == 250  # an unsolved trial reports its whole budget


def test_an_unsolved_trial_spends_its_budget():
    task = Counting(start=10**9, window=10)
    progress = []
    trial = run_faithful(task, SMALL, seed=0, budget=250, chunk=100, progress=progress.append)
    assert not trial.solved and trial.sequences == 250
    assert progress == [100, 200, 250]
    assert "network" not in trial.to_dict() and "curve" not in trial.to_dict()


class Scripted(Counting):
    """Sequence ``n``'s loss is ``max(1000 - n, 100)``: falling until 900, then flat."""

    def scores(self, output, batch):
        scores = super().scores(output, batch)
        return {**scores, "loss": (1000.0 - batch.x[:, 0, 0].double()).clamp(min=100.0)}


def test_a_staged_network_adds_a_block_when_the_error_has_stopped_decreasing():
    plateau = Plateau(window=100, patience=3, threshold=0.01)
    settings = Faithful(blocks=2, block_size=2, lr=0.1, staged=True, plateau=plateau)
    trial = run_faithful(Scripted(start=10**9, window=10), settings, seed=0, budget=2000)
    # windows of 100: means 950.5, 850.5, ..., 150.5 (sequences 800-899), then 100 from
    # sequence 900 on; after window 13 (sequence 1300) the last three are not 1 % below the best
    # before them (100): block 1; windows are counted afresh, so block 2 after four more
    assert trial.milestones == {"block 1": 1300, "block 2": 1700}
    whole = run_faithful(Scripted(start=10**9, window=10), settings, seed=0, budget=100)
    assert whole.milestones == {} and trial.weights > whole.weights
    assert trial.weights == 1 + 2 * 4 * (1 + 1) + 4 + 8 * 8  # all blocks in: bias + rows + out + hh
    never = Plateau(window=100, patience=3, threshold=0.0)  # never holds on a flat error
    trial = run_faithful(
        Scripted(start=10**9, window=10), Faithful(blocks=1, lr=0.1, staged=True, plateau=never),
        seed=0, budget=2000,
    )  # fmt: skip
    assert trial.milestones == {} and trial.weights == 1  # only the output bias
    with pytest.raises(ValueError, match="window must be a multiple of chunk; got window 100"):
        run_faithful(Scripted(start=0, window=10), settings, seed=0, budget=200, chunk=64)


def test_recent_keeps_the_newest_scores():
    recent = Recent(3)
    recent.add({"correct": torch.tensor([1.0, 2, 3, 4])})
    assert recent.values["correct"].tolist() == [2, 3, 4]
    assert recent.ending_at({"correct": torch.tensor([5.0, 6])}, 0)["correct"].tolist() == [3, 4, 5]


def test_the_faithful_network_solves_a_short_adding_problem():
    task = build_task("adding", {"length": 12, "test_size": 512}, seed=0)
    settings = Faithful(
        blocks=2, block_size=2, lr=0.5, input_gate_bias=(-3.0, -6.0), output_units="linear"
    )
    trial = run_faithful(task, settings, seed=0, budget=80_000, chunk=200)
    assert trial.solved and 2000 < trial.sequences < 80_000
    assert trial.test["wrong"] <= 5 and trial.test["loss"] < 0.01
    assert trial.curve[-1][1] < trial.curve[0][1] / 10


def test_the_trainer_path_counts_sequences_and_scores_the_test_set(tmp_path):
    trial = run_trainer(
        "adding", {"length": 12, "test_size": 64}, model={"variant": "gru", "hidden_size": 4},
        optim={"lr": 0.01}, batch_size=8, seed=0, budget=80, run_dir=str(tmp_path / "run"),
    )  # fmt: skip
    assert not trial.solved and trial.sequences == 80
    assert trial.test_size == 64 and set(trial.test) >= {"loss", "wrong"}
    assert trial.weights == sum(3 * 4 * n for n in (2, 4)) + 2 * 3 * 4 + 4 + 1
    assert trial.curve and trial.curve[-1][0] == 80


def test_the_trainer_path_counts_as_the_task_does(tmp_path, monkeypatch):
    import carousel.train

    def solved_at(sequences):
        def fake_train(config, directory, quiet, task):
            summary = {"solved": True, "solved_sequences": sequences, "sequences": sequences,
                       "evaluation": {"loss": 0.0}}  # fmt: skip
            return carousel.train.TrainResult(summary, model=torch.nn.Linear(1, 1))

        return fake_train

    monkeypatch.setattr(carousel.train, "train", solved_at(12_500))
    options = {"problem": "2c", "p": 4, "q": 3, "test_size": 8}
    model, optim = {"variant": "vanilla", "hidden_size": 4}, {"lr": 0.01}
    trial = run_trainer("longlag", options, model=model, optim=optim, batch_size=4, seed=0,
                        budget=20_000, run_dir=str(tmp_path))  # fmt: skip
    assert trial.solved and trial.sequences == 2_500  # the 10,000 of the window not counted
    trial = run_trainer("adding", {"length": 12, "test_size": 8}, model=model, optim=optim,
                        batch_size=4, seed=0, budget=20_000, run_dir=str(tmp_path))  # fmt: skip
    assert trial.sequences == 12_500  # the adding problem counts up to its stop
