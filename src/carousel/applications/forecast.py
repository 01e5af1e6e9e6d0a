"""Forecast: an LSTM forecasts statsmodels' sunspot and CO2 series several steps ahead.

The data, the split in time (training part, validation block, held-out test tail), the scaling
with training statistics and the direct multi-step windows are those of the ``forecast`` task
(:mod:`carousel.tasks.forecast`). The runner trains the LSTM on the yearly sunspot numbers
(``OUT/run``: 30 past years -> the next 10, test tail 1969-2008); :func:`report` trains a second
LSTM with the same settings (including ``--steps`` and ``--seed``) on the monthly CO2 series
(``OUT/run-co2``: 48 past months -> the next 12, test tail 1997-2001) with
:func:`carousel.train.train` and scores its best-validation checkpoint.

Baselines, scored on exactly the LSTM's test origins (every origin of the test tail whose
``horizon`` targets all lie in it):

- persistence: the last observed value, repeated;
- seasonal persistence (CO2): the value one season (12 months) before each target;
- linear autoregression: ridge regression from the same windows, in the same scaling, to the
  same ``horizon`` targets (a direct linear forecaster), fitted on the training windows, its
  penalty chosen from :data:`~carousel.applications.forecast_baselines.RIDGE_ALPHAS` by validation loss;
- (S)ARIMA (statsmodels' ``ARIMA``, state-space maximum likelihood): the order is chosen from
  :data:`~carousel.applications.forecast_baselines.ARIMA_CANDIDATES` by AIC on the training part, then its parameters are fitted on the
  training part and the validation block (everything before the test tail); each test origin's
  forecast applies these fixed parameters to the observations before the origin
  (``results.apply`` to the series, then a dynamic prediction from the origin, which uses no
  value at or after it).

Plot: ``forecasts.png``, for each series the 1-step and the ``horizon``-step forecasts of every
method against the observed test tail.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch

from carousel.applications.forecast_baselines import (
    ARIMA_CANDIDATES,
    arima_forecasts,
    arima_name,
    choose_arima,
    fit_arima,
    persistence,
    ridge_forecasts,
    seasonal_persistence,
)
from carousel.applications.runner import (
    Metric,
    Report,
    markdown,
    run_settings,
    test_metrics,
    train_another,
)
from carousel.tasks.forecast import INSTALL, ForecastOptions, ForecastTask
from carousel.train import Config, ModelConfig, OptimConfig, TrainConfig

NAME = "forecast"
TITLE = (
    "Forecast: statsmodels' yearly sunspot numbers, 10-year forecasts of the held-out "
    "1969-2008 (rolling origins)"
)
METRICS = [
    Metric("mae_h1", "MAE h=1", higher_is_better=False, digits=2),
    Metric("mae_last", "MAE h=K (last)", higher_is_better=False, digits=2),
    Metric("mae", "mean MAE", higher_is_better=False, digits=2),
    Metric("rmse", "RMSE", higher_is_better=False, digits=2),
]


def config(quick: bool) -> Config:
    """The sunspot LSTM: 1 layer of 64 cells, dropout 0.4 on its inputs and outputs, Adam with
    learning rate 3e-3, 50 steps of warm-up and cosine decay, gradient norm clipped to 1,
    batches of 32 windows, 1,000 steps (160 epochs of the 200 training windows), validated
    every 25 steps. ``quick``: 8 cells, 6 steps."""
    if quick:
        return Config(
            task="forecast",
            task_options={"series": "sunspots"},
            model=ModelConfig(hidden_size=8),
            optim=OptimConfig(lr=3e-3, clip_norm=1.0),
            train=TrainConfig(steps=6, batch_size=8, eval_every=3, checkpoint_every=3),
        )
    return Config(
        task="forecast",
        task_options={"series": "sunspots"},
        model=ModelConfig(hidden_size=64, dropout=0.4),
        optim=OptimConfig(lr=3e-3, schedule="cosine", warmup_steps=50, clip_norm=1.0),
        train=TrainConfig(
            steps=1000, batch_size=32, eval_every=25, log_every=25, checkpoint_every=500
        ),
    )


def series_key(task: ForecastTask) -> str:
    """``"sunspots"``, ``"co2-monthly"`` or ``"co2-weekly"``: the key of
    :data:`~carousel.applications.forecast_baselines.ARIMA_CANDIDATES`."""
    options = task.options
    return options.series if options.series == "sunspots" else f"co2-{options.co2_frequency}"


def series_name(task: ForecastTask) -> str:
    """How the table names the task's series."""
    if task.options.series == "sunspots":
        return "sunspots (yearly)"
    return f"CO2 ({task.options.co2_frequency})"


