"""The character-level language model application: the Kneser-Ney baseline and a quick run."""

from __future__ import annotations

import json
import math

import pytest

from carousel.applications.charlm import KneserNey, ngram_baseline
from carousel.cli import main
from carousel.tasks import build_task
from carousel.tasks.charlm import default_text


def test_kneser_ney_unigram_by_hand():
    model = KneserNey("aab", 1, ["a", "b", "c"])
    # (max(N(c) - D, 0) + D T / V) / N with N = 3 characters, T = 2 distinct, D = 0.75
    assert model.probability("", "a") == pytest.approx((2 - 0.75 + 0.75 * 2 / 3) / 3)
    assert model.probability("zz", "b") == pytest.approx((1 - 0.75 + 0.75 * 2 / 3) / 3)
    assert model.probability("", "c") == pytest.approx(0.75 * 2 / 3 / 3)


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_kneser_ney_distributions_sum_to_one(order):
    text = "the cat sat on the mat; the dog sat on the log. " * 3 + "a quick fox"
    vocabulary = [*sorted(set(text)), "#"]  # '#' never occurs: it still gets a probability
    model = KneserNey(text, order, vocabulary)
    for context in ["", "t", "th", "the ", "xq", "on the m", "zzzz"]:
        probabilities = [model.probability(context, char) for char in vocabulary]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-12)
        assert min(probabilities) > 0
        assert model.distribution(context).tolist() == pytest.approx(probabilities, abs=1e-15)
    if order > 1:
        assert model.probability("the c", "a") > 0.5  # a context seen with one continuation
        assert model.most_likely("the c") == "a"


def test_kneser_ney_lower_orders_use_continuation_counts():
    # 'b' follows 'a' often but only ever after 'a'; 'c' follows three different characters.
    text = "ab" * 10 + "xc yc zc"
    model = KneserNey(text, 2, sorted(set(text)))
    unigram = model.counts[0][""]
    assert unigram["b"] == 1 and unigram["c"] == 3  # distinct left neighbours, not raw counts
    assert model.counts[1]["a"]["b"] == 10  # the highest order keeps raw counts


def test_baseline_picks_the_order_best_on_validation_and_scores_the_test_text():
    task = build_task("charlm", {"max_chars": 30_000, "test_fraction": 0.1, "eval_streams": 4})
    order, metrics, notes = ngram_baseline(task, orders=range(1, 5))
    tried = [
        float(part.split(": ")[1]) for part in notes[0].split(": ", 1)[1].rstrip(".").split(", ")
    ]
    assert order == 1 + min(range(len(tried)), key=tried.__getitem__)
    assert 1.0 < metrics["bpc"] < math.log2(len(task.vocabulary))
    assert 0 < metrics["accuracy"] < 1
    # scoring by hand: the same streams, each character from the characters before it in its stream
    model = KneserNey(task.decode(task.train_ids), order, task.vocabulary)
    streams = task.chunks(task.test_ids, 4)
    bits = chars = 0
    for row in streams:
        text = task.decode(row)
        for end in range(1, len(text)):
            bits -= math.log2(model.probability(text[max(0, end - order + 1) : end], text[end]))
            chars += 1
    assert metrics["bpc"] == pytest.approx(bits / chars)


def test_test_text_is_the_final_fraction_and_apart_from_training():
    task = build_task("charlm", {"max_chars": 20_000, "test_fraction": 0.1})
    text = default_text()[:20_000]
    assert task.decode(task.train_ids) == text[:16_000]
    assert task.decode(task.valid_ids) == text[16_000:18_000]
    assert task.decode(task.test_ids) == text[18_000:]
    test_chars = sum(int(batch.mask.sum()) for batch in task.test_batches())
    assert test_chars == 8 * ((2000 - 1) // 8)  # eval_streams = 8 streams of the test text
    assert task.test_batches() is not task.eval_batches()
    without = build_task("charlm", {"max_chars": 20_000})
    assert without.test_batches() is without.eval_batches()  # no test set: the validation set
    with pytest.raises(ValueError, match="test_fraction"):
        build_task("charlm", {"test_fraction": 0.95})


def test_quick_run_writes_the_table_and_a_sample(tmp_path, capsys):
    out = tmp_path / "charlm"
    assert main(["app", "charlm", "--quick", "--out", str(out), "--quiet"]) == 0
    record = json.loads((out / "results.json").read_text())
    lstm, ngram = record["rows"]
    assert lstm.startswith("LSTM") and ngram.startswith("Kneser-Ney")
    assert all(0 < record["rows"][name]["bpc"] < 8 for name in (lstm, ngram))
    table = (out / "results.md").read_text()
    assert "| test bits per character |" in table and "Kneser-Ney" in table
    assert (out / "sample.txt").read_text().startswith("The for statement")
    assert (out / "run" / "vocab.json").exists()
    capsys.readouterr()
    # carousel eval scores the same held-out test text as the table
    assert main(["eval", str(out / "run"), "--checkpoint", "best", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bpc"] == pytest.approx(record["rows"][lstm]["bpc"])
    assert main(["sample", str(out / "run"), "--prime", "The ", "--length", "20"]) == 0
    assert capsys.readouterr().out.startswith("The ")
    assert main(["app", "charlm", "--quick", "--out", str(out), "--quiet"]) == 2  # not empty


def test_any_text_file_with_data(tmp_path, capsys):
    text = tmp_path / "poem.txt"
    text.write_text("The for statement is used to iterate over a sequence.\n" * 400)
    out = tmp_path / "own"
    assert (
        main(["app", "charlm", "--quick", "--data", str(text), "--out", str(out), "--quiet"]) == 0
    )
    record = json.loads((out / "results.json").read_text())
    assert record["config"]["task_options"]["text"] == str(text)
    assert json.loads((out / "run" / "vocab.json").read_text()) == sorted(set(text.read_text()))
    assert main(["app", "digits", "--data", str(text), "--out", str(tmp_path / "x")]) == 2
    assert "--data applies to the charlm application only" in capsys.readouterr().err
    missing = ["app", "charlm", "--quick", "--data", str(tmp_path / "nope.txt"), "--out"]
    assert main([*missing, str(tmp_path / "y"), "--quiet"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_regularisers_from_the_command_line(tmp_path):
    text = tmp_path / "poem.txt"
    text.write_text("The for statement is used to iterate over a sequence.\n" * 400)
    out = tmp_path / "awd"
    flags = ["--weight-drop", "0.25", "--recurrent-dropout", "0.1", "--zoneout", "0.1,0.05"]
    command = ["app", "charlm", "--quick", "--data", str(text), "--out", str(out), "--quiet"]
    assert main([*command, *flags]) == 0
    model = json.loads((out / "results.json").read_text())["config"]["model"]
    assert (model["weight_drop"], model["recurrent_dropout"], model["zoneout"]) == (
        0.25, 0.1, "0.1,0.05",
    )  # fmt: skip
    from carousel.train.checkpoint import load_trained_model

    _, trained, _ = load_trained_model(out / "run", "best")
    layers = [m for m in trained.modules() if hasattr(m, "regularizers")]
    assert layers and layers[0].regularizers.describe() == (
        "recurrent_dropout=0.1, zoneout=(0.1, 0.05), weight_drop=0.25"
    )
