r"""Modular arithmetic without brackets, and parity: the state-tracking tasks of the xLSTM paper.

Beck et al. (2024, section 4.1, "formal languages") test whether a recurrent cell can track a
state on the tasks of Delétang et al. (2023), "Neural Networks and the Chomsky Hierarchy", trained
on short sequences and tested on longer ones; sLSTM's memory mixing is what solves the regular
languages there. This task is their *modular arithmetic without brackets*, and with
``operators=""`` their *parity check*:

- ``operators`` non-empty (default ``"+-*"``): an expression ``d_0 op_1 d_1 ... op_K d_K`` of
  digits in :math:`\{0, .., m - 1\}` (``modulus`` :math:`m`, default 5) and operators drawn
  uniformly from ``operators``, always of odd length :math:`2K + 1`; the target is its value
  mod :math:`m`, ``*`` binding before ``+`` and ``-`` (Delétang et al.'s rule), e.g. mod 5:
  ``1 + 2 * 3 = 2``, ``1 - 1 - 1 = 4``;
- ``operators=""``: a string of digits; the target is their sum mod :math:`m`. With
  ``modulus=2`` that is the parity check (the number of 1s, mod 2).

Each symbol is one step, one-hot: features ``0 .. m-1`` are the digits, then one per operator in
the order of ``operators``. Lengths (symbols) of training sequences are uniform in
``[train_min, train_max]`` (default 3 to 40, as the papers), of the long test sequences in
``[test_min, test_max]`` (default 41 to 256, the xLSTM paper's test range); an even length drawn
for an expression is lowered by one.

Head ``"classifier"`` from the final state; cross-entropy. The evaluation set holds
``test_size`` sequences of training lengths and ``test_size`` longer ones; the metrics are
``loss`` (nats per sequence), ``accuracy`` (fraction classified correctly), ``errors_short`` and
``errors_long`` (misclassified sequences of training length and longer; training batches have
no long ones). ``solved``: an evaluation with no sequence misclassified.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from carousel.options import option
from carousel.tasks.base import Batch, ModelIO, Task, generator
from carousel.tasks.paper import check_options

OPERATORS = "+-*"


@dataclass(frozen=True)
class ModularArithmeticOptions:
    """Options of modular arithmetic without brackets (and parity)."""

    modulus: int = option(5, "m: digits 0..m-1, the result mod m", minimum=2)
    operators: str = option(
        "+-*", 'operators drawn between digits; "" for a digit sum (m = 2: parity)'
    )
    train_min: int = option(3, "shortest training sequence (symbols)", minimum=1)
    train_max: int = option(40, "longest training sequence")
    test_min: int = option(41, "shortest long test sequence", minimum=1)
    test_max: int = option(256, "longest long test sequence")
    test_size: int = option(
        1024, "test sequences at training lengths, and as many longer", minimum=1
    )


def evaluate(digits: list[int], operators: list[str], modulus: int) -> int:
    """The value mod ``modulus`` of ``d_0 op_1 d_1 ...`` (``*`` first), or of the digit sum."""
    if not operators:
        return sum(digits) % modulus
    total, sign, product = 0, 1, digits[0]
    for operator, digit in zip(operators, digits[1:], strict=True):
        if operator == "*":
            product = product * digit % modulus
        else:
            total += sign * product
            sign, product = (1 if operator == "+" else -1), digit
    return (total + sign * product) % modulus


class ModularArithmeticTask(Task):
    """Modular arithmetic without brackets / parity; see the module docstring. ``x``:
    ``(B, T, m + len(operators))`` one-hot, ``y``: ``(B,)`` the value."""

    name = "modular_arithmetic"
    Options = ModularArithmeticOptions
    test_batch = 256

    def configure(self, options: ModularArithmeticOptions) -> None:
        o = options
        check_options(
            "modular_arithmetic",
            operators=(
                len(set(o.operators)) == len(o.operators) and set(o.operators) <= set(OPERATORS),
                f'distinct characters of "{OPERATORS}"; got {o.operators!r}',
            ),
            train_max=(o.train_max >= o.train_min, f">= train_min; got {o.train_max}"),
            test_max=(o.test_max >= o.test_min, f">= test_min; got {o.test_max}"),
        )
        if o.operators and max(o.train_max, o.test_max) < 3:
            raise ValueError("modular_arithmetic option train_max must be >= 3 for expressions")
        self.io = ModelIO("classifier", o.modulus + len(o.operators), o.modulus)

    def sequences(self, count: int, low: int, high: int, rng: torch.Generator) -> Batch:
        """``count`` sequences of lengths uniform in ``[low, high]`` drawn with ``rng``."""
        o = self.options
        lengths = torch.randint(low, high + 1, (count,), generator=rng)
        if o.operators:
            lengths = torch.clamp(lengths - (lengths % 2 == 0).long(), min=1)  # odd lengths
        steps = int(lengths.max())
        digits = torch.randint(o.modulus, (count, steps), generator=rng)
        choice = torch.randint(max(len(o.operators), 1), (count, steps), generator=rng)
        symbols = digits.clone()
        if o.operators:
            symbols[:, 1::2] = o.modulus + choice[:, 1::2]
        targets = []
        for row in range(count):
            length = int(lengths[row])
            if o.operators:
                row_digits = digits[row, :length:2].tolist()
                row_ops = [o.operators[k] for k in choice[row, 1:length:2].tolist()]
            else:
                row_digits, row_ops = digits[row, :length].tolist(), []
            targets.append(evaluate(row_digits, row_ops, o.modulus))
        mask = torch.arange(steps).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
        x = F.one_hot(symbols, self.io.input_size).float() * mask.unsqueeze(-1)
        return Batch(x=x, y=torch.tensor(targets), mask=mask)

    def train_batch(self, index: int, batch_size: int) -> Batch:
        """Training batch ``index``: lengths in ``[train_min, train_max]``, its own seeded stream."""
        rng = generator(self.seed, f"{self.name}-train", index)
        return self.sequences(batch_size, self.options.train_min, self.options.train_max, rng)

    def eval_batches(self) -> list[Batch]:
        """``test_size`` sequences of training lengths, then ``test_size`` longer ones."""
        if getattr(self, "_test", None) is None:
            o = self.options
            batches = []
            for stream, low, high in (
                ("short", o.train_min, o.train_max),
                ("long", o.test_min, o.test_max),
            ):
                rng = generator(self.seed, f"{self.name}-test-{stream}")
                for start in range(0, o.test_size, self.test_batch):
                    count = min(self.test_batch, o.test_size - start)
                    batches.append(self.sequences(count, low, high, rng))
            self._test = batches
        return self._test

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        """Cross-entropy of the logits ``output`` ``(B, m)``, averaged over the batch."""
        return F.cross_entropy(output, batch.y)

    def scores(self, output: Tensor, batch: Batch) -> dict[str, Tensor]:
        """Per sequence: its nll, whether it is correct, whether it is long, correct and long."""
        correct = (output.argmax(-1) == batch.y).double()
        long = (batch.mask.sum(1) > self.options.train_max).double()
        return {
            "nll": F.cross_entropy(output, batch.y, reduction="none"),
            "correct": correct,
            "long": long,
            "correct_long": correct * long,
        }

    def metrics(self, totals: dict[str, float], sequences: int) -> dict[str, float]:
        """``loss``, ``accuracy``, ``errors_short``, ``errors_long`` (see the module docstring)."""
        long, correct_long = totals["long"], totals["correct_long"]
        correct_short = totals["correct"] - correct_long
        return {
            "loss": totals["nll"] / sequences,
            "accuracy": totals["correct"] / sequences,
            "errors_short": float(round(sequences - long - correct_short)),
            "errors_long": float(round(long - correct_long)),
        }

    def solved(self, recent: dict[str, Tensor], evaluation: dict[str, float] | None) -> bool:
        """No test sequence misclassified, short or long (asked after evaluations only)."""
        if evaluation is None:
            return False
        return evaluation["errors_short"] == 0 and evaluation["errors_long"] == 0
