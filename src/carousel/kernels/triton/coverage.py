"""What the triton kernels implement, as a whitelist: the backend's support decision.

The kernels run a call only if every part of it is listed here: its family, every field of its
:class:`~carousel.cells.CellSpec` with a value the kernels compute, its dtype, and every field of
the :class:`~carousel.kernels.Workload`. Anything else is refused with the reason
(:func:`unsupported_call`), so ``auto`` hands the call to a backend that can run it (on CUDA:
``torch-native`` for the stock cells, the reference loop otherwise) and ``backend="triton"``
raises ``ValueError`` naming what is missing.

Fields the kernels do not know are recognised generically: a spec field or workload field added
after this table is accepted only at its default, the value under which the cell computes what it
computed before the field existed; at any other value the call is refused. Teaching the kernels a
new option is adding it to :data:`SPEC_VALUES` or :data:`WORKLOAD_FIELDS` together with the kernel
code; a new mask, to :data:`MASKS` (the layer names the masks it draws in
:attr:`~carousel.kernels.Workload.masks`).

Implemented options of :mod:`carousel.cells.regularizers` (see :mod:`.options` for how):
``layer_norm`` (LSTM, GRU: the spec allows it nowhere else), the weight drop (applied to the
weights by the layer, every family), and the masks of :data:`MASKS`: recurrent dropout, candidate
dropout and zoneout on the LSTM and GRU (the only families the regularisers are defined for),
resets on every family.

Nothing here imports triton: the decision is made before the kernels are loaded.
"""

from __future__ import annotations

import dataclasses

import torch

FAMILIES = ("lstm", "gru", "elman", "slstm")
"""Families with pointwise kernels (:mod:`.lstm`, :mod:`.gru`, :mod:`.elman`, :mod:`.slstm`)."""

ACTIVATIONS = ("sigmoid", "hard_sigmoid", "tanh", "identity", "relu", "g1997", "h1997")
"""Activations with a branch in :func:`carousel.kernels.triton.common.activate`."""

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
"""Layer dtypes: float32 and float64 computed as such, float16 and bfloat16 in float32."""

ANY = None
"""In :data:`SPEC_VALUES`: every value the spec's own validation accepts is implemented."""

SPEC_VALUES: dict[str, tuple | None] = {
    "family": FAMILIES,
    "variant": ANY,  # a name only; what is computed follows from the other fields
    "gates": ANY,  # every ordered subset the spec accepts (HAS_I, HAS_F, HAS_O flags)
    "gate_activation": ACTIVATIONS,
    "candidate_activation": ACTIVATIONS,
    "output_activation": ACTIVATIONS,
    "peepholes": (False, True),
    "coupled_input_forget": (False, True),
    "gate_feedback": ("none", "gates", "all"),
    "block_size": ANY,  # any positive int: BLOCK lanes per unit, padded to a power of two
    "truncate_gradient": (False, True),
    "num_biases": (1, 2),
    "cell_bias": (False, True),
    "num_heads": ANY,  # sLSTM: the layer's mask makes W_hh block-diagonal, the GEMM stays dense
    "forget_activation": ("sigmoid", "exp"),  # sLSTM
    "layer_norm": (False, True),  # LSTM, GRU (the spec refuses it elsewhere)
    "reference": ANY,  # documentation
}
"""Every :class:`CellSpec` field the kernels know, with the values they implement."""

WORKLOAD_FIELDS = frozenset(
    (
        "spec",
        "device",
        "dtype",
        "steps",
        "batch",
        "input_size",
        "hidden_size",
        "proj_size",
        "num_layers",
        "num_directions",
        "has_lengths",
        "needs_grad",
        "context",
        "masks",  # checked against MASKS
    )
)
"""Every :class:`~carousel.kernels.Workload` field the backend knows (device, dtype and context
are checked by :func:`carousel.kernels.triton.unsupported`; the others take any value)."""


_REGULARIZED = frozenset({"recurrent", "candidate", "zoneout_cell", "zoneout_hidden", "reset"})
MASKS: dict[str, frozenset[str]] = {
    "lstm": _REGULARIZED,
    "gru": _REGULARIZED - {"zoneout_cell"},  # one state: zoneout acts on h
    "elman": frozenset({"reset"}),
    "slstm": frozenset({"reset"}),
}
"""The :class:`~carousel.cells.regularizers.Masks` fields the backend applies, by family."""

FEATURES = frozenset({"layer_norm"}).union(*MASKS.values())
"""The :attr:`~carousel.kernels.Workload.features` the backend implements (for the registry)."""


def _at_default(field: dataclasses.Field, value) -> bool:
    """Whether ``value`` is ``field``'s default, i.e. the option is off. A field without a default
    counts as off at ``None``, ``False``, zero or an empty container."""
    if field.default is not dataclasses.MISSING:
        default = field.default
    elif field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    else:
        return value is None or (not isinstance(value, torch.Tensor) and not value)
    if isinstance(value, torch.Tensor) or isinstance(default, torch.Tensor):
        return False
    return type(value) is type(default) and value == default


def unsupported_spec(spec) -> str | None:
    """Why the kernels do not implement ``spec`` (a :class:`~carousel.cells.CellSpec`), or ``None``."""
    if spec.family not in FAMILIES:
        return (
            f"the triton kernels do not implement the {spec.family!r} family (variant "
            f"{spec.variant!r}); they run {', '.join(FAMILIES)}"
        )
    for field in dataclasses.fields(spec):
        value = getattr(spec, field.name)
        if field.name not in SPEC_VALUES:
            if not _at_default(field, value):
                return (
                    f"the triton kernels do not implement the cell option {field.name}="
                    f"{_short(value)} (of {spec.variant!r}), an option they do not know"
                )
            continue
        allowed = SPEC_VALUES[field.name]
        if allowed is not ANY and value not in allowed:
            return (
                f"the triton kernels do not implement {field.name}={value!r} (of "
                f"{spec.variant!r}); they implement {', '.join(map(repr, allowed))}"
            )
    return None


def unsupported_call(work) -> str | None:
    """Why the kernels do not implement ``work`` (a :class:`~carousel.kernels.Workload`): its
    dtype, its cell (:func:`unsupported_spec`) or a layer option they do not know; or ``None``."""
    if work.dtype not in DTYPES:
        return (
            "the triton kernels run in float32 or float64 (float16, bfloat16 through float32); "
            f"got {work.dtype}"
        )
    reason = unsupported_spec(work.spec)
    if reason is not None:
        return reason
    missing = work.masks - MASKS[work.spec.family]
    if missing:
        return (
            f"the triton kernels do not implement the {', '.join(sorted(missing))} masks for the "
            f"{work.spec.family} family"
        )
    for field in dataclasses.fields(work):
        if field.name not in WORKLOAD_FIELDS:
            value = getattr(work, field.name)
            if not _at_default(field, value):
                return (
                    f"the triton kernels do not implement the layer option {field.name}="
                    f"{_short(value)}, an option they do not know"
                )
    return None


def _short(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"<tensor of shape {tuple(value.shape)}>"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
