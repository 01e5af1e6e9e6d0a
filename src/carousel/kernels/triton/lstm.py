r"""Every LSTM variant in one pair of Triton pointwise kernels: one step forward, one step back.

The recurrent GEMM of a step, :math:`net = [h_{t-1}, \gamma_{t-1}] W_{hh}^T`, runs on cuBLAS
before :func:`lstm_forward_step` (see :mod:`.loop`); the kernel does the rest of the step, with
``k(j) = j // S`` the memory block of cell ``j`` (``S = block_size``) and :math:`a_t` the
input projection :math:`W_{ih} x_t + b`:

.. math::
    i, f &= \sigma(a_{i,f} + net_{i,f} + p_{i,f} \odot c_{t-1}), \quad z = g(a_g + net_g) \\
    c_t &= f_{k(j)} c_{t-1} + i_{k(j)} (\kappa \odot z), \quad
    o = \sigma(a_o + net_o + p_o \odot c_t), \quad y_t = o_{k(j)} h(\mathrm{LN}(c_t))

and :math:`h_t = y_t` (or :math:`W_{hr} y_t`, a cuBLAS GEMM after the kernel). An absent gate
reads one (NIG, NFG, NOG), CIFG reads :math:`f = 1 - i`. :math:`\kappa` is the candidate
dropout's mask (``CANDIDATE_DROP``; 1 without), :math:`\mathrm{LN}` the cell state's layer
normalisation (``CELL_NORM``; the identity without): :math:`\gamma \odot (c_t - \mu) / \sqrt{
\sigma^2 + \epsilon} + \beta` over each row's ``H`` cells, for which a program covers whole rows
(``BLOCK_K`` covers every gate unit) and reduces with ``tl.sum``. With ``layer_norm`` :math:`net`
is the normalised recurrent GEMM and :math:`a_t` the normalised input projection plus the bias
(the loop's, :mod:`.options`); zoneout, resets and recurrent dropout are the loop's too.
:func:`lstm_backward_step` is the chain rule back through the same step (see its docstring); the
GEMM :math:`\partial net\, W_{hh}` that carries the error to :math:`[h_{t-1}, \gamma_{t-1}]` runs
on cuBLAS after it.

The step's arithmetic from the net inputs on is :func:`.pointwise.lstm_cell`, its chain rule
:func:`.pointwise.lstm_cell_backward`: ``@triton.jit`` functions that level 2's kernels
(:mod:`.persistent_lstm`) call too; the cell state's normalisation around them is these kernels'.

Variants are ``tl.constexpr`` flags (:func:`plan`), so each compiles to a kernel with only its own
arithmetic, the Triton counterpart of the numba backend's configuration vector. A program covers
``BLOCK_B`` batch rows x ``BLOCK_K`` gate units x ``LANES`` cells per unit (``LANES`` the power of
two >= ``S``): gate values are ``(BLOCK_B, BLOCK_K, 1)`` tiles, cell values
``(BLOCK_B, BLOCK_K, LANES)``, and a sum over a block's cells is a sum over the last axis.

Buffers (row-major, one step's slice of the loop's time-major buffers): ``gates_x``, ``net``,
``saved`` and ``d_net`` ``(B, G)`` in the packed gate layout; ``source`` ``(B, R)``, ``R = P + F``:
:math:`[h_{t-1}, \gamma_{t-1}]`; ``cell`` ``(B, H)``; ``y`` ``(B, H)`` (with a projection).
``saved`` holds the step's activations :math:`i, f, z, o` in their packed rows. After the
runtime arguments: ``candidate_mask`` ``(B, H)``, ``norm_cell`` ``(2, H)`` (:math:`\gamma`,
:math:`\beta`), ``cell_stats`` ``(B, 2)`` (each row's :math:`\mu` and
:math:`1 / \sqrt{\sigma^2 + \epsilon}`, written forward, read backward) and, backward,
``d_shown`` ``(B, H)``, the error at :math:`\mathrm{LN}(c_t)` for the gain's gradient.
"""

from __future__ import annotations

import triton
import triton.language as tl

from carousel.cells import CellSpec
from carousel.cells.spec import LAYER_NORM_EPSILON
from carousel.kernels.triton.common import (
    COMPUTE_TYPES,
    TILE,
    activate,
    code,
    derivative,
    load,
    step_active,
    tile,
)
from carousel.kernels.triton.plan import FamilyPlan
from carousel.kernels.triton.pointwise import lstm_cell, lstm_cell_backward

