r"""Gate traces and retention times of LSTM cells.

:func:`gate_traces` runs an LSTM-family layer over a batch and returns, for every step, the input,
forget and output gates, the cell input, the cell state and the output, as NumPy arrays; the
heatmaps are drawn by :func:`carousel.diagnostics.plots.plot_gate_traces`.
:func:`retention_time` turns the forget gate into the number of steps a cell keeps a given
fraction (default half) of its content.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from carousel.diagnostics.unroll import check_group, unroll
from carousel.nn import Recurrent


@dataclass(frozen=True)
class GateTraces:
    """Everything one (layer, direction) of an LSTM computed, step by step.

    Shapes use ``L`` steps, ``N`` sequences, ``H`` cells, ``U = H / block_size`` gate units
    (one per memory block) and ``H_out`` outputs. A gate the variant does not have is ``None``
    (the 1997 cell and NFG have no forget gate; for CIFG ``forget_gate`` is ``1 - input_gate``).

    Attributes:
        input_gate: ``(L, N, U)`` :math:`i_t`, or ``None``.
        forget_gate: ``(L, N, U)`` :math:`f_t`, or ``None``.
        output_gate: ``(L, N, U)`` :math:`o_t`, or ``None``.
        candidate: ``(L, N, H)`` the cell input :math:`z_t = g(\\cdot)`.
        cell: ``(L, N, H)`` the cell state :math:`c_t`.
        hidden: ``(L, N, H_out)`` the output :math:`h_t`.
        block_size: cells per gate unit.
    """

    input_gate: np.ndarray | None
    forget_gate: np.ndarray | None
    output_gate: np.ndarray | None
    candidate: np.ndarray
    cell: np.ndarray
    hidden: np.ndarray
    block_size: int

    @property
    def gate_units(self) -> int:
        """``U``, the number of gate units (memory blocks)."""
        return self.cell.shape[-1] // self.block_size


def gate_traces(
    layer: Recurrent, input: torch.Tensor, *, layer_index: int = 0, direction: int = 0
) -> GateTraces:
    """The gates, cell input, cell state and output of every step, for an LSTM-family layer.

    Args:
        layer: a carousel layer with an LSTM variant (``vanilla``, ``1997``, ``peephole``, the
            Greff variants, ...).
        input: ``(L, N, H_in)`` (``(N, L, H_in)`` with ``batch_first``); the traces are
            time-major, ``(L, N, ...)``, whatever the layer's layout.
        layer_index: which stacked layer (default the first).
        direction: 0 forward, 1 reverse (then step ``k`` is the ``k``-th step the reverse
            direction processed, from the end of the input).

    Raises:
        ValueError, TypeError: not an LSTM-family layer, bad input or indices.
    """
    group = check_group(layer, layer_index, direction)
    if layer.spec.family != "lstm":
        raise ValueError(
            f"gate traces need an LSTM-family layer; got variant {layer.spec.variant!r} "
            f"({layer.spec.family})"
        )
    with torch.no_grad():
        steps = unroll(layer, input).values[group]

    def stack(name: str) -> np.ndarray | None:
        tensors = [getattr(step, name) for step in steps]
        if tensors[0] is None:
            return None
        return torch.stack(tensors).cpu().numpy()

    return GateTraces(
        input_gate=stack("input_gate"),
        forget_gate=stack("forget_gate"),
        output_gate=stack("output_gate"),
        candidate=stack("candidate"),
        cell=stack("cell"),
        hidden=stack("output"),
        block_size=layer.spec.block_size,
    )


def retention_time(traces: GateTraces, fraction: float = 0.5) -> np.ndarray:
    r"""How many steps each gate unit's cells keep ``fraction`` of their content (forget gate).

    A cell's content is multiplied by :math:`f_t` at every step, so after :math:`k` steps it keeps
    :math:`\prod f_t`. Over the trace the per-step factor is, on average, the geometric mean
    :math:`\bar f = \exp(\operatorname{mean}_{t,n} \log f_t)`, and the content falls to ``fraction``
    after

    .. math:: \tau = \log(\text{fraction}) / \log \bar f

    steps (a constant gate :math:`f` gives :math:`\tau = \log 0.5 / \log f` for half the content;
    :math:`\sigma(b_f) = 0.5^{1/\tau}` turns a wanted retention into a forget bias). Cells without a
    forget gate, or whose gate stays exactly 1, keep everything: :math:`\tau = \infty`. A gate that
    closes completely (:math:`f_t = 0`, possible with hard-sigmoid gates) at any step gives
    :math:`\tau = 0`: averaged over the trace, nothing survives.

    Args:
        traces: from :func:`gate_traces`.
        fraction: in ``(0, 1)``.

    Returns:
        ``(U,)`` float64 array of steps, one per gate unit (memory block).
    """
    if not isinstance(traces, GateTraces):
        raise TypeError(
            f"traces must be GateTraces (from gate_traces); got {type(traces).__name__}"
        )
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"fraction must be a number in (0, 1); got {fraction!r}")
    mean = forget_gate_mean(traces)
    if mean is None:
        return np.full(traces.gate_units, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_log = np.log(mean)  # (U,)
        return np.where(mean_log < 0, np.log(fraction) / mean_log, np.inf)


def forget_gate_mean(traces: GateTraces) -> np.ndarray | None:
    r"""Each gate unit's geometric mean forget gate over the trace,
    :math:`\bar f = \exp(\operatorname{mean}_{t,n} \log f_t)`, ``(U,)`` float64; ``None`` for a
    cell without a forget gate. A gate that closes completely at some step gives 0."""
    if traces.forget_gate is None:
        return None
    with np.errstate(divide="ignore"):
        return np.exp(np.log(traces.forget_gate.astype(np.float64)).mean(axis=(0, 1)))
