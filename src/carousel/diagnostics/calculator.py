r"""The pocket calculator of the ECE 417 LSTM lecture, worked through with forward and backprop tables.

The calculator (M. Hasegawa-Johnson, "Long/Short-Term Memory", ECE 417 lecture, University of
Illinois, 2020): when :math:`x[t] > 0`, add it to the tally, :math:`c[t] = c[t-1] + x[t]`; when
:math:`x[t] = 0`, print the tally, :math:`y[t] = c[t-1]`, then reset it, :math:`c[t] = 0`.
Non-zero inputs are at least 1. The lecture's example: input ``1, 2, 1, 0, 1, 1, 1, 0``, target
``0, 0, 0, 4, 0, 0, 0, 3``.

Five networks try it, each a function here returning a :class:`Walkthrough` (a table with one row
per step, the error and the gradients):

1. :func:`linear_rnn`: the one-node linear RNN :math:`c[t] = x[t] + u\,h[t-1]`, :math:`h = c`, with
   :math:`u = 0.5, 1, 1.7`; error scored only where :math:`y[t] > 0`; backprop
   :math:`\epsilon[t] = h[t] - y[t]`, :math:`\delta[t] = \epsilon[t] + u\,\delta[t+1]`,
   :math:`dE/du = \sum_t \delta[t]\,h[t-1]`.
2. :func:`forget_gate_rnn`: :math:`c[t] = x[t] + f[t]\,h[t-1]` with the CReLU gate
   :math:`f[t] = \mathrm{CReLU}(x[t])`, and what went wrong.
3. :func:`lstm_walkthrough` of :func:`seed_lstm`, the lecture's knowledge-based LSTM with
   CReLU gates :math:`i = \mathrm{CReLU}(1)`, :math:`o = \mathrm{CReLU}(1 - x[t])`,
   :math:`f = \mathrm{CReLU}(1 - h[t-1])`, :math:`c[t] = f c[t-1] + i x[t]`, :math:`h = o c`.
4. :func:`corrected_lstm`, a two-cell LSTM whose tally cell follows the definition at every step.
5. :func:`~carousel.diagnostics.calculator_training.train_lstm`, an LSTM that learns the
   calculator from random examples.

Every LSTM here is a ``carousel.LSTM`` with ``gate_activation="hard_sigmoid"`` (the CReLU),
``candidate_activation="identity"`` and ``output_activation="identity"`` (:math:`h = o \odot c`),
run by the library's own step; the tables come from :func:`carousel.diagnostics.gate_traces`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from carousel.cells.init import ParameterGroup
from carousel.diagnostics.gates import gate_traces
from carousel.nn import LSTM

CALCULATOR_INPUT = np.array([1, 2, 1, 0, 1, 1, 1, 0], dtype=np.float64)
"""The lecture's example input."""
CALCULATOR_TARGET = np.array([0, 0, 0, 4, 0, 0, 0, 3], dtype=np.float64)
"""The lecture's target output."""


@dataclass(frozen=True)
class Walkthrough:
    """One network on one input: a table with a row per step, the error and its gradients.

    Attributes:
        title: what the network is.
        table: column name -> ``(T,)`` values, in display order (``t`` first).
        error: the network's error :math:`E` as its section of the lecture defines it.
        gradients: parameter name -> :math:`dE/d\\theta` by the explicit backprop of the table.
        autograd: the same gradients by ``torch.autograd`` (float64); they must agree.
        output: the column that holds the network's printed output.
    """

    title: str
    table: dict[str, np.ndarray]
    error: float
    gradients: dict[str, float] = field(default_factory=dict)
    autograd: dict[str, float] = field(default_factory=dict)
    output: str = "h"


