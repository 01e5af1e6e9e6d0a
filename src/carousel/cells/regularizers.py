r"""Regularisers of the recurrent connections, and state resets: what they compute, their masks.

A layer (or step-wise cell) draws the masks from torch's generator, once per forward call, and
hands them to the backend as tensors (:class:`Masks`), so every backend consumes the same masks
and a seed reproduces a run. With :math:`s_{t-1}` the recurrent source (``h_{t-1}`` and, for
cells with gate feedback, the previous gates), :math:`\tilde c_t, \tilde h_t` what the cell
computes without zoneout:

``recurrent_dropout=p`` (Gal & Ghahramani 2016, "A Theoretically Grounded Application of Dropout
in Recurrent Neural Networks"): variational dropout of :math:`h_{t-1}` where the recurrent
weights read it, one mask per sequence and layer (and direction), the same at every step:

.. math:: net_t = W_{ih} x_t + b + W_{hh} [m \odot h_{t-1}, \gamma_{t-1}], \quad
    m \sim \mathrm{Bernoulli}(1 - p) / (1 - p)

Fed-back gate activations are not dropped, nor is :math:`h_{t-1}` where a GRU interpolates
with it. Identity in evaluation.

``candidate_dropout=p`` (Semeniuta, Severyn & Barth 2016, "Recurrent Dropout without Memory
Loss"): dropout of the candidate where it is written into the state, one mask per sequence:
LSTM :math:`c_t = f_t \odot c_{t-1} + i_t \odot (m \odot z_t)`, GRU :math:`h_t = (1 - u_t)
\odot (m \odot n_t) + u_t \odot h_{t-1}`. Unlike Gal's mask it never drops what the state
already holds, only what is added to it. Identity in evaluation.

``zoneout=p`` or ``(p_c, p_h)`` (Krueger et al. 2017, "Zoneout: Regularizing RNNs by Randomly
Preserving Hidden Activations"): each unit keeps its previous value with probability p, a fresh
mask per step and unit; in evaluation the expectation:

.. math:: c_t = d^c_t \odot c_{t-1} + (1 - d^c_t) \odot \tilde c_t, \quad
    h_t = d^h_t \odot h_{t-1} + (1 - d^h_t) \odot \tilde h_t, \quad
    d_t \sim \mathrm{Bernoulli}(p) \text{ (training)}, \; d_t = p \text{ (evaluation)}

where :math:`\tilde h_t = o_t \odot h(\tilde c_t)` is computed from the un-zoned cell, as in
the paper. The layer's output at step t is :math:`h_t`. A GRU has one state: ``zoneout=p``
acts on :math:`h`. Fed-back gate activations are not zoned.

``weight_drop=p`` (DropConnect, Wan et al. 2013, on the recurrent weights as in Merity, Keskar
& Socher 2018, AWD-LSTM): :math:`W_{hh} \odot M / (1 - p)`, one mask per forward call (and
layer and direction) shared by every step and sequence; a cell's fixed masks (FGR) still
apply. Identity in evaluation. The layer applies it to the weights before the backend sees
them, so autograd differentiates it and every backend runs it.

State resets (``forward(x, hx, reset=mask)``) split sequences: where ``reset[t, b]`` is set,
sequence ``b`` starts again from the initial state at step ``t``, as if a new sequence began
there; see :func:`direction_resets`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from carousel.cells.spec import CellSpec

REGULARIZED_FAMILIES = ("lstm", "gru")
"""Families whose cells take recurrent dropout, candidate dropout and zoneout."""


class Masks(NamedTuple):
    """The masks of one direction of one layer, as backends receive them (``None``: not used).

    Shapes, with ``T`` steps, ``B`` batch, ``H`` cells, ``P`` output width:

    - ``recurrent``: ``(B, P)``, multiplies :math:`h_{t-1}` where ``weight_hh`` reads it.
    - ``candidate``: ``(B, H)``, multiplies the candidate (LSTM :math:`z_t`, GRU :math:`n_t`).
    - ``zoneout_cell``: ``(T, B, H)``, the weight :math:`d^c_t` of :math:`c_{t-1}` in
      :math:`c_t` (LSTM).
    - ``zoneout_hidden``: ``(T, B, P)``, the weight :math:`d^h_t` of :math:`h_{t-1}` in
      :math:`h_t`.
    - ``reset``: ``(T, B)`` bool; the state is reset before the step at that time position
      (already arranged for the direction by :func:`direction_resets`).

    Time-indexed masks are indexed by time position, as the input is, in both directions.
    """

    recurrent: Tensor | None = None
    candidate: Tensor | None = None
    zoneout_cell: Tensor | None = None
    zoneout_hidden: Tensor | None = None
    reset: Tensor | None = None

    def features(self) -> frozenset[str]:
        """The names of the fields in use (what a backend must support to run them)."""
        return frozenset(
            name for name, mask in zip(self._fields, self, strict=True) if mask is not None
        )


MASK_FEATURES = frozenset(Masks._fields)
"""Every mask a backend may be asked to apply (:attr:`carousel.kernels.Workload.features`)."""


def _probability(name: str, value, *, closed: bool) -> float:
    """``value`` as a float in ``[0, 1)`` (``[0, 1]`` if ``closed``), or an error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a probability (a float); got {type(value).__name__} {value!r}"
        )
    value = float(value)
    interval = "[0, 1]" if closed else "[0, 1)"
    if not math.isfinite(value) or value < 0 or value > 1 or (value == 1 and not closed):
        raise ValueError(f"{name} must be a probability in {interval}; got {value!r}")
    return value


