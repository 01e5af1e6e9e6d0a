r"""Batch sharding: one direction's call split into contiguous batch shards that run in parallel.

The recurrence of one sequence never reads another sequence's, so a batch of ``B`` sequences is
``S`` independent problems of about ``B / S`` rows each. :func:`shard_ranges` picks ``S`` (one
shard per thread, none with fewer than :data:`MIN_SHARD_ROWS` rows or :data:`MIN_SHARD_WORK`
multiply-adds); :func:`forward` runs a family's forward kernel on every shard in a thread of its
own (:func:`carousel.kernels.threads.run_parallel`; the kernels release the GIL) with
single-threaded GEMMs, and joins the outputs and final states; :func:`backward` runs the backward
kernels the same way, joins the gradients of the input and the initial states, and sums the
weight gradients over the shards in shard order.

Each shard runs every step on its own: the threads meet once per pass (forward, backward), not
once per step, so a busy core delays one shard instead of every step of every shard. The
arithmetic inside a shard is the unsharded kernel's on fewer rows; only the order in which the
weight gradients are summed (over the shards' rows, then over the shards) differs, so results
equal one shard's within float rounding and are deterministic for a given number of shards,
which depends on the batch size and :func:`carousel.get_num_threads` only.

Arrays follow the calling convention of :class:`~carousel.kernels.numba_cpu.FamilyKernels`:
inputs ``(x (T, B, I), *states (B, .), *weights)``; ``x``, the output and their gradients are
split on axis 1, the states and their gradients on axis 0; weights are shared.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from carousel.kernels import threads
from carousel.kernels.numba_cpu import FamilyKernels
from carousel.kernels.numba_cpu.blas import BLAS, single_threaded

MIN_SHARD_ROWS = 4
"""Fewest batch rows per shard: below, a step's GEMM is too thin to run well on one core."""

MIN_SHARD_WORK = 3 << 22
"""Fewest multiply-adds of the forward GEMMs per shard (``T b G (I + R)`` for ``b`` rows), about
12.6 million (a shard of 1.5 to 2 ms fwd+bwd): below, two shards on two threads were no faster
than one call on one thread, or slower (fwd+bwd, three alternated processes each: Elman RNN
16x100x32x64 2.0-2.1 ms against 1.5-1.6, 32x100x32x64 2.5-2.8 against 2.3-2.4, vanilla LSTM
8x100x32x64 2.4-2.6 against 2.3-2.4, GRU 8x100x32x64 2.2 against 2.1-2.2), while from
14.7 million up they gained (GRU 16x100x32x64 1.4x, vanilla LSTM 16x100x32x64 1.13x)."""

Shards = tuple[tuple[int, int], ...]

_WORKSPACES = threading.local()


def workspace(size: int, dtype) -> np.ndarray:
    """This thread's scratch array for the backward kernels, grown to ``size`` elements.

    Backward calls on one thread run one after another, so one buffer per dtype serves them all
    and spares the page faults of a fresh ``(T, B, G)`` buffer on every call; every shard
    thread has its own.
    """
    key = np.dtype(dtype).name
    buffer = getattr(_WORKSPACES, key, None)
    if buffer is None or buffer.shape[0] < size:
        buffer = np.empty(size, dtype)
        setattr(_WORKSPACES, key, buffer)
    return buffer