__all__ = ["cell_constants", "gate_rows", "lstm_backward_step", "lstm_forward_step", "plan"]

EPSILON: tl.constexpr = tl.constexpr(LAYER_NORM_EPSILON)


@triton.jit
def _tile_indices(
    batch, units, BLOCK: tl.constexpr, LANES: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Row, unit and cell indices of this program's tile, and the gate and cell masks."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)[:, None, None]
    unit = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)[None, :, None]
    lane = tl.arange(0, LANES)[None, None, :]
    cells = unit * BLOCK + lane
    gate_mask = (rows < batch) & (unit < units)
    cell_mask = gate_mask & (lane < BLOCK)
    return rows, unit, cells, gate_mask, cell_mask


@triton.jit
def _row_sum(values):
    """Each row's sum over the cells of a ``(BLOCK_B, BLOCK_K, LANES)`` tile: ``(BLOCK_B, 1, 1)``."""
    return tl.sum(tl.sum(values, axis=2, keep_dims=True), axis=1, keep_dims=True)


@triton.jit
def _peephole(
    peephole, ROW: tl.constexpr, hidden, cells, units, unit, BLOCK: tl.constexpr,
    COMPUTE: tl.constexpr,
):  # fmt: skip
    """Row ``ROW`` of the peephole weights at this tile's cells, ``(1, BLOCK_K, LANES)``."""
    return load(peephole + ROW * hidden + cells, (unit < units) & (cells < hidden), COMPUTE)


@triton.jit
def _peepholes(
    peephole, hidden, cells, units, unit, absent, PEEP_I: tl.constexpr, PEEP_F: tl.constexpr,
    PEEP_O: tl.constexpr, BLOCK: tl.constexpr, COMPUTE: tl.constexpr,
):  # fmt: skip
    """The input, forget and output gates' peephole weights at this tile's cells; ``absent`` for
    a gate without one (never read)."""
    p_i, p_f, p_o = absent, absent, absent
    if PEEP_I >= 0:
        p_i = _peephole(peephole, PEEP_I, hidden, cells, units, unit, BLOCK, COMPUTE)
    if PEEP_F >= 0:
        p_f = _peephole(peephole, PEEP_F, hidden, cells, units, unit, BLOCK, COMPUTE)
    if PEEP_O >= 0:
        p_o = _peephole(peephole, PEEP_O, hidden, cells, units, unit, BLOCK, COMPUTE)
    return p_i, p_f, p_o