@dataclass(frozen=True)
class Regularizers:
    """The regularisers of a layer or cell (see the module docstring), validated for its cell.

    Attributes:
        recurrent_dropout: Gal & Ghahramani's drop probability of :math:`h_{t-1}`.
        candidate_dropout: Semeniuta et al.'s drop probability of the candidate.
        zoneout_cell, zoneout_hidden: Krueger et al.'s probabilities of keeping :math:`c`, :math:`h`.
        weight_drop: DropConnect probability of each recurrent weight.
    """

    recurrent_dropout: float = 0.0
    candidate_dropout: float = 0.0
    zoneout_cell: float = 0.0
    zoneout_hidden: float = 0.0
    weight_drop: float = 0.0

    @classmethod
    def create(
        cls,
        spec: CellSpec,
        recurrent_dropout=0.0,
        candidate_dropout=0.0,
        zoneout=0.0,
        weight_drop=0.0,
    ) -> Regularizers:
        """Validate the layer arguments for ``spec``'s cell.

        ``zoneout`` is one probability (for :math:`c` and :math:`h`; a GRU's :math:`h`) or a
        pair ``(p_c, p_h)`` (LSTM). Raises ``TypeError``/``ValueError`` naming the argument.
        """
        recurrent = _probability("recurrent_dropout", recurrent_dropout, closed=False)
        candidate = _probability("candidate_dropout", candidate_dropout, closed=False)
        drop = _probability("weight_drop", weight_drop, closed=False)
        if isinstance(zoneout, (tuple, list)):
            if len(zoneout) != 2:
                raise ValueError(
                    f"zoneout must be a probability or a pair (p_c, p_h); got {zoneout!r}"
                )
            if spec.family in ("gru", "elman"):
                raise ValueError(
                    f"zoneout=(p_c, p_h) needs a cell state; a {spec.family} cell has only h: "
                    f"give zoneout=p_h; got {tuple(zoneout)!r}"
                )
            zone_c = _probability("zoneout[0] (p_c)", zoneout[0], closed=True)
            zone_h = _probability("zoneout[1] (p_h)", zoneout[1], closed=True)
        else:
            zone_h = _probability("zoneout", zoneout, closed=True)
            zone_c = zone_h if spec.family == "lstm" else 0.0
        regularizers = cls(recurrent, candidate, zone_c, zone_h, drop)
        if spec.family not in REGULARIZED_FAMILIES:
            used = [
                name
                for name, value in (
                    ("recurrent_dropout", recurrent),
                    ("candidate_dropout", candidate),
                    ("zoneout", max(zone_c, zone_h)),
                )
                if value > 0
            ]
            if used:
                raise ValueError(
                    f"{', '.join(used)} is not defined for the {spec.variant!r} variant: it "
                    f"applies to the {' and '.join(REGULARIZED_FAMILIES)} families only, not to "
                    f"{spec.family!r} (weight_drop and reset apply to every cell)"
                )
        return regularizers

    @property
    def zoneout(self) -> float | tuple[float, float]:
        """The ``zoneout`` argument: one probability, or ``(p_c, p_h)`` when they differ."""
        if self.zoneout_cell == self.zoneout_hidden:
            return self.zoneout_hidden
        return (self.zoneout_cell, self.zoneout_hidden)

    def describe(self) -> str:
        """``name=value`` for every regulariser in use, comma-separated ('' if none)."""
        parts = [
            f"{name}={value!r}"
            for name, value in (
                ("recurrent_dropout", self.recurrent_dropout),
                ("candidate_dropout", self.candidate_dropout),
                ("zoneout", self.zoneout),
                ("weight_drop", self.weight_drop),
            )
            if value
        ]
        return ", ".join(parts)

    def active(self, training: bool) -> bool:
        """Whether a call in this mode draws any mask (the weight drop's included)."""
        if training:
            return bool(
                self.recurrent_dropout or self.candidate_dropout or self.weight_drop
                or self.zoneout_cell or self.zoneout_hidden
            )  # fmt: skip
        return bool(self.zoneout_cell or self.zoneout_hidden)

    def features(self, training: bool) -> frozenset[str]:
        """The masks (:class:`Masks` fields) a call draws in this mode."""
        used = set()
        if training and self.recurrent_dropout > 0:
            used.add("recurrent")
        if training and self.candidate_dropout > 0:
            used.add("candidate")
        if self.zoneout_cell > 0:
            used.add("zoneout_cell")
        if self.zoneout_hidden > 0:
            used.add("zoneout_hidden")
        return frozenset(used)

    def weight_mask(self, weight: Tensor, training: bool) -> Tensor | None:
        """A DropConnect mask for ``weight`` (0 or ``1 / (1 - p)``), or ``None`` when not dropping."""
        if not training or self.weight_drop == 0:
            return None
        return _keep(weight.shape, self.weight_drop, weight)

    def sequence_masks(
        self,
        spec: CellSpec,
        batch: int,
        hidden_size: int,
        proj_size: int,
        like: Tensor,
        training: bool,
    ) -> Masks:
        """The per-sequence masks (``recurrent``, ``candidate``) for ``batch`` sequences."""
        recurrent = candidate = None
        if training and self.recurrent_dropout > 0:
            width = spec.output_size(hidden_size, proj_size)
            recurrent = _keep((batch, width), self.recurrent_dropout, like)
        if training and self.candidate_dropout > 0:
            candidate = _keep((batch, hidden_size), self.candidate_dropout, like)
        return Masks(recurrent=recurrent, candidate=candidate)

    def zoneout_masks(
        self,
        shape: tuple[int, ...],
        hidden_size: int,
        output_size: int,
        like: Tensor,
        training: bool,
    ) -> tuple[Tensor | None, Tensor | None]:
        """``(zoneout_cell, zoneout_hidden)`` of shape ``shape + (H,)`` and ``shape + (P,)``:
        Bernoulli(p) draws in training, ``p`` (the expectation) in evaluation; ``None`` if p = 0."""
        masks = []
        for p, width in ((self.zoneout_cell, hidden_size), (self.zoneout_hidden, output_size)):
            if p == 0:
                masks.append(None)
            elif training:
                masks.append(_bernoulli((*shape, width), p, like))
            else:
                masks.append(like.new_full((1,) * (len(shape) + 1), p).expand(*shape, width))
        return masks[0], masks[1]

    def draw(
        self, spec: CellSpec, x: Tensor, hidden_size: int, proj_size: int, training: bool
    ) -> Masks:
        """The masks of one direction of one layer over ``x`` ``(T, B, F)``: the per-sequence
        ones, then zoneout's (no ``reset``)."""
        steps, batch = x.shape[0], x.shape[1]
        masks = self.sequence_masks(spec, batch, hidden_size, proj_size, x, training)
        zoneout_cell, zoneout_hidden = self.zoneout_masks(
            (steps, batch), hidden_size, spec.output_size(hidden_size, proj_size), x, training
        )
        return masks._replace(zoneout_cell=zoneout_cell, zoneout_hidden=zoneout_hidden)


