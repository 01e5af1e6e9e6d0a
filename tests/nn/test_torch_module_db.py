"""carousel's layers and cells through the module inputs and error inputs that PyTorch ships for
its own ``nn.LSTM``, ``GRU``, ``RNN`` and their cells (``ModuleInfo`` entries of
``torch.testing._internal.common_modules``), on each backend: forward and backward equal
torch.nn's with the same state_dict, the unbatched reference functions hold, float64 gradcheck and
gradgradcheck pass, and every error input raises the exception type torch raises, with torch's
wording. The inputs come from the installed PyTorch, so parity is checked against the version in
use."""

from __future__ import annotations

import re

import pytest
import torch

import carousel
from tests.helpers import flatten

common_modules = pytest.importorskip(
    "torch.testing._internal.common_modules",
    reason="this PyTorch build does not ship its testing package",
)

CLASSES = {
    torch.nn.LSTM: carousel.LSTM,
    torch.nn.GRU: carousel.GRU,
    torch.nn.RNN: carousel.RNN,
    torch.nn.LSTMCell: carousel.LSTMCell,
    torch.nn.GRUCell: carousel.GRUCell,
    torch.nn.RNNCell: carousel.RNNCell,
}
INFOS = {info.module_cls: info for info in common_modules.module_db if info.module_cls in CLASSES}
LAYERS = (torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN)
BACKENDS = ["reference", "numba"]


def _construct(torch_cls, args, kwargs, backend):
    ours_cls = CLASSES[torch_cls]
    if torch_cls in LAYERS:
        return ours_cls(*args, **kwargs, backend=backend)
    return ours_cls(*args, **kwargs)


def _samples(torch_cls, dtype, requires_grad=True):
    info = INFOS[torch_cls]
    return info.module_inputs_func(
        info, device="cpu", dtype=dtype, requires_grad=requires_grad, training=True
    )


def _inputs(forward_input):
    return forward_input.args, forward_input.kwargs


def _differentiable(tensors):
    return [t for t in tensors if t.requires_grad]


def test_every_recurrent_module_info_is_found():
    assert set(INFOS) == set(CLASSES)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("torch_cls", list(CLASSES), ids=lambda c: c.__name__)
def test_module_inputs_forward_backward_and_reference(torch_cls, backend):
    for dtype in (torch.float32, torch.float64):
        for sample in _samples(torch_cls, dtype):
            args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
            torch.manual_seed(0)
            theirs = torch_cls(*args, **kwargs).to(dtype)
            ours = _construct(torch_cls, args, kwargs, backend).to(dtype)
            ours.load_state_dict(theirs.state_dict())
            forward_args, forward_kwargs = _inputs(sample.forward_input)
            expected = flatten(theirs(*forward_args, **forward_kwargs))
            result = flatten(ours(*forward_args, **forward_kwargs))
            assert [t.dtype for t in result] == [t.dtype for t in expected]
            for a, b in zip(result, expected, strict=True):
                torch.testing.assert_close(a, b)
            if sample.reference_fn is not None:
                reference = flatten(sample.reference_fn(ours, *forward_args, **forward_kwargs))
                for a, b in zip(result, reference, strict=True):
                    torch.testing.assert_close(a, b)
            upstream = [torch.randn_like(t) for t in expected]
            leaves = _differentiable(flatten(forward_args)) + list(ours.parameters())
            their_leaves = _differentiable(flatten(forward_args)) + list(theirs.parameters())
            grads = torch.autograd.grad(result, leaves, upstream, allow_unused=True)
            their_grads = torch.autograd.grad(expected, their_leaves, upstream, allow_unused=True)
            for a, b in zip(grads, their_grads, strict=True):
                if b is None:
                    assert a is None or not a.any()
                else:
                    torch.testing.assert_close(a, b)


def _checkable(module, forward_args):
    """``f(*inputs, *params)`` for gradcheck, with the parameters as explicit inputs."""
    names = [n for n, _ in module.named_parameters()]
    inputs = _differentiable(flatten(forward_args))

    def rebuild(values):
        # Put the differentiable tensors back into the (possibly nested, packed) argument list.
        values = iter(values)

        def visit(arg):
            if isinstance(arg, torch.nn.utils.rnn.PackedSequence):
                return arg._replace(data=next(values)) if arg.data.requires_grad else arg
            if isinstance(arg, torch.Tensor):
                return next(values) if arg.requires_grad else arg
            if isinstance(arg, (tuple, list)):
                return type(arg)(visit(a) for a in arg)
            return arg

        return [visit(a) for a in forward_args]

    def run(*tensors):
        args = rebuild(tensors[: len(inputs)])
        params = dict(zip(names, tensors[len(inputs) :], strict=True))
        return tuple(flatten(torch.func.functional_call(module, params, tuple(args))))

    params = [p.detach().clone().requires_grad_(True) for p in module.parameters()]
    return run, (*inputs, *params)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("torch_cls", list(CLASSES), ids=lambda c: c.__name__)
def test_module_inputs_gradcheck_and_gradgradcheck_float64(torch_cls, backend):
    # One sample of each distinct constructor (the inputs repeat across layouts).
    seen = set()
    for sample in _samples(torch_cls, torch.float64):
        args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
        key = (args, tuple(sorted((k, v) for k, v in kwargs.items() if k != "batch_first")))
        if key in seen:
            continue
        seen.add(key)
        module = _construct(torch_cls, args, kwargs, backend).to(torch.float64)
        run, inputs = _checkable(module, sample.forward_input.args)
        # fast_mode checks a random projection of the Jacobian, as PyTorch's own module tests do.
        assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-6, fast_mode=True)
        assert torch.autograd.gradgradcheck(
            run, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True
        )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("torch_cls", list(CLASSES), ids=lambda c: c.__name__)
def test_module_error_inputs_raise_torchs_exception_with_its_wording(torch_cls, backend):
    info = INFOS[torch_cls]
    errors = info.module_error_inputs_func(
        info, device="cpu", dtype=torch.float32, requires_grad=False, training=True
    )
    assert errors
    Enum = common_modules.ModuleErrorEnum
    for error in errors:
        sample = error.module_error_input
        args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
        with pytest.raises(error.error_type) as caught:
            module = _construct(torch_cls, args, kwargs, backend)
            assert error.error_on == Enum.FORWARD_ERROR, "constructed what torch refuses"
            forward_args, forward_kwargs = _inputs(sample.forward_input)
            module(*forward_args, **forward_kwargs)
        assert re.search(error.error_regex, str(caught.value)), str(caught.value)
