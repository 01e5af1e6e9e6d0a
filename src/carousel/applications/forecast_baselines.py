"""The forecast application's baselines: persistence, seasonal persistence, a ridge linear
autoregression and (S)ARIMA, each scored on the LSTM's test origins (see
:mod:`carousel.applications.forecast`)."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch

from carousel.tasks.forecast import INSTALL, ForecastTask

RIDGE_ALPHAS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
"""The ridge penalties the linear autoregression chooses from on the validation block."""

ARIMA_CANDIDATES = {
    "sunspots": [
        ((2, 0, 0), (0, 0, 0, 0)),
        ((3, 0, 0), (0, 0, 0, 0)),
        ((9, 0, 0), (0, 0, 0, 0)),
        ((2, 0, 2), (0, 0, 0, 0)),
    ],
    "co2-monthly": [
        ((0, 1, 1), (0, 1, 1, 12)),
        ((1, 1, 1), (0, 1, 1, 12)),
        ((1, 1, 1), (1, 1, 1, 12)),
    ],
    "co2-weekly": [((1, 1, 1), (0, 1, 1, 52))],
}
"""(order, seasonal_order) candidates per series; the lowest AIC on the training part wins.
Without differencing the model has a constant."""


@contextlib.contextmanager
def one_blas_thread():
    """Run the block with one BLAS thread (where threadpoolctl is installed): the small matrices
    of the statsmodels fits are much slower when their threads compete for the cores."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def persistence(values: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    """The last observed value ``v[t - 1]`` repeated for each origin ``t``, ``(n, horizon)``."""
    origins = np.asarray(origins, dtype=np.int64)
    return np.repeat(np.asarray(values)[origins - 1, None], horizon, axis=1)


def seasonal_persistence(
    values: np.ndarray, origins: np.ndarray, horizon: int, season: int
) -> np.ndarray:
    """The value one season before each target, ``(n, horizon)``: for origin ``t`` and horizon
    ``h`` (1-based), ``v[t - 1 + h - season * ceil(h / season)]``, the latest observation in the
    same phase of the season."""
    if season < 1:
        raise ValueError(f"season must be >= 1; got {season}")
    origins = np.asarray(origins, dtype=np.int64)
    steps = np.arange(1, horizon + 1)
    lags = steps - season * np.ceil(steps / season).astype(np.int64)  # (horizon,), <= 0
    return np.asarray(values)[origins[:, None] - 1 + lags]


def ridge_forecasts(task: ForecastTask, alphas: tuple[float, ...] = RIDGE_ALPHAS) -> dict:
    """Ridge regression from the task's windows to its targets (a direct linear autoregression
    in the task's scaling), fitted on the training windows; the penalty of lowest validation
    loss forecasts the test origins.

    Returns:
        ``forecasts`` ``(n_test, horizon)`` in the series' units, ``alpha`` (the chosen
        penalty) and ``validation`` (penalty -> validation loss).
    """
    try:
        from sklearn.linear_model import Ridge
    except ImportError:
        raise ImportError(f"the forecast application needs scikit-learn: {INSTALL}") from None

    def arrays(origins):
        batch = task.windows(origins)
        return batch.x[..., 0].double().numpy(), batch.y.double().numpy()

    x_train, y_train = arrays(task.train_origins)
    x_valid, y_valid = arrays(task.valid_origins)
    validation, best = {}, None
    for alpha in alphas:
        fitted = Ridge(alpha=alpha).fit(x_train, y_train)
        validation[alpha] = float(np.mean((fitted.predict(x_valid) - y_valid) ** 2))
        if best is None or validation[alpha] < validation[best[0]]:
            best = (alpha, fitted)
    alpha, fitted = best
    x_test, _ = arrays(task.test_origins)
    output = torch.from_numpy(fitted.predict(x_test))
    return {
        "forecasts": task.to_units(output, task.test_origins),
        "alpha": alpha,
        "validation": validation,
    }


def fit_arima(values: np.ndarray, order: tuple, seasonal_order: tuple):
    """statsmodels' ``ARIMA`` fitted to ``values`` by maximum likelihood (its warnings
    silenced; ``mle_retvals["converged"]`` tells whether the optimiser converged)."""
    try:
        from statsmodels.tsa.arima.model import ARIMA
    except ImportError:
        raise ImportError(f"the forecast application needs statsmodels: {INSTALL}") from None
    with warnings.catch_warnings(), one_blas_thread():
        warnings.simplefilter("ignore")
        return ARIMA(np.asarray(values), order=order, seasonal_order=seasonal_order).fit()


def arima_forecasts(values: np.ndarray, origins: np.ndarray, horizon: int, results) -> np.ndarray:
    """``horizon``-step forecasts from each origin ``t`` with the fitted parameters of
    ``results`` applied to ``values``, ``(n, horizon)``: the Kalman filter runs over the
    observations before ``t``, the forecast is a dynamic prediction from ``t`` (no value at or
    after ``t`` enters it; the parameters are not refitted)."""
    with warnings.catch_warnings(), one_blas_thread():
        warnings.simplefilter("ignore")
        applied = results.apply(np.asarray(values))
        rows = []
        for origin in np.asarray(origins, dtype=np.int64):
            prediction = applied.get_prediction(
                start=int(origin), end=int(origin) + horizon - 1, dynamic=True
            )
            rows.append(np.asarray(prediction.predicted_mean))
    return np.stack(rows)


def choose_arima(values: np.ndarray, candidates: list) -> tuple[tuple, tuple, dict]:
    """The candidate ``(order, seasonal_order)`` of lowest AIC fitted to ``values``; returns it
    and every candidate's AIC."""
    aics = {}
    for order, seasonal_order in candidates:
        aics[(order, seasonal_order)] = float(fit_arima(values, order, seasonal_order).aic)
    best = min(aics, key=aics.get)
    return best[0], best[1], aics


def arima_name(order: tuple, seasonal_order: tuple) -> str:
    """``"ARIMA(9,0,0)"`` or ``"SARIMA(1,1,1)x(0,1,1,12)"``."""
    text = "(" + ",".join(map(str, order)) + ")"
    if seasonal_order[3]:
        return "SARIMA" + text + "x(" + ",".join(map(str, seasonal_order)) + ")"
    return "ARIMA" + text
