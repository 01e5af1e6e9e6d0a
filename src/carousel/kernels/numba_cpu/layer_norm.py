r"""Layer normalisation (Ba, Kiros & Hinton 2016) for the compiled kernels: one row forward and
backward. The recurrent kernels call them once per row and step, where that row is read, for each
of their normalisations (the input projection's too, so it takes no pass of its own over
``(T, B, G)``), and fold a following bias into the shift.

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


row_kernel = kernel(fastmath={"reassoc", "contract"})
"""A :func:`~carousel.kernels.numba_cpu.common.kernel` that may reassociate its sums, so that
LLVM vectorises the reductions over a row.

Without it every ``total += value`` waits on the previous one (IEEE order), and a
normalisation's mean, variance and backward sums ran one element at a time. The sums change
only in their rounding (partial sums added in another order); no flag assumes away NaN or
infinity, so those propagate as before. Calls from :func:`kernel` functions inline it with
its flags."""


@row_kernel
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


@row_kernel
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
