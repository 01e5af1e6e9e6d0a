"""Online training of the 1997 cell, one sequence at a time: the per-sequence cost that decides how
long a reproduction of the 1997 experiments takes (up to ~1M sequences per trial).

Shape (B, T, I, H) = (1, 1000, 2, 4), memory blocks of 2 cells, truncated gradient, float64. One
sequence = forward, backward, plain SGD update. Two ways:

- through the layer: ``carousel.LSTM`` (numba backend) and ``torch.optim.SGD``;
- through the plain kernels: :func:`carousel.kernels.numba_cpu.lstm.lstm_forward` and
  ``lstm_backward`` called from a compiled loop (below), as an experiment module would.

Usage: ``PYTHONPATH=src python benchmarks/online_1997.py [--output docs/performance.md]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from numba import njit

import carousel
from carousel.benchmarks.harness import write_block
from carousel.kernels.numba_cpu.lstm import lstm_backward, lstm_config, lstm_forward

STEPS, INPUTS, HIDDEN = 1000, 2, 4


@njit(cache=True)
def sgd_on_sequences(config, xs, weight_ih, bias, weight_hh, sequences, learning_rate):
    """Train on ``sequences`` sequences taken in turn from ``xs`` ``(N, T, I)``: the loss is the
    last output of the first cell (as in the adding problem's single output)."""
    hidden = weight_hh.shape[1] // 2  # source: h and the fed-back gates (2 x H / 2)
    empty, empty3 = np.zeros((0, 0)), np.zeros((0, 0, 0))  # no projection, options, masks
    lengths = np.full(1, xs.shape[1], dtype=np.int64)
    zeros = np.zeros((1, hidden))
    d_output = np.zeros((xs.shape[1], 1, hidden))
    d_output[-1, 0, 0] = 1.0
    reverse, keep = sequences < 0, sequences > 0  # runtime flags: constants would compile anew
    workspace = np.empty(xs.shape[1] * weight_ih.shape[0])  # reused by every backward call
    for n in range(sequences):
        x = xs[n % xs.shape[0]].reshape((xs.shape[1], 1, xs.shape[2]))
        _, _, _, _, gates, cell_prev, source, y, norm, inverse = lstm_forward(
            config, x, zeros, zeros, zeros, weight_ih, bias, weight_hh, empty, empty,
            empty, empty, empty, empty, empty, empty3, empty3, empty, lengths, reverse, keep,
        )  # fmt: skip
        grads = lstm_backward(
            config, x, weight_ih, weight_hh, empty, empty, empty, empty, empty, empty, empty,
            empty3, empty3, empty, lengths, reverse, gates, cell_prev, source, y, norm, inverse,
            d_output, zeros, zeros, zeros, reverse, workspace,
        )  # fmt: skip
        weight_ih -= learning_rate * grads[4]
        bias -= learning_rate * grads[5]
        weight_hh -= learning_rate * grads[6]


def through_layer(xs: torch.Tensor, sequences: int) -> float:
    torch.manual_seed(0)
    layer = carousel.LSTM(
        INPUTS, HIDDEN, variant="1997", block_size=2, truncate_gradient=True,
        backend="numba", dtype=torch.float64,
    )  # fmt: skip
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.01)
    upstream = torch.zeros(STEPS, 1, HIDDEN, dtype=torch.float64)
    upstream[-1, 0, 0] = 1.0
    start = time.perf_counter()
    for n in range(sequences):
        optimizer.zero_grad(set_to_none=True)
        output, _ = layer(xs[n % len(xs)].unsqueeze(1))
        output.backward(upstream)
        optimizer.step()
    return (time.perf_counter() - start) / sequences


def through_kernels(xs: np.ndarray, sequences: int) -> float:
    spec = carousel.make_spec("1997", block_size=2, truncate_gradient=True)
    rng = np.random.default_rng(0)
    rows, sources = spec.num_gate_rows(HIDDEN), spec.recurrent_size(HIDDEN)
    weight_ih = rng.uniform(-0.1, 0.1, (rows, INPUTS))
    weight_hh = rng.uniform(-0.1, 0.1, (rows, sources))
    bias = np.zeros(rows)
    config = lstm_config(spec, HIDDEN)
    start = time.perf_counter()
    sgd_on_sequences(config, xs, weight_ih, bias, weight_hh, sequences, 0.01)
    return (time.perf_counter() - start) / sequences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    xs = torch.rand(16, STEPS, INPUTS, dtype=torch.float64)
    through_layer(xs, 3), through_kernels(xs.numpy(), 3)  # compile or load the kernels
    layer = statistics.median(through_layer(xs, args.sequences) for _ in range(args.repeats))
    plain = statistics.median(
        through_kernels(xs.numpy(), args.sequences) for _ in range(args.repeats)
    )
    report = (
        "1997 cell trained online, (B, T, I, H) = (1, 1000, 2, 4), blocks of 2, truncated "
        "gradient, float64; forward + backward + SGD update per sequence (median of "
        f"{args.repeats} runs of {args.sequences} sequences): through `carousel.LSTM` and "
        f"`torch.optim.SGD` {layer * 1e3:.3f} ms ({layer / STEPS * 1e6:.2f} us per step); through "
        f"the plain kernels in a compiled loop {plain * 1e3:.3f} ms "
        f"({plain / STEPS * 1e6:.2f} us per step)."
    )
    print(report)
    if args.output is not None:
        write_block(args.output, "online", report)


if __name__ == "__main__":
    main()
