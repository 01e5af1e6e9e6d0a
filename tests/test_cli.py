"""The command line: help, info, and clean errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import carousel
from carousel.cli import main

SRC = str(Path(carousel.__file__).parents[1])


def test_info_lists_backends_and_cells(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "reference" in out and "torch-native" in out
    assert "1997" in out and "Hochreiter" in out


def test_unknown_command_exits_with_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli():
    env = {**os.environ, "PYTHONPATH": SRC}
    result = subprocess.run(
        [sys.executable, "-m", "carousel", "--version"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0 and result.stdout.startswith("carousel ")


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["train", "addding"],
            "carousel train: error: argument TASK: invalid choice: 'addding' (did you mean 'adding'?)",
        ),
        (
            ["train", "adding", "--out", "x", "--hiden-size", "3"],
            "carousel train: error: unrecognized arguments: --hiden-size 3 (did you mean '--hidden-size'?)",
        ),
        (["train", "adding", "--out", "x", "--hiden-size=3"], "(did you mean '--hidden-size'?)"),
        (
            ["trian"],
            "carousel: error: argument COMMAND: invalid choice: 'trian' (did you mean 'train'?)",
        ),
        (
            ["train", "adding", "--optimizer", "adamw", "--out", "x"],
            "invalid choice: 'adamw' (did you mean 'adam'?)",
        ),
        (
            ["train", "adding"],
            "carousel train: error: the following arguments are required: --out (see 'carousel train --help')",
        ),
        (
            ["reproduce", "4", "--config", "xyz"],
            "invalid choice: 'xyz' (see 'carousel reproduce --help')",
        ),
    ],
)
def test_command_line_mistakes_are_one_line_with_a_suggestion(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    assert exit_info.value.code == 2
    assert message in captured.err and captured.err.count("\n") == 1, captured.err
    assert "usage:" not in captured.err and captured.out == ""


def test_every_command_describes_itself_in_its_help(capsys):
    from carousel.cli import build_parser

    for name, parser in build_parser().commands.items():
        assert parser.description and len(parser.description) > 20, name
        with pytest.raises(SystemExit):
            main([name, "--help"])
        out = capsys.readouterr().out
        assert out.startswith("usage: carousel " + name), name
        assert " ".join(parser.description.split()[:4]) in " ".join(out.split()), name


def test_eval_of_a_missing_directory_says_it_does_not_exist(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nonexistent")]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"carousel eval: error: run directory {str(tmp_path / 'nonexistent')!r} does not exist\n"
    )
