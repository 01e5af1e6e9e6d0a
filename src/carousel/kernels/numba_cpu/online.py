r"""Online training of a 1997 LSTM layer with sigmoid (or linear) output units, in compiled code.

The loop behind :class:`carousel.experiments.faithful.Net1997` (whose docstring has the network
and the learning rule): :func:`train_online` runs :func:`~carousel.kernels.numba_cpu.lstm.lstm_forward`
and :func:`~carousel.kernels.numba_cpu.lstm.lstm_backward` on one sequence at a time (``B = 1``),
adds the output units and their error, and changes the weights after every sequence;
:func:`predict` runs a padded batch forward. Arrays are float64, C-contiguous; shapes as in
:mod:`carousel.experiments.faithful`.
"""

from __future__ import annotations

import math

import numpy as np

from carousel.kernels.numba_cpu.common import kernel
from carousel.kernels.numba_cpu.lstm import lstm_backward, lstm_forward


@kernel
def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


@kernel
def _output_units(out_weight, out_bias, from_inputs, linear, cells, x, t, hidden, result):
    """``result (O,)`` = the output units at step ``t`` from ``cells (T, 1, H)``, ``x (T, 1, I)``."""
    for k in range(out_weight.shape[0]):
        net = out_bias[k]
        for j in range(hidden):
            net += out_weight[k, j] * cells[t, 0, j]
        if from_inputs:
            for i in range(x.shape[2]):
                net += out_weight[k, hidden + i] * x[t, 0, i]
        result[k] = net if linear else _sigmoid(net)


@kernel
def train_online(
    config, weight_ih, bias, weight_hh, out_weight, out_bias, from_inputs, linear,
    bias_mask, hh_mask, out_bias_mask, lr, xs, lengths, targets, per_step, outputs,
):  # fmt: skip
    """Online gradient descent over ``xs (N, T, I)``, one sequence at a time (see the module
    docstring); writes each sequence's pre-update outputs to ``outputs`` (the shape of
    ``targets``) and changes the weights in place."""
    hidden = out_weight.shape[1] - (xs.shape[2] if from_inputs else 0)
    rows, sources, inputs = weight_ih.shape[0], weight_hh.shape[1], xs.shape[2]
    units = out_weight.shape[0]
    feedback = sources - hidden
    zeros_h, zeros_f = np.zeros((1, hidden)), np.zeros((1, feedback))
    empty = np.zeros((0, 0))
    reverse, keep = lengths[0] < 0, lengths[0] > 0  # runtime flags: literals would compile anew
    workspace = np.empty(xs.shape[1] * rows)
    result = np.empty(units)
    d_out_weight = np.empty(out_weight.shape)
    d_out_bias = np.empty(units)
    one = np.ones(1, dtype=np.int64)
    for n in range(xs.shape[0]):
        steps = lengths[n]
        x = np.ascontiguousarray(xs[n, :steps]).reshape((steps, 1, inputs))
        one[0] = steps
        cells, _, _, _, gates, cell_prev, source, y = lstm_forward(
            config, x, zeros_h, zeros_h, zeros_f, weight_ih, bias, weight_hh, empty, empty,
            one, reverse, keep,
        )  # fmt: skip
        d_cells = np.zeros((steps, 1, hidden))
        d_out_weight[:] = 0.0
        d_out_bias[:] = 0.0
        first = 0 if per_step else steps - 1
        for t in range(first, steps):
            _output_units(out_weight, out_bias, from_inputs, linear, cells, x, t, hidden, result)
            row = t if per_step else 0
            for k in range(units):
                outputs[n, row, k] = result[k]
                slope = 1.0 if linear else result[k] * (1.0 - result[k])
                delta = (result[k] - targets[n, row, k]) * slope
                d_out_bias[k] += delta
                for j in range(hidden):
                    d_out_weight[k, j] += delta * cells[t, 0, j]
                    d_cells[t, 0, j] += delta * out_weight[k, j]
                if from_inputs:
                    for i in range(inputs):
                        d_out_weight[k, hidden + i] += delta * x[t, 0, i]
        grads = lstm_backward(
            config, x, weight_ih, weight_hh, empty, empty, one, reverse, gates, cell_prev,
            source, y, d_cells, zeros_h, zeros_h, zeros_f, reverse, workspace,
        )  # fmt: skip
        weight_ih -= lr * grads[4]
        bias -= lr * (grads[5] * bias_mask)
        weight_hh -= lr * (grads[6] * hh_mask)
        out_weight -= lr * d_out_weight
        out_bias -= lr * (d_out_bias * out_bias_mask)


@kernel
def predict(
    config, weight_ih, bias, weight_hh, out_weight, out_bias, from_inputs, linear, xs, lengths,
    per_step, outputs,
):  # fmt: skip
    """The outputs of the network for ``xs (N, T, I)`` (padded, ``lengths``), no training."""
    hidden = out_weight.shape[1] - (xs.shape[2] if from_inputs else 0)
    batch = xs.shape[0]
    feedback = weight_hh.shape[1] - hidden
    empty = np.zeros((0, 0))
    reverse, keep = lengths[0] < 0, lengths[0] < 0
    x = np.ascontiguousarray(xs.transpose(1, 0, 2))  # (T, N, I)
    cells = lstm_forward(
        config, x, np.zeros((batch, hidden)), np.zeros((batch, hidden)),
        np.zeros((batch, feedback)), weight_ih, bias, weight_hh, empty, empty, lengths,
        reverse, keep,
    )[0]  # fmt: skip
    result = np.empty(out_weight.shape[0])
    for n in range(batch):
        steps = lengths[n]
        cell_n = np.ascontiguousarray(cells[:steps, n : n + 1])  # (T, 1, H)
        x_n = np.ascontiguousarray(x[:steps, n : n + 1])
        first = 0 if per_step else steps - 1
        for t in range(first, steps):
            _output_units(out_weight, out_bias, from_inputs, linear, cell_n, x_n, t, hidden, result)
            for k in range(out_weight.shape[0]):
                outputs[n, t if per_step else 0, k] = result[k]
