"""``carousel calculator``: prints every table of the walkthrough and writes the heatmaps."""

from __future__ import annotations

from carousel.cli import main


def test_calculator_prints_the_walkthrough_and_writes_plots(tmp_path, capsys):
    assert main(["calculator", "--updates", "0", "--plots", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for title in (
        "one-node linear RNN, u = 0.5",
        "one-node linear RNN, u = 1",
        "one-node linear RNN, u = 1.7",
        "forget-gate RNN",
        "the lecture's LSTM",
        "corrected LSTM",
    ):
        assert title in printed
    assert "E = 8   dE/du: backprop 120, autograd 120" in printed
    assert "E = 12.5" in printed
    assert "trained LSTM" not in printed
    lines = printed.splitlines()
    corrected = lines.index(next(line for line in lines if line.startswith("corrected LSTM")))
    assert lines[corrected + 1].split() == "t x y i0 f0 o0 c0 h0 i1 f1 o1 c1 h1".split()
    assert lines[corrected + 5].split()[-1] == "4"  # t = 3 prints the tally 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "calculator_corrected_lstm.png",
        "calculator_lecture_lstm.png",
    ]


def test_calculator_trains_when_asked(capsys):
    assert main(["calculator", "--updates", "20"]) == 0
    captured = capsys.readouterr()
    assert "trained LSTM (16 cells) and linear read-out" in captured.out
    assert "trained with Adam for 20 updates" in captured.out
    assert "training the LSTM" in captured.err and "/20 [" in captured.err  # the progress bar
    assert main(["calculator", "--updates", "5", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_calculator_rejects_negative_updates(capsys):
    assert main(["calculator", "--updates", "-1"]) == 2
    assert "--updates must be >= 0" in capsys.readouterr().err
