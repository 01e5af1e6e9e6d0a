"""The GEMM floor of a layer call: the GEMMs of one forward and backward pass of the numba
kernels, run on their own on one thread with nothing between them.

The kernels of every family make the same products (:mod:`carousel.kernels.numba_cpu`): the
input projections of all steps, per step the recurrent product and, backward, the error of the
recurrent source, then the weight and input gradients over the whole sequence. For ``T`` steps,
``B`` rows, ``I`` inputs, ``G`` packed gate rows and ``R`` recurrent inputs:

.. math::
    (TB \\times I)(I \\times G), \\quad T \\times (B \\times R)(R \\times G), \\quad
    T \\times (B \\times G)(G \\times R), \\quad (G \\times TB)(TB \\times I), \\quad
    (TB \\times G)(G \\times I), \\quad (G \\times TB)(TB \\times R)

No implementation that does this arithmetic with this BLAS can be faster than these products
alone, so ``torch.nn``'s time over the floor bounds the speed-up any kernel of this design could
reach over ``torch.nn`` on one thread (``torch.nn`` does the same products for the stock cells).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from carousel.kernels.numba_cpu.blas import gemm, sequence_gemm, single_threaded
from carousel.kernels.numba_cpu.common import kernel


@kernel
def _gemms(x, weight_ih, weight_hh, weight_hh_t, projected, state, net, d_state, sources, grads):
    """The products of one forward + backward pass (see the module's docstring), in the kernels'
    calling pattern; ``grads`` holds ``d_weight_ih (G, I)``, ``d_weight_hh (G, R)``, ``d_x
    (TB, I)`` as one tuple."""
    d_weight_ih, d_weight_hh, d_x = grads
    steps = x.shape[0] // state.shape[0]
    sequence_gemm(x, weight_ih, projected, False, True, 0.0)
    for _ in range(steps):
        gemm(state, weight_hh_t, net, False, False, 0.0)
    for _ in range(steps):
        gemm(net, weight_hh, d_state, False, False, 0.0)
    sequence_gemm(projected, x, d_weight_ih, True, False, 0.0)
    sequence_gemm(projected, weight_ih, d_x, False, False, 0.0)
    sequence_gemm(projected, sources, d_weight_hh, True, False, 0.0)


def gemm_floor(spec, shape, dtype=torch.float32, seconds: float = 1.0) -> float:
    """Median seconds of the GEMMs of one fwd+bwd call of ``spec`` at ``shape = (B, T, I, H)``,
    on one thread (at least 3 and at most 25 repetitions within about ``seconds``)."""
    batch, steps, inputs, hidden = shape
    rows, recurrent = spec.num_gate_rows(hidden), spec.recurrent_size(hidden)
    flat = steps * batch
    kind = np.dtype(str(dtype).removeprefix("torch."))
    generator = np.random.default_rng(0)

    def array(*size):
        return generator.standard_normal(size).astype(kind)

    weight_hh = array(rows, recurrent)
    arrays = (
        array(flat, inputs),  # x
        array(rows, inputs),  # weight_ih
        weight_hh,
        np.ascontiguousarray(weight_hh.T),
        np.empty((flat, rows), kind),  # the input projections, then their gradients
        array(batch, recurrent),  # a step's recurrent source
        np.empty((batch, rows), kind),
        np.empty((batch, recurrent), kind),
        array(flat, recurrent),  # the recurrent sources of all steps
        (np.empty((rows, inputs), kind), np.empty((rows, recurrent), kind), array(flat, inputs)),
    )
    times: list[float] = []
    with single_threaded():
        _gemms(*arrays)  # compile, touch the memory
        start = time.perf_counter()
        while len(times) < 3 or (time.perf_counter() - start < seconds and len(times) < 25):
            began = time.perf_counter()
            _gemms(*arrays)
            times.append(time.perf_counter() - began)
    return statistics.median(times)
