"""The forecast application: its baselines on hand-made series, and a quick run that writes the
tables of both series with the LSTM and every baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from carousel.applications import forecast, runner
from carousel.tasks.forecast import ForecastOptions, ForecastTask
from tests.tasks.test_forecast import small

pytest.importorskip("statsmodels")
pytest.importorskip("sklearn")


def test_persistence_repeats_the_last_observed_value():
    values = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0])
    result = forecast.persistence(values, np.array([2, 5]), 3)
    np.testing.assert_array_equal(result, [[1.0, 1.0, 1.0], [5.0, 5.0, 5.0]])


def test_seasonal_persistence_takes_the_same_phase_of_the_last_season():
    values = np.arange(20, dtype=np.float64)  # value = its index
    result = forecast.seasonal_persistence(values, np.array([8, 10]), horizon=6, season=4)
    # origin 8: targets 8..13 take 4, 5, 6, 7, then (a second season ahead) 4, 5
    np.testing.assert_array_equal(result[0], [4, 5, 6, 7, 4, 5])
    np.testing.assert_array_equal(result[1], [6, 7, 8, 9, 6, 7])
    with pytest.raises(ValueError, match="season"):
        forecast.seasonal_persistence(values, np.array([8]), 2, 0)


def test_arima_forecasts_use_only_values_before_each_origin():
    rng = np.random.default_rng(0)
    values = np.zeros(120)
    for t in range(2, 120):  # an AR(2) process
        values[t] = 1.2 * values[t - 1] - 0.5 * values[t - 2] + rng.normal()
    fitted = forecast.fit_arima(values[:100], (2, 0, 0), (0, 0, 0, 0))
    origins = np.array([100, 105, 110])
    result = forecast.arima_forecasts(values, origins, 4, fitted)
    assert result.shape == (3, 4)
    for row, origin in enumerate(origins):
        expected = fitted.apply(values[:origin]).forecast(4)
        np.testing.assert_allclose(result[row], expected, rtol=1e-6, atol=1e-9)
    changed = values.copy()
    changed[105:] += 50.0  # values at and after the origin 105 do not enter its forecast
    np.testing.assert_allclose(
        forecast.arima_forecasts(changed, origins[:2], 4, fitted), result[:2]
    )
    order, seasonal, aics = forecast.choose_arima(
        values[:100], [((1, 0, 0), (0, 0, 0, 0)), ((2, 0, 0), (0, 0, 0, 0))]
    )
    assert order == (2, 0, 0) and seasonal == (0, 0, 0, 0) and len(aics) == 2
    assert forecast.arima_name((1, 1, 1), (0, 1, 1, 12)) == "SARIMA(1,1,1)x(0,1,1,12)"
    assert forecast.arima_name((9, 0, 0), (0, 0, 0, 0)) == "ARIMA(9,0,0)"


def test_ridge_fits_training_windows_and_forecasts_a_linear_series_exactly():
    values = 10 * np.sin(np.arange(200) * 2 * np.pi / 11) + 30  # exactly linear-predictable
    task = small(values, history=12, horizon=4, valid_size=20, test_size=24)
    result = forecast.ridge_forecasts(task, alphas=(1e-6, 100.0))
    assert result["alpha"] == 1e-6 and set(result["validation"]) == {1e-6, 100.0}
    truth = task.targets(task.test_origins)
    np.testing.assert_allclose(result["forecasts"], truth, atol=1e-2)
    changed = values.copy()
    changed[task.test_start :] += 5.0  # test values are inputs of late origins, never fitted on
    task.set_series(changed)
    again = forecast.ridge_forecasts(task, alphas=(1e-6, 100.0))
    np.testing.assert_allclose(again["forecasts"][0], result["forecasts"][0], atol=1e-9)


def test_default_configuration():
    settings = forecast.config(quick=False)
    assert settings.task == "forecast" and settings.task_options["series"] == "sunspots"
    assert settings.model.num_layers == 1 and settings.model.hidden_size == 64
    assert settings.optim.optimizer == "adam" and settings.optim.lr == 3e-3
    assert settings.optim.clip_norm == 1.0 and settings.train.batch_size == 32
    assert forecast.config(quick=True).train.steps < 10


def test_quick_run_writes_both_series_with_every_baseline(tmp_path):
    out = tmp_path / "out"
    report = runner.run_application(forecast, out, quick=True, quiet=True)
    names = list(report.rows)
    assert names[0].startswith("LSTM") and names[1] == "persistence (last value)"
    assert names[2].startswith("linear autoregression") and names[3].startswith("ARIMA(")
    for values in report.rows.values():
        assert {"mae_h1", "mae_h10", "mae_last", "mae", "rmse", "loss"} <= set(values)
        assert values["mae_last"] == values["mae_h10"]
    co2 = json.loads((out / "results-co2.json").read_text())["rows"]
    assert next(iter(co2)).startswith("LSTM") and len(co2) == 5
    assert any(name.startswith("seasonal persistence") for name in co2)
    assert any(name.startswith("SARIMA(") for name in co2)
    assert (out / "run-co2" / "config.json").exists() and (out / "run" / "config.json").exists()
    assert {"results-co2.json", "forecasts.png"} <= set(report.files)
    assert (out / "forecasts.png").stat().st_size > 0
    text = (out / "results.md").read_text()
    assert "| persistence (last value) |" in text and "### CO2 (monthly)" in text
    assert "h=12" in text and "59 missing weeks" in text
    record = json.loads((out / "results.json").read_text())
    assert record["application"] == "forecast" and list(record["rows"]) == names
    # the LSTM row is the task's own test metrics, the same as its forecasts scored like a baseline
    from carousel.train.checkpoint import load_trained_model

    _, model, _ = load_trained_model(out / "run", "best")
    task = ForecastTask(ForecastOptions())
    by_forecasts = task.forecast_metrics(
        forecast.lstm_forecasts(model, task), task.targets(task.test_origins)
    )
    for name in ("mae", "mae_h1", "rmse", "loss"):
        assert by_forecasts[name] == pytest.approx(report.rows[names[0]][name], rel=1e-4)
        assert runner.test_metrics(model, task)[name] == pytest.approx(report.rows[names[0]][name])
