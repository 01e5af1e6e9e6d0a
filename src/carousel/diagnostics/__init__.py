"""Diagnostics that make the vanishing-gradient story visible.

Pure functions returning NumPy arrays; the pictures are drawn by :mod:`carousel.diagnostics.plots`
(matplotlib, imported only there).

- :func:`gradient_flow`: norms of :math:`\\partial L/\\partial h_{T-q}` and
  :math:`\\partial L/\\partial c_{T-q}` against the lag ``q`` for any carousel layer;
  :func:`cec_comparison`, the constant error carousel against an Elman network.
- :func:`error_flow`: Hochreiter's scaling factor of the error flowing back ``q`` steps;
  :func:`memorizer`, the ECE 417 lecture's one-unit example.
- :func:`gate_traces` and :func:`retention_time`: what an LSTM's gates and cells do over a sequence.
- :mod:`carousel.diagnostics.calculator`: the ECE 417 lecture's pocket calculator, worked
  through.
- :func:`unroll`: the step-by-step run of a layer all of these are built on.
"""

from carousel.diagnostics.error_flow import (
    MemorizerGradient,
    elman_net_inputs,
    error_flow,
    memorizer,
)
from carousel.diagnostics.gates import GateTraces, forget_gate_mean, gate_traces, retention_time
from carousel.diagnostics.gradient_flow import (
    GradientFlow,
    cec_comparison,
    gradient_flow,
    last_step_sum,
)
from carousel.diagnostics.unroll import Unrolled, unroll

__all__ = [
    "GateTraces",
    "GradientFlow",
    "MemorizerGradient",
    "Unrolled",
    "cec_comparison",
    "elman_net_inputs",
    "error_flow",
    "forget_gate_mean",
    "gate_traces",
    "gradient_flow",
    "last_step_sum",
    "memorizer",
    "retention_time",
    "unroll",
]