def calculator(x) -> tuple[np.ndarray, np.ndarray]:
    """The calculator's definition: ``(printed output y, tally c)`` for inputs ``x``, ``(T, ...)``."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"x must have at least one step, shape (T, ...); got {list(x.shape)}")
    if np.any(x < 0) or not np.all(np.isfinite(x)):
        raise ValueError("x must hold finite, non-negative numbers (0 prints and resets the tally)")
    printed, tally = np.zeros_like(x), np.zeros_like(x)
    previous = np.zeros_like(x[0])
    for t in range(x.shape[0]):
        zero = x[t] == 0
        printed[t] = np.where(zero, previous, 0.0)
        previous = tally[t] = np.where(zero, 0.0, previous + x[t])
    return printed, tally


def _sequence(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(CALCULATOR_INPUT if x is None else x, dtype=np.float64)
    y = calculator(x)[0] if y is None else np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size == 0:
        raise ValueError(
            f"x and y must be 1-D and of one length; got shapes {list(x.shape)}, {list(y.shape)}"
        )
    return x, y


def _crelu_slope(net: np.ndarray) -> np.ndarray:
    """CReLU'(net): 1 inside (0, 1), 0 outside and at the kinks (as torch's hardtanh)."""
    return ((net > 0) & (net < 1)).astype(np.float64)


def linear_rnn(u: float, x=None, y=None) -> Walkthrough:
    r"""The one-node linear RNN :math:`c[t] = x[t] + u\,h[t-1]`, :math:`h[t] = c[t]`.

    Error :math:`E = \frac12 \sum_{t: y[t] > 0} (h[t] - y[t])^2`; the table holds the forward pass
    (``c``, ``h``) and the lecture's backprop stages: synchronous ``eps`` :math:`= \partial E /
    \partial c[t]`, BPTT ``delta`` :math:`= dE/dc[t] = \epsilon[t] + u\,\delta[t+1]` and the
    weight-gradient terms ``delta*h[t-1]``, whose sum is :math:`dE/du`.

    Args:
        u: the feedback coefficient (the lecture uses 0.5, 1 and 1.7).
        x, y: input and target, default the lecture's example (``y`` default: the calculator's).
    """
    x, y = _sequence(x, y)
    steps = x.size
    h = np.empty(steps)
    previous = 0.0
    for t in range(steps):
        previous = h[t] = x[t] + u * previous
    h_before = np.concatenate(([0.0], h[:-1]))
    scored = y > 0
    eps = np.where(scored, h - y, 0.0)
    delta = np.empty(steps)
    following = 0.0
    for t in range(steps - 1, -1, -1):
        following = delta[t] = eps[t] + u * following
    terms = delta * h_before

    u_leaf = torch.tensor(float(u), dtype=torch.float64, requires_grad=True)
    state, error = torch.zeros((), dtype=torch.float64), 0.0
    for t in range(steps):
        state = float(x[t]) + u_leaf * state
        if scored[t]:
            error = error + 0.5 * (state - float(y[t])) ** 2
    autograd = float(torch.autograd.grad(error, u_leaf)[0]) if scored.any() else 0.0
    return Walkthrough(
        title=f"one-node linear RNN, u = {u:g}",
        table={
            "t": np.arange(steps, dtype=np.float64),
            "x": x,
            "y": y,
            "c": h.copy(),
            "h": h,
            "eps": eps,
            "delta": delta,
            "delta*h[t-1]": terms,
        },
        error=float(0.5 * np.sum(eps**2)),
        gradients={"u": float(terms.sum())},
        autograd={"u": autograd},
    )


def forget_gate_rnn(
    x=None, y=None, *, w_f: float = 1.0, u_f: float = 0.0, b_f: float = 0.0
) -> Walkthrough:
    r"""The forget-gate RNN :math:`c[t] = x[t] + f[t]\,h[t-1]`, :math:`h[t] = c[t]`,
    :math:`f[t] = \mathrm{CReLU}(w_f x[t] + u_f h[t-1] + b_f)`; the lecture's design is
    :math:`w_f = 1, u_f = b_f = 0`, i.e. :math:`f[t] = \mathrm{CReLU}(x[t])`.

    Error as in :func:`linear_rnn`. Backprop: :math:`\delta[t] = dE/dh[t] = \epsilon[t] +
    \delta[t+1]\,(f[t+1] + h[t]\,\mathrm{CReLU}'(net_f[t+1])\,u_f)`; the gate's weights get
    :math:`dE/d\,net_f[t] = \delta[t]\,h[t-1]\,\mathrm{CReLU}'(net_f[t])` times ``x[t]``,
    ``h[t-1]`` and 1. :math:`\mathrm{CReLU}'` is 1 inside (0, 1) and 0 elsewhere, at the kinks
    too, as in torch.

    What went wrong: the gate forgets at the step that should print, so both printed values are
    0; and with the lecture's input the gate's net input only takes the values 0, 1 and 2 (the
    kinks and the flat part), so every gate gradient is exactly 0 and gradient descent cannot
    repair it.
    """
    x, y = _sequence(x, y)
    steps = x.size
    net_f, gate, h = np.empty(steps), np.empty(steps), np.empty(steps)
    previous = 0.0
    for t in range(steps):
        net_f[t] = w_f * x[t] + u_f * previous + b_f
        gate[t] = min(1.0, max(0.0, net_f[t]))
        previous = h[t] = x[t] + gate[t] * previous
    h_before = np.concatenate(([0.0], h[:-1]))
    slope = _crelu_slope(net_f)
    scored = y > 0
    eps = np.where(scored, h - y, 0.0)
    delta = np.empty(steps)
    following = 0.0
    for t in range(steps - 1, -1, -1):
        carry = 0.0
        if t + 1 < steps:
            carry = following * (gate[t + 1] + h[t] * slope[t + 1] * u_f)
        following = delta[t] = eps[t] + carry
    net_grad = delta * h_before * slope  # dE/dnet_f[t]

    leaves = {
        name: torch.tensor(float(v), dtype=torch.float64, requires_grad=True)
        for name, v in (("w_f", w_f), ("u_f", u_f), ("b_f", b_f))
    }
    state, error = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    for t in range(steps):
        f_t = torch.nn.functional.hardtanh(
            leaves["w_f"] * float(x[t]) + leaves["u_f"] * state + leaves["b_f"], 0.0, 1.0
        )
        state = float(x[t]) + f_t * state
        if scored[t]:
            error = error + 0.5 * (state - float(y[t])) ** 2
    grads = torch.autograd.grad(error, list(leaves.values()), allow_unused=True)
    return Walkthrough(
        title="forget-gate RNN, f[t] = CReLU(x[t])",
        table={
            "t": np.arange(steps, dtype=np.float64),
            "x": x,
            "y": y,
            "f": gate,
            "c": h.copy(),
            "h": h,
            "eps": eps,
            "delta": delta,
            "dE/dnet_f": net_grad,
        },
        error=float(0.5 * np.sum(eps**2)),
        gradients={
            "w_f": float(net_grad @ x),
            "u_f": float(net_grad @ h_before),
            "b_f": float(net_grad.sum()),
        },
        autograd={
            name: 0.0 if g is None else float(g) for name, g in zip(leaves, grads, strict=True)
        },
    )


def _hand_designed_lstm(
    hidden_size: int, weight_ih: list, weight_hh: list, bias: list, dtype: torch.dtype
) -> LSTM:
    """A one-input CReLU LSTM with h = o * c and the given packed (i, f, g, o) weights."""
    layer = LSTM(
        1,
        hidden_size,
        dtype=dtype,
        gate_activation="hard_sigmoid",
        candidate_activation="identity",
        output_activation="identity",
    )
    group: ParameterGroup = layer.parameter_groups()[0]
    with torch.no_grad():
        group.params["weight_ih"].copy_(torch.tensor(weight_ih, dtype=dtype))
        group.params["weight_hh"].copy_(torch.tensor(weight_hh, dtype=dtype))
        group.params["bias_ih"].copy_(torch.tensor(bias, dtype=dtype))
        group.params["bias_hh"].zero_()
    return layer.eval()


def seed_lstm(dtype: torch.dtype = torch.float64) -> LSTM:
    r"""The lecture's knowledge-based LSTM (ECE 417), one cell:

    .. math::
        i[t] = \mathrm{CReLU}(1),\quad o[t] = \mathrm{CReLU}(1 - x[t]),\quad
        f[t] = \mathrm{CReLU}(1 - h[t-1]),\quad c[t] = f[t] c[t-1] + i[t] x[t],\quad
        h[t] = o[t] c[t]

    as packed weights (rows ``i, f, g, o``): ``weight_ih = [0, 0, 1, -1]``,
    ``weight_hh = [0, -1, 0, 0]``, ``bias = [1, 1, 0, 1]``.

    On inputs in the lecture's domain (0, or at least 1) it prints exactly the calculator's
    outputs, but its cell does not follow the definition: at a print step it still holds the
    tally (:math:`c[t] = c[t-1]` where the definition resets to 0), and it forgets one step later,
    only because its own printed output was at least 1. Inputs between 0 and 1 leak through the
    output gate and make the forget gate leak (see :func:`lstm_walkthrough`).
    """
    return _hand_designed_lstm(
        1,
        weight_ih=[[0.0], [0.0], [1.0], [-1.0]],
        weight_hh=[[0.0], [-1.0], [0.0], [0.0]],
        bias=[1.0, 1.0, 0.0, 1.0],
        dtype=dtype,
    )


def corrected_lstm(dtype: torch.dtype = torch.float64) -> LSTM:
    r"""A hand-designed two-cell LSTM that computes the calculator exactly, cell state included.

    Cell 0 is the tally, cell 1 the display (the printed output is :math:`h_1`):

    .. math::
        c_0[t] &= \mathrm{CReLU}(x[t])\, c_0[t-1] + x[t]
            &&\text{forget at a zero input, so } c_0 \text{ is the definition's tally} \\
        c_1[t] &= \mathrm{CReLU}(1 - x[t])\; h_0[t-1]
            &&\text{write the previous tally at a zero input, else 0} \\
        h[t] &= c[t] &&\text{(output gates held at 1)}

    i.e. :math:`i = (\mathrm{CReLU}(2), \mathrm{CReLU}(1 - x))`,
    :math:`f = (\mathrm{CReLU}(x), \mathrm{CReLU}(-1))`, :math:`g = (x, h_0[t-1])`,
    :math:`o = (\mathrm{CReLU}(2), \mathrm{CReLU}(2))`. What the one-cell design could not do is
    print the tally and reset it at the same step, since :math:`h[t] = o[t]\,c[t]` reads the cell
    after its update; a second cell that copies the tally one step later can. For inputs that are
    0 or at least 1 it prints the calculator's output and its cell 0 equals the tally at every
    step.
    """
    return _hand_designed_lstm(
        2,
        #           i0    i1    f0   f1    g0   g1    o0   o1
        weight_ih=[[0.0], [-1.0], [1.0], [0.0], [1.0], [0.0], [0.0], [0.0]],
        weight_hh=[[0, 0], [0, 0], [0, 0], [0, 0], [0, 0], [1.0, 0], [0, 0], [0, 0]],
        bias=[2.0, 1.0, 0.0, -1.0, 0.0, 0.0, 2.0, 2.0],
        dtype=dtype,
    )


def lstm_walkthrough(
    layer: LSTM, x=None, y=None, *, output_unit: int = 0, title: str = ""
) -> Walkthrough:
    r"""Forward table of a one-input LSTM layer on one sequence: gates, cells, outputs, target.

    Columns ``x``, ``y``, then per cell ``k`` (suffix ``k`` when there is more than one) ``i``,
    ``f``, ``o``, ``c``, ``h``. The error is :math:`E = \frac12 \sum_t (h_k[t] - y[t])^2` over all
    steps, with ``k = output_unit``.
    """
    x, y = _sequence(x, y)
    param = next(layer.parameters())
    sequence = torch.tensor(x, dtype=param.dtype, device=param.device).view(-1, 1, 1)
    if layer.batch_first:
        sequence = sequence.transpose(0, 1)
    traces = gate_traces(layer, sequence)
    cells = traces.cell.shape[-1]
    if not 0 <= output_unit < traces.hidden.shape[-1]:
        raise ValueError(
            f"output_unit must lie in [0, {traces.hidden.shape[-1] - 1}]; got {output_unit}"
        )
    table = {"t": np.arange(x.size, dtype=np.float64), "x": x, "y": y}
    for unit in range(cells):
        suffix = str(unit) if cells > 1 else ""
        for name, values in (
            ("i", traces.input_gate),
            ("f", traces.forget_gate),
            ("o", traces.output_gate),
            ("c", traces.cell),
            ("h", traces.hidden),
        ):
            if values is not None:
                table[name + suffix] = values[
                    :, 0, unit // traces.block_size if name in "ifo" else unit
                ]
    output = "h" + (str(output_unit) if cells > 1 else "")
    return Walkthrough(
        title=title or f"LSTM ({cells} cells)",
        table=table,
        error=float(0.5 * np.sum((table[output] - y) ** 2)),
        output=output,
    )
