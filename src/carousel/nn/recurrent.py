r"""Recurrent layers: drop-in replacements for ``torch.nn.LSTM``, ``GRU`` and ``RNN``.

A layer runs a cell (:mod:`carousel.cells`) over time, stacks ``num_layers`` of them, optionally in
both directions, with dropout between layers. It takes the same constructor arguments, the same
forward signature and returns the same values as its torch counterpart, with the same parameter
names, shapes and default initialisation, so a ``torch.nn`` state_dict loads unchanged. On top of
that it takes keyword-only ``variant=`` (any cell of the family), cell options (``layer_norm``
among them), the regularisers of the recurrent connections (``recurrent_dropout``,
``candidate_dropout``, ``zoneout``, ``weight_drop``; :mod:`carousel.cells.regularizers`), named
initialisers (``init=``) and ``backend=``, and its ``forward`` takes ``lengths=`` for padded
batches and ``reset=`` to start sequences again from the initial state mid-batch.

Shapes (as in torch):

- ``N`` batch size, ``L`` sequence length, ``D`` 2 if bidirectional else 1,
  ``H_in`` input size, ``H_cell`` hidden size, ``H_out`` ``proj_size`` if > 0 else hidden size.
- input: ``(L, N, H_in)``, ``(N, L, H_in)`` with ``batch_first``, ``(L, H_in)`` unbatched, or a
  :class:`~torch.nn.utils.rnn.PackedSequence`.
- output: ``(L, N, D * H_out)`` (``batch_first``: ``(N, L, D * H_out)``); zeros past each length.
- states: ``h``: ``(D * num_layers, N, H_out)``, ``c``: ``(D * num_layers, N, H_cell)``, and for
  cells with gate feedback (``fgr``, ``1997``) ``gates``: ``(D * num_layers, N, F)`` with
  ``F = spec.feedback_size(H_cell)``; the sLSTM carries ``(h, c, n, m)``, each
  ``(D * num_layers, N, H_cell)``. Unbatched input drops the ``N`` axis.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from carousel import kernels
from carousel.cells import CellSpec, CellWeights, make_spec
from carousel.cells.init import Initializer, ParameterGroup
from carousel.cells.regularizers import Regularizers, direction_resets
from carousel.errors import InputError
from carousel.nn import checks
from carousel.nn.parameters import (
    as_initializers,
    cast_weights,
    cell_weights,
    initialize,
    masked_count,
    register_masks,
    register_parameters,
)
from carousel.nn.precision import autocast_dtype, autocast_off, compute_dtype


class Recurrent(nn.Module):
    """A multi-layer recurrent network over any registered cell.

    :class:`LSTM`, :class:`GRU` and :class:`RNN` are this layer with the family fixed and torch's
    argument order; use ``Recurrent`` directly to choose the cell by name (e.g. in experiment
    configurations): ``Recurrent(2, 8, variant="gru")``.

    Args:
        input_size: features of the input, ``H_in``.
        hidden_size: ``H_cell``, the number of cells (units) per layer and direction.
        num_layers: stacked layers.
        bias: if ``False`` the layers have no biases.
        batch_first: input and output are ``(N, L, F)`` instead of ``(L, N, F)``; states are not
            affected.
        dropout: dropout probability on the outputs of every layer but the last (training only).
        bidirectional: run a second direction from the end; outputs are concatenated.
        proj_size: LSTM only; if > 0, :math:`h_t = W_{hr} y_t` of that width.
        device, dtype: where and in which precision the parameters live.
        variant: the cell, a name from :data:`carousel.cells.VARIANTS` or a :class:`CellSpec`.
        backend: ``"auto"`` (the fastest backend that supports the call) or a name from
            :data:`carousel.kernels.BACKENDS`.
        init: a named initialiser (:mod:`carousel.cells.init`) or a sequence of them, applied in
            order after torch's default initialisation.
        recurrent_dropout: LSTM/GRU; variational dropout of :math:`h_{t-1}` (Gal 2016).
        candidate_dropout: LSTM/GRU; dropout of the candidate (Semeniuta et al. 2016).
        zoneout: LSTM/GRU; probability ``p`` that a unit keeps its previous value, or ``(p_c,
            p_h)`` for an LSTM's :math:`c` and :math:`h` (Krueger et al. 2017).
        weight_drop: DropConnect on ``weight_hh``, one mask per call (Merity et al. 2018).
        **cell_options: options of the variant (``peepholes``, ``gate_activation``,
            ``layer_norm``, ...).

    The regularisers act in training only (zoneout in evaluation as its expectation), with masks
    from torch's generator (``torch.manual_seed`` repeats them): :mod:`carousel.cells.regularizers`.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        variant: str | CellSpec = "vanilla",
        backend: str = "auto",
        init: Initializer | Sequence[Initializer] | None = None,
        recurrent_dropout: float = 0.0,
        candidate_dropout: float = 0.0,
        zoneout: float | tuple[float, float] = 0.0,
        weight_drop: float = 0.0,
        **cell_options,
    ) -> None:
        super().__init__()
        checks.check_layer_arguments(
            input_size=input_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            bias=bias,
            batch_first=batch_first,
            dropout=dropout,
            bidirectional=bidirectional,
            proj_size=proj_size,
        )
        kernels.check_backend_name(backend)
        spec = make_spec(variant, **cell_options)
        spec.check_sizes(hidden_size, proj_size)
        self.regularizers = Regularizers.create(
            spec, recurrent_dropout, candidate_dropout, zoneout, weight_drop
        )
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout acts between stacked layers, so it needs num_layers > 1; got "
                f"dropout={dropout} and num_layers={num_layers}",
                stacklevel=2,
            )
        self.spec = spec
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self.backend = backend
        self.init = as_initializers(init)
        factory = {"device": device, "dtype": dtype}

        output_size = spec.output_size(hidden_size, proj_size)
        self._group_names: list[dict[str, str]] = []
        for layer in range(num_layers):
            for direction in range(self.num_directions):
                layer_input = input_size if layer == 0 else output_size * self.num_directions
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                self._group_names.append(
                    register_parameters(
                        self, spec, layer_input, hidden_size, proj_size, bias, suffix, factory
                    )
                )
        register_masks(self, spec, hidden_size, proj_size, bias, factory)
        self.reset_parameters()

    # ---- parameters ------------------------------------------------------------------------

    @property
    def num_directions(self) -> int:
        """2 if bidirectional else 1."""
        return 2 if self.bidirectional else 1

    def parameter_groups(self) -> list[ParameterGroup]:
        """The parameters of each (layer, direction), in order ``l0, l0_reverse, l1, ...``."""
        groups = []
        for index, names in enumerate(self._group_names):
            layer, direction = divmod(index, self.num_directions)
            params = {short: getattr(self, full) for short, full in names.items()}
            groups.append(
                ParameterGroup(
                    self.spec, self.hidden_size, self.proj_size, layer, direction, params
                )
            )
        return groups

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """Parameters per (layer, direction), as ``torch.nn.RNNBase.all_weights``."""
        return [list(group.params.values()) for group in self.parameter_groups()]

    @property
    def _flat_weights_names(self) -> list[str]:
        """Parameter names in ``torch.nn``'s flat order (layer, direction, then
        ``weight_ih, weight_hh, bias_ih, bias_hh, weight_hr``, then the variant's extras)."""
        return [name for names in self._group_names for name in names.values()]

    @property
    def _flat_weights(self) -> list[Tensor | None]:
        """The tensors named in :attr:`_flat_weights_names`, as ``torch.nn.RNNBase`` keeps them.

        Read afresh on every access, so it follows a parameter that was replaced (a
        parametrization, a weight drop assigning a plain tensor) without bookkeeping.
        """
        return [getattr(self, name, None) for name in self._flat_weights_names]

    def reset_parameters(self) -> None:
        """torch's default initialisation, then this layer's ``init`` in order."""
        initialize(self.parameter_groups(), self.init)

    def flatten_parameters(self) -> None:
        """Does nothing; present so code written for ``torch.nn.LSTM`` runs unchanged."""

    def num_weights(self) -> int:
        """Trainable weights, masked-out entries not counted (the 1997 paper's weight counts)."""
        return sum(
            masked_count(self, short, param)
            for group in self.parameter_groups()
            for short, param in group.params.items()
        )

    def cell_weights(self, layer: int, direction: int = 0) -> CellWeights:
        """What the backends compute with for one (layer, direction): masks applied, biases summed."""
        return cell_weights(self, self.parameter_groups()[layer * self.num_directions + direction])

    # ---- forward ----------------------------------------------------------------------------

    def forward(self, input, hx=None, lengths=None, reset=None):
        """Run the stack over ``input``.

        Args:
            input: see the module docstring for shapes; a padded tensor or a ``PackedSequence``.
            hx: the initial state, zeros if ``None``: a tensor ``h_0`` (GRU, RNN), a tuple
                ``(h_0, c_0)`` (LSTM) or ``(h_0, c_0, gates_0)`` (cells with gate feedback).
            lengths: for padded batched input, the valid length of each sequence, ``(N,)``
                integers in ``[1, L]``; steps past a length are skipped (the state is held, the
                output is zero), and the reverse direction starts at each sequence's last step.
            reset: ``None``, or a bool tensor ``(L, N)`` (``(N, L)`` with ``batch_first``, ``(L,)``
                unbatched, the padded shape for a ``PackedSequence``): where ``reset[t, n]`` is
                set, sequence ``n`` starts again at step ``t`` from the initial state, in every
                layer and direction (each segment runs as a sequence of its own); no gradient
                crosses that point (``hx``'s comes from the segment a direction runs first).

        Returns:
            ``(output, h_n)`` with the same structure as ``hx``.

        Precision: float16 and bfloat16 layers, and autocast regions (where ``torch.nn`` casts,
        see :data:`carousel.nn.precision.AUTOCAST_FAMILIES`), give outputs and states in that dtype as ``torch.nn``
        does; the fused kernels and the reference loop compute them in float32.
        """
        packed = isinstance(input, PackedSequence)
        data = input.data if packed else input
        param = next(self.parameters())
        context = kernels.graph_context(data) if isinstance(data, Tensor) else None
        values = context is None  # checks that read tensor values: eager execution only
        name = type(self).__name__
        x, lengths, batched = checks.check_layer_input(
            input, lengths, self.batch_first, param, self.input_size, name, values
        )
        packed_lengths = lengths  # a PackedSequence's own, to pack the output alike
        steps, batch = x.shape[0], x.shape[1]
        if lengths is not None and values and bool((lengths == steps).all()):
            lengths = None

        masks = self.regularizers.features(self.training)
        if reset is not None:
            reset = checks.check_reset(reset, steps, batch, batched, self.batch_first, x.device)
            masks |= {"reset"}
        state = self._initial_state(hx, batch, batched, x, values)
        dtype = autocast_dtype(self.spec.family, x) or x.dtype
        work = kernels.Workload(
            spec=self.spec,
            device=x.device,
            dtype=dtype,
            steps=steps,
            batch=batch,
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            proj_size=self.proj_size,
            num_layers=self.num_layers,
            num_directions=self.num_directions,
            has_lengths=lengths is not None,
            needs_grad=torch.is_grad_enabled()
            and (
                x.requires_grad
                or any(s.requires_grad for s in state)
                or any(p.requires_grad for p in self.parameters())
            ),
            context=context,
            masks=masks,
        )
        backend = kernels.select(self.backend, work)
        if torch.jit.is_tracing() and not backend.length_generic:
            raise InputError(
                f"torch.jit.trace cannot record {name}({self.spec.describe()}): its "
                f"{backend.name!r} backend runs a Python loop over the {steps} steps, so the "
                "traced graph would hold for this sequence length only; use torch.export or "
                "torch.compile, which capture it correctly"
            )
        if backend.run_stack is not None:
            flat = [
                self._drop_weights(p) if short == "weight_hh" else p
                for group in self.parameter_groups()
                for short, p in group.params.items()
            ]
            output, final = backend.run_stack(
                self.spec,
                x,
                state,
                flat,
                lengths,
                has_biases=self.bias,
                num_layers=self.num_layers,
                dropout=self.dropout,
                training=self.training,
                bidirectional=self.bidirectional,
            )
        else:
            with autocast_off(x.device.type):
                output, final = self._run_directions(backend, x, state, lengths, dtype, reset)

        if packed:
            output = _pack_like(output, packed_lengths, input)
        elif not batched:
            output = output.squeeze(1)
            final = tuple(s.squeeze(1) for s in final)
        elif self.batch_first:
            output = output.transpose(0, 1)
        return output, (final[0] if len(final) == 1 else final)

    def _run_directions(self, backend, x, state, lengths, dtype, reset=None):
        """Stack layers and directions around a backend's ``run_direction``, in ``dtype``.

        float16 and bfloat16 are computed in float32 (inputs, states and weights cast up, the
        results cast back), so every backend accumulates in float32. Each (layer, direction)
        draws its own masks, in that order: the weight drop's, the per-sequence ones, zoneout's.
        A unidirectional stack without masks is offered whole to the backend's ``run_layers``.
        """
        compute = compute_dtype(dtype)
        layer_input = x.to(dtype).to(compute)
        state = tuple(s.to(dtype).to(compute) for s in state)
        finals: list[tuple[Tensor, ...]] = []  # per (layer, direction)
        regularized = reset is not None or self.regularizers.active(self.training)
        directions = range(self.num_directions)
        all_weights = [
            [cast_weights(self.cell_weights(layer, d), dtype, compute) for d in directions]
            for layer in range(self.num_layers)
        ]
        stack = self.num_layers > 1 and self.num_directions == 1 and not regularized
        if stack and backend.run_layers is not None:  # None where the backend declines
            layers = [tuple(s[k] for s in state) for k in range(self.num_layers)]
            weights = [w[0] for w in all_weights]
            dropout = self.dropout if self.training else 0.0
            ran = backend.run_layers(self.spec, layer_input, layers, weights, lengths, dropout)
            if ran is not None:
                final = tuple(torch.stack(s).to(dtype) for s in zip(*ran[1], strict=True))
                return ran[0].to(dtype), final
        for layer in range(self.num_layers):
            indices = [layer * self.num_directions + direction for direction in directions]
            states = [tuple(s[index] for s in state) for index in indices]
            weights = list(all_weights[layer])
            masks = [None for _ in directions]
            if regularized:  # each direction's weight drop and masks, in direction order
                for d in directions:
                    weights[d], masks[d] = self._draw(weights[d], layer_input, lengths, d, reset)
            parallel = backend.run_directions is not None and all(m is None for m in masks)
            if len(indices) > 1 and parallel:
                results = backend.run_directions(self.spec, layer_input, states, weights, lengths)
            else:
                results = [
                    backend.run_direction(
                        self.spec,
                        layer_input,
                        states[d],
                        weights[d],
                        lengths,
                        d == 1,
                        **({} if masks[d] is None else {"masks": masks[d]}),
                    )
                    for d in directions
                ]
            outputs = [output for output, _ in results]
            finals += [final for _, final in results]
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        final = tuple(torch.stack(collected).to(dtype) for collected in zip(*finals, strict=True))
        return layer_input.to(dtype), final

    def _drop_weights(self, weight_hh: Tensor) -> Tensor:
        """``weight_hh`` under the weight drop's DropConnect mask (training), else itself."""
        mask = self.regularizers.weight_mask(weight_hh, self.training)
        return weight_hh if mask is None else weight_hh * mask

    def _draw(self, weights, x: Tensor, lengths, direction: int, reset):
        """The weights under the weight drop, and one direction's masks over ``x`` (or None)."""
        weights = weights._replace(weight_hh=self._drop_weights(weights.weight_hh))
        masks = self.regularizers.draw(
            self.spec, x, self.hidden_size, self.proj_size, self.training
        )
        if reset is not None:
            masks = masks._replace(reset=direction_resets(reset, lengths, direction == 1))
        return weights, (masks if masks.features() else None)

    def _initial_state(
        self, hx, batch: int, batched: bool, x: Tensor, values: bool
    ) -> tuple[Tensor, ...]:
        sizes = self.spec.state_sizes(self.hidden_size, self.proj_size)
        stacked = self.num_layers * self.num_directions
        if hx is None:
            return tuple(x.new_zeros(stacked, batch, size) for size in sizes)
        return checks.check_state(
            hx,
            self.spec.state_names,
            sizes,
            stacked,
            batch,
            batched,
            x,
            type(self).__name__,
            values=values,
        )

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        defaults = {
            "num_layers": 1,
            "bias": True,
            "batch_first": False,
            "dropout": 0.0,
            "bidirectional": False,
            "proj_size": 0,
        }
        for name, default in defaults.items():
            value = getattr(self, name)
            if value != default:
                text += f", {name}={value}"
        if self.spec != make_spec(self._default_variant()):
            text += f", cell={self.spec.describe()}"
        if self.regularizers.describe():
            text += ", " + self.regularizers.describe()
        if self.backend != "auto":
            text += f", backend={self.backend!r}"
        if self.init:
            text += ", init=[" + ", ".join(getattr(i, "__name__", repr(i)) for i in self.init) + "]"
        return text

    def _default_variant(self) -> str:
        return "vanilla"


def _pack_like(output: Tensor, lengths: Tensor, like: PackedSequence) -> PackedSequence:
    """Pack a padded ``(T, B, F)`` output with the batch order and batch sizes of ``like``."""
    if like.sorted_indices is not None:
        order = like.sorted_indices
        output = output.index_select(1, order)
        lengths = lengths.index_select(0, order.cpu())
    data = pack_padded_sequence(output, lengths, enforce_sorted=True).data
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)
