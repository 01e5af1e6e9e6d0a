"""The tagging application: its configurations, the majority baselines, the rendered example and
a quick run end to end."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from carousel.applications import get, tagging
from carousel.applications.runner import run_application
from carousel.tasks.base import Batch
from carousel.tasks.pytokens import TAGS, PyTokensOptions, PyTokensTask
from tests.tasks.test_pytokens import _write_sources


def test_configurations():
    default, quick = tagging.config(False), tagging.config(True)
    assert get("tagging") is tagging
    for config in (default, quick):
        assert config.task == "pytokens" and config.model.bidirectional
    assert default.model.hidden_size == 64 and default.model.embedding_size == 32
    assert default.optim.optimizer == "adam" and default.optim.clip_norm > 0
    assert default.train.batch_size == 32 and default.task_options["seq_len"] == 256
    assert quick.train.steps < 50 and quick.task_options["max_files"] <= 10


def test_windows_are_centred_and_stop_at_the_chunk_edges():
    x = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    batch = Batch(x=x, y=torch.zeros_like(x), mask=mask)
    assert tagging.windows(batch, 1, 9).tolist() == [[1], [2], [3], [4], [5]]
    assert tagging.windows(batch, 3, 9).tolist() == [
        [9, 1, 2],
        [1, 2, 3],
        [2, 3, 9],
        [9, 4, 5],
        [4, 5, 9],
    ]
    with pytest.raises(ValueError, match="odd"):
        tagging.windows(batch, 2, 9)


def _batch(ids: list[int], tags: list[int]) -> Batch:
    x, y = torch.tensor([ids]), torch.tensor([tags])
    return Batch(x=x, y=y, mask=torch.ones_like(x, dtype=torch.bool))


def test_majority_baseline_on_a_hand_made_example():
    # character 1 is tag 2 twice and tag 0 once; character 2 is tag 1; character 3 ties 0 and 2;
    # overall tag 2 is the most frequent (4 of 9), then tag 0 (3 of 9)
    train = [_batch([1, 1, 1, 2, 2], [2, 2, 0, 1, 1]), _batch([3, 3, 4, 4], [2, 0, 2, 0])]
    model = tagging.WindowMajority(train, vocab_size=6, num_tags=3, widths=(1, 3))
    torch.testing.assert_close(model.overall, torch.tensor([3, 2, 4], dtype=torch.float64) / 9)
    test = [_batch([1, 2, 3, 5], [0, 0, 0, 0])]  # 5 never occurs in training
    single = model.probabilities(test, width=1)
    torch.testing.assert_close(single.sum(1), torch.ones(4, dtype=torch.float64))
    assert single.argmax(1).tolist() == [2, 1, 2, 2]  # the tie of 3 goes to the overall favourite
    torch.testing.assert_close(single[0], (torch.tensor([1, 0, 2]) + model.overall) / 4)
    torch.testing.assert_close(single[3], model.overall)  # unknown: the overall frequencies
    # the window (boundary, 1, 1) was seen once, tagged 2; (2, 3, 5) never: falls back
    window = model.probabilities([_batch([1, 1, 2, 3, 5], [0] * 5)])
    torch.testing.assert_close(window[0], (torch.tensor([0, 0, 1]) + single[0]) / 2)
    torch.testing.assert_close(window[3], single[2])
    fitted = model.probabilities(train, width=3)  # on the training chunks: their own majority
    assert fitted.argmax(1).tolist() == [2, 2, 0, 1, 1, 2, 0, 2, 0]


def test_example_line_has_the_most_distinct_tags():
    text = "x = 1\n" + "a" * 45 + "\n" + 'def f(x):  return "long string here", 1  # note\n'
    tags = torch.zeros(len(text), dtype=torch.long)
    start = text.index("def")
    tags[start : start + 3] = 2
    tags[start + 4] = 1
    tags[text.index("#")] = 6
    assert tagging.example_line(text, tags) == (start, len(text))


def test_worst_files_note_ranks_the_test_files_by_accuracy(tmp_path):
    _write_sources(tmp_path)
    task = PyTokensTask(
        PyTokensOptions(source_dir=str(tmp_path), min_bytes=50, max_bytes=1500, seq_len=16)
    )
    first, second = task.files["test"]
    predicted = torch.cat([first.tags, second.tags])
    predicted[len(first.text) : len(first.text) + 10] = (second.tags[:10] + 1) % len(TAGS)
    note = tagging.worst_files_note(task, predicted, count=2)
    wrong = 1 - 10 / len(second.text)
    assert note == (
        f"The test files with the lowest LSTM accuracy: `{second.name}` {wrong:.3f} "
        f"({len(second.text):,} characters), `{first.name}` 1.000 ({len(first.text):,} characters)."
    )


def test_quick_run_writes_the_lstm_and_the_baselines(tmp_path):
    report = run_application(tagging, tmp_path / "out", quick=True, quiet=True)
    names = list(report.rows)
    assert names[0].startswith("LSTM (bidirectional, 16 cells)")
    assert names[1:] == ["majority tag per character", "majority tag per 5-character window"]
    for values in report.rows.values():
        assert 0 <= values["accuracy"] <= 1 and 0 <= values["macro_f1"] <= 1
        assert values["loss"] > 0 and not math.isnan(values["loss"])
    out = tmp_path / "out"
    text = (out / "results.md").read_text(encoding="utf-8")
    assert all(f"| {name} |" in text for name in names)
    rendered = text[text.index("```\n") + 4 : text.rindex("\n```")].splitlines()
    assert [line.split("  ")[0].strip() for line in rendered] == ["source", "true", *names]
    widths = {len(line) for line in rendered}
    assert len(widths) == 1, "one tag letter under every character"
    with open(out / "results.csv", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["model", "accuracy", "macro_f1", "loss"] and len(table) == 4
    record = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert record["application"] == "tagging" and record["config"]["task"] == "pytokens"
    assert "tag_f1.png" in report.files and (out / "tag_f1.png").stat().st_size > 1000
    assert json.loads((out / "run" / "vocab.json").read_text(encoding="utf-8"))[0] == "<unk>"
    for tag in TAGS:
        assert f"| {tag} |" in text
    assert "The test files with the lowest LSTM accuracy: `" in text
