"""Validation of user input to layers and cells: every error names the argument, the expected and
the received value. Nothing is broadcast or converted silently.

Where ``torch.nn`` rejects the same input, the message starts with torch's wording and the
exception is also an instance of the class torch raises (:mod:`carousel.errors`). Checks that read
tensor values (finiteness, the range of ``lengths``) run only in eager execution (``values=True``):
while a graph is captured (``torch.compile``, ``torch.export``, ``torch.jit.trace``) or under
``torch.func`` transforms they would break the capture, so they are skipped there.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from carousel.errors import InputError, InputTypeError


def _int(name: str, value, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InputTypeError(f"{name} should be of type int, got: {type(value).__name__} {value!r}")
    if value < minimum:
        torch_words = "greater than zero" if minimum == 1 else "non-negative"
        raise InputError(f"{name} must be {torch_words}; got {value}")


def _bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise InputTypeError(
            f"{name} should be of type bool, got: {type(value).__name__} {value!r}"
        )


def check_layer_arguments(
    *, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size
) -> None:
    """Validate the constructor arguments shared with ``torch.nn.RNNBase``."""
    _int("input_size", input_size, 1)
    _int("hidden_size", hidden_size, 1)
    _int("num_layers", num_layers, 1)
    _bool("bias", bias)
    _bool("batch_first", batch_first)
    _bool("bidirectional", bidirectional)
    if (
        isinstance(dropout, bool)
        or not isinstance(dropout, numbers.Number)
        or not 0 <= dropout <= 1
    ):
        raise InputError(
            "dropout should be a number in range [0, 1] representing the probability of an "
            f"element being zeroed; got {dropout!r}"
        )
    if isinstance(proj_size, bool) or not isinstance(proj_size, int) or proj_size < 0:
        raise InputError(
            "proj_size should be a positive integer or zero to disable projections; "
            f"got {proj_size!r}"
        )
    if proj_size >= hidden_size:
        raise InputError(
            f"proj_size has to be smaller than hidden_size; got proj_size={proj_size} and "
            f"hidden_size={hidden_size}"
        )


def check_cell_arguments(*, input_size, hidden_size) -> None:
    """Validate the sizes shared with ``torch.nn.RNNCellBase`` (they may be 0).

    ``bias`` is not checked: ``torch.nn``'s cells take any value and test its truth, and code
    written for them passes e.g. ``RNNCell(10, 20, "relu")`` (the nonlinearity in the bias'
    place); the cells do the same.
    """
    _int("input_size", input_size, 0)
    _int("hidden_size", hidden_size, 0)


def check_finite(tensor: Tensor, name: str) -> None:
    """Raise :class:`InputError` if ``tensor`` holds NaN or infinity (eager CPU calls only).

    One reduction, no temporary: the sum of finite values is finite unless it overflows, and only
    then are the elements checked one by one. float32 and float64 are summed by NumPy, on the
    calling thread: a torch reduction of a large input would start torch's thread pool, whose
    barrier can wait milliseconds for a thread on a busy machine. Skipped on accelerators, where
    the check would synchronise every call.
    """
    if tensor.device.type != "cpu" or tensor.numel() == 0:
        return
    if tensor.dtype in (torch.float32, torch.float64):
        values = tensor.detach().numpy()
        if np.isfinite(values.sum()) or np.isfinite(values).all():
            return
    elif bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all()):
        return
    raise InputError(f"{name} contains NaN or infinite values")


def check_input_tensor(
    tensor,
    name: str,
    param: Tensor,
    input_size: int,
    *,
    layer: str = "RNN",
    cell: bool = False,
    ndims: tuple[int, ...] | None = None,
    values: bool = True,
) -> None:
    """Type, dtype, device, rank, feature size, length and finiteness of an input tensor.

    ``layer`` is the class name for messages; ``cell`` selects a step-wise cell's ranks (1-D or
    2-D) and torch's cell wording; ``ndims`` narrows the accepted ranks; ``values=False`` skips
    the checks that read values.
    """
    if not isinstance(tensor, Tensor):
        raise InputTypeError(
            f"{name} must be a Tensor or a PackedSequence; got {type(tensor).__name__}"
        )
    if not cell:  # torch.nn's layers check the dtype first; cells call it after the state's shape
        check_dtype_and_device(tensor, name, param)
    ndims = ndims or ((1, 2) if cell else (2, 3))
    if tensor.dim() not in ndims:
        torch_words = " or ".join(f"{n}D" for n in ndims)
        ours = " or ".join(f"{n}-D" for n in ndims)
        raise InputError(
            f"{layer}: Expected {name} to be {torch_words}, got {tensor.dim()}D instead; {name} "
            f"must be {ours}; got {tensor.dim()}-D of shape {list(tensor.shape)}"
        )
    if tensor.shape[-1] != input_size:
        torch_words = (
            f"input has inconsistent input_size: got {tensor.shape[-1]} expected {input_size}"
            if cell
            else f"input.size(-1) must be equal to input_size. Expected {input_size}, "
            f"got {tensor.shape[-1]}"
        )
        raise InputError(
            f"{torch_words}; {name} must have input_size={input_size} features in its last "
            f"dimension; got shape {list(tensor.shape)}"
        )
    if not cell and tensor.shape[0] == 0:
        raise InputError(
            f"Expected sequence length to be larger than 0 in RNN; {name} has shape "
            f"{list(tensor.shape)}"
        )
    if values:
        check_finite(tensor, name)


def check_dtype_and_device(tensor: Tensor, name: str, param: Tensor) -> None:
    """The input's dtype (the parameters', unless autocast casts) and device."""
    if tensor.dtype != param.dtype and not torch.is_autocast_enabled(tensor.device.type):
        raise InputTypeError(
            f"RNN input dtype ({tensor.dtype}) does not match weight dtype ({param.dtype}). "
            f"Convert input: input.to({param.dtype}), or convert model: model.to({tensor.dtype}); "
            f"{name} must have the parameters' dtype {param.dtype}; got {tensor.dtype}"
        )
    if not tensor.dtype.is_floating_point:
        raise InputTypeError(f"{name} must be a floating-point tensor; got dtype {tensor.dtype}")
    if tensor.device != param.device:
        raise InputError(
            "Input and parameter tensors are not at the same device; "
            f"{name} must be on the parameters' device {param.device}; got {tensor.device}"
        )


def check_lengths(lengths, batch: int, steps: int, *, values: bool = True) -> Tensor:
    """Return ``lengths`` as a ``(batch,)`` int64 CPU tensor, each in ``[1, steps]``.

    ``values=False`` skips the range check (it reads the values).
    """
    if isinstance(lengths, Tensor):
        if (
            lengths.dtype.is_floating_point
            or lengths.dtype.is_complex
            or lengths.dtype == torch.bool
        ):
            raise InputTypeError(f"lengths must hold integers; got dtype {lengths.dtype}")
        lengths = lengths.detach().to("cpu", torch.int64)
    else:
        try:
            lengths = torch.as_tensor(lengths)
        except (TypeError, ValueError, RuntimeError) as error:
            raise InputTypeError(
                f"lengths must be a 1-D tensor or sequence of ints; got {lengths!r}"
            ) from error
        if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
            raise InputTypeError(f"lengths must hold integers; got {lengths.dtype}")
        lengths = lengths.to(torch.int64)
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise InputError(
            f"lengths must have one entry per sequence, shape ({batch},); got shape {list(lengths.shape)}"
        )
    if values and batch:
        low, high = int(lengths.min()), int(lengths.max())
        if low < 1 or high > steps:
            raise InputError(
                f"lengths must lie in [1, {steps}] (the input has {steps} steps); got values from {low} to {high}"
            )
    return lengths


def check_layer_input(
    input, lengths, batch_first: bool, param: Tensor, input_size: int, layer: str, values: bool
) -> tuple[Tensor, Tensor | None, bool]:
    """A layer's ``input`` and ``lengths`` checked, as ``(x, lengths, batched)``: ``x`` the padded
    time-major ``(T, B, I)`` input, ``lengths`` ``(B,)`` (a ``PackedSequence``'s own) or ``None``,
    ``batched`` whether ``input`` has a batch axis (a ``PackedSequence`` has)."""
    if isinstance(input, PackedSequence):
        if lengths is not None:
            raise InputError("lengths must be None for a PackedSequence input (it carries its own)")
        check_input_tensor(input.data, "input.data", param, input_size, layer=layer, values=values)
        x, lengths = pad_packed_sequence(input)  # (T, B, I), original batch order
        return x, lengths, True
    check_input_tensor(input, "input", param, input_size, layer=layer, values=values)
    batched = input.dim() == 3
    x = input if batched else input.unsqueeze(1)
    if batched and batch_first:
        x = x.transpose(0, 1)
    if not batched and lengths is not None:
        raise InputError("lengths must be None for unbatched (2-D) input")
    if lengths is not None:
        lengths = check_lengths(lengths, x.shape[1], x.shape[0], values=values)
    return x, lengths, batched


def check_reset(
    reset, steps: int, batch: int, batched: bool, batch_first: bool, device: torch.device
) -> Tensor:
    """Return the ``reset`` argument of a layer's forward as a ``(steps, batch)`` bool tensor.

    It must be a bool tensor on the input's device of shape ``(L, N)``, ``(N, L)`` with
    ``batch_first``, or ``(L,)`` for unbatched input (for a ``PackedSequence``: the padded
    shape, ``L`` the longest length, sequences in their original order).
    """
    if batched:
        expected = (batch, steps) if batch_first else (steps, batch)
        words = "(N, L) (batch_first)" if batch_first else "(L, N)"
    else:
        expected, words = (steps,), "(L,) for unbatched input"
    if not isinstance(reset, Tensor):
        raise InputTypeError(
            f"reset must be a bool tensor of shape {words} = {expected}; got {type(reset).__name__}"
        )
    if reset.dtype != torch.bool:
        raise InputTypeError(f"reset must be a bool tensor; got dtype {reset.dtype}")
    if tuple(reset.shape) != expected:
        raise InputError(
            f"reset must have shape {words} = {expected}, one entry per step and sequence; "
            f"got {list(reset.shape)}"
        )
    if reset.device != device:
        raise InputError(f"reset must be on the input's device {device}; got {reset.device}")
    if not batched:
        return reset.unsqueeze(1)
    return reset.transpose(0, 1) if batch_first else reset


def check_state(
    hx,
    names: tuple[str, ...],
    sizes: tuple[int, ...],
    stacked: int,
    batch: int,
    batched: bool,
    x: Tensor,
    layer: str,
    *,
    values: bool = True,
) -> tuple[Tensor, ...]:
    """Validate an initial state and return it as a tuple of ``(stacked, batch, size)`` tensors.

    ``stacked`` is ``num_layers * num_directions`` for layers; cells pass ``stacked=0`` and get
    ``(batch, size)`` tensors. ``values=False`` skips the finiteness check.
    """
    if len(names) == 1:
        if not isinstance(hx, Tensor):
            raise InputTypeError(f"hx must be a Tensor for {layer}; got {type(hx).__name__}")
        hx = (hx,)
    elif not isinstance(hx, (tuple, list)) or len(hx) != len(names):
        raise InputTypeError(
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
            raise InputTypeError(f"{label} must be a Tensor; got {type(tensor).__name__}")
        if tensor.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
            raise InputTypeError(
                f"{label} must have the input's dtype {x.dtype}; got {tensor.dtype}"
            )
        if tensor.device != x.device:
            raise InputError(
                f"Input and hidden tensors are not at the same device; {label} must be on the "
                f"input's device {x.device}; got {tensor.device}"
            )
        if tuple(tensor.shape) != expected:
            raise InputError(
                f"{_torch_state_words(layer, stacked, index, len(names), tensor, expected)}; "
                f"{label} must have shape {list(expected)}; got {list(tensor.shape)}"
            )
        if values:
            check_finite(tensor, label)
        states.append(tensor if batched else tensor.unsqueeze(-2))
    return tuple(states)


def _torch_state_words(layer, stacked, index, count, tensor, expected) -> str:
    """What ``torch.nn`` says about a state of the wrong shape."""
    if stacked:
        which = f"hidden[{index}]" if count > 1 else "hidden"
        return f"Expected {which} size {tuple(expected)}, got {list(tensor.shape)}"
    if tensor.dim() != len(expected) and tensor.dim() not in (1, 2):
        which = f"hx[{index}]" if count > 1 else "hidden"
        return f"{layer}: Expected {which} to be 1D or 2D, got {tensor.dim()}D instead"
    if tensor.shape[-1] != expected[-1]:
        return (
            f"hidden{index} has inconsistent hidden_size: got {tensor.shape[-1]}, "
            f"expected {expected[-1]}"
        )
    if len(expected) == 2 and tensor.dim() == 2:
        return f"Input batch size {expected[0]} doesn't match hidden{index} batch size {tensor.shape[0]}"
    return f"hidden{index} has the wrong rank"