@triton.jit(do_not_specialize=["step"])
def lstm_forward_step(
    gates_x, net, source, source_next, cell, cell_next, saved, y_out, peephole, bias_hh,
    lengths, step, batch, hidden,
    units, out_size, source_size, rows_g, row_i, row_f, row_g, row_o, feed_i, feed_f, feed_o,
    candidate_mask, norm_cell, cell_stats,
    GATE: tl.constexpr, CANDIDATE: tl.constexpr, OUTPUT: tl.constexpr, BLOCK: tl.constexpr,
    LANES: tl.constexpr, HAS_I: tl.constexpr, HAS_F: tl.constexpr, HAS_O: tl.constexpr,
    COUPLED: tl.constexpr, PEEP_I: tl.constexpr, PEEP_F: tl.constexpr, PEEP_O: tl.constexpr,
    FEEDBACK: tl.constexpr, PROJECT: tl.constexpr, TRUNCATE: tl.constexpr,
    CANDIDATE_DROP: tl.constexpr, CELL_NORM: tl.constexpr, HAS_LENGTHS: tl.constexpr,
    COMPUTE: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """One LSTM step after its recurrent GEMM (see the module docstring for the buffers).

    Writes ``cell_next`` (:math:`c_t`), the activations into ``saved``, and either :math:`y_t`
    into ``y_out`` (``PROJECT``) or into ``source_next[:, :P]``; fed-back gates into
    ``source_next[:, P:]``. Rows past their length (``step >= lengths[row]``) keep their state.
    """
    rows, unit, cells, gate_mask, cell_mask = _tile_indices(
        batch, units, BLOCK, LANES, BLOCK_B, BLOCK_K
    )
    active = step_active(lengths, rows, batch, step, HAS_LENGTHS)
    packed = rows * rows_g
    c_prev = load(cell + rows * hidden + cells, cell_mask, COMPUTE)
    one = tl.full([BLOCK_B, BLOCK_K, 1], 1.0, COMPUTE)
    p_i, p_f, p_o = _peepholes(
        peephole, hidden, cells, units, unit, one, PEEP_I, PEEP_F, PEEP_O, BLOCK, COMPUTE
    )
    drop = one
    if CANDIDATE_DROP:
        drop = load(candidate_mask + rows * hidden + cells, cell_mask, COMPUTE)
    input_gate, forget_gate, c, output_gate = lstm_cell(
        gates_x + packed + unit, gates_x + packed + cells, net + packed + unit,
        net + packed + cells, one, one, one, one, one, c_prev, p_i, p_f, p_o, drop, one,
        saved + packed + unit, saved + packed + cells, gate_mask, cell_mask, row_i, row_f, row_g,
        row_o, GATE, CANDIDATE, HAS_I, HAS_F, HAS_O, COUPLED, PEEP_I, PEEP_F, PEEP_O,
        CANDIDATE_DROP, False, True, COMPUTE,
    )  # fmt: skip
    shown = c
    if CELL_NORM:  # h(LN(c_t)); this program covers whole rows
        mean = _row_sum(tl.where(cell_mask, c, 0.0)) / hidden
        deviation = tl.where(cell_mask, c - mean, 0.0)
        inverse = 1.0 / tl.sqrt(_row_sum(deviation * deviation) / hidden + EPSILON)
        gain = load(norm_cell + cells, cell_mask, COMPUTE)
        shown = gain * (deviation * inverse) + load(norm_cell + hidden + cells, cell_mask, COMPUTE)
        tl.store(cell_stats + rows * 2, mean, mask=rows < batch)
        tl.store(cell_stats + rows * 2 + 1, inverse, mask=rows < batch)
    y = output_gate * activate(shown, OUTPUT)
    tl.store(cell_next + rows * hidden + cells, tl.where(active, c, c_prev), mask=cell_mask)
    if PROJECT:  # h_t = W_hr y_t follows on cuBLAS; y at held rows is zero (adds nothing to dW_hr)
        tl.store(y_out + rows * hidden + cells, tl.where(active, y, 0.0), mask=cell_mask)
    else:
        h_at = rows * source_size + cells
        h_prev = load(source + h_at, cell_mask, COMPUTE)
        tl.store(source_next + h_at, tl.where(active, y, h_prev), mask=cell_mask)
    if FEEDBACK:  # [h_t, gamma_t]: the gates this step computed, in packed order
        fed = rows * source_size + out_size + unit
        if HAS_I:
            held = load(source + fed + feed_i, gate_mask, COMPUTE)
            tl.store(source_next + fed + feed_i, tl.where(active, input_gate, held), gate_mask)
        if HAS_F:
            held = load(source + fed + feed_f, gate_mask, COMPUTE)
            tl.store(source_next + fed + feed_f, tl.where(active, forget_gate, held), gate_mask)
        if HAS_O:
            held = load(source + fed + feed_o, gate_mask, COMPUTE)
            tl.store(source_next + fed + feed_o, tl.where(active, output_gate, held), gate_mask)


@triton.jit(do_not_specialize=["step"])
def lstm_backward_step(
    saved, source, source_next, cell, cell_next, d_source, d_output, d_y, d_cell, d_net,
    d_recurrent, peephole, lengths, step, batch, hidden,
    units, out_size, source_size, rows_g, row_i, row_f, row_g, row_o, feed_i, feed_f, feed_o,
    candidate_mask, norm_cell, cell_stats, d_shown,
    GATE: tl.constexpr, CANDIDATE: tl.constexpr, OUTPUT: tl.constexpr, BLOCK: tl.constexpr,
    LANES: tl.constexpr, HAS_I: tl.constexpr, HAS_F: tl.constexpr, HAS_O: tl.constexpr,
    COUPLED: tl.constexpr, PEEP_I: tl.constexpr, PEEP_F: tl.constexpr, PEEP_O: tl.constexpr,
    FEEDBACK: tl.constexpr, PROJECT: tl.constexpr, TRUNCATE: tl.constexpr,
    CANDIDATE_DROP: tl.constexpr, CELL_NORM: tl.constexpr, HAS_LENGTHS: tl.constexpr,
    COMPUTE: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    r"""The chain rule back through one LSTM step.

    With :math:`\delta y` the error at :math:`y_t` (``d_y``, or ``d_source[:, :P] + d_output``),
    :math:`\delta c` the error reaching :math:`c_t` from later steps (``d_cell``) and
    :math:`\delta\gamma` the error at the fed-back gates (``d_source[:, P:]``), each sum over a
    memory block's cells:

    .. math::
        \partial net_o &= \big(\textstyle\sum \delta y\, h(c_t) + \delta\gamma_o\big)\, \sigma'(o),
        \quad \delta c_t = \delta c + \delta y\, o\, h'(c_t) + p_o\, \partial net_o \\
        \partial net_g &= \delta c_t\, i\, g'(z), \quad
        \partial net_i = \big(\textstyle\sum \delta c_t z + \delta\gamma_i\big)\, \sigma'(i), \quad
        \partial net_f = \big(\textstyle\sum \delta c_t c_{t-1} + \delta\gamma_f\big)\, \sigma'(f) \\
        \delta c_{t-1} &= \delta c_t f + p_i\, \partial net_i + p_f\, \partial net_f

    (CIFG: :math:`\partial net_i` takes :math:`-\sum \delta c_t c_{t-1}` too; with candidate
    dropout :math:`z` reads :math:`\kappa z` where it meets :math:`\delta c_t` and
    :math:`\partial net_g` takes a factor :math:`\kappa`; with ``CELL_NORM`` the term
    :math:`\delta y\, o\, h'` is taken back through the normalisation, see
    :mod:`carousel.kernels.numba_cpu.layer_norm`.) ``TRUNCATE`` (the
    1997 truncated gradient) drops the peephole terms of :math:`\delta c`. Writes
    :math:`\partial net` into ``d_net`` (zero at rows past their length) and
    :math:`\delta c_{t-1}` into ``d_cell`` (unchanged at those rows).
    """
    rows, unit, cells, gate_mask, cell_mask = _tile_indices(
        batch, units, BLOCK, LANES, BLOCK_B, BLOCK_K
    )
    active = step_active(lengths, rows, batch, step, HAS_LENGTHS)
    packed = rows * rows_g
    c_prev = load(cell + rows * hidden + cells, cell_mask, COMPUTE)
    c = load(cell_next + rows * hidden + cells, cell_mask, COMPUTE)
    one = tl.full([BLOCK_B, BLOCK_K, 1], 1.0, COMPUTE)
    input_gate, forget_gate, output_gate, drop = one, one, one, one
    fed_i, fed_f, fed_o = one, one, one  # read only with FEEDBACK
    fed = rows * source_size + out_size + unit
    if HAS_I:
        input_gate = load(saved + packed + row_i + unit, gate_mask, COMPUTE)
        if FEEDBACK:
            fed_i = load(d_source + fed + feed_i, gate_mask, COMPUTE)
    if HAS_F:
        forget_gate = load(saved + packed + row_f + unit, gate_mask, COMPUTE)
        if FEEDBACK:
            fed_f = load(d_source + fed + feed_f, gate_mask, COMPUTE)
    elif COUPLED:
        forget_gate = 1.0 - input_gate
    if HAS_O:
        output_gate = load(saved + packed + row_o + unit, gate_mask, COMPUTE)
        if FEEDBACK:
            fed_o = load(d_source + fed + feed_o, gate_mask, COMPUTE)
    candidate = load(saved + packed + row_g + cells, cell_mask, COMPUTE)
    if CANDIDATE_DROP:
        drop = load(candidate_mask + rows * hidden + cells, cell_mask, COMPUTE)
    shown = c
    if CELL_NORM:
        mean = load(cell_stats + rows * 2, rows < batch, COMPUTE)
        inverse = load(cell_stats + rows * 2 + 1, rows < batch, COMPUTE)
        hat = tl.where(cell_mask, (c - mean) * inverse, 0.0)
        gain = load(norm_cell + cells, cell_mask, COMPUTE)
        shown = gain * hat + load(norm_cell + hidden + cells, cell_mask, COMPUTE)
    squashed = activate(shown, OUTPUT)
    if PROJECT:
        dy = load(d_y + rows * hidden + cells, cell_mask, COMPUTE)
    else:
        dy = load(d_source + rows * source_size + cells, cell_mask, COMPUTE)
        dy += load(d_output + rows * out_size + cells, cell_mask, COMPUTE)
    d_c_later = load(d_cell + rows * hidden + cells, cell_mask, COMPUTE)
    d_c = dy * output_gate * derivative(squashed, OUTPUT)  # at h's argument
    if CELL_NORM:  # back through LN: (g - mean(g) - hat mean(g hat)) / sigma, g = gain d
        tl.store(d_shown + rows * hidden + cells, tl.where(active, d_c, 0.0), mask=cell_mask)
        scaled = tl.where(cell_mask, d_c * gain, 0.0)
        total = _row_sum(scaled) / hidden
        weighted = _row_sum(scaled * hat) / hidden
        d_c = tl.where(cell_mask, inverse * (scaled - total - hat * weighted), 0.0)
    d_c += d_c_later
    p_i, p_f, p_o = one, one, one
    if not TRUNCATE:
        p_i, p_f, p_o = _peepholes(
            peephole, hidden, cells, units, unit, one, PEEP_I, PEEP_F, PEEP_O, BLOCK, COMPUTE
        )
    d_c_prev = lstm_cell_backward(
        d_c, dy, squashed, input_gate, forget_gate, candidate, output_gate, c_prev, drop, fed_i,
        fed_f, fed_o, p_i, p_f, p_o, active, d_net + packed + unit, d_net + packed + cells,
        gate_mask, cell_mask, row_i, row_f, row_g, row_o, GATE, CANDIDATE, HAS_I, HAS_F, HAS_O,
        COUPLED, PEEP_I, PEEP_F, PEEP_O, TRUNCATE, CANDIDATE_DROP, FEEDBACK, True,
    )[4]  # fmt: skip
    tl.store(d_cell + rows * hidden + cells, tl.where(active, d_c_prev, d_c_later), cell_mask)


def gate_rows(spec: CellSpec, hidden: int) -> tuple[int, ...]:
    """The first packed row of the input, forget, candidate and output gates' blocks (-1 for an
    absent gate), runtime arguments of both levels' LSTM kernels."""
    slices = spec.gate_slices(hidden)
    return tuple(slices[g].start if g in slices else -1 for g in "ifgo")


def cell_constants(spec: CellSpec) -> dict:
    """The constexpr flags of ``spec``'s step (:func:`.pointwise.lstm_cell`) that both levels'
    LSTM kernels take: activations, gates, coupling, peephole rows, the truncated gradient."""
    peephole_row = {gate: row for row, gate in enumerate(spec.peephole_gates)}
    return dict(
        GATE=code(spec.gate_activation),
        CANDIDATE=code(spec.candidate_activation),
        OUTPUT=code(spec.output_activation),
        HAS_I="i" in spec.gates,
        HAS_F="f" in spec.gates,
        HAS_O="o" in spec.gates,
        COUPLED=spec.coupled_input_forget,
        PEEP_I=peephole_row.get("i", -1),
        PEEP_F=peephole_row.get("f", -1),
        PEEP_O=peephole_row.get("o", -1),
        TRUNCATE=spec.truncate_gradient,
    )


def plan(
    spec: CellSpec, hidden: int, out_size: int, batch: int, dtype, project: bool, bias_hh: bool,
    features: frozenset[str] = frozenset(),
) -> FamilyPlan:  # fmt: skip
    """The sizes, grid, runtime arguments and constexpr flags of ``spec``'s kernels; ``features``
    what they compute beyond the cell (``candidate``: candidate dropout, ``layer_norm``: the cell
    state's normalisation, with programs that cover whole rows)."""
    units = hidden // spec.block_size
    rows = spec.num_gate_rows(hidden)
    feedback = {}
    offset = 0
    for gate in spec.feedback_gates:
        feedback[gate] = offset
        offset += spec.gate_size(gate, hidden)
    source_size = out_size + offset
    lanes = triton.next_power_of_2(spec.block_size)
    norm = "layer_norm" in features
    block_k = triton.next_power_of_2(units) if norm else tile(units, max(1, 128 // lanes))
    block_b = tile(batch, max(1, TILE // (block_k * lanes)))
    runtime = (
        units,
        out_size,
        source_size,
        rows,
        *gate_rows(spec, hidden),
        *(feedback.get(g, -1) for g in "ifo"),
    )
    constants = dict(
        cell_constants(spec),
        BLOCK=spec.block_size,
        LANES=lanes,
        FEEDBACK=bool(feedback),
        PROJECT=project,
        CANDIDATE_DROP="candidate" in features,
        CELL_NORM=norm,
        COMPUTE=COMPUTE_TYPES[dtype],
        BLOCK_B=block_b,
        BLOCK_K=block_k,
    )
    return FamilyPlan(
        rows=rows,
        source_size=source_size,
        cell_size=hidden,
        saved_size=rows,
        recurrent_gradient=False,
        grid=(triton.cdiv(batch, block_b), triton.cdiv(units, block_k)),
        runtime=runtime,
        constants=constants,
        forward=lstm_forward_step,
        backward=lstm_backward_step,
        extra_forward=("candidate_mask", "norm_cell", "cell_stats"),
        extra_backward=("candidate_mask", "norm_cell", "cell_stats", "d_shown"),
    )
