"""The digits application: its metrics and baseline on hand-made data, and a quick run that
writes the table with both LSTMs and logistic regression."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from carousel.applications import digits
from carousel.applications.runner import run_application

pytest.importorskip("sklearn")


def test_classification_metrics_on_hand_made_probabilities():
    probabilities = np.full((4, 10), 0.05)
    probabilities[0, 3] = probabilities[1, 7] = probabilities[2, 0] = 0.55
    probabilities[3, 1] = 0.55  # label 2: wrong, its probability 0.05
    metrics = digits.classification_metrics(probabilities, np.array([3, 7, 0, 2]))
    assert metrics["accuracy"] == 0.75 and metrics["errors"] == 1
    assert metrics["loss"] == pytest.approx(-(3 * math.log(0.55) + math.log(0.05)) / 4)
    with pytest.raises(ValueError, match="probabilities"):
        digits.classification_metrics(probabilities[:, :9], np.array([3, 7, 0, 2]))


def test_confusion_and_top_confusions():
    labels = np.array([1, 1, 1, 2, 8, 8, 8])
    predictions = np.array([1, 7, 7, 2, 1, 1, 3])
    matrix = digits.confusion(labels, predictions)
    assert matrix.sum() == 7 and matrix[1, 7] == 2 and matrix[8, 1] == 2 and matrix[2, 2] == 1
    assert digits.top_confusions(labels, predictions) == "1 as 7 (2), 8 as 1 (2), 8 as 3 (1)"
    assert digits.top_confusions(labels, labels) == "none"


def test_logistic_regression_fits_on_training_data_and_picks_c_on_validation():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 6)) * 3

    def split(count):
        labels = np.arange(count) % 10
        return centres[labels] + rng.normal(size=(count, 6)), labels

    train, valid, test = split(200), split(100), split(100)
    result = digits.logistic_regression(train, valid, test, grid=(1e-4, 1.0))
    assert result["C"] == 1.0, "the tiny C underfits the validation set"
    assert result["validation"][1.0]["accuracy"] > result["validation"][1e-4]["accuracy"]
    fitted = LogisticRegression(C=1.0, max_iter=digits.MAX_ITER).fit(*train)
    np.testing.assert_allclose(result["probabilities"], fitted.predict_proba(test[0]), atol=1e-6)
    assert result["metrics"]["accuracy"] == pytest.approx(fitted.score(*test))
    shuffled = (test[0], np.roll(test[1], 1))  # test labels never reach the fit
    again = digits.logistic_regression(train, valid, shuffled, grid=(1e-4, 1.0))
    np.testing.assert_allclose(again["probabilities"], result["probabilities"])
    assert again["metrics"]["accuracy"] < result["metrics"]["accuracy"]


def test_default_configuration():
    settings = digits.config(quick=False)
    assert settings.task == "digits" and settings.task_options["order"] == "rows"
    assert settings.task_options["max_images"] == 0
    assert settings.model.num_layers == 1 and settings.model.hidden_size == 128
    assert settings.optim.optimizer == "adam" and settings.optim.clip_norm == 1.0
    assert digits.config(quick=True).task_options["max_images"] > 0


def test_quick_run_writes_both_lstms_and_the_baseline(tmp_path):
    report = run_application(digits, tmp_path / "out", quick=True, quiet=True)
    names = list(report.rows)
    assert len(names) == 3
    assert names[0].startswith("LSTM, rows order") and names[1].startswith("LSTM, pixel order")
    assert names[2].startswith("logistic regression")
    test_count = 64  # max_images of the quick configuration
    for values in report.rows.values():
        assert values["errors"] == round((1 - values["accuracy"]) * test_count)
        assert math.isfinite(values["loss"])
    out = tmp_path / "out"
    record = json.loads((out / "results.json").read_text())
    assert list(record["rows"]) == names
    text = (out / "results.md").read_text()
    assert all(f"| {name} |" in text for name in names)
    assert "C=" in text and "run-pixels" in text
    for name in ("confusion.png", "misclassified.png"):
        assert name in report.files and (out / name).stat().st_size > 1000
    main = json.loads((out / "run" / "config.json").read_text())
    pixels = json.loads((out / "run-pixels" / "config.json").read_text())
    assert pixels["task_options"] == {**main["task_options"], "order": "pixels"}
    assert {k: v for k, v in pixels.items() if k != "task_options"} == {
        k: v for k, v in main.items() if k != "task_options"
    }, "the pixel-order LSTM has the same settings"
