"""``carousel gradflow``: writes its CSV files and plots and prints the comparison."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from carousel.cli import main
from carousel.commands.gradflow import adding_problem, models


def test_gradflow_writes_csv_and_plots(tmp_path, capsys):
    out = tmp_path / "flow"
    status = main(
        ["gradflow", "--out", str(out), "--steps", "30", "--batch", "3", "--hidden", "6",
         "--cec-steps", "200"]
    )  # fmt: skip
    assert status == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "constant error carousel, 200 steps" in captured.err  # the progress bar
    assert "cell gradient at lag 200 / lag 0 = 1, largest deviation 0.0e+00" in printed
    assert "gradient below 1e-10 of its start from lag" in printed
    for name in ("gradflow.csv", "error_flow.csv", "gradflow.png", "error_flow.png"):
        assert (out / name).stat().st_size > 0, name
    with (out / "gradflow.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    names = list(models(6, 30))
    assert len(rows) == len(names) * 31
    assert {row["model"] for row in rows} == set(names)
    for row in rows:
        if row["lag"] == "0":
            assert float(row["hidden_relative"]) == 1.0
        assert (row["cell"] == "") == row["model"].startswith(("elman", "gru"))
    with (out / "error_flow.csv").open() as handle:
        factors = list(csv.DictReader(handle))
    assert len(factors) == 30
    np.testing.assert_allclose(
        [float(row["linear unit, w = 1.7"]) for row in factors], 1.7 ** np.arange(30)
    )
    assert all(float(row["linear unit, w = 1 (CEC)"]) == 1.0 for row in factors)


def test_gradflow_csv_only(tmp_path, capsys):
    args = ["gradflow", "--out", str(tmp_path), "--steps", "12", "--hidden", "4", "--no-plots"]
    assert main([*args, "--cec-steps", "20", "--quiet"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["error_flow.csv", "gradflow.csv"]
    assert capsys.readouterr().err == ""


def test_adding_problem_follows_its_definition():
    x, target = adding_problem(40, 500, torch.Generator().manual_seed(0))
    values, markers = x[..., 0], x[..., 1]
    assert x.shape == (40, 500, 2) and target.shape == (500, 1)
    assert torch.all((markers == 1).sum(0) == 2)
    first = (markers == 1).float().argmax(0)
    assert torch.all(first < 10)
    marked = torch.where(markers == 1, values, torch.zeros(()))
    assert torch.all((markers[20:] == 1).sum(0) == 0)  # both marks within the first T/2 steps
    torch.testing.assert_close(target[:, 0], 0.5 + marked.sum(0) / 4)
    assert torch.all(values.abs() <= 1)
    with pytest.raises(ValueError, match="at least 12"):
        adding_problem(5, 2, torch.Generator())


def test_gradflow_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["gradflow", "--steps", "0"])
    assert "positive integer" in capsys.readouterr().err
