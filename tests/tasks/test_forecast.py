"""Forecasting statsmodels' series: the data, the split in time, the windows and the metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from carousel.tasks import build_task
from carousel.tasks.forecast import ForecastOptions, ForecastTask, load_series

pytest.importorskip("statsmodels")


def small(values, **options) -> ForecastTask:
    """A task on the hand-made series ``values``."""
    task = ForecastTask(ForecastOptions(**options))
    task.set_series(np.asarray(values, dtype=np.float64))
    return task


def test_sunspots_are_statsmodels_yearly_series():
    from statsmodels.datasets import sunspots

    values, times, labels = load_series("sunspots")
    data = sunspots.load_pandas().data
    assert len(values) == 309 and labels[0] == "1700" and labels[-1] == "2008"
    np.testing.assert_array_equal(values, data["SUNACTIVITY"].to_numpy())
    np.testing.assert_array_equal(times, np.arange(1700, 2009))


def test_co2_missing_weeks_are_interpolated_and_months_averaged():
    from statsmodels.datasets import co2

    raw = co2.load_pandas().data["co2"]
    weekly, _, weekly_labels = load_series("co2", "weekly")
    assert len(weekly) == 2284 and np.isfinite(weekly).all()
    missing = np.flatnonzero(raw.isna().to_numpy())
    assert len(missing) == 59
    observed = np.flatnonzero(~raw.isna().to_numpy())
    np.testing.assert_allclose(
        weekly[missing], np.interp(missing, observed, raw.to_numpy()[observed])
    )
    np.testing.assert_array_equal(weekly[observed], raw.to_numpy()[observed])
    assert weekly_labels[0] == "1958-03-29"
    monthly, times, labels = load_series("co2", "monthly")
    assert len(monthly) == 526 and labels[0] == "1958-03" and labels[-1] == "2001-12"
    april = [i for i, label in enumerate(weekly_labels) if label.startswith("1958-04")]
    assert monthly[1] == pytest.approx(weekly[april].mean()) and len(april) == 4
    assert np.all(np.diff(times) > 0)


def test_blocks_are_disjoint_in_time_and_targets_stay_in_their_block():
    task = ForecastTask(ForecastOptions())  # sunspots: test 1969-2008, validation 1939-1968
    total = len(task.values)
    assert (task.train_end, task.test_start) == (total - 70, total - 40)
    assert task.labels[task.test_start] == "1969" and task.labels[task.train_end] == "1939"
    blocks = {
        "train": (task.train_origins, 0, task.train_end),
        "valid": (task.valid_origins, task.train_end, task.test_start),
        "test": (task.test_origins, task.test_start, total),
    }
    for origins, start, stop in blocks.values():
        assert int(origins.min()) >= start and int(origins.max()) + task.horizon <= stop
    assert int(task.train_origins.min()) == task.history  # inputs of training stay in training
    assert len(task.test_origins) == task.test_size - task.horizon + 1 == 31
    assert len(task.valid_origins) == task.valid_size - task.horizon + 1
    # the first test origin reads the validation block: past observations
    assert int(task.test_origins[0]) - task.history < task.test_start


def test_scaling_uses_training_statistics_only():
    values = np.sin(np.arange(120) / 3.0) * 10 + 50
    task = small(values, history=6, horizon=3, valid_size=10, test_size=12)
    assert task.mean == pytest.approx(values[:98].mean())
    assert task.std == pytest.approx(values[:98].std())
    batches = [task.train_batch(i, 8) for i in range(3)]
    changed = values.copy()
    changed[98:] += 1000  # validation and test values never reach the statistics or training
    task.set_series(changed)
    assert task.mean == pytest.approx(values[:98].mean())
    for i, batch in enumerate(batches):
        again = task.train_batch(i, 8)
        assert torch.equal(again.x, batch.x) and torch.equal(again.y, batch.y)


@pytest.mark.parametrize("scaling", ["change", "level"])
def test_windows_are_the_past_and_the_next_values(scaling):
    values = np.arange(100, dtype=np.float64) ** 1.5
    task = small(values, history=5, horizon=3, valid_size=8, test_size=10, scaling=scaling)
    origins = torch.tensor([5, 40, 97])
    batch = task.windows(origins)
    assert batch.x.shape == (3, 5, 1) and batch.y.shape == (3, 3) and batch.mask.all()
    z = (values - task.mean) / task.std
    offset = z[origins - 1] if scaling == "change" else np.zeros(3)
    for row, t in enumerate(origins.tolist()):
        np.testing.assert_allclose(batch.x[row, :, 0], z[t - 5 : t] - offset[row], rtol=1e-5)
        np.testing.assert_allclose(batch.y[row], z[t : t + 3] - offset[row], rtol=1e-5)
    if scaling == "change":
        assert torch.all(batch.x[:, -1, 0] == 0)
    # the targets mapped back to the series' units are the observed values
    np.testing.assert_allclose(task.to_units(batch.y, origins), task.targets(origins), rtol=1e-5)
    np.testing.assert_array_equal(task.targets(origins)[1], values[40:43])


def test_train_batches_are_seeded_training_windows():
    task = small(np.cos(np.arange(80) / 2.0), history=4, horizon=2, valid_size=6, test_size=8)
    first, again = task.train_batch(3, 16), task.train_batch(3, 16)
    assert torch.equal(first.x, again.x) and not torch.equal(first.x, task.train_batch(4, 16).x)
    other_seed = ForecastTask(ForecastOptions(history=4, horizon=2, valid_size=6, test_size=8), 1)
    other_seed.set_series(task.values)
    assert not torch.equal(first.x, other_seed.train_batch(3, 16).x)
    windows = task.windows(task.train_origins)
    rows = {tuple(row.tolist()) for row in windows.y}
    assert all(tuple(row.tolist()) in rows for row in first.y), "only training windows"
    assert task.eval_batches()[0].size == len(task.valid_origins)
    assert task.test_batches()[0].size == len(task.test_origins) == 7


def test_metrics_in_the_series_units_per_horizon():
    values = np.linspace(0, 30, 60)
    task = small(values, history=4, horizon=2, valid_size=5, test_size=6)
    batch = task.test_batches()[0]  # 5 origins
    output = batch.y + torch.tensor([[0.1, -0.3]])  # scaled errors 0.1 and -0.3
    loss = task.loss(output, batch)
    assert float(loss) == pytest.approx((0.1**2 + 0.3**2) / 2, rel=1e-5)
    scores = task.scores(output, batch)
    metrics = task.metrics({k: float(v.sum()) for k, v in scores.items()}, batch.size)
    assert metrics["mae_h1"] == pytest.approx(0.1 * task.std, rel=1e-5)
    assert metrics["mae_h2"] == pytest.approx(0.3 * task.std, rel=1e-5)
    assert metrics["mae"] == pytest.approx(0.2 * task.std, rel=1e-5)
    assert metrics["rmse"] == pytest.approx(np.sqrt((0.01 + 0.09) / 2) * task.std, rel=1e-5)
    assert metrics["loss"] == pytest.approx(float(loss), rel=1e-5)
    forecasts = task.to_units(output, task.test_origins)
    by_forecasts = task.forecast_metrics(forecasts, task.targets(task.test_origins))
    assert by_forecasts.keys() == metrics.keys()
    for name, value in metrics.items():
        assert by_forecasts[name] == pytest.approx(value, rel=1e-4)
    with pytest.raises(ValueError, match="forecasts and truth"):
        task.forecast_metrics(forecasts[:, :1], task.targets(task.test_origins)[:, :1])


def test_series_defaults_and_options():
    co2 = build_task("forecast", {"series": "co2"})
    assert (co2.history, co2.horizon, co2.season, co2.units) == (48, 12, 12, "ppm")
    assert co2.labels[co2.test_start] == "1997-01" and len(co2.test_origins) == 49
    assert co2.io.head == "regressor" and co2.io.output_size == 12 and co2.io.input_size == 1
    sunspots = build_task("forecast", {"horizon": 5, "test_size": 30})
    assert sunspots.horizon == 5 and sunspots.io.output_size == 5
    assert len(sunspots.test_origins) == 26


def test_bad_options_name_the_option():
    with pytest.raises(ValueError, match="series"):
        build_task("forecast", {"series": "tides"})
    with pytest.raises(ValueError, match="history"):
        build_task("forecast", {"history": -1})
    with pytest.raises(ValueError, match="test_size"):
        build_task("forecast", {"test_size": 5})  # shorter than the horizon of 10
    with pytest.raises(ValueError, match="valid_size"):
        build_task("forecast", {"test_size": 100, "valid_size": 200})
    task = ForecastTask(ForecastOptions(history=4, horizon=2, valid_size=5, test_size=5))
    with pytest.raises(ValueError, match="constant"):
        task.set_series(np.ones(40))
