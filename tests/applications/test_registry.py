"""Every application is importable, its task is registered, and its tables have their columns."""

from __future__ import annotations

import pytest

from carousel.applications import APPLICATIONS, get
from carousel.applications.runner import Metric, Report, comparisons, markdown
from carousel.tasks import TASKS


@pytest.mark.parametrize("name", APPLICATIONS)
def test_application_modules_follow_the_runner_interface(name):
    application = get(name)
    assert application.NAME == name
    assert application.METRICS and all(isinstance(m, Metric) for m in application.METRICS)
    for quick in (True, False):
        config = application.config(quick)
        assert config.task in TASKS, f"{name}: task {config.task!r} is not registered"
        config.check()


def test_unknown_application_is_named():
    with pytest.raises(ValueError, match="unknown application 'nope'"):
        get("nope")


def test_markdown_table_and_comparisons():
    metrics = [Metric("bpc", "bits", False, 2), Metric("accuracy", "acc", True, 2)]
    report = Report(
        rows={"LSTM": {"bpc": 1.5, "accuracy": 0.6}, "n-gram": {"bpc": 1.7, "accuracy": 0.7}},
        notes=["a note"],
    )
    text = markdown("Title", metrics, report)
    assert "| LSTM | 1.50 | 0.60 |" in text and "| n-gram | 1.70 | 0.70 |" in text
    assert "- LSTM beats n-gram on bits: 1.50 vs 1.70" in text
    assert "- LSTM does not beat n-gram on acc: 0.60 vs 0.70" in text
    assert text.rstrip().endswith("a note")


def test_each_of_our_models_is_compared_with_the_baselines_only():
    metrics = [Metric("accuracy", "acc", True, 2)]
    rows = {"LSTM a": {"accuracy": 0.9}, "LSTM b": {"accuracy": 0.8}, "rule": {"accuracy": 0.85}}
    assert comparisons(metrics, rows, ours=2) == [
        "LSTM a beats rule on acc: 0.90 vs 0.85",
        "LSTM b does not beat rule on acc: 0.80 vs 0.85",
    ]
