"""When "the error has stopped decreasing": the windowed criterion of the 1997 paper's sequential
construction (:class:`~carousel.experiments.faithful.Faithful`, ``staged``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Plateau:
    r"""When "the error has stopped decreasing" (sequential construction, :class:`Faithful`).

    The training error is averaged over consecutive windows of ``window`` sequences
    (:math:`m_1, m_2, \dots`: each the mean over its sequences of the task's per-sequence loss,
    the squared error summed over the outputs and target steps, measured as the network was
    trained on them). After window :math:`j` the error has stopped decreasing when the last
    ``patience`` windows all stayed above :math:`1 - \delta` times the best window before them:

    .. math::
        \min_{j - K < i \le j} m_i \;>\; (1 - \delta) \min_{i \le j - K} m_i,
        \qquad K = \text{patience},\ \delta = \text{threshold},

    i.e. over the last :math:`K \cdot W` sequences the error fell by less than the fraction
    :math:`\delta` below its best (or rose). Windows are counted afresh after each block is
    added. The criterion is relative, so it does not depend on the error's scale (nor on
    ``error_factor``); averaging over windows and asking for :math:`K` of them keeps one noisy
    window from firing it.

    The paper does not say how it judged. The defaults (windows of 100 sequences, the chunk of
    experiment 2's rows; 10 windows; 1 %) read "stopped decreasing" as "fell by less than 1 %
    over the last 1,000 sequences", a common plateau rule. Without the cell, experiment 2's
    error falls on the slow tail of the sigmoid output units (about :math:`0.5 + a / n` after
    :math:`n` sequences, 0.5 being the unpredictable last element), so where the rule holds
    depends on :math:`\delta` and :math:`K W`: with the defaults after 10,000 to 19,000
    sequences on 2a and 2b (``docs/reproduction.md`` measures an earlier switch too).

    Attributes:
        window: sequences per window ``W`` (a multiple of the trial's chunk).
        patience: windows ``K`` without enough improvement.
        threshold: the fraction :math:`\delta` that counts as an improvement.
    """

    window: int = 100
    patience: int = 10
    threshold: float = 0.01

    def __post_init__(self) -> None:
        if self.window < 1 or self.patience < 1:
            raise ValueError(
                f"Plateau window and patience must be >= 1; got {self.window}, {self.patience}"
            )
        if not 0 <= self.threshold < 1:
            raise ValueError(f"Plateau threshold must be in [0, 1); got {self.threshold}")

    def holds(self, means: Sequence[float]) -> bool:
        """Whether the error has stopped decreasing after the windows' means ``means``
        (oldest first; see the class docstring). ``False`` until there are more than
        ``patience`` windows."""
        if len(means) <= self.patience:
            return False
        best_before = min(means[: -self.patience])
        return min(means[-self.patience :]) > (1.0 - self.threshold) * best_before
