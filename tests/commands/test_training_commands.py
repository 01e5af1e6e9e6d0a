"""``carousel train``, ``eval`` and ``sample``: real runs, and clean errors for bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import carousel
from carousel.cli import build_parser, main
from carousel.train.checkpoint import load_trained_model
from carousel.train.config import SECTIONS
from tests.train.runs import (
    one_thread,  # noqa: F401  (a fixture)
    snapshot,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SRC = str(Path(carousel.__file__).parents[1])
SMALL_LM = ["--max-chars", "3000", "--seq-len", "16", "--eval-streams", "2", "--hidden-size", "16"]
SMALL_ADDING = ["--length", "12", "--test-size", "64", "--hidden-size", "4", "--eval-every", "5"]


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "lm"
    args = [
        "train",
        "charlm",
        "--out",
        str(run_dir),
        "--steps",
        "10",
        "--batch-size",
        "4",
        "--eval-every",
        "5",
        *SMALL_LM,
    ]
    assert main(args) == 0
    return run_dir


def test_train_prints_a_summary_and_eval_reports_without_writing(lm_run, capsys):
    capsys.readouterr()
    before = snapshot(lm_run)
    assert main(["eval", str(lm_run)]) == 0
    out = capsys.readouterr().out
    assert "charlm, step 10 (40 sequences), test set:" in out and "bpc" in out
    assert main(["eval", str(lm_run), "--checkpoint", "best", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["task"] == "charlm" and metrics["step"] in (5, 10) and metrics["bpc"] > 0
    assert snapshot(lm_run) == before


def test_sample_continues_the_prompt(lm_run, capsys):
    capsys.readouterr()
    assert main(["sample", str(lm_run), "--prompt", "The ", "--length", "40", "--seed", "1"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("The ") and len(first) == len("The ") + 40 + 1
    assert main(["sample", str(lm_run), "--prompt", "The ", "--length", "40", "--seed", "1"]) == 0
    assert capsys.readouterr().out == first
    assert main(["sample", str(lm_run), "--prompt", "\u2603"]) == 2
    assert "unknown: ['\u2603']" in capsys.readouterr().err


def test_resume_from_the_command_line(lm_run, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "lm"
    shutil.copytree(lm_run, run_dir)
    assert (
        main(["train", "charlm", "--out", str(run_dir), "--resume", "--steps", "12", "--quiet"])
        == 0
    )
    assert json.loads((run_dir / "config.json").read_text())["train"]["steps"] == 12
    assert main(["train", "charlm", "--out", str(run_dir), "--resume", "--hidden-size", "32"]) == 2
    assert "model.hidden_size: 32 != 16" in capsys.readouterr().err


def test_config_file_and_options(tmp_path, capsys):
    path = tmp_path / "adding.toml"
    path.write_text(
        'task = "adding"\n[model]\nvariant = "1997"\nblock_size = 2\n[train]\nsteps = 5\nbatch_size = 1\n'
    )
    assert (
        main(
            [
                "train",
                "adding",
                "--out",
                str(tmp_path / "run"),
                "--config",
                str(path),
                *SMALL_ADDING,
                "--quiet",
            ]
        )
        == 0
    )
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["variant"] == "1997" and saved["model"]["hidden_size"] == 4
    assert saved["train"]["batch_size"] == 1 and saved["task_options"]["length"] == 12
    assert main(["train", "charlm", "--out", str(tmp_path / "other"), "--config", str(path)]) == 2
    assert "settings are for task 'adding'" in capsys.readouterr().err


def test_every_cell_option_is_a_training_option(tmp_path):
    run_dir = tmp_path / "run"
    args = ["train", "adding", "--out", str(run_dir), "--steps", "2", *SMALL_ADDING, "--quiet"]
    cell = ["--candidate-activation", "identity", "--model-output-activation", "identity"]
    assert main([*args, *cell, "--no-cell-bias", "--output-activation", "identity"]) == 0
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["model"]["candidate_activation"] == "identity"
    assert (
        saved["model"]["output_activation"] == "identity" and saved["model"]["cell_bias"] is False
    )
    assert saved["task_options"]["output_activation"] == "identity"  # the output unit's
    _, model, _ = load_trained_model(run_dir)
    spec = model.encoder.layer.spec
    assert (spec.candidate_activation, spec.output_activation, spec.cell_bias) == (
        "identity", "identity", False,
    )  # fmt: skip


def test_only_a_setting_that_shares_a_task_option_name_gets_its_section_in_its_flag():
    parser = build_parser().commands["train"]
    renamed = {
        action.dest: action.option_strings[0]
        for action in parser._actions
        if action.dest.split(".")[0] in SECTIONS
        and action.option_strings[0] != "--" + action.dest.split(".")[1].replace("_", "-")
    }
    assert renamed == {"model.output_activation": "--model-output-activation"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seq-len", "5"], "--seq-len does not apply to task 'adding'"),
        (["--optimizer", "adam", "--momentum", "0.9"], "momentum applies to optimizer sgd"),
        (["--tie-weights"], "tie_weights applies to language models only"),
        (["--bidirectional", "--variant", "nope"], "variant must be one of"),
        (["--batch-size", "0"], "batch_size must be at least 1"),
        (["--config", "missing.toml"], "cannot read config file"),
        (["--device", "cuda:7"], "no CUDA device"),
        (["--length", "5"], "length (T) must be at least 12"),
    ],
)
def test_bad_training_input_is_one_clean_line(args, message, tmp_path, capsys):
    status = main(["train", "adding", "--out", str(tmp_path / "run"), "--steps", "2", *args])
    err = capsys.readouterr().err
    assert status == 2 and message in err and err.startswith("carousel train: error:")
    assert err.count("\n") == 1


def test_unknown_task_and_option_are_usage_errors(tmp_path, capsys):
    for args in (
        ["train", "nope", "--out", "x"],
        ["train", "adding", "--out", "x", "--hidden", "3"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and "unrecognized arguments: --hidden 3" in err
    assert not (tmp_path / "run").exists()


def test_eval_and_sample_errors(lm_run, tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "adding",
                "--out",
                str(tmp_path / "adding"),
                "--steps",
                "2",
                *SMALL_ADDING,
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["sample", str(tmp_path / "adding")]) == 2
    assert "not a language model" in capsys.readouterr().err
    assert main(["eval", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["eval", str(lm_run), "--checkpoint", str(tmp_path / "none.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_help_documents_every_setting(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for section in SECTIONS.values():
        for field in dataclasses.fields(section):
            assert "--" + field.name.replace("_", "-") in out
    for option in ("--length", "--seq-len", "--text", "--resume", "--config", "--quiet"):
        assert option in out


def test_a_non_empty_run_directory_is_refused_without_traceback(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    env = {**os.environ, "PYTHONPATH": SRC}
    result = subprocess.run(
        [sys.executable, "-m", "carousel", "train", "adding", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 2
    assert (
        result.stderr.startswith("carousel train: error: output directory")
        and "--resume" in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert sorted(os.listdir(tmp_path / "run")) == ["notes.txt"]
