"""The plots are written as PNG files and reject what they cannot draw."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import carousel
from carousel.diagnostics import GradientFlow, gate_traces
from carousel.diagnostics.plots import plot_error_flow, plot_gate_traces, plot_gradient_flow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    return path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 1000


def test_each_plot_writes_a_png(tmp_path):
    lags = np.arange(5)
    flows = {
        "elman": GradientFlow(lags, 0.5**lags, None),
        "lstm": GradientFlow(lags, np.array([1.0, 0.5, 0, 0, 0]), np.ones(5)),  # zeros: gaps
    }
    assert _is_png(plot_gradient_flow(flows, tmp_path / "flow.png", title="t"))
    assert _is_png(plot_error_flow({"w = 0.5": 0.5**lags}, tmp_path / "sub" / "factor.png"))
    layer = carousel.LSTM(1, 3, variant="nfg")
    x = torch.randn(10, 2, 1)
    path = plot_gate_traces(
        gate_traces(layer, x), tmp_path / "gates.png", sequence=1, inputs=x[:, 1]
    )
    assert _is_png(path)


def test_plots_reject_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        plot_gradient_flow({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least one"):
        plot_error_flow({}, tmp_path / "x.png")
    traces = gate_traces(carousel.LSTM(1, 3), torch.randn(4, 2, 1))
    with pytest.raises(ValueError, match="sequence"):
        plot_gate_traces(traces, tmp_path / "x.png", sequence=2)
    with pytest.raises(TypeError, match="GateTraces"):
        plot_gate_traces(traces.cell, tmp_path / "x.png")
    assert not any(tmp_path.iterdir())


def test_gradient_flow_plot_shows_every_value_without_a_floor(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    drawn = []
    monkeypatch.setattr(Figure, "savefig", lambda figure, *args, **kwargs: drawn.append(figure))
    lags = np.arange(101)
    flows = {"elman": GradientFlow(lags, 10.0 ** (-0.6 * lags), None)}  # 1e-60 at lag 100
    plot_gradient_flow(flows, tmp_path / "all.png", floor=None)
    plot_gradient_flow(flows, tmp_path / "floor.png")
    assert drawn[0].axes[0].get_ylim()[0] <= 1e-60
    assert drawn[1].axes[0].get_ylim()[0] == 1e-30