def split(batch: int, count: int) -> Shards:
    """``count`` contiguous ranges covering ``range(batch)``, sizes differing by at most one."""
    bounds = [batch * k // count for k in range(count + 1)]
    return tuple(pairwise(bounds))


def shard_ranges(batch: int, work: int, num_threads: int | None = None) -> Shards:
    """The batch ranges of the shards for a call of ``batch`` rows and ``work`` multiply-adds
    (forward GEMMs of the whole batch); one range when the kernels' BLAS is not MKL (see
    :mod:`carousel.kernels.threads`). ``num_threads`` defaults to :func:`carousel.get_num_threads`.
    """
    if BLAS != "mkl":
        return ((0, batch),)
    num_threads = threads.get_num_threads() if num_threads is None else num_threads
    count = min(num_threads, batch // MIN_SHARD_ROWS, work // MIN_SHARD_WORK)
    return split(batch, max(1, count))


def _rows(array: np.ndarray, start: int, stop: int, axis: int) -> np.ndarray:
    """Rows ``start:stop`` of the batch axis, C-contiguous (a view when they already are;
    ``array`` itself when they are all of it)."""
    if start == 0 and stop == array.shape[axis]:
        return array
    part = array[:, start:stop] if axis == 1 else array[start:stop]
    return np.ascontiguousarray(part)


def _batch_rows(job, k: int, start: int, stop: int) -> np.ndarray:
    """Input ``k`` of ``job`` for the batch rows ``start:stop``: ``x`` on its axis 1, the states
    on axis 0, each mask on its batch axis (:attr:`FamilyKernels.mask_batch_axes`; zero-size
    placeholders stay empty), the weights whole."""
    kernels, array = job.kernels, job.arrays[k]
    first_mask = 1 + kernels.state_slots + len(kernels.weight_fields)
    if k == 0:
        return _rows(array, start, stop, 1)
    if k <= kernels.state_slots:
        return _rows(array, start, stop, 0)
    if k >= first_mask:
        return _rows(array, start, stop, kernels.mask_batch_axes[k - first_mask])
    return array


def _join(pieces: list[np.ndarray], axis: int) -> np.ndarray:
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=axis)


@dataclass(frozen=True, eq=False)
class Job:
    """One direction's kernel call: the family's kernels, the configuration vector, the input
    arrays ``(x, *states, *weights)`` (absent weights as zero-size arrays), ``lengths (B,)``
    int64, ``reverse``, and the batch ranges of its shards (:func:`shard_ranges`)."""

    kernels: FamilyKernels
    config: np.ndarray
    arrays: list[np.ndarray]
    lengths: np.ndarray
    reverse: bool
    shards: Shards


def _run(tasks: list) -> list:
    """Run ``tasks``: in parallel with single-threaded GEMMs when there are several and more than
    one thread, else one after the other in the calling thread."""
    if len(tasks) == 1 or threads.get_num_threads() == 1:
        return [task() for task in tasks]
    return threads.run_parallel([_single_threaded(task) for task in tasks])


def _single_threaded(function):
    """``function`` with single-threaded GEMMs, in whichever thread runs it."""

    def run():
        with single_threaded():
            return function()

    return run


def forward_scratch(kernels: FamilyKernels, inputs) -> tuple[int, np.dtype] | None:
    """The scratch a forward kernel of ``kernels`` takes for ``inputs = (x, *states, weight_ih,
    ...)`` (``T B G`` elements, see :class:`FamilyKernels`), or ``None``."""
    if not kernels.forward_workspace:
        return None
    x, rows = inputs[0], inputs[1 + kernels.state_slots].shape[0]
    return x.shape[0] * x.shape[1] * rows, x.dtype


def _call(kernel, args: tuple, scratch: tuple[int, np.dtype] | None = None):
    """A task calling ``kernel(*args)`` (with this thread's :func:`workspace` of ``scratch =
    (size, dtype)`` appended). Its arguments are sliced before: between taking the GIL to start
    and to box the results, a task's thread holds it for nothing else (on a busy machine every
    hand-over of the GIL between threads can wait for a time slice)."""

    def run():
        if scratch is None:
            return kernel(*args)
        return kernel(*args, workspace(*scratch))

    return run


def forward(jobs: list[Job], keep: bool) -> list[tuple[list[np.ndarray], list[tuple]]]:
    """Run the forward kernel of every job on every shard, all in parallel.

    Returns, per job, ``(outputs, saved)``: the ``num_outputs`` arrays over the whole batch
    (``output (T, B, .)`` and the final states ``(B, .)``), and per shard the tuple
    ``(x_shard, *saved arrays)`` that :func:`backward` takes (empty tuples without ``keep``).
    """
    tasks, parts = [], []
    for job in jobs:
        arrays = job.arrays
        whole = len(job.shards) == 1  # the whole batch: every array as it is
        for start, stop in job.shards:
            part = (
                arrays if whole else [_batch_rows(job, k, start, stop) for k in range(len(arrays))]
            )
            lengths = job.lengths if whole else _rows(job.lengths, start, stop, 0)
            args = (job.config, *part, lengths, job.reverse, keep)
            tasks.append(_call(job.kernels.forward, args, forward_scratch(job.kernels, part)))
            parts.append(part[0])
    done = iter(zip(_run(tasks), parts, strict=True))
    results = []
    for job in jobs:
        count, shard_results = job.kernels.num_outputs, [next(done) for _ in job.shards]
        outputs = [
            _join([result[k] for result, _ in shard_results], 1 if k == 0 else 0)
            for k in range(count)
        ]
        saved = [
            (x_part, *(result[k] for k in job.kernels.saved)) if keep else ()
            for result, x_part in shard_results
        ]
        results.append((outputs, saved))
    return results


def backward(
    jobs: list[Job],
    saved: list[list[tuple]],
    grad_outputs: list[list[np.ndarray]],
    need_input_grad: bool,
) -> list[list[np.ndarray]]:
    """Run the backward kernel of every job on every shard, all in parallel.

    Args:
        jobs: as given to :func:`forward`.
        saved: per job, what :func:`forward` returned per shard.
        grad_outputs: per job, the upstream gradients of its ``num_outputs`` outputs, C-contiguous.
        need_input_grad: whether to compute the gradient of ``x``.

    Returns:
        Per job, one gradient per input: ``d_x (T, B, I)`` (or ``(0, 0, 0)`` when not needed),
        the gradients of the states ``(B, .)`` and of the weights (summed over the shards, in
        shard order).
    """
    tasks = []
    for job, job_saved, upstream in zip(jobs, saved, grad_outputs, strict=True):
        slots, arrays = job.kernels.state_slots, job.arrays
        rows = arrays[1 + slots].shape[0]
        whole = len(job.shards) == 1  # the whole batch: every array as it is
        for (start, stop), (x_part, *kernel_saved) in zip(job.shards, job_saved, strict=True):
            if whole:
                inputs = [x_part if k == 0 else arrays[k] for k in job.kernels.backward_inputs]
                grads, lengths = list(upstream), job.lengths
            else:
                inputs = [
                    x_part if k == 0 else _batch_rows(job, k, start, stop)
                    for k in job.kernels.backward_inputs
                ]
                grads = [_rows(upstream[0], start, stop, 1)]
                grads += [_rows(g, start, stop, 0) for g in upstream[1:]]
                lengths = _rows(job.lengths, start, stop, 0)
            args = (job.config, *inputs, lengths, job.reverse, *kernel_saved, *grads)
            size = job.kernels.workspace_factor * x_part.shape[0] * x_part.shape[1] * rows
            args += (need_input_grad,)
            tasks.append(_call(job.kernels.backward, args, (size, x_part.dtype)))
    done = iter(_run(tasks))
    return [_combine([next(done) for _ in job.shards], job, need_input_grad) for job in jobs]


def _combine(parts: list[tuple], job: Job, need_input_grad: bool) -> list[np.ndarray]:
    """One job's gradients from its shards': batch pieces joined, weight gradients summed."""
    if len(parts) == 1:
        return list(parts[0])
    slots, grads = job.kernels.state_slots, []
    for k in range(len(parts[0])):
        pieces = [part[k] for part in parts]
        if k == 0:
            grads.append(_join(pieces, 1) if need_input_grad else pieces[0])
        elif k <= slots:
            grads.append(_join(pieces, 0))
        else:  # a weight: the sum over the shards, in shard order
            total = pieces[0].copy()
            for piece in pieces[1:]:
                total += piece
            grads.append(total)
    return grads
