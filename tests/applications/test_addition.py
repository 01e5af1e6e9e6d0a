"""The addition application: scoring decoded answers, the decoding plumbing, a quick run."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import carousel.tasks
from carousel.applications import addition
from carousel.applications.runner import run_application
from carousel.tasks.addition_text import (
    DIGIT,
    END,
    AdditionTextOptions,
    AdditionTextTask,
)


def test_score_matches_characters_from_the_left_with_the_end_token():
    answers = ["425"] * 4 + ["7"]
    scores = addition.score(["425", "42", "4250", "524", "17"], answers)
    assert scores["exact"].tolist() == [1, 0, 0, 0, 0]
    # 425</s> against: 425</s> (4), 42</s> (2), 4250</s> (3), 524</s> (2 and </s>), 17</s> (0)
    assert scores["correct"].tolist() == [4, 2, 3, 2, 0]
    assert scores["tokens"].tolist() == [4, 4, 4, 4, 2]
    exact, accuracy = addition.summary(scores)
    assert exact == pytest.approx(0.2) and accuracy == pytest.approx(11 / 18)
    with pytest.raises(ValueError, match="as many"):
        addition.score(["1"], [])


class _Oracle(nn.Module):
    """Reads each source back to its problem and writes the sum, ``wrong_long`` adds 1 to sums
    of 4 or more digits."""

    def __init__(self, task: AdditionTextTask, wrong_long: bool = False) -> None:
        super().__init__()
        self.task, self.wrong_long = task, wrong_long
        self.weight = nn.Parameter(torch.zeros(1))

    def greedy(self, source, mask, max_length=50):
        rows = []
        for ids, row_mask in zip(source, mask, strict=True):
            text = self.task.decode(ids[row_mask])
            if self.task.options.reverse_source:
                text = text[::-1]
            left, right = text.split("+")
            total = int(left) + int(right)
            if self.wrong_long and total >= 1000:
                total += 1
            rows.append([DIGIT + int(c) for c in str(total)] + [END])
        width = max(map(len, rows))
        assert width <= max_length
        return torch.tensor([row + [END] * (width - len(row)) for row in rows])

    def beam_search(self, source, mask, beam_width=4, max_length=50):
        tokens = self.greedy(source, mask, max_length)
        return tokens, torch.zeros(len(tokens))


@pytest.mark.parametrize("reverse", [False, True])
def test_decode_reads_the_fixed_problems_in_order(reverse):
    task = AdditionTextTask(
        AdditionTextOptions(max_digits=2, test_size=80, long_size=30, reverse_source=reverse)
    )
    a, b = task.problems("test")
    assert addition.decode(_Oracle(task), task, "test") == [str(s) for s in (a + b).tolist()]
    long_a, long_b = task.problems("long")
    answers = [str(s) for s in (long_a + long_b).tolist()]
    decoded = addition.decode(_Oracle(task, wrong_long=True), task, "long", beam_width=4)
    wrong = [answer for answer in answers if len(answer) == 4]
    assert addition.summary(addition.score(decoded, answers))[0] == pytest.approx(
        1 - len(wrong) / len(answers)
    )


def _has_carry(x: int, y: int) -> bool:
    while x or y:
        if x % 10 + y % 10 >= 10:
            return True
        x, y = x // 10, y // 10
    return False


def test_quick_run_writes_the_table_with_greedy_beam_and_the_rule(tmp_path):
    out = tmp_path / "addition"
    report = run_application(addition, out, quick=True, quiet=True)
    greedy, beam, rule = report.rows
    assert greedy.startswith("LSTM seq2seq") and greedy.endswith("greedy")
    assert beam.endswith(f"beam {addition.BEAM_WIDTH}")
    assert rule.startswith("digit-wise sum without carries")
    for name in report.rows:
        for metric in ("exact", "exact_long", "accuracy", "accuracy_long"):
            assert 0 <= report.rows[name][metric] <= 1
    assert report.rows[greedy]["loss"] > 0 and "loss" not in report.rows[rule]
    # the rule is exact exactly on the problems that need no carry
    task = carousel.tasks.build_task("addition_text", addition.config(True).task_options)
    for split, key in (("test", "exact"), ("long", "exact_long")):
        a, b = task.problems(split)
        no_carry = [not _has_carry(x, y) for x, y in zip(a.tolist(), b.tolist(), strict=True)]
        assert report.rows[rule][key] == pytest.approx(sum(no_carry) / len(no_carry))
    record = json.loads((out / "results.json").read_text())
    assert list(record["rows"]) == [greedy, beam, rule]
    table = (out / "results.md").read_text()
    assert "| exact match (test) |" in table and "Sample decodings" in table
    assert (out / "exact_by_digits.png").stat().st_size > 1000
    assert report.files == ["exact_by_digits.png"]
    assert json.loads((out / "run" / "vocab.json").read_text())[:2] == ["<s>", "</s>"]
