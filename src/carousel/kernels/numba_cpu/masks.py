r"""The regularisers' masks and the state resets inside the compiled kernels
(:mod:`carousel.cells.regularizers` defines them).

Masks are arrays of the kernels' dtype indexed by time position (``(T, B, W)``) or by sequence
(``(B, W)``); ``reset`` is ``(T, B)``, nonzero where the state restarts before that step.
Backward, zoneout splits the error reaching a state, :math:`\delta_t`, into the part that flows
straight to the previous state, :math:`d_t \delta_t`, and the part that flows through the cell,
:math:`(1 - d_t)\, \delta_t`; a reset stops the error: nothing flows to the steps before it.
"""

from __future__ import annotations

from carousel.kernels.numba_cpu.common import kernel, time_index


@kernel(inline="always")
def restart(step, reset, lengths, reverse, initial, state, offset):
    """Before processing step ``step``: ``state[b, offset : offset + W] = initial[b]`` (``initial``
    ``(B, W)``) for every sequence ``b`` that resets at the time position of that step."""
    width = initial.shape[1]
    for b in range(state.shape[0]):
        if step < lengths[b] and reset[time_index(step, lengths[b], reverse), b] != 0:
            for j in range(width):
                state[b, offset + j] = initial[b, j]


@kernel(inline="always")
def split_zoneout(step, keep, lengths, reverse, d_state, direct):
    """Backward of zoneout at step ``step`` for every active sequence: ``direct = d * d_state``
    (the error that skips the step), ``d_state *= 1 - d`` (the error into the cell); ``keep``
    ``(T, B, W)``, ``d_state`` and ``direct`` ``(B, W)``."""
    for b in range(d_state.shape[0]):
        if step < lengths[b]:
            tau = time_index(step, lengths[b], reverse)
            for j in range(d_state.shape[1]):
                kept = keep[tau, b, j]
                direct[b, j] = kept * d_state[b, j]
                d_state[b, j] *= 1.0 - kept


@kernel(inline="always")
def stop_at_resets(step, reset, lengths, reverse, d_state):
    """Zero the rows of ``d_state`` ``(B, W)`` whose sequence reset at step ``step``: no error
    crosses a reset."""
    for b in range(d_state.shape[0]):
        if step < lengths[b] and reset[time_index(step, lengths[b], reverse), b] != 0:
            for j in range(d_state.shape[1]):
                d_state[b, j] = 0.0


@kernel(inline="always")
def zoneout_update(state, fresh, keep, step, b, zone, output):
    """Row ``b`` at time position ``step``: ``state[b, j] = d state[b, j] + (1 - d) fresh[b, j]``
    with zoneout's ``d = keep[step, b, j]`` (when ``zone``; else ``state[b, j] = fresh[b, j]``),
    copied to ``output[step, b, j]``, for the first ``W`` columns (``fresh`` ``(B, W)``)."""
    for j in range(fresh.shape[1]):
        if zone:
            kept = keep[step, b, j]
            state[b, j] = kept * state[b, j] + (1.0 - kept) * fresh[b, j]
        else:
            state[b, j] = fresh[b, j]
        output[step, b, j] = state[b, j]
