r"""Layer normalisation (Ba, Kiros & Hinton 2016) for the compiled kernels: one row forward and
backward, and the input projections of all steps at once.

.. math::
    \hat a = \frac{a - \mu}{\sqrt{\sigma^2 + \epsilon}}, \quad \mathrm{LN}(a) = \gamma \odot \hat a
        + \beta, \qquad
    \frac{\partial L}{\partial a} = \frac{1}{\sqrt{\sigma^2 + \epsilon}} \Big(g - \bar g
        - \hat a\, \overline{g \hat a}\Big), \quad g = \gamma \odot \frac{\partial L}{\partial
        \mathrm{LN}(a)}

with :math:`\mu, \sigma^2` the mean and (biased) variance over the row and bars means over the
row. Gains and shifts travel as one ``(2, n)`` array (row 0 :math:`\gamma`, row 1 :math:`\beta`);
their gradients are accumulated in float64. Statistics are computed in float64.
"""

from __future__ import annotations

import numpy as np

from carousel.cells.spec import LAYER_NORM_EPSILON
from carousel.kernels.numba_cpu.common import kernel

EPSILON = LAYER_NORM_EPSILON


@kernel
def normalize(values, gain_shift, hat, out):
    r"""``out = LN(values)`` for one row; ``hat`` receives :math:`\hat a`; returns
    :math:`1 / \sqrt{\sigma^2 + \epsilon}`. ``out`` may be ``values`` itself."""
    n = values.shape[0]
    mean = 0.0
    for j in range(n):
        mean += values[j]
    mean /= n
    variance = 0.0
    for j in range(n):
        deviation = values[j] - mean
        variance += deviation * deviation
    inverse = 1.0 / np.sqrt(variance / n + EPSILON)
    for j in range(n):
        hat[j] = (values[j] - mean) * inverse
        out[j] = gain_shift[0, j] * hat[j] + gain_shift[1, j]
    return inverse


@kernel
def normalize_backward(d_out, hat, inverse, gain_shift, d_gain_shift, d_in):
    """Backward of :func:`normalize` for one row: adds the gradients of the gain and shift to
    ``d_gain_shift`` ``(2, n)`` (float64) and writes the gradient of ``values`` to ``d_in``
    (which may be ``d_out`` itself)."""
    n = d_out.shape[0]
    total, weighted = 0.0, 0.0
    for j in range(n):
        scaled = d_out[j] * gain_shift[0, j]
        total += scaled
        weighted += scaled * hat[j]
        d_gain_shift[0, j] += d_out[j] * hat[j]
        d_gain_shift[1, j] += d_out[j]
    total /= n
    weighted /= n
    for j in range(n):
        d_in[j] = inverse * (d_out[j] * gain_shift[0, j] - total - hat[j] * weighted)


@kernel
def normalize_steps(projected, gain_shift, bias, lengths, hat_at, inverse_at, which):
    """``projected`` ``(T, B, G)`` in place: every valid row (time position below its sequence's
    length) becomes ``LN(row) + bias`` (``bias`` ``(G,)`` or ``(0,)``). With saved arrays
    (``hat_at`` ``(T, B, 2, G)``, ``inverse_at`` ``(T, B, 2)``; ``T = 0`` to save nothing) the
    statistics go to slot ``which``."""
    steps, batch, rows = projected.shape
    keep = hat_at.shape[0] > 0
    scratch = np.empty(rows, projected.dtype)
    for t in range(steps):
        for b in range(batch):
            if t >= lengths[b]:
                continue
            row = projected[t, b]
            hat = hat_at[t, b, which] if keep else scratch
            inverse = normalize(row, gain_shift, hat, row)
            if keep:
                inverse_at[t, b, which] = inverse
            for g in range(bias.shape[0]):
                row[g] += bias[g]


@kernel
def normalize_steps_backward(d_projected, hat_at, inverse_at, gain_shift, lengths, which):
    """Backward of :func:`normalize_steps`: ``d_projected`` ``(T, B, G)`` in place, from the
    gradient of the normalised rows to that of the projections; returns the gradient of the gain
    and shift ``(2, G)`` (float64), whose row 1 is also the bias gradient."""
    steps, batch, rows = d_projected.shape
    d_gain_shift = np.zeros((2, rows))
    for t in range(steps):
        for b in range(batch):
            if t < lengths[b]:
                row = d_projected[t, b]
                normalize_backward(
                    row, hat_at[t, b, which], inverse_at[t, b, which], gain_shift, d_gain_shift, row
                )
    return d_gain_shift
