"""Validation of user input to layers and cells: every error names the argument, the expected and
the received value. Nothing is broadcast or converted silently."""

from __future__ import annotations

import numbers

import torch
from torch import Tensor


def _int(name: str, value, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int; got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}; got {value}")


def _bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool; got {type(value).__name__} {value!r}")


def check_layer_arguments(
    *, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size
) -> None:
    """Validate the constructor arguments shared with ``torch.nn.RNNBase``."""
    _int("input_size", input_size, 1)
    _int("hidden_size", hidden_size, 1)
    _int("num_layers", num_layers, 1)
    _int("proj_size", proj_size, 0)
    _bool("bias", bias)
    _bool("batch_first", batch_first)
    _bool("bidirectional", bidirectional)
    if (
        isinstance(dropout, bool)
        or not isinstance(dropout, numbers.Number)
        or not 0 <= dropout <= 1
    ):
        raise ValueError(f"dropout must be a number in [0, 1]; got {dropout!r}")
    if proj_size >= hidden_size:
        raise ValueError(
            f"proj_size must be smaller than hidden_size={hidden_size}; got proj_size={proj_size}"
        )


def check_cell_arguments(*, input_size, hidden_size, bias) -> None:
    """Validate the constructor arguments shared with ``torch.nn.RNNCellBase``."""
    _int("input_size", input_size, 1)
    _int("hidden_size", hidden_size, 1)
    _bool("bias", bias)


def _check_finite(tensor: Tensor, name: str) -> None:
    # Skipped on accelerators: the check would synchronise every call.
    if tensor.device.type == "cpu" and not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def check_input_tensor(
    tensor, name: str, param: Tensor, input_size: int, ndims: tuple[int, ...]
) -> None:
    """Type, dtype, device, rank, feature size, emptiness and finiteness of an input tensor."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a Tensor or a PackedSequence; got {type(tensor).__name__}")
    if tensor.dtype != param.dtype:
        raise TypeError(
            f"{name} must have the parameters' dtype {param.dtype}; got {tensor.dtype} "
            f"(convert the input, or the layer with .to({tensor.dtype}))"
        )
    if tensor.device != param.device:
        raise ValueError(
            f"{name} must be on the parameters' device {param.device}; got {tensor.device}"
        )
    if tensor.dim() not in ndims:
        expected = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(
            f"{name} must be {expected}; got {tensor.dim()}-D of shape {list(tensor.shape)}"
        )
    if tensor.shape[-1] != input_size:
        raise ValueError(
            f"{name} must have input_size={input_size} features in its last dimension; "
            f"got shape {list(tensor.shape)}"
        )
    if tensor.numel() == 0:
        raise ValueError(
            f"{name} is empty (shape {list(tensor.shape)}); it needs at least one step and one sequence"
        )
    _check_finite(tensor, name)


def check_lengths(lengths, batch: int, steps: int) -> Tensor:
    """Return ``lengths`` as a ``(batch,)`` int64 CPU tensor, each in ``[1, steps]``."""
    if isinstance(lengths, Tensor):
        if (
            lengths.dtype.is_floating_point
            or lengths.dtype.is_complex
            or lengths.dtype == torch.bool
        ):
            raise TypeError(f"lengths must hold integers; got dtype {lengths.dtype}")
        lengths = lengths.detach().to("cpu", torch.int64)
    else:
        try:
            lengths = torch.as_tensor(lengths)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(
                f"lengths must be a 1-D tensor or sequence of ints; got {lengths!r}"
            ) from error
        if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
            raise TypeError(f"lengths must hold integers; got {lengths.dtype}")
        lengths = lengths.to(torch.int64)
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(
            f"lengths must have one entry per sequence, shape ({batch},); got shape {list(lengths.shape)}"
        )
    low, high = int(lengths.min()), int(lengths.max())
    if low < 1 or high > steps:
        raise ValueError(
            f"lengths must lie in [1, {steps}] (the input has {steps} steps); got values from {low} to {high}"
        )
    return lengths


def check_state(
    hx,
    names: tuple[str, ...],
    sizes: tuple[int, ...],
    stacked: int,
    batch: int,
    batched: bool,
    x: Tensor,
    layer: str,
) -> tuple[Tensor, ...]:
    """Validate an initial state and return it as a tuple of ``(stacked, batch, size)`` tensors.

    ``stacked`` is ``num_layers * num_directions`` for layers; cells pass ``stacked=0`` and get
    ``(batch, size)`` tensors.
    """
    if len(names) == 1:
        if not isinstance(hx, Tensor):
            raise TypeError(f"hx must be a Tensor for {layer}; got {type(hx).__name__}")
        hx = (hx,)
    elif not isinstance(hx, (tuple, list)) or len(hx) != len(names):
        raise TypeError(
            f"hx must be a tuple of {len(names)} tensors ({', '.join(names)}) for {layer}; got "
            f"{type(hx).__name__}"
            + (f" of length {len(hx)}" if isinstance(hx, (tuple, list)) else "")
        )
    states = []
    for index, (name, tensor, size) in enumerate(zip(names, hx, sizes, strict=True)):
        label = "hx" if len(names) == 1 else f"hx[{index}] ({name})"
        lead = (stacked,) if stacked else ()
        expected = (*lead, batch, size) if batched else (*lead, size)
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{label} must be a Tensor; got {type(tensor).__name__}")
        if tensor.dtype != x.dtype:
            raise TypeError(f"{label} must have the input's dtype {x.dtype}; got {tensor.dtype}")
        if tensor.device != x.device:
            raise ValueError(
                f"{label} must be on the input's device {x.device}; got {tensor.device}"
            )
        if tuple(tensor.shape) != expected:
            raise ValueError(f"{label} must have shape {list(expected)}; got {list(tensor.shape)}")
        _check_finite(tensor, label)
        states.append(tensor if batched else tensor.unsqueeze(-2))
    return tuple(states)
