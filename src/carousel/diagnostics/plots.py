"""Pictures of the diagnostics, drawn with matplotlib (imported only when a function here runs).

Every function takes the arrays the pure functions return, writes one PNG and returns its path.
Figures are built with ``matplotlib.figure.Figure`` (no pyplot, no global state), so they work on
machines without a display.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from carousel.diagnostics.gates import GateTraces
from carousel.diagnostics.gradient_flow import GradientFlow


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - matplotlib is an optional dependency
        raise ImportError(
            "the plots need matplotlib: pip install 'carousel-lstm[plots]' (or matplotlib)"
        ) from error
    return Figure(figsize=(width, height), layout="constrained")


def _positive(values: np.ndarray) -> np.ndarray:
    """Values for a log axis: zeros and negatives become gaps (nan)."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(values > 0, values, np.nan)


def _save(figure, path, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return path


def plot_gradient_flow(
    flows: Mapping[str, GradientFlow],
    path,
    *,
    title: str = "",
    floor: float | None = 1e-30,
    dpi: int = 90,
) -> Path:
    """Log-scale :math:`\\|\\partial L/\\partial h_{T-q}\\|` (left) and
    :math:`\\|\\partial L/\\partial c_{T-q}\\|` (right, cells that have one) against the lag,
    each relative to its value at lag 0, one line per named model; the axis stops at ``floor``
    (``None``: it shows every value)."""
    if not flows:
        raise ValueError("flows must name at least one GradientFlow")
    figure = _figure(10, 4.8)
    hidden_axes, cell_axes = figure.subplots(1, 2, sharey=True)
    for name, flow in flows.items():
        relative = flow.relative()
        (line,) = hidden_axes.plot(flow.lags, _positive(relative.hidden), label=name)
        if relative.cell is not None:
            cell_axes.plot(flow.lags, _positive(relative.cell), label=name, color=line.get_color())
    hidden_axes.set_title("hidden state: |dL/dh(T-q)| / |dL/dh(T)|")
    cell_axes.set_title("cell state: |dL/dc(T-q)| / |dL/dc(T)|")
    for axes in (hidden_axes, cell_axes):
        axes.set_yscale("log")
        axes.set_xlabel("lag q (steps back from the last step)")
        axes.grid(True, which="major", alpha=0.3)
    if floor is not None:
        hidden_axes.set_ylim(bottom=floor)
    figure.legend(
        *hidden_axes.get_legend_handles_labels(),
        loc="outside lower center",
        ncols=4,
        fontsize="small",
    )
    if title:
        figure.suptitle(title)
    return _save(figure, path, dpi)


def plot_error_flow(
    curves: Mapping[str, np.ndarray], path, *, title: str = "", dpi: int = 90
) -> Path:
    """Log-scale magnitude of error-flow factors against the lag ``q`` (one named curve each,
    index ``q``), e.g. the largest :math:`|\\partial \\vartheta_v(t-q)/\\partial \\vartheta_u(t)|`
    from :func:`carousel.diagnostics.error_flow`."""
    if not curves:
        raise ValueError("curves must name at least one array")
    figure = _figure(6, 4)
    axes = figure.subplots()
    for name, curve in curves.items():
        curve = np.abs(np.asarray(curve, dtype=np.float64))
        axes.plot(np.arange(curve.size), _positive(curve), label=name)
    axes.set_yscale("log")
    axes.set_xlabel("lag q")
    axes.set_ylabel("error scaling factor")
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(fontsize="small")
    if title:
        axes.set_title(title)
    return _save(figure, path, dpi)


def plot_gate_traces(
    traces: GateTraces,
    path,
    *,
    sequence: int = 0,
    inputs=None,
    title: str = "",
    dpi: int = 90,
) -> Path:
    """Heatmaps (unit x step) of one sequence's input, input gate, forget gate, output gate, cell
    state and output; gates on a fixed [0, 1] scale, states on a symmetric scale.

    Args:
        traces: from :func:`carousel.diagnostics.gate_traces`.
        path: the PNG to write.
        sequence: which sequence of the batch.
        inputs: optional ``(L, H_in)`` or ``(L,)`` input of that sequence, drawn on top.
    """
    if not isinstance(traces, GateTraces):
        raise TypeError(f"traces must be GateTraces; got {type(traces).__name__}")
    batch = traces.cell.shape[1]
    if not isinstance(sequence, int) or not 0 <= sequence < batch:
        raise ValueError(f"sequence must be an int in [0, {batch - 1}]; got {sequence!r}")
    panels: list[tuple[str, np.ndarray, str]] = []
    if inputs is not None:
        inputs = np.asarray(inputs, dtype=np.float64)
        panels.append(("input x", inputs.reshape(inputs.shape[0], -1), "state"))
    for label, values in (
        ("input gate i", traces.input_gate),
        ("forget gate f", traces.forget_gate),
        ("output gate o", traces.output_gate),
    ):
        if values is not None:
            panels.append((label, values[:, sequence], "gate"))
    panels.append(("cell state c", traces.cell[:, sequence], "state"))
    panels.append(("output h", traces.hidden[:, sequence], "state"))

    steps = traces.cell.shape[0]
    heights = [max(1.0, min(3.0, 0.25 * values.shape[1])) for _, values, _ in panels]
    figure = _figure(max(6.0, min(12.0, 3 + 0.12 * steps)), 0.9 + 0.55 * sum(heights))
    axes_list = figure.subplots(len(panels), 1, sharex=True, height_ratios=heights)
    for axes, (label, values, kind) in zip(np.atleast_1d(axes_list), panels, strict=True):
        if kind == "gate":
            image = axes.imshow(
                values.T, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest"
            )
        else:
            limit = float(np.nanmax(np.abs(values))) or 1.0
            image = axes.imshow(
                values.T,
                aspect="auto",
                cmap="RdBu_r",
                vmin=-limit,
                vmax=limit,
                interpolation="nearest",
            )
        axes.set_ylabel(label, rotation=0, ha="right", va="center", fontsize="small")
        axes.set_yticks([] if values.shape[1] > 8 else range(values.shape[1]))
        figure.colorbar(image, ax=axes, pad=0.01, aspect=10)
    np.atleast_1d(axes_list)[-1].set_xlabel("step t")
    if title:
        figure.suptitle(title)
    return _save(figure, path, dpi)
