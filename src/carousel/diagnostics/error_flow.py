r"""Hochreiter's error-flow analysis (1991; Hochreiter & Schmidhuber 1997, section 3).

In a fully connected recurrent net with units :math:`y^i(t) = f_i(net_i(t))`,
:math:`net_i(t) = \sum_j w_{ij} y^j(t-1)`, the error signal
:math:`\vartheta_j(t) = f'_j(net_j(t)) \sum_i w_{ij} \vartheta_i(t+1)` that starts at unit
:math:`u` at time :math:`t` reaches unit :math:`v` at time :math:`t - q` scaled by

.. math::
    \frac{\partial \vartheta_v(t-q)}{\partial \vartheta_u(t)} =
    \begin{cases} f'_v(net_v(t-1))\, w_{uv} & q = 1 \\
    f'_v(net_v(t-q)) \sum_{l=1}^{n} \frac{\partial \vartheta_l(t-q+1)}{\partial \vartheta_u(t)}\, w_{lv}
    & q > 1 \end{cases}
    \;=\; \sum_{l_1} \cdots \sum_{l_{q-1}} \prod_{m=1}^{q} f'_{l_m}(net_{l_m}(t-m))\, w_{l_m l_{m-1}}

(:math:`l_0 = u`, :math:`l_q = v`). If :math:`|f'_{l_m}(net_{l_m}(t-m))\, w_{l_m l_{m-1}}| < 1`
for all :math:`m` the largest product decays exponentially in :math:`q`; above 1 it grows
exponentially. A single unit with :math:`f'_j(net_j(t))\, w_{jj} = 1`, the *constant error
carousel*, carries the error back unchanged.

:func:`error_flow` evaluates the recursion for a given net; :func:`memorizer` is the one-unit
linear case of the ECE 417 lecture, :math:`dE/dw = x_0 (\hat y[m] - x_0)\, u^m`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from carousel.cells.activations import get_activation
from carousel.diagnostics.unroll import check_layer, unroll
from carousel.nn import Recurrent


def error_flow(
    weight, net_inputs, activation: str = "tanh", *, time: int | None = None
) -> np.ndarray:
    r"""Hochreiter's scaling factors :math:`\partial \vartheta_v(t-q) / \partial \vartheta_u(t)`.

    Evaluated with the recursion in matrix form, :math:`F(0) = I`,
    :math:`F(q) = \mathrm{diag}(f'(net(t-q)))\, W^\top F(q-1)`.

    Args:
        weight: ``(n, n)`` recurrent weights, ``weight[i, j]`` = :math:`w_{ij}` from unit ``j`` to
            unit ``i`` (the layout of ``weight_hh``: :math:`net(t) = W y(t-1) + \dots`).
        net_inputs: ``(T, n)`` the units' net inputs :math:`net(0) .. net(T-1)` of one sequence.
        activation: the units' activation, a name from :data:`carousel.cells.ACTIVATIONS`
            (``"tanh"``, ``"identity"``, ``"relu"``, ...).
        time: the step :math:`t` the error starts from (default the last, ``T - 1``).

    Returns:
        ``(t + 1, n, n)`` float64 array, entry ``[q, v, u]`` the factor for lag ``q``.

    Raises:
        ValueError, TypeError: shapes that do not fit, an unknown activation, ``time`` out of range.
    """
    weight = np.asarray(weight, dtype=np.float64)
    net_inputs = np.asarray(net_inputs, dtype=np.float64)
    if weight.ndim != 2 or weight.shape[0] != weight.shape[1]:
        raise ValueError(f"weight must be a square (n, n) matrix; got shape {list(weight.shape)}")
    units = weight.shape[0]
    if net_inputs.ndim != 2 or net_inputs.shape[1] != units or net_inputs.shape[0] == 0:
        raise ValueError(
            f"net_inputs must have shape (T, {units}) with T >= 1; got {list(net_inputs.shape)}"
        )
    last = net_inputs.shape[0] - 1
    time = last if time is None else time
    if not isinstance(time, int) or isinstance(time, bool) or not 0 <= time <= last:
        raise ValueError(f"time must be an int in [0, {last}]; got {time!r}")
    unit = get_activation(activation, argument="activation")
    slopes = unit.derivative_from_output(
        unit.forward(torch.from_numpy(net_inputs[: time + 1])).numpy()
    )  # (t + 1, n): f'(net(s)) for s = 0 .. t

    factors = np.empty((time + 1, units, units))
    factors[0] = np.eye(units)
    for lag in range(1, time + 1):
        factors[lag] = slopes[time - lag][:, None] * (weight.T @ factors[lag - 1])
    return factors


def elman_net_inputs(layer: Recurrent, input: torch.Tensor) -> np.ndarray:
    r"""Net inputs :math:`net_t = W_{ih} x_t + b + W_{hh} h_{t-1}` of a one-layer Elman layer.

    Args:
        layer: ``carousel.RNN`` (``variant="elman"``) with one layer and one direction.
        input: ``(L, N, H_in)`` (``(N, L, H_in)`` with ``batch_first``).

    Returns:
        ``(N, L, H)`` float64 array, one ``(L, H)`` block per sequence for :func:`error_flow`
        (with ``layer.weight_hh_l0`` and the layer's nonlinearity).
    """
    check_layer(layer)
    if layer.spec.family != "elman" or layer.num_layers != 1 or layer.bidirectional:
        raise ValueError(
            "layer must be a one-layer, one-direction Elman layer (carousel.RNN); got "
            f"{layer.spec.variant!r} with num_layers={layer.num_layers}, "
            f"bidirectional={layer.bidirectional}"
        )
    with torch.no_grad():
        run = unroll(layer, input)
        weights = layer.cell_weights(0)
        x = input.transpose(0, 1) if layer.batch_first else input  # (L, N, H_in)
        previous = torch.stack([state[0] for state in run.states[0][:-1]])  # (L, N, H)
        nets = x @ weights.weight_ih.T + previous @ weights.weight_hh.T  # (L, N, H)
        if weights.bias is not None:
            nets = nets + weights.bias
    return nets.transpose(0, 1).double().numpy()


@dataclass(frozen=True)
class MemorizerGradient:
    r"""The ECE 417 lecture's memorizer network and three values of :math:`dE/dw` that must agree.

    Attributes:
        outputs: ``(m + 1,)`` :math:`\hat y[0] .. \hat y[m]`.
        deltas: ``(m + 1,)`` :math:`dE/d\hat y[n]` from explicit backpropagation through time.
        error: :math:`E = \frac12 (\hat y[m] - x_0)^2`.
        analytic: :math:`x_0 (\hat y[m] - x_0)\, u^m`.
        autograd: :math:`dE/dw` by ``torch.autograd`` (float64).
        bptt: :math:`dE/dw = \sum_n (dE/d\hat y[n])\, x[n]` from the explicit recursion.
    """

    outputs: np.ndarray
    deltas: np.ndarray
    error: float
    analytic: float
    autograd: float
    bptt: float


def memorizer(u: float, *, w: float = 0.5, x0: float = 1.0, m: int = 10) -> MemorizerGradient:
    r"""The ECE 417 lecture's memorizer :math:`\hat y[n] = w x[n] + u \hat y[n-1]`, input
    :math:`x_0` at :math:`n = 0` only, error :math:`E = \frac12 (\hat y[m] - x_0)^2` read ``m``
    steps later.

    Backpropagation through time: :math:`dE/d\hat y[m] = \hat y[m] - x_0`,
    :math:`dE/d\hat y[n] = u\, dE/d\hat y[n+1]`, so :math:`dE/dw = \sum_n dE/d\hat y[n]\, x[n]
    = x_0 (\hat y[m] - x_0)\, u^m`: exponentially small for :math:`|u| < 1`, large for
    :math:`|u| > 1`.
    """
    if not isinstance(m, int) or isinstance(m, bool) or m < 0:
        raise ValueError(f"m must be a non-negative int; got {m!r}")
    x = np.zeros(m + 1)
    x[0] = x0
    outputs = np.empty(m + 1)
    previous = 0.0
    for n in range(m + 1):
        previous = outputs[n] = w * x[n] + u * previous
    deltas = np.empty(m + 1)
    deltas[m] = outputs[m] - x0
    for n in range(m - 1, -1, -1):
        deltas[n] = u * deltas[n + 1]

    w_leaf = torch.tensor(float(w), dtype=torch.float64, requires_grad=True)
    y = torch.zeros((), dtype=torch.float64)
    for n in range(m + 1):
        y = w_leaf * float(x[n]) + u * y
    error = 0.5 * (y - x0) ** 2
    (grad,) = torch.autograd.grad(error, w_leaf)
    return MemorizerGradient(
        outputs=outputs,
        deltas=deltas,
        error=float(error.detach()),
        analytic=float(x0 * (outputs[m] - x0) * u**m),
        autograd=float(grad),
        bptt=float(deltas @ x),
    )
