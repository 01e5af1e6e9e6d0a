"""What layers and step-wise cells share: registering a cell's parameters and fixed masks, running
the initialisers, and assembling the weights the backends compute with."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from carousel.cells import FAMILIES, CellSpec, CellWeights
from carousel.cells.init import Initializer, ParameterGroup, torch_default


def register_parameters(
    module: nn.Module,
    spec: CellSpec,
    input_size: int,
    hidden_size: int,
    proj_size: int,
    bias: bool,
    suffix: str,
    factory: dict,
) -> dict[str, str]:
    """Create one direction's parameters on ``module`` (uninitialised) and return their names.

    The names are :meth:`CellSpec.parameter_shapes`'s short names plus ``suffix`` (``"_l0"``,
    ``"_l1_reverse"``; ``""`` for a cell), mapped from the short name.
    """
    names = {}
    for short, shape in spec.parameter_shapes(input_size, hidden_size, proj_size, bias).items():
        names[short] = short + suffix
        setattr(module, short + suffix, nn.Parameter(torch.empty(shape, **factory)))
    return names


def register_masks(
    module: nn.Module, spec: CellSpec, hidden_size: int, proj_size: int, bias: bool, factory: dict
) -> None:
    """Register the spec's fixed masks as non-persistent buffers ``recurrent_mask``, ``bias_mask``."""
    masks = {
        "recurrent_mask": spec.recurrent_mask(hidden_size, proj_size),
        "bias_mask": spec.bias_mask(hidden_size) if bias else None,
    }
    for name, mask in masks.items():
        if mask is not None:
            mask = mask.to(**{k: v for k, v in factory.items() if v is not None})
        module.register_buffer(name, mask, persistent=False)


def initialize(groups: Sequence[ParameterGroup], init: Sequence[Initializer]) -> None:
    """torch's default initialisation of every group, then the family's own
    (:attr:`carousel.cells.Family.init`, e.g. the sLSTM's), then each initialiser in order."""
    for group in groups:
        torch_default(group)
        family_init = FAMILIES[group.spec.family].init
        if family_init is not None:
            family_init(group)
    for initializer in init:
        for group in groups:
            initializer(group)


def as_initializers(init) -> tuple[Initializer, ...]:
    """``init=`` as a tuple of initialisers (``None``, one, or a sequence of them)."""
    if init is None:
        return ()
    if callable(init):
        return (init,)
    if isinstance(init, Sequence) and all(callable(i) for i in init):
        return tuple(init)
    raise TypeError(f"init must be an initialiser or a sequence of them; got {init!r}")


def cell_weights(module: nn.Module, group: ParameterGroup) -> CellWeights:
    """What the backends compute with for one group of ``module``: masks applied, biases summed."""
    return CellWeights.from_parameters(
        group.spec, group.params, module.recurrent_mask, module.bias_mask
    )


def cast_weights(weights: CellWeights, dtype: torch.dtype, compute: torch.dtype) -> CellWeights:
    """``weights`` rounded to ``dtype`` and computed in ``compute`` (a no-op when they match)."""
    if weights.weight_ih.dtype == compute:
        return weights
    return CellWeights(*(None if w is None else w.to(dtype).to(compute) for w in weights))


def masked_count(module: nn.Module, short: str, param: Tensor) -> int:
    """Trainable entries of ``param`` (named ``short``): masked-out weights are not counted."""
    if short == "weight_hh" and module.recurrent_mask is not None:
        return int(module.recurrent_mask.sum())
    if short.startswith("bias") and module.bias_mask is not None:
        return int(module.bias_mask.sum())
    return param.numel()
