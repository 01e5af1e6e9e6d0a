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

from carousel.kernels.numba_cpu.common import G1997, H1997, IDENTITY, TANH, kernel
from carousel.kernels.numba_cpu.lstm import lstm_backward, lstm_forward
from carousel.kernels.numba_cpu.lstm_config import (
    BLOCK_SIZE,
    CANDIDATE_ACTIVATION,
    FEED_I,
    FEED_O,
    OUTPUT_ACTIVATION,
    ROW_G,
    ROW_I,
    ROW_O,
)


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
    bias_mask, hh_mask, out_mask, out_bias_mask, lr, xs, lengths, targets, per_step, outputs,
):  # fmt: skip
    """Online gradient descent over ``xs (N, T, I)``, one sequence at a time (see the module
    docstring); writes each sequence's pre-update outputs to ``outputs`` (the shape of
    ``targets``) and changes the weights in place. The masks ``bias_mask (G,)``,
    ``hh_mask (G, R)``, ``out_mask (O, J)`` and ``out_bias_mask (O,)`` are 1 where a weight
    exists; absent weights get no update."""
    hidden = out_weight.shape[1] - (xs.shape[2] if from_inputs else 0)
    rows, sources, inputs = weight_ih.shape[0], weight_hh.shape[1], xs.shape[2]
    units = out_weight.shape[0]
    feedback = sources - hidden
    zeros_h, zeros_f = np.zeros((1, hidden)), np.zeros((1, feedback))
    empty, empty3 = np.zeros((0, 0)), np.zeros((0, 0, 0))  # no projection, options, masks
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
        cells, _, _, _, gates, cell_prev, source, y, norm, inverse = lstm_forward(
            config, x, zeros_h, zeros_h, zeros_f, weight_ih, bias, weight_hh, empty, empty,
            empty, empty, empty, empty, empty, empty3, empty3, empty, one, reverse, keep,
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
            config, x, weight_ih, weight_hh, empty, empty, empty, empty, empty, empty, empty,
            empty3, empty3, empty, one, reverse, gates, cell_prev, source, y, norm, inverse,
            d_cells, zeros_h, zeros_h, zeros_f, reverse, workspace,
        )  # fmt: skip
        weight_ih -= lr * grads[4]
        bias -= lr * (grads[5] * bias_mask)
        weight_hh -= lr * (grads[6] * hh_mask)
        out_weight -= lr * (d_out_weight * out_mask)
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
    empty, empty3 = np.zeros((0, 0)), np.zeros((0, 0, 0))
    reverse, keep = lengths[0] < 0, lengths[0] < 0
    x = np.ascontiguousarray(xs.transpose(1, 0, 2))  # (T, N, I)
    cells = lstm_forward(
        config, x, np.zeros((batch, hidden)), np.zeros((batch, hidden)),
        np.zeros((batch, feedback)), weight_ih, bias, weight_hh, empty, empty, empty, empty,
        empty, empty, empty, empty3, empty3, empty, lengths, reverse, keep,
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


@kernel
def _squash(code, x):
    """``(f(x), f'(x))`` of the activation ``code`` (sigmoid, tanh, g1997, h1997, identity)."""
    if code == IDENTITY:
        return x, 1.0
    scale, slope, offset = 1.0, 1.0, 0.0
    if code == TANH:
        scale, slope, offset = 2.0, 2.0, -1.0
    elif code == G1997:
        scale, offset = 4.0, -2.0
    elif code == H1997:
        scale, offset = 2.0, -1.0
    sigma = _sigmoid(slope * x)
    return scale * sigma + offset, scale * slope * sigma * (1.0 - sigma)


@kernel
def train_online_steps(
    config, weight_ih, bias, weight_hh, out_weight, out_bias, from_inputs, linear,
    bias_mask, hh_mask, out_mask, out_bias_mask, lr, xs, lengths, targets, per_step, each_step,
    outputs,
):  # fmt: skip
    r"""The paper's own online algorithm: truncated RTRL, weights changed at every target step.

    With the truncated gradient, the error reaching a cell's state is all that is carried in
    time, so the gradient can be computed forward: per cell :math:`j` of block :math:`k` and
    source :math:`v = [x(t), y^c(t-1), \gamma(t-1), 1]`,

    .. math::
        \frac{\partial s_j(t)}{\partial w_{c_j v}} \mathrel{+}= y^{in_k}\, g'(net_{c_j})\, v,
        \qquad
        \frac{\partial s_j(t)}{\partial w_{in_k v}} \mathrel{+}= g(net_{c_j})\,
        \sigma'(net_{in_k})\, v,

    and at a target step the error :math:`e_{s_j} = \sum_m w_{mj} \delta_m\, y^{out_k} h'(s_j)`
    times these partials is the gradient of the cell and input-gate weights; output gates and
    output units take their gradient from the current step alone (Hochreiter & Schmidhuber 1997,
    appendix A.1). With ``each_step`` the weights change after every target step, as in the
    paper; without it the gradients are summed and applied after the sequence, which equals
    :func:`train_online` exactly. Arguments as :func:`train_online`.
    """
    inputs, rows, sources = xs.shape[2], weight_ih.shape[0], weight_hh.shape[1]
    hidden = out_weight.shape[1] - (inputs if from_inputs else 0)
    units_out = out_weight.shape[0]
    block = config[BLOCK_SIZE]
    gates = hidden // block
    row_i, row_g, row_o = config[ROW_I], config[ROW_G], config[ROW_O]
    feed_i, feed_o = config[FEED_I], config[FEED_O]
    cand_code, out_code = config[CANDIDATE_ACTIVATION], config[OUTPUT_ACTIVATION]
    width = inputs + sources + 1  # v = [x, source, 1]
    v = np.empty(width)
    source = np.empty(sources)
    state = np.empty(hidden)
    partial_c = np.empty((hidden, width))
    partial_i = np.empty((hidden, width))
    net = np.empty(rows)
    y_in, y_out = np.empty(gates), np.ones(gates)
    h_value, h_slope, cells = np.empty(hidden), np.empty(hidden), np.empty(hidden)
    result, delta, e_cells = np.empty(units_out), np.empty(units_out), np.empty(hidden)
    d_rows = np.zeros((rows, width))  # gradient of [weight_ih | weight_hh | bias] by row
    d_out = np.zeros(out_weight.shape)
    d_out_bias = np.zeros(units_out)
    nonzero = np.empty(inputs, dtype=np.int64)  # the step's nonzero inputs (one-hot: one)
    touched = np.zeros(inputs + 1, dtype=np.int64)  # inputs with output-weight gradient to
    # apply: touched[0] of them, in touched[1:], each once; flags mark them
    flags = np.zeros(inputs, dtype=np.bool_)
    for n in range(xs.shape[0]):
        source[:] = 0.0
        state[:] = 0.0
        partial_c[:] = 0.0
        partial_i[:] = 0.0
        steps = lengths[n]
        for t in range(steps):
            count = 0
            for i in range(inputs):
                v[i] = xs[n, t, i]
                if v[i] != 0.0:
                    nonzero[count] = i
                    count += 1
            for r in range(sources):
                v[inputs + r] = source[r]
            v[width - 1] = 1.0
            for g in range(rows):
                total = bias[g]
                for c in range(count):
                    total += weight_ih[g, nonzero[c]] * v[nonzero[c]]
                for r in range(sources):
                    total += weight_hh[g, r] * v[inputs + r]
                net[g] = total
            for k in range(gates):
                y_in[k] = _sigmoid(net[row_i + k])
                if row_o >= 0:
                    y_out[k] = _sigmoid(net[row_o + k])
            for j in range(hidden):
                k = j // block
                z, z_slope = _squash(cand_code, net[row_g + j])
                gate_slope = y_in[k] * (1.0 - y_in[k])
                for m in range(width):
                    partial_c[j, m] += y_in[k] * z_slope * v[m]
                    partial_i[j, m] += z * gate_slope * v[m]
                state[j] += y_in[k] * z
                h_value[j], h_slope[j] = _squash(out_code, state[j])
                cells[j] = y_out[k] * h_value[j]
            for j in range(hidden):
                source[j] = cells[j]
            for k in range(gates):
                if feed_i >= 0:
                    source[hidden + feed_i + k] = y_in[k]
                if feed_o >= 0:
                    source[hidden + feed_o + k] = y_out[k]
            if not per_step and t < steps - 1:
                continue
            row = t if per_step else 0
            for k in range(units_out):
                total = out_bias[k]
                for j in range(hidden):
                    total += out_weight[k, j] * cells[j]
                if from_inputs:
                    for c in range(count):
                        total += out_weight[k, hidden + nonzero[c]] * v[nonzero[c]]
                result[k] = total if linear else _sigmoid(total)
                outputs[n, row, k] = result[k]
                slope = 1.0 if linear else result[k] * (1.0 - result[k])
                delta[k] = (result[k] - targets[n, row, k]) * slope
                d_out_bias[k] += delta[k]
                for j in range(hidden):
                    d_out[k, j] += delta[k] * cells[j]
                if from_inputs:
                    for c in range(count):
                        d_out[k, hidden + nonzero[c]] += delta[k] * v[nonzero[c]]
            if from_inputs:
                for c in range(count):
                    if not flags[nonzero[c]]:
                        flags[nonzero[c]] = True
                        touched[0] += 1
                        touched[touched[0]] = nonzero[c]
            for j in range(hidden):
                total = 0.0
                for k in range(units_out):
                    total += out_weight[k, j] * delta[k]
                e_cells[j] = total
            for j in range(hidden):
                k = j // block
                e_state = e_cells[j] * y_out[k] * h_slope[j]
                for m in range(width):
                    d_rows[row_g + j, m] += e_state * partial_c[j, m]
                    d_rows[row_i + k, m] += e_state * partial_i[j, m]
                if row_o >= 0:
                    d_net = e_cells[j] * h_value[j] * y_out[k] * (1.0 - y_out[k])
                    for m in range(width):
                        d_rows[row_o + k, m] += d_net * v[m]
            if each_step or t == steps - 1:
                _apply(
                    lr, d_rows, d_out, d_out_bias, weight_ih, weight_hh, bias, out_weight,
                    out_bias, bias_mask, hh_mask, out_mask, out_bias_mask, hidden, touched, flags,
                )  # fmt: skip


@kernel
def _apply(
    lr, d_rows, d_out, d_out_bias, weight_ih, weight_hh, bias, out_weight, out_bias,
    bias_mask, hh_mask, out_mask, out_bias_mask, hidden, touched, flags,
):  # fmt: skip
    """Gradient step with the summed gradients (masked where weights do not exist), then zero
    them. Of the output units' weights from the inputs (columns ``hidden ...``), only those
    from the inputs listed in ``touched`` (their count first; ``flags`` marks them) can have a
    gradient: only they are visited, and the list is emptied."""
    inputs, sources = weight_ih.shape[1], weight_hh.shape[1]
    for g in range(weight_ih.shape[0]):
        for i in range(inputs):
            weight_ih[g, i] -= lr * d_rows[g, i]
        for r in range(sources):
            weight_hh[g, r] -= lr * d_rows[g, inputs + r] * hh_mask[g, r]
        bias[g] -= lr * d_rows[g, inputs + sources] * bias_mask[g]
    for k in range(out_weight.shape[0]):
        for j in range(hidden):
            out_weight[k, j] -= lr * d_out[k, j] * out_mask[k, j]
            d_out[k, j] = 0.0
        for c in range(touched[0]):
            column = hidden + touched[1 + c]
            out_weight[k, column] -= lr * d_out[k, column] * out_mask[k, column]
            d_out[k, column] = 0.0
        out_bias[k] -= lr * d_out_bias[k] * out_bias_mask[k]
    for c in range(touched[0]):
        flags[touched[1 + c]] = False
    touched[0] = 0
    d_rows[:] = 0.0
    d_out_bias[:] = 0.0
