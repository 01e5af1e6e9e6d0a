"""An LSTM that learns the pocket calculator of :mod:`carousel.diagnostics.calculator` from random
examples, and its walkthrough table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from carousel.diagnostics.calculator import Walkthrough, _sequence, calculator
from carousel.nn import LSTM

# ---- an LSTM that learns the calculator ----------------------------------------------------------


def calculator_batch(
    batch: int, steps: int, generator: torch.Generator, zero_probability: float = 0.3
) -> tuple[Tensor, Tensor]:
    """Random calculator examples: inputs 0 (probability ``zero_probability``) or 1, 2, 3.

    Returns ``(x, y)``, each ``(steps, batch, 1)`` float32, ``y`` the calculator's printed output.
    """
    values = torch.randint(1, 4, (steps, batch), generator=generator).double()
    zero = torch.rand(steps, batch, generator=generator, dtype=torch.float64) < zero_probability
    x = torch.where(zero, 0.0, values).numpy()
    printed, _ = calculator(x)
    return (
        torch.from_numpy(x).float().unsqueeze(-1),
        torch.from_numpy(printed).float().unsqueeze(-1),
    )


class CalculatorModel(nn.Module):
    """A ``carousel.LSTM`` (sigmoid gates, tanh, as ``torch.nn.LSTM``) and a linear read-out."""

    def __init__(self, hidden_size: int = 16) -> None:
        super().__init__()
        self.lstm = LSTM(1, hidden_size)
        self.readout = nn.Linear(hidden_size, 1)

    def forward(self, x: Tensor) -> Tensor:
        """``(T, N, 1)`` inputs -> ``(T, N, 1)`` printed outputs."""
        return self.readout(self.lstm(x)[0])


@dataclass
class TrainedCalculator:
    """What :func:`train_lstm` returns.

    Attributes:
        model: the trained :class:`CalculatorModel` (in ``eval()`` mode).
        losses: the training loss (mean squared error over all steps) of every update.
        test_error: mean absolute error on fresh random sequences.
        test_exact: fraction of those sequences whose every rounded output is the target.
    """

    model: CalculatorModel
    losses: list[float]
    test_error: float
    test_exact: float


def train_lstm(
    updates: int = 3000,
    *,
    hidden_size: int = 16,
    batch: int = 64,
    steps: int = 12,
    learning_rate: float = 1e-2,
    seed: int = 0,
    test_sequences: int = 1000,
    progress: Callable[[], None] | None = None,
) -> TrainedCalculator:
    """Train a :class:`CalculatorModel` with Adam on random calculator sequences.

    The loss is the mean squared error over every step, so the model must also print 0 while
    it accumulates (the lecture suggests scoring those steps too). Deterministic for a given
    ``seed``; it does not touch the global random state. ``progress``, if given, is called
    after every update.
    """
    if not isinstance(updates, int) or isinstance(updates, bool) or updates < 1:
        raise ValueError(f"updates must be a positive int; got {updates!r}")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CalculatorModel(hidden_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, updates)
    losses = []
    model.train()
    for _ in range(updates):
        x, y = calculator_batch(batch, steps, generator)
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress()
    model.eval()
    x, y = calculator_batch(test_sequences, steps, generator)
    with torch.no_grad():
        predicted = model(x)
    exact = (predicted.round() == y).all(dim=0).float().mean()
    return TrainedCalculator(
        model=model,
        losses=losses,
        test_error=float((predicted - y).abs().mean()),
        test_exact=float(exact),
    )


def model_walkthrough(model: CalculatorModel, x=None, y=None) -> Walkthrough:
    r"""The printed output of a trained :class:`CalculatorModel` on one sequence, with
    :math:`E = \frac12 \sum_t (\text{output}[t] - y[t])^2` over all steps."""
    x, y = _sequence(x, y)
    with torch.no_grad():
        printed = model(torch.tensor(x, dtype=torch.float32).view(-1, 1, 1)).view(-1)
    printed = printed.double().numpy()
    return Walkthrough(
        title=f"trained LSTM ({model.lstm.hidden_size} cells) and linear read-out",
        table={"t": np.arange(x.size, dtype=np.float64), "x": x, "y": y, "output": printed},
        error=float(0.5 * np.sum((printed - y) ** 2)),
        output="output",
    )
