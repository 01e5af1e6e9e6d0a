r"""The drop-in layers: ``LSTM``, ``GRU`` and ``RNN`` with ``torch.nn``'s argument order.

Each is :class:`~carousel.nn.recurrent.Recurrent` with its family fixed; see that module for
shapes, ``lengths=`` and the backends.
"""

from __future__ import annotations

from collections.abc import Sequence

from carousel.cells import CellSpec, make_spec
from carousel.cells.init import Initializer
from carousel.errors import InputError
from carousel.nn.recurrent import Recurrent


class LSTM(Recurrent):
    r"""Drop-in ``torch.nn.LSTM`` that runs any cell of the LSTM family.

    With the defaults it computes exactly ``torch.nn.LSTM`` (the forget-gate LSTM of Gers et al.
    2000; equations in :func:`carousel.cells.lstm.vanilla`), with the same parameters, and
    ``torch.manual_seed(s)`` gives it the same initial weights. Keyword-only extras:

    Args:
        variant: ``"vanilla"`` (default), ``"1997"``, ``"peephole"``, ``"nig"``, ``"nfg"``,
            ``"nog"``, ``"niaf"``, ``"noaf"``, ``"np"``, ``"cifg"``, ``"fgr"``; see
            :mod:`carousel.cells.lstm` for each one's equations and source; or ``"slstm"``,
            the sLSTM of Beck et al. (2024) (:mod:`carousel.cells.slstm`).
        peepholes: add (``True``) or drop (``False``) peephole connections; ``None``: the variant's.
        gate_activation: ``"sigmoid"`` or ``"hard_sigmoid"`` (CReLU, clip(x, 0, 1)).
        candidate_activation: squashing of the cell input, e.g. ``"tanh"``, ``"identity"``, ``"g1997"``.
        output_activation: squashing of the cell state before the output gate, e.g. ``"tanh"``,
            ``"identity"`` (:math:`h = o \odot c`), ``"h1997"``.
        block_size: cells per memory block sharing their gates (1997 paper).
        truncate_gradient: the 1997 paper's truncated backpropagation (see the ``1997`` variant).
        cell_bias: ``False`` leaves the cell inputs unbiased (only gates biased).
        layer_norm: layer normalisation of the input and recurrent projections and of the cell
            state before the output activation (Ba et al. 2016); parameters ``ln_ih_weight_l0``,
            ``ln_ih_bias_l0``, ``ln_hh_*``, ``ln_cell_*``.
        recurrent_dropout, candidate_dropout, zoneout, weight_drop: the regularisers of the
            recurrent connections; see :class:`Recurrent` and :mod:`carousel.cells.regularizers`.
        num_heads: sLSTM only; heads of its block-diagonal recurrent weights.
        forget_activation: sLSTM only; ``"sigmoid"`` (default) or ``"exp"``.
        backend, init: see :class:`Recurrent`.

    Returns ``(output, (h_n, c_n))``, or ``(output, (h_n, c_n, gates_n))`` for ``fgr`` and ``1997``,
    or ``(output, (h_n, c_n, n_n, m_n))`` for ``slstm``.
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
        peepholes: bool | None = None,
        gate_activation: str | None = None,
        candidate_activation: str | None = None,
        output_activation: str | None = None,
        block_size: int | None = None,
        truncate_gradient: bool | None = None,
        cell_bias: bool | None = None,
        layer_norm: bool | None = None,
        recurrent_dropout: float = 0.0,
        candidate_dropout: float = 0.0,
        zoneout: float | tuple[float, float] = 0.0,
        weight_drop: float = 0.0,
        num_heads: int | None = None,
        forget_activation: str | None = None,
        backend: str = "auto",
        init: Initializer | Sequence[Initializer] | None = None,
    ) -> None:
        spec = make_spec(variant)
        if spec.family not in ("lstm", "slstm"):
            raise ValueError(
                f"variant must be an LSTM variant for carousel.LSTM; {spec.variant!r} is a "
                f"{spec.family} cell (use carousel.GRU, carousel.RNN or carousel.nn.Recurrent)"
            )
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size,
            device,
            dtype,
            variant=spec,
            backend=backend,
            init=init,
            peepholes=peepholes,
            gate_activation=gate_activation,
            candidate_activation=candidate_activation,
            output_activation=output_activation,
            block_size=block_size,
            truncate_gradient=truncate_gradient,
            cell_bias=cell_bias,
            layer_norm=layer_norm,
            recurrent_dropout=recurrent_dropout,
            candidate_dropout=candidate_dropout,
            zoneout=zoneout,
            weight_drop=weight_drop,
            num_heads=num_heads,
            forget_activation=forget_activation,
        )


class GRU(Recurrent):
    r"""Drop-in ``torch.nn.GRU`` (Cho et al. 2014); equations in :func:`carousel.cells.gru.gru`.

    Keyword-only extras: ``gate_activation`` (``"sigmoid"``, ``"hard_sigmoid"``),
    ``candidate_activation`` (squashing of :math:`n_t`), ``layer_norm`` (both projections),
    the regularisers ``recurrent_dropout``, ``candidate_dropout``, ``zoneout`` (one
    probability: a GRU's state is ``h``) and ``weight_drop`` (see :class:`Recurrent`),
    ``backend``, ``init``. Returns ``(output, h_n)``.
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
        device=None,
        dtype=None,
        *,
        gate_activation: str | None = None,
        candidate_activation: str | None = None,
        layer_norm: bool | None = None,
        recurrent_dropout: float = 0.0,
        candidate_dropout: float = 0.0,
        zoneout: float = 0.0,
        weight_drop: float = 0.0,
        backend: str = "auto",
        init: Initializer | Sequence[Initializer] | None = None,
        proj_size: int = 0,
    ) -> None:
        _refuse_projection(proj_size)
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            0,
            device,
            dtype,
            variant="gru",
            backend=backend,
            init=init,
            gate_activation=gate_activation,
            candidate_activation=candidate_activation,
            layer_norm=layer_norm,
            recurrent_dropout=recurrent_dropout,
            candidate_dropout=candidate_dropout,
            zoneout=zoneout,
            weight_drop=weight_drop,
        )

    def _default_variant(self) -> str:
        return "gru"


class RNN(Recurrent):
    r"""Drop-in ``torch.nn.RNN``, the Elman network: :math:`h_t = \phi(W x_t + b_{ih} + R h_{t-1} + b_{hh})`.

    ``nonlinearity`` is ``"tanh"`` or ``"relu"`` and comes fourth, as in torch. Keyword-only extras:
    ``weight_drop`` (DropConnect on ``weight_hh``, see :class:`Recurrent`), ``backend``, ``init``.
    Returns ``(output, h_n)``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        *,
        weight_drop: float = 0.0,
        backend: str = "auto",
        init: Initializer | Sequence[Initializer] | None = None,
        proj_size: int = 0,
    ) -> None:
        _refuse_projection(proj_size)
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            0,
            device,
            dtype,
            variant="elman",
            backend=backend,
            init=init,
            weight_drop=weight_drop,
            nonlinearity=nonlinearity,
        )
        self.nonlinearity = nonlinearity

    def _default_variant(self) -> str:
        return "elman"

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text + (
            f", nonlinearity={self.nonlinearity!r}" if self.nonlinearity != "tanh" else ""
        )


def _refuse_projection(proj_size) -> None:
    """GRU and RNN take ``proj_size`` only to refuse it, as ``torch.nn`` does."""
    if proj_size != 0:
        raise InputError(
            "proj_size argument is only supported for LSTM, not RNN or GRU; "
            f"got proj_size={proj_size!r}"
        )
