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
