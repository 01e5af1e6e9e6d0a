"""The exceptions carousel raises for bad input.

carousel's contract is ``ValueError`` for a bad value or shape and ``TypeError`` for a bad type,
each naming the argument, the expected and the received. ``torch.nn`` raises ``RuntimeError`` for
many of the same mistakes (a wrong input size, a wrong state shape), so code written for it catches
``RuntimeError``. The classes below are both at once, so either ``except`` works; their messages
start with torch's wording where torch has one.
"""

from __future__ import annotations


class InputError(ValueError, RuntimeError):
    """A bad value or shape; catchable as ``ValueError`` and as ``RuntimeError``."""


class InputTypeError(TypeError, ValueError, RuntimeError):
    """A bad type or dtype; catchable as ``TypeError``, ``ValueError`` and ``RuntimeError``
    (``torch.nn`` raises the last two for a dtype mismatch)."""


__all__ = ["InputError", "InputTypeError"]
