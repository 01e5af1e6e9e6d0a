r"""The 1997 network and learning rule, trained online in compiled code.

One memory-cell layer of the original LSTM (:func:`carousel.cells.lstm.lstm1997`: blocks of
cells sharing input and output gates, no forget gate, :math:`g \in [-2, 2]`,
:math:`h \in [-1, 1]`, cells and gates reading the previous cell outputs and gate activations)
feeds sigmoid output units. The output units read the cell outputs (and, for experiment 2a, the
external inputs too), with or without a bias:

.. math::
    y^k(t) = \sigma\Big(\sum_j w_{kj}\, y^{c_j}(t) \;[+ \sum_i w_{ki}\, x_i(t)]\; [+ b_k]\Big)

Training is the paper's: gradient descent on :math:`E = c \sum_{t, k} (y^k(t) - d^k(t))^2`
over the target steps of one sequence (:math:`c = \tfrac12` by default, see ``error_factor``),
the weights changed after every sequence (online; for
targets only at the end this is the same as the paper's per-step updates), activations reset to
zero for every sequence, and the truncated gradient: errors reaching the net inputs of gates and
cells change their incoming weights but go no further back in time; only the cell state carries
error back (the constant error carousel). The forward and backward passes are carousel's fused
kernels (:mod:`carousel.kernels.numba_cpu.lstm`), called from the compiled online loop of
:mod:`carousel.kernels.numba_cpu.online`, so one sequence of the adding problem costs about
0.1 ms. (Numba is needed to train; it is imported when a network is built.)

**The error's scale.** The paper's appendix A.1 writes the error as
:math:`E(t) = \sum_k (y^k(t) - t^k(t))^2`, without a factor :math:`\tfrac12`, yet its error
signal (eq. 19) is :math:`e_k(t) = f'_k(net_k(t))\,(t^k(t) - y^k(t))`, which is
:math:`-\partial E / \partial net_k` only for :math:`E = \tfrac12 \sum_k (\dots)^2`. By
default the network follows eq. 19 (``error_factor = 0.5``); ``error_factor = 1.0`` takes
:math:`E(t)` as written, whose gradient is twice eq. 19's. Every weight change is linear in the
output units' error signals, so that reading is exactly the default rule at twice the
learning rate: :math:`\Delta w = -2c\,\alpha\, \partial(\tfrac12 \sum (y - d)^2) / \partial w`.

**Sequential construction** (the paper's section 4, "abuse problem", solution (1): "a memory
cell and the corresponding gate units are added to the network whenever the error stops
decreasing"; experiment 2a: "memory cell and input gate are added once the error has stopped
decreasing"). With ``staged`` the network starts without its memory blocks: no cell, no gate
and no weight from or to them; only the output units' weights from the inputs and their biases
learn. Whenever the error has stopped decreasing (:class:`Plateau`, :meth:`Plateau.holds`), the
next block is added with the weights it was initialised with, until all are in. Training
sequences are counted from the very first one.

Shapes: ``N`` sequences, ``T`` steps, ``I`` inputs, ``H`` cells, ``G`` packed rows
(input gates, cell inputs, output gates), ``R`` recurrent sources (cell outputs and gate
activations), ``O`` output units, ``J = H`` (or ``H + I`` with inputs read by the outputs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from carousel.cells import CellSpec, make_spec
from carousel.experiments.plateau import Plateau

BIASED = ("all", "gates", "none")
OUTPUT_UNITS = ("sigmoid", "linear")
UPDATES = ("sequence", "step")


@dataclass(frozen=True)
class Faithful:
    r"""The 1997 network and learning rule of one experiment (Hochreiter & Schmidhuber 1997).

    Attributes:
        blocks: memory cell blocks.
        block_size: cells per block ``S``.
        lr: learning rate of the online gradient descent.
        init_range: weights start uniform in ``[-init_range, init_range]``.
        input_gate_bias: initial bias of each block's input gate (empty: random, see
            ``input_gate_bias_range``).
        input_gate_bias_range: random input-gate biases start uniform in
            ``[-input_gate_bias_range, input_gate_bias_range]`` (``None``: like the other
            weights, ``init_range``; experiment 1: 0.1, the paper's "r").
        output_gate_bias: initial bias of each block's output gate (empty: random like the
            rest).
        biased: which memory-layer units have a bias: ``"all"``, ``"gates"`` or ``"none"``.
        output_bias: whether the output units have a bias.
        output_units: ``"sigmoid"`` (the paper's output units) or ``"linear"``.
        output_gate: whether the blocks have output gates (experiment 2a's cell has none).
        output_from_inputs: output units also read the external inputs (experiment 2a).
        recurrent: cells and gates read the previous cell outputs and gate activations
            (``False``: the inputs only, as experiment 2a's weight count implies).
        candidate_activation: the cell input squashing ``g`` (``"g1997"``, or ``"sigmoid"`` in 2a).
        output_activation: the cell output squashing ``h`` (``"h1997"``, or ``"identity"`` in 2a).
        truncate_gradient: the paper's truncated gradient (``False``: full BPTT).
        update: change the weights after every ``"sequence"`` (BPTT through the fused
            kernels), or after every target ``"step"`` (the paper's truncated RTRL; needs the
            truncated gradient). The two differ only where targets come at every step.
        error_factor: ``c`` in the error :math:`E = c \sum (y - d)^2`: 0.5 follows the error
            signal of the paper's eq. 19, 1.0 its :math:`E(t)` as written (see the module
            docstring; the same as twice the learning rate).
        staged: sequential construction: start without memory blocks and add one whenever
            the error has stopped decreasing (``plateau``; see the module docstring).
        plateau: the criterion of "stopped decreasing" for ``staged``.
    """

    blocks: int
    lr: float
    block_size: int = 1
    init_range: float = 0.1
    input_gate_bias: tuple[float, ...] = ()
    output_gate_bias: tuple[float, ...] = ()
    biased: str = "all"
    output_bias: bool = True
    output_units: str = "sigmoid"
    output_gate: bool = True
    output_from_inputs: bool = False
    recurrent: bool = True
    candidate_activation: str = "g1997"
    output_activation: str = "h1997"
    truncate_gradient: bool = True
    update: str = "sequence"
    input_gate_bias_range: float | None = None
    error_factor: float = 0.5
    staged: bool = False
    plateau: Plateau = field(default_factory=Plateau)

    def __post_init__(self) -> None:
        if self.blocks < 1 or self.block_size < 1:
            raise ValueError(
                f"blocks and block_size must be >= 1; got {self.blocks}, {self.block_size}"
            )
        if not self.lr > 0 or not self.init_range >= 0:
            raise ValueError(
                f"lr must be > 0 and init_range >= 0; got {self.lr}, {self.init_range}"
            )
        if self.output_units not in OUTPUT_UNITS:
            raise ValueError(
                f"output_units must be one of {OUTPUT_UNITS}; got {self.output_units!r}"
            )
        if self.update not in UPDATES:
            raise ValueError(f"update must be one of {UPDATES}; got {self.update!r}")
        if self.update == "step" and not self.truncate_gradient:
            raise ValueError("update='step' (truncated RTRL) needs truncate_gradient=True")
        if self.biased not in BIASED:
            raise ValueError(f"biased must be one of {BIASED}; got {self.biased!r}")
        for name in ("input_gate_bias", "output_gate_bias"):
            values = getattr(self, name)
            if values and len(values) != self.blocks:
                raise ValueError(
                    f"{name} needs one value per block ({self.blocks}); got {len(values)}"
                )
        if self.output_gate_bias and not self.output_gate:
            raise ValueError("output_gate_bias needs output_gate=True")
        if self.input_gate_bias_range is not None:
            if not self.input_gate_bias_range >= 0:
                raise ValueError(
                    f"input_gate_bias_range must be >= 0; got {self.input_gate_bias_range}"
                )
            if self.input_gate_bias:
                raise ValueError(
                    "input_gate_bias_range needs random input-gate biases; got input_gate_bias="
                    f"{self.input_gate_bias}"
                )
        if not self.error_factor > 0:
            raise ValueError(f"error_factor must be > 0; got {self.error_factor}")
        if not isinstance(self.plateau, Plateau):
            raise TypeError(f"plateau must be a Plateau; got {type(self.plateau).__name__}")

    @property
    def hidden_size(self) -> int:
        """``H``: the number of memory cells."""
        return self.blocks * self.block_size

    def spec(self) -> CellSpec:
        """The cell: :func:`carousel.cells.lstm.lstm1997` with this experiment's choices."""
        spec = make_spec(
            "1997",
            block_size=self.block_size,
            truncate_gradient=self.truncate_gradient,
            candidate_activation=self.candidate_activation,
            output_activation=self.output_activation,
        )
        return spec if self.output_gate else spec.replace(gates=("i", "g"))


@dataclass
class Net1997:
    """A 1997 network's weights as float64 NumPy arrays (changed in place by training).

    Attributes:
        settings: the :class:`Faithful` settings it was built from.
        config: the kernels' configuration vector (:func:`lstm_config`).
        weight_ih ``(G, I)``, bias ``(G,)``, weight_hh ``(G, R)``: the memory layer.
        out_weight ``(O, J)``, out_bias ``(O,)``: the output units.
        bias_mask ``(G,)``, hh_mask ``(G, R)``, out_mask ``(O, J)``, out_bias_mask ``(O,)``: 1
            where a weight exists now (absent ones stay zero: their gradient is masked).
        active_blocks: memory blocks in the network now (fewer than ``settings.blocks`` while
            a staged network is being built, :meth:`add_block`).
        initial: the initial weights (``weight_hh``, ``out_weight``) of the connections that
            are absent until their block is added.
        connectivity: the masks (``bias``, ``hh``) of the finished network.

    The units of a block not yet added still run, but their values reach nothing (every weight
    from them is zero) and their incoming weights keep their initial values, untrained.
    """

    settings: Faithful
    config: np.ndarray
    weight_ih: np.ndarray
    bias: np.ndarray
    weight_hh: np.ndarray
    out_weight: np.ndarray
    out_bias: np.ndarray
    bias_mask: np.ndarray
    hh_mask: np.ndarray
    out_bias_mask: np.ndarray
    out_mask: np.ndarray | None = None
    active_blocks: int = -1
    initial: dict = field(default_factory=dict, repr=False)
    connectivity: dict = field(default_factory=dict, repr=False)
    input_size: int = field(init=False)

    def __post_init__(self) -> None:
        self.input_size = self.weight_ih.shape[1]
        if self.out_mask is None:
            self.out_mask = np.ones(self.out_weight.shape)
        if self.active_blocks < 0:
            self.active_blocks = self.settings.blocks
        self.initial = self.initial or {
            "weight_hh": self.weight_hh.copy(), "out_weight": self.out_weight.copy()
        }  # fmt: skip
        self.connectivity = self.connectivity or {
            "bias": self.bias_mask.copy(), "hh": self.hh_mask.copy()
        }  # fmt: skip

    @classmethod
    def create(cls, settings: Faithful, input_size: int, output_size: int, seed: int) -> Net1997:
        """Weights uniform in ``[-init_range, init_range]``, gate biases as ``settings`` says;
        with ``settings.staged`` no memory block is in yet (:meth:`add_block`)."""
        spec = settings.spec()
        hidden = settings.hidden_size
        rows, sources = spec.num_gate_rows(hidden), spec.recurrent_size(hidden)
        reads = hidden + (input_size if settings.output_from_inputs else 0)
        rng = np.random.default_rng(seed)
        bound = settings.init_range

        def uniform(*shape):
            return rng.uniform(-bound, bound, shape)

        weight_ih, bias, weight_hh = (
            uniform(rows, input_size),
            uniform(rows),
            uniform(rows, sources),
        )
        out_weight, out_bias = uniform(output_size, reads), uniform(output_size)
        slices = spec.gate_slices(hidden)
        if settings.input_gate_bias_range is not None:  # drawn last: the rest stays the same
            spread = settings.input_gate_bias_range
            bias[slices["i"]] = rng.uniform(-spread, spread, settings.blocks)
        bias_mask = np.ones(rows)
        if settings.biased == "none":
            bias_mask[:] = 0
        elif settings.biased == "gates":
            bias_mask[slices["g"]] = 0
        hh_mask = np.full((rows, sources), 1.0 if settings.recurrent else 0.0)
        out_bias_mask = np.full(output_size, 1.0 if settings.output_bias else 0.0)
        from carousel.kernels.numba_cpu.lstm import lstm_config

        for gate, values in (("i", settings.input_gate_bias), ("o", settings.output_gate_bias)):
            if values:
                bias[slices[gate]] = values
        bias *= bias_mask
        weight_hh *= hh_mask
        out_bias *= out_bias_mask
        net = cls(
            settings, lstm_config(spec, hidden), weight_ih, bias, weight_hh,
            out_weight, out_bias, bias_mask, hh_mask, out_bias_mask,
        )  # fmt: skip
        if settings.staged:
            net._set_blocks(0)
        return net

    def block_units(self, blocks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks of the first ``blocks`` memory blocks' units: their packed rows ``(G,)``
        (input gate, cells' inputs, output gate), their recurrent sources ``(R,)`` (cell
        outputs and fed-back gate activations) and their cells ``(H,)``."""
        spec, size = self.settings.spec(), self.settings.block_size
        hidden = self.settings.hidden_size
        slices = spec.gate_slices(hidden)
        rows = np.zeros(self.weight_ih.shape[0])
        sources = np.zeros(self.weight_hh.shape[1])
        cells = np.zeros(hidden)
        cells[: blocks * size] = 1.0
        rows[slices["g"].start : slices["g"].start + blocks * size] = 1.0
        for gate in ("i", "o"):
            if gate in slices:
                rows[slices[gate].start : slices[gate].start + blocks] = 1.0
        sources[:hidden] = cells
        offset = hidden
        for gate in spec.feedback_gates:
            sources[offset : offset + blocks] = 1.0
            offset += spec.gate_size(gate, hidden)
        return rows, sources, cells

    def _set_blocks(self, blocks: int) -> None:
        """Make the first ``blocks`` blocks the network's: weights from units of absent blocks
        are zero, those from units just added take their initial values; only weights between
        present units (and from the inputs into present units) are trained."""
        rows, sources, cells = self.block_units(blocks)
        _, sources_before, cells_before = self.block_units(self.active_blocks)
        arriving, absent = sources > sources_before, sources == 0
        self.weight_hh[:, arriving] = self.initial["weight_hh"][:, arriving]
        self.weight_hh[:, absent] = 0.0
        hidden = len(cells)
        from_cells, initial = self.out_weight[:, :hidden], self.initial["out_weight"][:, :hidden]
        arriving, absent = cells > cells_before, cells == 0
        from_cells[:, arriving] = initial[:, arriving]  # a view: changes out_weight
        from_cells[:, absent] = 0.0
        self.weight_hh *= self.connectivity["hh"]
        self.hh_mask[:] = self.connectivity["hh"] * rows[:, None] * sources[None, :]
        self.bias_mask[:] = self.connectivity["bias"] * rows
        self.out_mask[:, :hidden] = cells[None, :]
        self.active_blocks = blocks

    def add_block(self) -> None:
        """Add the next memory block (sequential construction): its cells, its gates and every
        weight from and to them, with the values they were initialised with."""
        if self.active_blocks >= self.settings.blocks:
            raise ValueError(
                f"add_block: all {self.settings.blocks} blocks are in the network already"
            )
        self._set_blocks(self.active_blocks + 1)

    def num_weights(self) -> int:
        """Trainable weights in the network now, counted as the paper counts them (biases
        included)."""
        rows = self.block_units(self.active_blocks)[0]
        return int(
            rows.sum() * self.weight_ih.shape[1]
            + self.hh_mask.sum()
            + self.bias_mask.sum()
            + self.out_mask.sum()
            + self.out_bias_mask.sum()
        )

    def layer(self, truncate_gradient: bool | None = None):
        """The memory layer as a float64 :class:`carousel.nn.Recurrent` with these weights (for
        diagnostics); ``truncate_gradient`` overrides the settings' (``False``: exact gradient).
        The output units are not part of it: they are ``out_weight`` and ``out_bias``."""
        from carousel.nn import Recurrent

        spec = self.settings.spec()
        if truncate_gradient is not None:
            spec = spec.replace(truncate_gradient=truncate_gradient)
        layer = Recurrent(
            self.input_size, self.settings.hidden_size, variant=spec, dtype=torch.float64
        )
        with torch.no_grad():
            layer.weight_ih_l0.copy_(torch.from_numpy(self.weight_ih))
            layer.weight_hh_l0.copy_(torch.from_numpy(self.weight_hh))
            layer.bias_l0.copy_(torch.from_numpy(self.bias))
        return layer

    def _arguments(self):
        return (
            self.config, self.weight_ih, self.bias, self.weight_hh, self.out_weight,
            self.out_bias, self.settings.output_from_inputs, self.settings.output_units == "linear",
        )  # fmt: skip

    @property
    def step_size(self) -> float:
        r"""The learning rate the kernels apply to the gradient of :math:`\tfrac12 \sum (y -
        d)^2`: ``2 * error_factor * lr`` (see ``error_factor``)."""
        return 2.0 * self.settings.error_factor * self.settings.lr

    def train(
        self,
        x: np.ndarray,
        lengths: np.ndarray,
        targets: np.ndarray,
        per_step: bool,
        update: str | None = None,
    ):
        """Train online on each of ``N`` sequences in turn; the outputs each sequence got before
        its update, ``(N, T, O)`` (``(N, 1, O)`` with targets at the end only).

        Args:
            x: ``(N, T, I)`` float64, zero past each length.
            lengths: ``(N,)`` int64 in ``[1, T]``.
            targets: ``(N, T, O)`` per step, or ``(N, 1, O)`` at each sequence's last step.
            per_step: which of the two ``targets`` holds.
            update: ``"sequence"``, ``"step"``, or ``"summed-steps"`` (the step algorithm with
                its gradients summed over the sequence: equal to ``"sequence"``); default the
                settings'.
        """
        from carousel.kernels.numba_cpu.online import train_online, train_online_steps

        update = update or self.settings.update
        outputs = np.zeros(targets.shape)
        arguments = (
            *self._arguments(), self.bias_mask, self.hh_mask, self.out_mask, self.out_bias_mask,
            self.step_size, x, lengths, targets, per_step,
        )  # fmt: skip
        if update == "sequence":
            train_online(*arguments, outputs)
        else:
            train_online_steps(*arguments, update == "step", outputs)
        return outputs

    def predict(self, x: np.ndarray, lengths: np.ndarray, per_step: bool) -> np.ndarray:
        """Outputs without training: ``(N, T, O)``, or ``(N, 1, O)`` at each last step."""
        from carousel.kernels.numba_cpu.online import predict

        outputs = np.zeros((x.shape[0], x.shape[1] if per_step else 1, self.out_weight.shape[0]))
        predict(*self._arguments(), x, lengths, per_step, outputs)
        return outputs


def batch_arrays(batch, output_size: int, per_step: bool):
    """``(x, lengths, targets)`` of a task's :class:`~carousel.tasks.Batch` for :class:`Net1997`:
    float64 ``(N, T, I)``, int64 ``(N,)``, float64 ``(N, T, O)`` or ``(N, 1, O)``."""
    x = np.ascontiguousarray(batch.x.numpy(), dtype=np.float64)
    lengths = batch.mask.sum(1).numpy().astype(np.int64)
    targets = batch.y[..., :output_size].numpy().astype(np.float64)
    if not per_step:
        targets = targets.reshape(len(targets), 1, output_size)
    return x, lengths, np.ascontiguousarray(targets)


def as_output(outputs: np.ndarray, per_step: bool) -> torch.Tensor:
    """:meth:`Net1997.train` / :meth:`Net1997.predict` outputs in the shape a task scores:
    ``(N, T, O)`` per step, ``(N, O)`` at the end."""
    tensor = torch.from_numpy(outputs)
    return tensor if per_step else tensor[:, 0]
