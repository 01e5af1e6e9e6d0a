"""Mixed precision as ``torch.nn`` does it: which calls autocast casts, and the dtype the backends
compute in."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

AUTOCAST_FAMILIES = {"cpu": ("lstm", "elman")}
"""Families that ``torch.nn`` runs in autocast's lower precision, per device type: on the CPU its
LSTM operator is on autocast's list and its RNN runs through cast matrix products, while its GRU
stays in the input's dtype; on accelerators every recurrent operator is cast."""

LOW_PRECISION = (torch.float16, torch.bfloat16)


def autocast_dtype(family: str, x: Tensor) -> torch.dtype | None:
    """The dtype autocast would run ``torch.nn``'s operator for ``family`` in, or ``None``."""
    device = x.device.type
    if not x.is_floating_point() or not torch.is_autocast_enabled(device):
        return None
    if family not in AUTOCAST_FAMILIES.get(device, ("lstm", "gru", "elman")):
        return None
    return torch.get_autocast_dtype(device)


def autocast_off(device: str):
    """A context in which autocast leaves the backends' operations alone (their casts are explicit)."""
    if torch.is_autocast_enabled(device):
        return torch.autocast(device, enabled=False)
    return contextlib.nullcontext()


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the fused kernels and the reference loop compute a ``dtype`` call in: float32 for
    float16 and bfloat16 (the recurrence accumulates in float32), else ``dtype`` itself."""
    return torch.float32 if dtype in LOW_PRECISION else dtype