_BITS = 2**31
"""``int32`` ``random_()`` draws uniformly from ``[0, 2^31)``."""


def _bernoulli(shape, p: float, like: Tensor) -> Tensor:
    r"""Bernoulli(``p``) draws (1 with probability ``p``) of ``like``'s dtype and device.

    On the CPU each entry is one ``int32`` ``random_()`` draw ``u``, uniform on
    :math:`[0, 2^{31})`, and the mask is :math:`u < \mathrm{round}(p\, 2^{31})`: the probability
    is ``p`` to within :math:`2^{-32}`, and it is about three times faster than ``bernoulli_(p)``,
    which was most of zoneout's cost on the numba backend (its ``(T, B, H)`` masks are drawn on
    every call). Other devices use ``bernoulli_``. Both take torch's generator, so
    ``torch.manual_seed`` reproduces the draws."""
    if like.device.type != "cpu":
        return torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(p)
    threshold = round(p * _BITS)
    if threshold >= _BITS:  # p = 1 (also keeps the threshold inside int32)
        return torch.ones(shape, dtype=like.dtype)
    return torch.empty(shape, dtype=torch.int32).random_().lt_(threshold).to(like.dtype)


def _keep(shape, p: float, like: Tensor) -> Tensor:
    """An inverted-dropout mask: each entry 0 with probability ``p``, else ``1 / (1 - p)``."""
    mask = torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(1.0 - p)
    return mask.div_(1.0 - p)


