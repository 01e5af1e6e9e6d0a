"""What the loop of :mod:`.loop` needs to know about one family's pointwise kernels for one call.

A family module (:mod:`.lstm`, :mod:`.gru`, :mod:`.elman`) provides two ``@triton.jit`` kernels,
one step forward and one step back, and ``plan(spec, hidden, out_size, batch, dtype, project)``
returning a :class:`FamilyPlan`. Every family's kernels take the same buffers, in the same order
(a family ignores those it does not use):

forward: ``gates_x (B, G)``, ``net (B, G)``, ``source (B, R)``, ``source_next (B, R)``,
``cell (B, C)``, ``cell_next (B, C)``, ``saved (B, A)``, ``y (B, H)``, ``peephole``,
``bias_hh (G,)``, ``lengths (B,)``, then ``step, batch, hidden``, then ``plan.runtime``;

backward: ``saved (B, A)``, ``source (B, R)``, ``source_next (B, R)``, ``cell (B, C)``,
``cell_next (B, C)``, ``d_source (B, R)``, ``d_output (B, P)``, ``d_y (B, H)``, ``d_cell (B, C)``,
``d_net (B, G)``, ``d_recurrent (B, G)``, ``peephole``, ``lengths (B,)``, then
``step, batch, hidden``, then ``plan.runtime``;

each followed by the buffers named in ``plan.extra_forward`` / ``plan.extra_backward`` (the
regularisers' and layer normalisation's, see :mod:`.loop`: ``candidate_mask (B, H)`` the candidate
dropout's mask, ``norm_cell (2, H)`` the cell state's gain and shift, ``cell_stats (B, 2)`` its
rows' mean and inverse deviation, ``d_shown (B, H)`` the error at the normalised cell state; a
placeholder where the call does not use one), then by ``plan.constants`` as keyword arguments
(the ``tl.constexpr`` flags). ``source``
is the step's recurrent source :math:`[h_{t-1}, \\gamma_{t-1}]` and ``source_next`` the next one,
``cell``/``cell_next`` the cell state (``C = 0`` without one), ``saved`` what the forward kernel
keeps for the backward one (``A`` columns per row), ``d_source`` the error reaching
``source_next`` from later steps, ``d_output`` the upstream gradient of the step's output,
``d_net`` the gradient of the step's net input (the input projection's rows), ``d_recurrent``
that of the recurrent GEMM's output (the same tensor unless ``recurrent_gradient``).
"""

from __future__ import annotations

from dataclasses import dataclass

import triton

from carousel.kernels.triton.common import COMPUTE_TYPES, TILE, tile


@dataclass(frozen=True)
class FamilyPlan:
    """One call's sizes, launch grid and kernel arguments for a family's pointwise kernels.

    Attributes:
        rows: ``G``, packed gate rows (columns of ``gates_x``).
        source_size: ``R``, columns of the recurrent source (``weight_hh``'s columns).
        cell_size: ``C``, the width of a cell state separate from the output (0 if none).
        saved_size: ``A``, columns of ``saved`` per row and step.
        recurrent_gradient: whether the backward kernel writes ``d_recurrent`` apart from
            ``d_net`` (GRU: the reset gate sits between the recurrent GEMM and the net input) and
            itself writes the direct part of the error reaching ``source`` into ``d_source``
            (GRU: :math:`\\delta h\\, u`); otherwise the loop resets ``d_source`` after the kernel.
        grid: the launch grid of both kernels.
        runtime: the family's runtime integer arguments, after ``step, batch, hidden``.
        constants: the ``tl.constexpr`` keyword arguments of both kernels.
        forward, backward: the two kernels.
        extra_forward, extra_backward: the names of the buffers the kernels take after
            ``runtime`` (see the module docstring), in order.
        level: 1 for the per-step kernels of this module's families, 2 for the persistent
            kernels of :mod:`.persistent` (``forward``/``backward`` then run the whole loop).
    """

    rows: int
    source_size: int
    cell_size: int
    saved_size: int
    recurrent_gradient: bool
    grid: tuple[int, ...]
    runtime: tuple[int, ...]
    constants: dict
    forward: object
    backward: object
    extra_forward: tuple[str, ...] = ()
    extra_backward: tuple[str, ...] = ()
    level: int = 1


def unit_plan(
    forward, backward, hidden: int, batch: int, dtype, constants: dict, *, gates: int,
    cells: int = 0, saved: int = 0, recurrent_gradient: bool = False, extras: tuple[str, ...] = (),
) -> FamilyPlan:  # fmt: skip
    """The plan of a family whose programs cover ``BLOCK_B`` rows x ``BLOCK_H`` units of the
    ``(B, H)`` grid and whose recurrent source is :math:`h` (``R = H``): GRU, Elman, sLSTM.

    ``gates``, ``cells`` and ``saved`` are ``G``, ``C`` and ``A`` in units of ``H``; ``constants``
    the family's ``tl.constexpr`` flags, to which ``COMPUTE``, ``BLOCK_B`` and ``BLOCK_H`` are
    added; ``extras`` the buffers both kernels take after the runtime arguments.
    """
    block_h = tile(hidden, 128)
    block_b = tile(batch, max(1, TILE // block_h))
    return FamilyPlan(
        rows=gates * hidden,
        source_size=hidden,
        cell_size=cells * hidden,
        saved_size=saved * hidden,
        recurrent_gradient=recurrent_gradient,
        grid=(triton.cdiv(batch, block_b), triton.cdiv(hidden, block_h)),
        runtime=(),
        constants={
            **constants,
            "COMPUTE": COMPUTE_TYPES[dtype],
            "BLOCK_B": block_b,
            "BLOCK_H": block_h,
        },
        forward=forward,
        backward=backward,
        extra_forward=extras,
        extra_backward=extras,
    )
