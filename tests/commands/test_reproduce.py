"""``carousel reproduce`` and ``carousel demo`` on tiny budgets: files, tables and errors."""

from __future__ import annotations

import csv
import dataclasses
import json
import os

import pytest

from carousel.cli import main
from carousel.experiments.suite import EXPERIMENTS, GROUPS, QUICK, Trained, select


def test_reproduce_writes_the_tables_beside_the_papers_numbers(tmp_path, capsys):
    out = tmp_path / "adding"
    status = main(["reproduce", "4-T100", "--trials", "2", "--budget", "300", "--processes", "1",
                   "--out", str(out), "--quiet"])  # fmt: skip
    assert status == 0
    printed = capsys.readouterr().out
    assert "| 4-T100 | faithful | 2 | 0 (100) |" in printed and "74,000" in printed
    with open(out / "trials.csv") as file:
        trials = list(csv.DictReader(file))
    assert [t["trial"] for t in trials] == ["0", "1"]
    assert all(t["solved"] == "False" and t["sequences"] == "300" for t in trials)
    assert trials[0]["seed"] != trials[1]["seed"]
    assert json.loads(trials[0]["test"])["wrong"] >= 0
    with open(out / "results.csv") as file:
        (summary,) = list(csv.DictReader(file))
    assert summary["paper_sequences_mean"] == "74000" and summary["weights"] == "93"
    assert (out / "results.md").read_text().startswith("| row |")
    assert (out / "results.png").stat().st_size > 1000
    # the same trial again gives the same numbers; an existing output directory is refused
    assert main(["reproduce", "4-T100", "--trials", "1", "--budget", "300", "--out",
                 str(tmp_path / "again"), "--quiet"]) == 0  # fmt: skip
    with open(tmp_path / "again" / "trials.csv") as file:
        assert next(csv.DictReader(file))["test"] == trials[0]["test"]
    assert main(["reproduce", "4-T100", "--out", str(out), "--quiet"]) == 2
    assert "already holds" in capsys.readouterr().err


def test_reproduce_trains_the_modern_configuration_through_the_loop(tmp_path, monkeypatch):
    out = tmp_path / "modern"
    assert main(["reproduce", "6a", "--config", "gru", "--trials", "1", "--budget", "32",
                 "--out", str(out), "--quiet"]) == 0  # fmt: skip
    with open(out / "trials.csv") as file:
        (trial,) = list(csv.DictReader(file))
    assert trial["config"] == "gru" and trial["sequences"] == "32"
    # without --budget the row's own budget for the trained configurations applies
    row = dataclasses.replace(EXPERIMENTS["6a"], trained=Trained(budget=48))
    monkeypatch.setitem(EXPERIMENTS, "6a", row)
    out = tmp_path / "own-budget"
    assert main(["reproduce", "6a", "--config", "gru", "--trials", "1", "--out", str(out),
                 "--quiet"]) == 0  # fmt: skip
    with open(out / "trials.csv") as file:
        (trial,) = list(csv.DictReader(file))
    assert trial["sequences"] == "48" and trial["budget"] == ""


def test_selection_by_row_group_alias_and_all():
    assert [row.name for row in select("adding")] == GROUPS["4"] == ["4-T100", "4-T500", "4-T1000"]
    beyond = [row.name for row in select("beyond")]
    assert beyond == ["4-T2000", "4-T5000", "4-T10000"] and all(
        EXPERIMENTS[n].paper is None for n in beyond
    )
    assert [row.name for row in select("all")] == [n for n in EXPERIMENTS if n not in beyond]
    assert set(QUICK) <= set(EXPERIMENTS)
    assert select("6b")[0].paper.sequences == 571_100
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        select("nope")


def test_reproduce_lists_rows_and_rejects_bad_arguments(capsys):
    assert main(["reproduce", "--list"]) == 0
    assert "2c-q1000-p1000" in capsys.readouterr().out
    assert main(["reproduce", "nope"]) == 2
    assert "unknown experiment" in capsys.readouterr().err
    assert main(["reproduce"]) == 2
    with pytest.raises(SystemExit):
        main(["reproduce", "4", "--trials", "0"])


@pytest.fixture
def restore_threads():
    import torch

    from carousel.kernels import threads

    before = torch.get_num_threads()
    yield
    threads._requested = None
    torch.set_num_threads(before)


