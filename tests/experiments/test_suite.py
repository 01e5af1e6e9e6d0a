"""Rows and their variants (``ROW@key=value,...``)."""

from __future__ import annotations

import csv

import pytest

from carousel.experiments.reproduce import reproduce
from carousel.experiments.suite import EXPERIMENTS, experiment, select


def test_a_variant_changes_faithful_settings_plateau_and_task_options():
    name = "1-3x2-lr0.5@error_factor=1.0, sampling=epochs,output_gate_bias=(-2.0, -4.0, -6.0)"
    (row,) = select(name)
    base = EXPERIMENTS["1-3x2-lr0.5"]
    assert row.name == name and row.paper == base.paper and row.budget == base.budget
    assert row.faithful.error_factor == 1.0 and base.faithful.error_factor == 0.5
    assert row.faithful.output_gate_bias == (-2.0, -4.0, -6.0)
    assert row.options == {"sampling": "epochs"} and base.options == {"sampling": "replacement"}
    staged = experiment("2a-p100@plateau.threshold=0.1,plateau.patience=4")
    assert (staged.faithful.plateau.threshold, staged.faithful.plateau.patience) == (0.1, 4)
    assert staged.faithful.plateau.window == EXPERIMENTS["2a-p100"].faithful.plateau.window
    assert experiment("2a-p100@staged=False").faithful.staged is False
    assert experiment("4-T100") is EXPERIMENTS["4-T100"]


@pytest.mark.parametrize(
    "name, message",
    [
        ("9z@lr=1.0", "unknown row '9z'"),
        ("4-T100@speed=2", "'speed' is neither a faithful setting"),
        ("4-T100@lr", "a change must read key=value; got 'lr'"),
        ("4-T100@plateau.width=3", "'plateau.width' is neither"),
        ("4-T100@lr=-1.0", "lr must be > 0"),
    ],
)
def test_bad_variants_name_what_is_wrong(name, message):
    with pytest.raises(ValueError, match=message):
        experiment(name)


def test_a_variant_runs_and_is_recorded_under_its_own_name(tmp_path):
    name = "4-T100@error_factor=1.0"
    reproduce(select(name), "faithful", trials=1, seed=0, out_dir=tmp_path, budget=40, quiet=True)
    with open(tmp_path / "trials.csv") as file:
        (trial,) = list(csv.DictReader(file))
    assert trial["row"] == name and trial["sequences"] == "40"
    assert (tmp_path / "results.md").read_text().count(f"| {name} | faithful | 1 |") == 1


def test_2b_trains_on_every_element_as_the_paper_says_and_modern_at_the_end():
    row = EXPERIMENTS["2b-p100"]
    assert row.options["targets"] == "every" and row.trained.task_options == {"targets": "end"}
    assert experiment("2b-p100@targets=end").options["targets"] == "end"


def test_trials_in_this_process_run_on_one_thread_and_the_setting_comes_back(tmp_path, monkeypatch):
    import torch

    import carousel.experiments.reproduce as module
    from carousel import get_num_threads, set_num_threads

    seen = []

    def fake_trial(name, config, trial, seed, budget, progress=None):
        seen.append(torch.get_num_threads())
        return {
            "row": name, "config": config, "trial": trial, "seed": trial, "budget": budget,
            "solved": False, "sequences": 5, "milestones": {}, "test": {"wrong": 0, "loss": 0.0},
            "test_size": 1, "weights": 93, "seconds": 0.0,
        }  # fmt: skip

    monkeypatch.setattr(module, "run_trial", fake_trial)
    before = get_num_threads()
    set_num_threads(2)
    try:
        reproduce(
            select("4-T100"), "faithful", trials=2, seed=0, out_dir=tmp_path, budget=5, quiet=True
        )
        assert seen == [1, 1] and torch.get_num_threads() == 2
    finally:
        set_num_threads(before)
