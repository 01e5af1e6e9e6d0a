"""Squashing functions used by the cells, each with its derivative written in terms of its output.

Every activation a cell may use is registered here under a name. The reference backend calls
:attr:`Activation.forward` (plain PyTorch ops, differentiated by autograd); fused kernels use
:attr:`Activation.derivative_from_output`, which gives :math:`f'(x)` from :math:`y = f(x)` alone,
so a kernel need only keep the activations of the forward pass, never the net inputs.

================  ===========================  ===========  ===========================
name              :math:`f(x)`                 range        :math:`f'(x)` from :math:`y`
================  ===========================  ===========  ===========================
``sigmoid``       :math:`1 / (1 + e^{-x})`     (0, 1)       :math:`y (1 - y)`
``hard_sigmoid``  :math:`\\min(1, \\max(0, x))`  [0, 1]       :math:`1` if :math:`0 < y < 1` else 0
``tanh``          :math:`\\tanh x`              (-1, 1)      :math:`1 - y^2`
``identity``      :math:`x`                    R            :math:`1`
``relu``          :math:`\\max(0, x)`           [0, inf)     :math:`1` if :math:`y > 0` else 0
``g1997``         :math:`4 \\sigma(x) - 2`      (-2, 2)      :math:`(4 - y^2) / 4`
``h1997``         :math:`2 \\sigma(x) - 1`      (-1, 1)      :math:`(1 - y^2) / 2`
================  ===========================  ===========  ===========================

``hard_sigmoid`` is the clipped ReLU ("CReLU") of the ECE 417 lecture (seed 004); ``g1997`` and
``h1997`` are the cell input and cell output squashing functions of Hochreiter & Schmidhuber (1997).
At the kinks of ``hard_sigmoid`` and ``relu`` the derivative is taken as 0, as torch's ``hardtanh``
and ``relu`` do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Activation:
    """A named squashing function.

    Attributes:
        name: registry key.
        forward: the function, in differentiable PyTorch ops.
        derivative_from_output: :math:`f'(x)` expressed through :math:`y = f(x)`; works on tensors
            and on NumPy arrays (used by the kernels' tests and by the diagnostics).
        code: a small integer identifying the function inside compiled kernels.
    """

    name: str
    forward: Callable[[Tensor], Tensor]
    derivative_from_output: Callable
    code: int


def _indicator(mask, like):
    """A 0/1 float array of ``like``'s type and dtype (tensor or NumPy array)."""
    return mask.to(like.dtype) if isinstance(like, Tensor) else mask.astype(like.dtype)


def _hard_sigmoid(x: Tensor) -> Tensor:
    return F.hardtanh(x, 0.0, 1.0)


def _g1997(x: Tensor) -> Tensor:
    return 4.0 * torch.sigmoid(x) - 2.0


def _h1997(x: Tensor) -> Tensor:
    return 2.0 * torch.sigmoid(x) - 1.0


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("sigmoid", torch.sigmoid, lambda y: y * (1 - y), 0),
        Activation("hard_sigmoid", _hard_sigmoid, lambda y: _indicator((y > 0) & (y < 1), y), 1),
        Activation("tanh", torch.tanh, lambda y: 1 - y * y, 2),
        Activation("identity", lambda x: x, lambda y: y * 0 + 1, 3),
        Activation("relu", torch.relu, lambda y: _indicator(y > 0, y), 4),
        Activation("g1997", _g1997, lambda y: (4 - y * y) / 4, 5),
        Activation("h1997", _h1997, lambda y: (1 - y * y) / 2, 6),
    )
}

GATE_ACTIVATIONS = ("sigmoid", "hard_sigmoid")
"""Activations whose range lies in [0, 1], the only ones allowed for gates."""


def get_activation(name: str, *, argument: str = "activation") -> Activation:
    """Return the registered activation ``name``; raise ``ValueError`` naming ``argument`` if unknown."""
    if not isinstance(name, str):
        raise TypeError(f"{argument} must be a str, one of {sorted(ACTIVATIONS)}; got {name!r}")
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"{argument} must be one of {sorted(ACTIVATIONS)}; got {name!r}") from None