@torch.no_grad()
def lstm_forecasts(model: torch.nn.Module, task: ForecastTask) -> np.ndarray:
    """The model's forecasts of the task's test origins in the series' units, ``(n, horizon)``."""
    model.eval()
    device = next(model.parameters()).device
    parts = []
    for batch in task.test_batches():
        parts.append(model(batch.x.to(device), batch.mask.to(device))[0].cpu())
    return task.to_units(torch.cat(parts), task.test_origins)


def lstm_name(settings: Config) -> str:
    """The table's name of the LSTM of ``settings``."""
    layers = settings.model.num_layers
    text = f"LSTM ({layers} layer{'s' if layers > 1 else ''} of {settings.model.hidden_size} cells"
    if settings.model.dropout:
        text += f", dropout {settings.model.dropout:g}"
    return text + ")"


def with_last(metrics: dict[str, float], horizon: int) -> dict[str, float]:
    """``metrics`` with ``mae_last``, the MAE at the last horizon (the table's column)."""
    return {**metrics, "mae_last": metrics[f"mae_h{horizon}"]}


def evaluate_series(task: ForecastTask, model: torch.nn.Module, settings: Config) -> dict:
    """The LSTM's and the baselines' test metrics and forecasts on ``task``.

    Returns:
        ``rows`` (name -> metrics, the LSTM first), ``forecasts`` (name -> ``(n, horizon)``),
        ``notes`` (markdown list items on the baselines' settings).
    """
    origins = task.test_origins.numpy()
    horizon = task.horizon
    truth = task.targets(origins)
    forecasts = {lstm_name(settings): lstm_forecasts(model, task)}
    forecasts["persistence (last value)"] = persistence(task.values, origins, horizon)
    if task.season:
        forecasts[f"seasonal persistence ({task.season} steps earlier)"] = seasonal_persistence(
            task.values, origins, horizon, task.season
        )
    ridge = ridge_forecasts(task)
    forecasts["linear autoregression (ridge, direct)"] = ridge["forecasts"]
    order, seasonal_order, aics = choose_arima(
        task.values[: task.train_end], ARIMA_CANDIDATES[series_key(task)]
    )
    fitted = fit_arima(task.values[: task.test_start], order, seasonal_order)
    name = arima_name(order, seasonal_order)
    forecasts[name] = arima_forecasts(task.values, origins, horizon, fitted)

    rows = {}
    for model_name, forecast in forecasts.items():
        rows[model_name] = with_last(task.forecast_metrics(forecast, truth), horizon)
    rows[lstm_name(settings)] = with_last(test_metrics(model, task), horizon)
    aic_text = ", ".join(f"{arima_name(*key)}: {aic:.1f}" for key, aic in aics.items())
    validation = ", ".join(f"{alpha:g}: {loss:.4f}" for alpha, loss in ridge["validation"].items())
    converged = fitted.mle_retvals.get("converged", True) if fitted.mle_retvals else True
    notes = [
        f"{name}: the lowest AIC on the training part ({aic_text}); its parameters fitted on "
        f"the training part and the validation block (up to {task.labels[task.test_start - 1]})"
        + ("" if converged else "; the optimiser did not report convergence")
        + ".",
        f"Linear autoregression: ridge from the {task.history} past values to the {horizon} "
        f"targets, scaled like the LSTM's; penalty {ridge['alpha']:g} of lowest validation "
        f"loss ({validation}).",
    ]
    return {"rows": rows, "forecasts": forecasts, "notes": notes}


