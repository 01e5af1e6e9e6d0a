r"""Multi-step forecasting of a univariate time series bundled with statsmodels.

Series (option ``series``):

- ``sunspots``: yearly mean sunspot numbers 1700-2008, 309 values
  (``statsmodels.datasets.sunspots``, column ``SUNACTIVITY``).
- ``co2``: the Mauna Loa atmospheric CO2 record in ppm, weekly from 1958-03-29 to 2001-12-29,
  2284 values (``statsmodels.datasets.co2``). Its 59 missing weeks are filled by linear
  interpolation between the neighbouring observed weeks. With ``co2_frequency="monthly"`` (the
  default) the filled weekly series is then averaged per calendar month: 526 months, 1958-03 to
  2001-12 (March 1958 holds a single week), which keeps the windows short.

Split, fixed in time: the last ``test_size`` values are the held-out test tail, the
``valid_size`` values before it the validation block, everything before trains. The mean
:math:`\mu` and standard deviation :math:`\sigma` that scale the series,
:math:`z = (v - \mu) / \sigma`, come from the training part only.

Examples: a forecast origin ``t`` reads the ``history`` values ``v[t - history : t]`` and
predicts the next ``horizon`` values ``v[t : t + horizon]`` at once (direct multi-step
forecast: a ``"regressor"`` head with ``horizon`` outputs). Training origins have inputs and
targets inside the training part; validation and test origins have all their targets inside
their own block, their inputs may reach back into earlier blocks (past observations). The test
set is thus the ``test_size - horizon + 1`` rolling origins of the test tail, and no training
or validation target lies in it.

Scaling (option ``scaling``): ``change`` (the default): inputs and targets are
:math:`z - z_{t-1}`, relative to the last observed value, so the model forecasts changes and
never sees the level (CO2's test tail lies above every training value; sunspot cycles of the
test tail are taller than most training ones); ``level``: inputs and targets are :math:`z`.
Errors are the same in both forms (the offset :math:`z_{t-1}` is known at the origin).

Shapes: ``x`` ``(B, history, 1)``, ``y`` ``(B, horizon)``, ``mask`` ``(B, history)`` all True.

Metrics: ``loss``, the mean squared error of the scaled values over origins and horizons;
``mae`` and ``rmse`` over all horizons, ``mae_h{k}`` and ``rmse_h{k}`` at horizon ``k``
(1-based); these in the series' own units (sunspot number, ppm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from carousel.options import option
from carousel.tasks.base import Batch, ModelIO, Task, generator

SERIES = ("sunspots", "co2")
FREQUENCIES = ("monthly", "weekly")
SCALINGS = ("change", "level")
DEFAULTS = {
    # (history, horizon, valid_size, test_size, season), in steps of the series
    "sunspots": (30, 10, 30, 40, 0),
    "co2-monthly": (48, 12, 48, 60, 12),
    "co2-weekly": (156, 52, 156, 208, 52),
}
"""The values of the options left at 0, and the seasonal period (0: none), per series."""

UNITS = {"sunspots": "sunspot number", "co2": "ppm"}
INSTALL = "pip install 'carousel-lstm[apps]'"


@dataclass(frozen=True)
class ForecastOptions:
    """Options of time-series forecasting."""

    series: str = option("sunspots", "sunspots (yearly) or co2 (Mauna Loa, weekly)", choices=SERIES)
    co2_frequency: str = option(
        "monthly",
        "co2: monthly means of the weekly series, or the weekly values",
        choices=FREQUENCIES,
    )
    history: int = option(0, "past values the model reads (0: 30 years; 48 months of co2)")
    horizon: int = option(0, "values forecast at once (0: 10 years; 12 months of co2)")
    valid_size: int = option(0, "values in the validation block (0: 30 years; 48 months of co2)")
    test_size: int = option(0, "values in the held-out test tail (0: 40 years; 60 months of co2)")
    scaling: str = option(
        "change",
        "change (relative to the last observed value) or level (scaled values)",
        choices=SCALINGS,
    )


def load_series(
    series: str, co2_frequency: str = "monthly"
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A bundled series as ``(values, times, labels)``: ``(N,)`` float64 values, ``(N,)``
    float64 times in decimal years, and each value's date (``"1700"``, ``"1958-03"``,
    ``"1958-03-29"``).

    Raises:
        ValueError: an unknown ``series`` or ``co2_frequency``.
        ImportError: statsmodels is not installed.
    """
    if series not in SERIES:
        raise ValueError(f"forecast option series must be one of {SERIES}; got {series!r}")
    if co2_frequency not in FREQUENCIES:
        raise ValueError(
            f"forecast option co2_frequency must be one of {FREQUENCIES}; got {co2_frequency!r}"
        )
    try:
        from statsmodels.datasets import co2, sunspots
    except ImportError as error:
        raise ImportError(f"the forecast task reads statsmodels' datasets: {INSTALL}") from error
    if series == "sunspots":
        data = sunspots.load_pandas().data
        years = np.array(data["YEAR"], np.float64)
        labels = [f"{year:.0f}" for year in years]
        return np.array(data["SUNACTIVITY"], np.float64), years, labels
    weekly = co2.load_pandas().data["co2"].interpolate(method="linear")
    frame = weekly.resample("MS").mean() if co2_frequency == "monthly" else weekly
    index = frame.index
    days = np.where(index.is_leap_year, 366.0, 365.0)
    times = np.asarray(index.year + (index.day_of_year - 1) / days, np.float64)
    labels = [str(date.date())[: 7 if co2_frequency == "monthly" else 10] for date in index]
    return np.array(frame, np.float64), times, labels


