"""The registries of the cell library: families (their gate blocks and step) and variants (the
options a user may set and how the spec is built).

A family's module registers the family (:func:`register_family`) and its variants
(:func:`register_variant`); :func:`make_spec` builds a spec by variant name. Adding a cell family
is one module in :mod:`carousel.cells` plus one import in its ``__init__``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import Tensor

if TYPE_CHECKING:  # spec.py imports this module
    from carousel.cells.init import ParameterGroup
    from carousel.cells.spec import CellSpec


@dataclass(frozen=True)
class Family:
    """A family of cells: the row blocks its cells may pack, and one step of its math.

    Attributes:
        name: the value of :attr:`CellSpec.family`.
        gates: every block a cell of the family may have, in packed order.
        step: ``step(spec, gates_x, state, weights) -> (h_t, state)``: one step in differentiable
            PyTorch ops, with ``gates_x`` ``(B, G)`` the input projection :math:`W x_t + b`; the
            reference backend loops over it and the step-wise cells call it.
        init: the family's own initialisation of a parameter group, applied after torch's
            default and before a layer's ``init=`` (``None``: torch's default alone).
    """

    name: str
    gates: tuple[str, ...]
    step: Callable[..., tuple[Tensor, tuple[Tensor, ...]]]
    init: Callable[[ParameterGroup], None] | None = None


FAMILIES: dict[str, Family] = {}
"""Every family by name; each family's module registers itself with :func:`register_family`."""


def register_family(family: Family) -> Family:
    """Add ``family`` to :data:`FAMILIES`."""
    if family.name in FAMILIES:
        raise ValueError(f"family {family.name!r} is registered already")
    FAMILIES[family.name] = family
    return family


@dataclass(frozen=True)
class Variant:
    """A registered variant: the options a user may set, with their defaults, and how its spec is built.

    Attributes:
        name: the registry key (``"vanilla"``, ``"1997"``, ...).
        family: the family of its cells.
        options: every option the variant takes, mapped to its default, in a stable order.
        build: ``build(**options) -> CellSpec``, called with every option.
    """

    name: str
    family: str
    options: dict[str, object]
    build: Callable[..., CellSpec]

    def spec(self, **options) -> CellSpec:
        """The spec with ``options`` (unknown ones refused) over the defaults."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)} is not defined for the {self.name!r} variant: variant "
                f"{self.name!r} takes the options {list(self.options)}; got {unknown}"
            )
        return self.build(**{**self.options, **options})


VARIANTS: dict[str, Variant] = {}
"""Every registered variant by name."""


def register_variant(
    name: str, family: str, options: dict[str, object]
) -> Callable[[Callable[..., CellSpec]], Callable[..., CellSpec]]:
    """Decorator: register ``build(**options) -> CellSpec`` as variant ``name`` of ``family``.

    The decorated function becomes the variant's public factory: it takes the options as
    keywords (defaults filled in, unknown ones refused) and keeps the builder's docstring, which
    carries the variant's equations.
    """

    def decorate(build: Callable[..., CellSpec]) -> Callable[..., CellSpec]:
        if name in VARIANTS:
            raise ValueError(f"variant {name!r} is registered already")
        variant = Variant(name, family, dict(options), build)
        VARIANTS[name] = variant

        def factory(**options) -> CellSpec:
            return variant.spec(**options)

        factory.__name__ = factory.__qualname__ = build.__name__
        factory.__doc__ = build.__doc__
        factory.__module__ = build.__module__
        factory.__signature__ = inspect.Signature(
            [
                inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=value)
                for key, value in variant.options.items()
            ],
            return_annotation="CellSpec",
        )
        factory.variant = variant
        return factory

    return decorate


def make_spec(variant: str | CellSpec, **options) -> CellSpec:
    """Build the spec of a registered variant, with options (``None`` means the variant's default).

    Args:
        variant: a name from :data:`VARIANTS` or a ready :class:`CellSpec` (then ``options`` are
            applied with :meth:`CellSpec.replace`).
        **options: the variant's keyword options, e.g. ``peepholes=True``,
            ``gate_activation="hard_sigmoid"``, ``block_size=2``.

    Raises:
        ValueError: unknown variant, or an option the variant does not take.
    """
    from carousel.cells.spec import CellSpec  # spec.py imports this module

    options = {k: v for k, v in options.items() if v is not None}
    if isinstance(variant, CellSpec):
        return variant.replace(**options) if options else variant
    if not isinstance(variant, str) or variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}; got {variant!r}")
    return VARIANTS[variant].spec(**options)
