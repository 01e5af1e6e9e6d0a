r"""Gradient flow across time: how much of the error at the end reaches the states ``q`` steps back.

For a loss :math:`L` computed from a layer's output, :func:`gradient_flow` measures

.. math::
    g_h(q) = \big\| \partial L / \partial h_{T-q} \big\|_2, \qquad
    g_c(q) = \big\| \partial L / \partial c_{T-q} \big\|_2, \qquad q = 0, 1, \dots, T

(total derivatives, through every path; :math:`h_0, c_0` is the zero initial state), the norm
taken over the units of one sequence and averaged over the batch. The cell's total derivative
includes the path through the same step's output, as in the BPTT equations of the ECE 417 lecture:
:math:`\delta c_t = \delta h_t\, \partial h_t/\partial c_t + \delta c_{t+1}\, f_{t+1}`.

In an Elman network :math:`g_h(q)` shrinks or grows like a product of :math:`q` factors :math:`f'(net)\, w`
(Hochreiter 1991; :mod:`carousel.diagnostics.error_flow`); through an LSTM's cell state the
factor is the forget gate, exactly 1 for the constant error carousel (:func:`cec_comparison`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from carousel.cells import init
from carousel.diagnostics.unroll import check_group, unroll
from carousel.nn import LSTM, RNN, Recurrent


@dataclass(frozen=True)
class GradientFlow:
    """Gradient norms of one (layer, direction) against the lag.

    Attributes:
        lags: ``(T + 1,)`` the lags :math:`q = 0 .. T`.
        hidden: ``(T + 1,)`` :math:`\\|\\partial L / \\partial h_{T-q}\\|`, batch mean of
            per-sequence norms.
        cell: ``(T + 1,)`` the same for the cell state :math:`c`, or ``None`` for GRU and Elman
            cells, which have none.
    """

    lags: np.ndarray
    hidden: np.ndarray
    cell: np.ndarray | None

    def relative(self) -> GradientFlow:
        """Each curve divided by its value at lag 0 (``nan`` where that value is 0)."""

        def scale(curve: np.ndarray | None) -> np.ndarray | None:
            if curve is None:
                return None
            with np.errstate(divide="ignore", invalid="ignore"):
                return curve / curve[0] if curve[0] != 0 else np.full_like(curve, np.nan)

        return GradientFlow(self.lags, scale(self.hidden), scale(self.cell))

    def first_lag_below(self, fraction: float, curve: str = "hidden") -> int | None:
        """The smallest lag whose ``curve`` (``"hidden"`` or ``"cell"``) relative to lag 0 is below
        ``fraction``, or ``None`` if it never falls that low."""
        values = getattr(self.relative(), curve)
        if values is None:
            raise ValueError(f"curve {curve!r} does not exist for this cell (it has no cell state)")
        below = np.flatnonzero(values < fraction)
        return int(below[0]) if below.size else None


def last_step_sum(output: Tensor, batch_first: bool = False) -> Tensor:
    """The default loss: the sum of the outputs of the last time step, so that
    :math:`\\partial L / \\partial h_T = 1` for every unit and sequence."""
    return (output[:, -1] if batch_first else output[-1]).sum()


def gradient_flow(
    layer: Recurrent,
    input: Tensor,
    loss_fn: Callable[[Tensor], Tensor] | None = None,
    *,
    layer_index: int = -1,
    direction: int = 0,
) -> GradientFlow:
    """Norms of :math:`\\partial L / \\partial h_{T-q}` and :math:`\\partial L / \\partial c_{T-q}`
    against the lag ``q``, by autograd through :func:`carousel.diagnostics.unroll`.

    Args:
        layer: any carousel recurrent layer (every variant; stacked, bidirectional, projected).
        input: ``(L, N, H_in)`` (``(N, L, H_in)`` with ``batch_first``).
        loss_fn: ``output -> scalar`` on the layer's output (layout as the layer returns it);
            default :func:`last_step_sum`. Pass e.g. ``lambda out: mse(head(out[-1]), target)``
            for a trained model.
        layer_index: which stacked layer's states to measure (default the last).
        direction: 0 forward, 1 reverse (lags then count back from its last processed step,
            the input's first time step).

    Returns:
        :class:`GradientFlow` with lags ``0 .. L``.

    Raises:
        TypeError, ValueError: bad layer, input, loss or indices (see :func:`unroll`).
    """
    group = check_group(layer, layer_index, direction)
    with torch.enable_grad():
        run = unroll(layer, input)
        loss = (
            last_step_sum(run.output, layer.batch_first) if loss_fn is None else loss_fn(run.output)
        )
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError(
                "loss_fn must return a scalar tensor; got "
                + (f"shape {list(loss.shape)}" if isinstance(loss, Tensor) else type(loss).__name__)
            )
        if not loss.requires_grad:
            raise ValueError("loss_fn must return a tensor computed from the layer's output")
        states = run.states[group]  # L + 1 state tuples
        tensors = [state[0] for state in states]
        has_cell = layer.spec.family == "lstm"
        if has_cell:
            tensors += [state[1] for state in states]
        grads = torch.autograd.grad(loss.reshape(()), tensors, allow_unused=True)

    def norms(part) -> np.ndarray:
        per_step = [
            0.0 if g is None else float(torch.linalg.vector_norm(g, dim=-1).mean()) for g in part
        ]
        return np.asarray(per_step[::-1], dtype=np.float64)  # index q = steps back from the end

    steps = len(states)
    return GradientFlow(
        lags=np.arange(steps),
        hidden=norms(grads[:steps]),
        cell=norms(grads[steps:]) if has_cell else None,
    )


def cec_comparison(
    steps: int = 1000, hidden_size: int = 8, batch: int = 4, seed: int = 0
) -> dict[str, GradientFlow]:
    """The constant error carousel against an Elman network, on the same random input.

    ``"cec"``: an LSTM whose forget gates are held at exactly 1 and input gates at exactly 0
    (hard-sigmoid gates, weights uniform in [-0.1, 0.1], forget bias +2, input bias -2), so
    :math:`\\partial c_t / \\partial c_{t-1} = f_t = 1` and the cell's error is carried back
    unchanged over all ``steps``. ``"elman"``: a tanh Elman network with torch's default
    initialisation, whose error shrinks by a factor :math:`\\tanh'(net) R` per step.

    Both in float64, loss :func:`last_step_sum`. Returns ``{"cec": ..., "elman": ...}``.
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(steps, batch, 1, generator=generator, dtype=torch.float64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cec = LSTM(
            1,
            hidden_size,
            dtype=torch.float64,
            gate_activation="hard_sigmoid",
            init=[init.uniform(0.1), init.gate_bias("f", 2.0), init.gate_bias("i", -2.0)],
        )
        elman = RNN(1, hidden_size, dtype=torch.float64)
    return {"cec": gradient_flow(cec, x), "elman": gradient_flow(elman, x)}