def train_other_series(
    task: ForecastTask, settings: Config, out_dir: Path, quiet: bool
) -> tuple[ForecastTask, torch.nn.Module, dict, float]:
    """Train an LSTM with ``settings`` on the other series (CO2 after sunspots, sunspots after
    CO2; monthly CO2, series defaults for the windows and blocks) into ``out_dir/run-SERIES``;
    return its task, its best-validation model, the training summary and the seconds it
    took."""
    series = "co2" if task.options.series == "sunspots" else "sunspots"
    options = ForecastOptions(series=series, scaling=task.options.scaling)
    other = dataclasses.replace(settings, task_options=dataclasses.asdict(options))
    other_task = ForecastTask(options, other.train.seed)
    return other_task, *train_another(other, other_task, out_dir / f"run-{series}", quiet)


def split_note(task: ForecastTask) -> str:
    """The blocks of the task's series with their dates, its windows, test origins and
    scaling."""
    labels = task.labels
    unit = "years" if task.options.series == "sunspots" else task.options.co2_frequency[:-2] + "s"
    relative = ", inputs and targets relative to the last observed value"
    return (
        f"{series_name(task)}: {len(task.values)} values; training {labels[0]} to "
        f"{labels[task.train_end - 1]} ({task.train_end} values, {len(task.train_origins)} "
        f"windows), validation {labels[task.train_end]} to {labels[task.test_start - 1]} "
        f"({task.valid_size}), test {labels[task.test_start]} to {labels[-1]} "
        f"({task.test_size}); {task.history} past {unit} -> the next {task.horizon} "
        f"(K = {task.horizon}), {len(task.test_origins)} test origins; scaled by the training "
        f"mean {task.mean:.2f} and standard deviation {task.std:.2f} {task.units}"
        + (relative if task.scaling == "change" else "")
        + "."
    )


def sample_note(task: ForecastTask, forecasts: dict[str, np.ndarray]) -> str:
    """The forecasts of every method from the last test origin, against the observed values."""
    origin = int(task.test_origins[-1])
    truth = task.targets([origin])[0]

    def show(values):
        return " ".join(f"{value:.1f}" for value in values)

    parts = [f"observed {show(truth)}"]
    parts += [f"{name} {show(forecast[-1])}" for name, forecast in forecasts.items()]
    return (
        f"{series_name(task)}, forecasts from the last origin, {task.labels[origin]} to "
        f"{task.labels[origin + task.horizon - 1]} ({task.units}): " + "; ".join(parts) + "."
    )


