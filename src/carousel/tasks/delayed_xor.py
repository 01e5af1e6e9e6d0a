r"""The strongly delayed XOR: the task that Hochreiter & Schmidhuber (1997, section 6,
"Limitations of LSTM") name as one that their truncated-gradient LSTM "will not easily solve".

The source it is taken from, a student review of the paper ("Long Short-Term Memory", Group 01,
slide "LSTM's Limitations and Advantages"), says: "Efficient truncated backprop version of the
LSTM algorithm will not easily solve problems similar to 'strongly delayed XOR problems'"; the
paper defines them: "the goal is to compute the XOR of two widely separated inputs that
previously occurred somewhere in a noisy sequence. The reason is that storing only one of the
inputs will not help to reduce the expected error - the task is non-decomposable". The paper
gives no experiment; this one is laid out like the adding problem.

Each step is a pair (value, marker); every sequence has exactly ``length`` (:math:`T`) steps
(steps counted from 0):

- two bits :math:`b_1, b_2`, each 0 or 1 with probability 1/2, independently;
- :math:`b_1` sits at a step uniform in :math:`[0, \lfloor T/4 \rfloor)`, :math:`b_2` at a step
  uniform in :math:`[\lfloor T/2 \rfloor, \lfloor 3T/4 \rfloor)`: they are at least
  :math:`\lfloor T/2 \rfloor - \lfloor T/4 \rfloor + 1` steps apart, and :math:`b_2` comes at
  least :math:`T - \lfloor 3T/4 \rfloor` steps before the end;
- a bit's pair is (+1 for 1 / -1 for 0, marker 1); every other pair is (noise uniform in
  :math:`[-1, 1]`, marker 0).

The target, given only at the end, is :math:`b_1 \oplus b_2` (``y (B, 1)``). Since each bit alone
is independent of the target, remembering one of them does not lower the expected error. Head
``"regressor"``, one sigmoid output, squared error; a sequence is *correct* if the absolute error
at its end is below 0.5 (the output is on the right side of 0.5). ``solved``: the last
``stop_window`` = 2,000 training sequences all correct (the window of the paper's experiments
4-6; unlike 4 and 6, no condition on the mean error). The test set has 2,560 sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from carousel.options import option
from carousel.tasks.base import Batch, ModelIO
from carousel.tasks.paper import SequenceTask, check_options, stop_window_option, test_size_option


@dataclass(frozen=True)
class DelayedXorOptions:
    """Options of the strongly delayed XOR."""

    length: int = option(100, "T, the sequence length; the bits lie in the first and third quarter")
    test_size: int = test_size_option(2560)
    stop_window: int = stop_window_option(2000)


class DelayedXorTask(SequenceTask):
    """The strongly delayed XOR; see the module docstring. ``x``: ``(B, T, 2)``, ``y``:
    ``(B, 1)``."""

    name = "delayed_xor"
    Options = DelayedXorOptions
    tolerance = 0.5

    def configure(self, options: DelayedXorOptions) -> None:
        length = self.options.length
        check_options("delayed_xor", length=(length >= 4, f"at least 4; got {length}"))
        self.io = ModelIO("regressor", 2, 1, output_activation="sigmoid")

    def sequences(self, count: int, rng: torch.Generator) -> Batch:
        """``count`` sequences drawn with ``rng``."""
        steps = self.options.length
        values = torch.rand(count, steps, generator=rng) * 2 - 1  # (B, T) noise
        bits = torch.randint(2, (count, 2), generator=rng)  # (B, 2)
        first = torch.randint(0, steps // 4, (count,), generator=rng)
        second = torch.randint(steps // 2, 3 * steps // 4, (count,), generator=rng)
        rows = torch.arange(count)
        markers = torch.zeros(count, steps)
        for position, bit in ((first, bits[:, 0]), (second, bits[:, 1])):
            values[rows, position] = bit.float() * 2 - 1
            markers[rows, position] = 1.0
        x = torch.stack([values, markers], dim=-1)  # (B, T, 2)
        y = (bits[:, 0] ^ bits[:, 1]).float().unsqueeze(1)  # (B, 1)
        return Batch(x=x, y=y, mask=torch.ones(count, steps, dtype=torch.bool))