def test_demo_trains_both_networks_and_writes_its_pictures(
    tmp_path, capsys, monkeypatch, restore_threads
):
    from matplotlib.figure import Figure

    drawn = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda f, *a, **k: (drawn.append(f), save(f, *a, **k)))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--lstm-budget", "400", "--elman-budget", "64",
                 "--quiet"]) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lstm_1997"]["sequences"] == 400 and summary["lstm_1997"]["weights"] == 93
    assert summary["elman"]["sequences"] == 64 and summary["threads"] == 1
    for picture in ("curves.png", "gradflow.png"):
        assert (out / picture).stat().st_size > 1000
    flow = summary["gradient_flow"]
    assert flow["lag"] == 100 and 0 < flow["elman_hidden"] < 1
    (hidden_axes, _) = drawn[-1].axes  # gradflow.png: nothing of the Elman curve is cut off
    assert hidden_axes.get_ylim()[0] <= flow["elman_hidden"]
    assert main(["demo", "--out", str(out), "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_trials_are_written_as_they_finish_and_a_run_resumes(tmp_path, capsys):
    out = tmp_path / "resume"
    args = ["reproduce", "6a", "--budget", "200", "--processes", "1", "--out", str(out), "--quiet"]
    assert main([*args, "--trials", "1"]) == 0
    first = (out / "trials.csv").read_text()
    # Pretend the run was interrupted after its first trial: only trials.csv survives.
    for name in ("results.md", "results.csv", "results.png"):
        (out / name).unlink()
    assert main([*args, "--trials", "3", "--resume"]) == 0
    text = (out / "trials.csv").read_text()
    assert text.startswith(first), "the finished trial is kept, not run again"
    with open(out / "trials.csv") as file:
        trials = list(csv.DictReader(file))
    assert [t["trial"] for t in trials] == ["0", "1", "2"] and trials[0]["budget"] == "200"
    with open(out / "results.csv") as file:
        assert next(csv.DictReader(file))["trials"] == "3"
    # a resumed run must have the same settings
    capsys.readouterr()
    assert main([*args[:3], "300", *args[4:], "--trials", "3", "--resume"]) == 2
    assert "trials of another run" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "trials.csv").write_text("row,config\n6a,faithful\n")
    assert main([*args[:-2], str(tmp_path / "bad"), "--quiet", "--resume"]) == 2
    assert "not a trials file" in capsys.readouterr().err


def test_a_row_beyond_the_paper_has_no_paper_columns(tmp_path):
    from carousel.experiments.report import TrialWriter, summarise, write_results

    row = EXPERIMENTS["4-T5000"]
    assert row.task == "adding" and row.options == {"length": 5000} and row.trained.budget
    trial = {"row": row.name, "config": "modern", "trial": 0, "seed": 0, "budget": None,
             "solved": True, "sequences": 1600, "milestones": {}, "test": {"wrong": 2, "loss": 1e-4},
             "test_size": 2560, "weights": 4641, "seconds": 1.0}  # fmt: skip
    with TrialWriter(tmp_path / "trials.csv") as writer:
        writer.write(trial)
    summary = summarise(row, "modern", [trial])
    assert summary["sequences_mean"] == 1600 and summary["paper_sequences_mean"] is None
    write_results(tmp_path, [summary])
    line = (tmp_path / "results.md").read_text().splitlines()[2]
    assert line.startswith("| 4-T5000 | modern | 1 | 100 (-) | 1,600 [1,600, 1,600] | - | - |")
    assert "| 4641 (-) |" in line and (tmp_path / "results.png").exists()


def test_rows_set_how_the_trained_configurations_train(monkeypatch):
    from carousel.experiments import reproduce
    from carousel.experiments.trial import Trial

    seen = []

    def fake_trainer(
        task, options, *, model, optim, batch_size, seed, budget, eval_every, progress
    ):
        seen.append((task, options, model, optim, batch_size, budget, eval_every))
        return Trial(solved=False, sequences=budget, test={}, test_size=1, weights=1, seconds=0.0)

    monkeypatch.setattr(reproduce, "run_trainer", fake_trainer)
    for name, config in (("6a", "modern"), ("6a", "gru"), ("3a-T100-N3", "modern"),
                         ("4-T100", "elman"), ("1-3x2-lr0.5", "modern"), ("2b-p100", "modern")):  # fmt: skip
        reproduce.run_trial(name, config, 0, 0)
    six_a, gru, two_seq, adding, reber, long_lag = seen
    assert six_a[4] == 4 and six_a[3]["lr"] == 0.03 and six_a[2]["init"].startswith("chrono(")
    assert six_a[5] == 31_390  # no budget of its own: the paper's mean
    assert gru[2] == {"variant": "gru", "hidden_size": 32} and gru[3] == six_a[3]  # same way
    defaults = Trained()
    assert (two_seq[4], two_seq[3]["lr"], two_seq[2]["hidden_size"]) == (
        defaults.batch,
        defaults.lr,
        defaults.hidden,
    )
    assert two_seq[3]["schedule"] == "constant" and two_seq[6] == 500  # the row's eval_every
    # adding at T = 100: a linear output unit and a cosine schedule over its own budget
    assert adding[1] == {"length": 100, "output_activation": "identity"}
    assert adding[3]["schedule"] == "cosine" and adding[5] == 20_000 and adding[6] == 4_000
    assert reber[2]["hidden_size"] == 128 and (reber[4], reber[6]) == (1, 64)
    assert long_lag[2]["init"] == "chrono(1000)"  # a row may name its own initialiser
    assert long_lag[5] == 5_680 + 10_000  # experiment 2: the uncounted window on top


def test_a_second_process_is_refused_an_out_dir_in_use(tmp_path):
    """Two reproduce runs on one directory would interleave trials.csv: the second is refused
    with the holder's pid and writes nothing."""
    from carousel.experiments.reproduce import reproduce
    from carousel.train.run_dir import RunLock
    from carousel.train.schema import CheckpointError

    with RunLock(tmp_path / "out"):  # another descriptor's flock: as another process's
        with pytest.raises(
            CheckpointError, match=rf"in use by another process \(pid {os.getpid()}"
        ):
            reproduce(select("1-3x2-lr0.5"), "faithful", trials=1, seed=0, out_dir=tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".lock"]