def horizon_table(task: ForecastTask, rows: dict[str, dict[str, float]]) -> list[str]:
    """A markdown table of every model's test MAE at each horizon ``h = 1..K``; the best of
    each column in bold."""
    horizons = range(1, task.horizon + 1)
    best = {k: min(values[f"mae_h{k}"] for values in rows.values()) for k in horizons}
    lines = [
        f"MAE ({task.units}) of {series_name(task)} at each horizon:",
        "",
        "| model | " + " | ".join(f"h={k}" for k in horizons) + " |",
        "|---|" + "---:|" * task.horizon,
    ]
    for name, values in rows.items():
        cells = []
        for k in horizons:
            text = f"{values[f'mae_h{k}']:.2f}"
            cells.append(f"**{text}**" if values[f"mae_h{k}"] == best[k] else text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def report(task: ForecastTask, model: torch.nn.Module, out_dir: Path, quiet: bool) -> Report:
    """Test metrics of the trained LSTM and its baselines; an LSTM with the same settings
    trained and scored on the other series (its table among the notes, its rows in
    ``results-SERIES.json``); the MAE at each horizon; the forecasts plot."""
    out_dir = Path(out_dir)
    settings = run_settings(out_dir, task, config(quick=False))
    main = evaluate_series(task, model, settings)
    other_task, other_model, other_summary, other_seconds = train_other_series(
        task, settings, out_dir, quiet
    )
    other = evaluate_series(other_task, other_model, settings)
    other_series = other_task.options.series
    notes = [split_note(task), *main["notes"], sample_note(task, main["forecasts"])]
    notes = [*(f"- {note}" for note in notes), "", *horizon_table(task, main["rows"]), ""]
    other_title = (
        f"{series_name(other_task)}: {other_task.horizon}-step forecasts of the held-out "
        f"{other_task.labels[other_task.test_start]} to {other_task.labels[-1]} (rolling origins)"
    )
    table = markdown(other_title, METRICS, Report(rows=other["rows"])).splitlines()
    table[0] = "#" + table[0]  # a subsection under the application's title
    other_notes = [
        split_note(other_task),
        f"The LSTM was trained with the settings of the {series_name(task)} LSTM into "
        f"`run-{other_series}`: {other_summary['step']:,} steps in {other_seconds:.0f} s; its "
        f"checkpoint of step {other_summary['best_step']:,} had the best validation loss.",
        *other["notes"],
        sample_note(other_task, other["forecasts"]),
    ]
    if other_series == "co2":
        other_notes.append(
            "CO2: the 59 missing weeks of the weekly record are filled by linear interpolation "
            "between the neighbouring weeks, then the weekly values averaged per calendar month."
        )
    notes += [*table, "", *(f"- {note}" for note in other_notes), ""]
    notes += [*horizon_table(other_task, other["rows"]), ""]
    record = out_dir / f"results-{other_series}.json"
    record.write_text(json.dumps({"rows": other["rows"]}, indent=2) + "\n", encoding="utf-8")
    files = [record.name]
    files += plot([(task, main["forecasts"]), (other_task, other["forecasts"])], out_dir)
    if len(files) == 1:
        notes.append(f"matplotlib is not installed: no plot ({INSTALL}).")
    for rows in (main["rows"], other["rows"]):
        if not all(math.isfinite(v) for row in rows.values() for v in row.values()):
            notes.append("Some metrics are not finite: a run diverged.")
    return Report(rows=main["rows"], notes=notes, files=files)


def colour(name: str) -> str:
    """The plot colour of a method, the same in every panel."""
    for prefix, value in (
        ("LSTM", "C0"),
        ("persistence", "C1"),
        ("seasonal", "C5"),
        ("linear", "C2"),
    ):
        if name.startswith(prefix):
            return value
    return "C3"  # (S)ARIMA


def plot(sections: list[tuple[ForecastTask, dict[str, np.ndarray]]], out_dir: Path) -> list[str]:
    """Write ``forecasts.png``: per series (a row), the 1-step and the K-step forecasts of every
    method (the forecast made 1 and K steps before each time) against the observed values;
    the files written, ``[]`` without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(sections), 2, figsize=(13, 3.8 * len(sections)), squeeze=False)
    for row, (task, forecasts) in zip(axes, sections, strict=True):
        origins = task.test_origins.numpy()
        start = max(0, task.test_start - task.horizon)
        for axis, step in zip(row, (1, task.horizon), strict=True):
            axis.plot(
                task.times[start:], task.values[start:], color="black", lw=2, label="observed"
            )
            axis.axvline(task.times[task.test_start], color="grey", ls=":", lw=1)
            for name, forecast in forecasts.items():
                times = task.times[origins + step - 1]
                axis.plot(times, forecast[:, step - 1], color=colour(name), lw=1.2, label=name)
            axis.set_title(
                f"{series_name(task)}: forecasts made {step} step{'s' * (step > 1)} before"
            )
            axis.set_ylabel(task.units)
        row[0].legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(out_dir / "forecasts.png", dpi=110)
    plt.close(figure)
    return ["forecasts.png"]