class ForecastTask(Task):
    """Direct multi-step forecasting of a bundled series; see the module docstring.

    Attributes:
        values: ``(N,)`` float64, the series in its own units.
        times: ``(N,)`` float64, decimal years.
        labels: the date of each value, text.
        history, horizon, valid_size, test_size: the options, series defaults filled in.
        season: the seasonal period in steps (0: none), for seasonal baselines.
        units: the unit of the values.
        mean, std: the training part's statistics that scale the series.
        train_end, test_start: the validation block is ``[train_end, test_start)``, the test
            tail ``[test_start, N)``, the training part ``[0, train_end)``.
        train_origins, valid_origins, test_origins: ``(n,)`` int64, the forecast origins.
    """

    name = "forecast"
    Options = ForecastOptions

    def configure(self, options: ForecastOptions) -> None:
        for name in ("history", "horizon", "valid_size", "test_size"):
            if getattr(options, name) < 0:
                raise ValueError(
                    f"forecast option {name} must be >= 0 (0: the series' default); "
                    f"got {getattr(options, name)}"
                )
        key = options.series if options.series == "sunspots" else f"co2-{options.co2_frequency}"
        history, horizon, valid_size, test_size, self.season = DEFAULTS[key]
        self.history = options.history or history
        self.horizon = options.horizon or horizon
        self.valid_size = options.valid_size or valid_size
        self.test_size = options.test_size or test_size
        self.scaling = options.scaling
        self.units = UNITS[options.series]
        self.io = ModelIO("regressor", 1, self.horizon)
        self.set_series(*load_series(options.series, options.co2_frequency))

    def set_series(
        self, values: np.ndarray, times: np.ndarray | None = None, labels: list[str] | None = None
    ) -> None:
        """Use ``values`` ``(N,)`` (with their ``times`` and ``labels``; default: the step
        numbers) as the series: computes the blocks, the training statistics and the origins.

        Raises:
            ValueError: the blocks do not fit the series (the option to change is named).
        """
        values = np.array(values, np.float64)
        if values.ndim != 1 or not np.isfinite(values).all():
            raise ValueError(f"forecast: the series must be (N,) finite values; got {values.shape}")
        total = len(values)
        for name, size in (("valid_size", self.valid_size), ("test_size", self.test_size)):
            if size < self.horizon:
                raise ValueError(
                    f"forecast option {name} ({size}) must be at least the horizon "
                    f"({self.horizon}): every origin's targets lie inside its block"
                )
        test_start = total - self.test_size
        train_end = test_start - self.valid_size
        if train_end < self.history + self.horizon + 1:
            raise ValueError(
                f"forecast: {total} values leave {max(train_end, 0)} for training, too few for "
                f"history={self.history} and horizon={self.horizon}; lower valid_size "
                f"({self.valid_size}) or test_size ({self.test_size})"
            )
        self.values = values
        self.times = np.arange(total, dtype=np.float64) if times is None else np.array(times)
        self.labels = [str(i) for i in range(total)] if labels is None else list(labels)
        if len(self.times) != total or len(self.labels) != total:
            raise ValueError(
                f"forecast: {total} values need as many times and labels; got "
                f"{len(self.times)} and {len(self.labels)}"
            )
        self.test_start, self.train_end = test_start, train_end
        training = values[:train_end]
        self.mean, self.std = float(training.mean()), float(training.std())
        if self.std == 0:
            raise ValueError("forecast: the training part of the series is constant")
        self.scaled = torch.from_numpy((values - self.mean) / self.std)  # (N,) float64
        self.train_origins = self.origins(self.history, train_end)
        self.valid_origins = self.origins(train_end, test_start)
        self.test_origins = self.origins(test_start, total)
        self._valid: list[Batch] | None = None
        self._test: list[Batch] | None = None

    def origins(self, first: int, stop: int) -> Tensor:
        """Origins ``t >= first`` whose targets ``[t, t + horizon)`` end by ``stop``, ``(n,)``."""
        return torch.arange(first, stop - self.horizon + 1, dtype=torch.long)

    def offsets(self, origins: Tensor) -> Tensor:
        """What :meth:`windows` subtracts from the scaled values of each origin, ``(B,)``
        float64: the last observed :math:`z_{t-1}` (``change``) or 0 (``level``)."""
        origins = torch.as_tensor(origins, dtype=torch.long)
        if self.scaling == "level":
            return torch.zeros(len(origins), dtype=torch.float64)
        return self.scaled[origins - 1]

    def windows(self, origins: Tensor) -> Batch:
        """The examples of ``origins`` ``(B,)``: ``x`` ``(B, history, 1)`` and ``y``
        ``(B, horizon)``, float32, scaled as :attr:`scaling` says."""
        origins = torch.as_tensor(origins, dtype=torch.long)
        past = origins.unsqueeze(1) + torch.arange(-self.history, 0)  # (B, history)
        future = origins.unsqueeze(1) + torch.arange(self.horizon)  # (B, horizon)
        offset = self.offsets(origins).unsqueeze(1)  # (B, 1)
        x = (self.scaled[past] - offset).unsqueeze(-1).float()
        y = (self.scaled[future] - offset).float()
        return Batch(x=x, y=y, mask=torch.ones(len(origins), self.history, dtype=torch.bool))

    def to_units(self, output: Tensor, origins: Tensor) -> np.ndarray:
        """A model's ``output`` ``(B, horizon)`` for ``origins`` ``(B,)`` as forecasts in the
        series' units, ``(B, horizon)`` float64."""
        scaled = output.detach().double().cpu() + self.offsets(origins).unsqueeze(1)
        return (scaled * self.std + self.mean).numpy()

    def targets(self, origins: Tensor) -> np.ndarray:
        """The observed ``v[t : t + horizon]`` of each origin, ``(B, horizon)`` float64."""
        origins = np.asarray(origins, dtype=np.int64)
        return self.values[origins[:, None] + np.arange(self.horizon)]

    def train_batch(self, index: int, batch_size: int) -> Batch:
        """``batch_size`` training origins drawn uniformly, with replacement."""
        rng = generator(self.seed, "forecast-train", index)
        pick = torch.randint(len(self.train_origins), (batch_size,), generator=rng)
        return self.windows(self.train_origins[pick])

    def eval_batches(self) -> list[Batch]:
        """The validation origins, in one batch."""
        if self._valid is None:
            self._valid = [self.windows(self.valid_origins)]
        return self._valid

    def test_batches(self) -> list[Batch]:
        """The rolling origins of the held-out test tail, in one batch."""
        if self._test is None:
            self._test = [self.windows(self.test_origins)]
        return self._test

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        """Mean squared error of the scaled values; ``output`` ``(B, horizon)``."""
        return torch.mean((output - batch.y) ** 2)

    def scores(self, output: Tensor, batch: Batch) -> dict[str, Tensor]:
        """Per origin: the summed squared scaled error, and the absolute and squared error at
        each horizon in the series' units (the scaled error times :attr:`std`)."""
        scaled_error = output.detach().double() - batch.y.double()  # (B, horizon)
        return self._scores(scaled_error, scaled_error * self.std)

    def _scores(self, scaled_error: Tensor, error: Tensor) -> dict[str, Tensor]:
        scores = {"sq_scaled": scaled_error.pow(2).sum(1)}
        for k in range(self.horizon):
            scores[f"ae_h{k + 1}"] = error[:, k].abs()
            scores[f"se_h{k + 1}"] = error[:, k].pow(2)
        return scores

    def metrics(self, totals: dict[str, float], sequences: int) -> dict[str, float]:
        """``loss``, ``mae``, ``rmse``, ``mae_h{k}`` and ``rmse_h{k}``; see the module docstring."""
        horizons = range(1, self.horizon + 1)
        count = sequences * self.horizon
        result = {
            "loss": totals["sq_scaled"] / count,
            "mae": sum(totals[f"ae_h{k}"] for k in horizons) / count,
            "rmse": math.sqrt(sum(totals[f"se_h{k}"] for k in horizons) / count),
        }
        result.update({f"mae_h{k}": totals[f"ae_h{k}"] / sequences for k in horizons})
        result.update({f"rmse_h{k}": math.sqrt(totals[f"se_h{k}"] / sequences) for k in horizons})
        return result

    def forecast_metrics(self, forecasts: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        """The metrics of :meth:`metrics` for forecasts in the series' units (baselines).

        Args:
            forecasts, truth: ``(n, horizon)``, the forecasts and the observed values of ``n``
                origins.
        """
        forecasts = torch.as_tensor(np.asarray(forecasts, np.float64))
        truth = torch.as_tensor(np.asarray(truth, np.float64))
        if forecasts.shape != truth.shape or tuple(forecasts.shape[1:]) != (self.horizon,):
            raise ValueError(
                f"forecasts and truth must both be (n, {self.horizon}); got "
                f"{list(forecasts.shape)} and {list(truth.shape)}"
            )
        error = forecasts - truth
        scores = self._scores(error / self.std, error)
        return self.metrics(
            {name: float(value.sum()) for name, value in scores.items()}, len(error)
        )