def zoneout(
    spec: CellSpec,
    previous: tuple[Tensor, ...],
    fresh: tuple[Tensor, ...],
    keep_cell: Tensor | None,
    keep_hidden: Tensor | None,
) -> tuple[Tensor, ...]:
    r"""The state after zoneout: :math:`d \odot` ``previous`` :math:`+ (1 - d) \odot` ``fresh`` for
    ``h`` (weight ``keep_hidden``, ``(B, P)``) and ``c`` (``keep_cell``, ``(B, H)``); other state
    tensors (fed-back gates) are ``fresh``'s."""
    keeps = {"h": keep_hidden, "c": keep_cell}
    return tuple(
        new if keeps.get(name) is None else keeps[name] * old + (1 - keeps[name]) * new
        for name, old, new in zip(spec.state_names, previous, fresh, strict=True)
    )


def direction_resets(reset: Tensor, lengths: Tensor | None, reverse: bool) -> Tensor:
    """Where one direction resets its state: ``(T, B)`` bool by time position.

    ``reset[t, b]`` starts a new segment of sequence ``b`` at step ``t``; every segment runs as a
    sequence of its own, from the initial state. The forward direction resets before the steps
    that start a segment; the reverse direction runs each segment from its last step, so it
    resets before the step preceding a segment start (``reset[t + 1]``). The first step a
    direction processes never resets: it starts from the initial state anyway, and the gradient
    of the initial state flows from that first segment only.
    """
    steps = reset.shape[0]
    if reverse:
        resets = torch.zeros_like(reset)
        resets[:-1] = reset[1:]
    else:
        resets = reset.clone()
        resets[0] = False
    if lengths is not None:  # padding never resets; the reverse pass starts at the last valid step
        time = torch.arange(steps, device=reset.device).unsqueeze(1)
        last = lengths.to(reset.device).unsqueeze(0) - (1 if reverse else 0)
        resets &= time < last
    return resets


def reset_state(
    state: tuple[Tensor, ...], initial: tuple[Tensor, ...], reset: Tensor
) -> tuple[Tensor, ...]:
    """``state`` with the rows where ``reset`` ``(B,)`` is set replaced by ``initial``, detached:
    no gradient crosses a reset."""
    where = reset.unsqueeze(-1)
    return tuple(
        torch.where(where, start.detach(), s) for s, start in zip(state, initial, strict=True)
    )
