"""The optimiser, its learning-rate schedule and gradient clipping: what
:class:`~carousel.train.config.OptimConfig` configures, as the loop (:mod:`carousel.train.loop`)
uses it at every step."""

from __future__ import annotations

import math

import torch

from carousel.train.config import OptimConfig


def make_optimizer(model: torch.nn.Module, settings: OptimConfig) -> torch.optim.Optimizer:
    """SGD (with ``momentum``, possibly 0) or Adam over the model's parameters."""
    if settings.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=settings.lr,
            momentum=settings.momentum,
            weight_decay=settings.weight_decay,
        )
    return torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)


def learning_rate(settings: OptimConfig, step: int, steps: int) -> float:
    r"""The learning rate of step ``step`` (0-based) of ``steps``.

    Linear warm-up over ``warmup_steps``: :math:`\eta (s + 1) / w`; then ``constant``
    :math:`\eta`, ``linear`` :math:`\eta (1 - p)` or ``cosine``
    :math:`\tfrac{\eta}{2} (1 + \cos \pi p)`, with :math:`p = (s - w) / (S - w)`.
    """
    warmup = settings.warmup_steps
    if step < warmup:
        return settings.lr * (step + 1) / warmup
    if settings.schedule == "constant":
        return settings.lr
    fraction = (step - warmup) / max(1, steps - warmup)
    if settings.schedule == "linear":
        return settings.lr * (1 - fraction)
    return settings.lr * 0.5 * (1 + math.cos(math.pi * fraction))


def clip_gradients(model: torch.nn.Module, settings: OptimConfig) -> float:
    """Clip each gradient entry to ``clip_value``, then the global norm to ``clip_norm`` (each if
    set); returns the global gradient norm before norm clipping."""
    parameters = [p for p in model.parameters() if p.grad is not None]
    if settings.clip_value:
        torch.nn.utils.clip_grad_value_(parameters, settings.clip_value)
    return float(torch.nn.utils.clip_grad_norm_(parameters, settings.clip_norm or math.inf))
