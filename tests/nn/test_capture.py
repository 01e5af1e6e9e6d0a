"""Graph capture: torch.export, ONNX (the dynamo exporter, run in onnxruntime), torch.compile with
``fullgraph=True`` (forward and backward), and torch.jit.trace, which must either hold at other
sequence lengths or refuse at trace time. Oracle: the same layer in eager mode."""

from __future__ import annotations

import warnings

import pytest
import torch

import carousel
from carousel.errors import InputError

BACKENDS = ["reference", "numba", "auto"]


def _peephole_stack(backend):
    return carousel.LSTM(
        3, 4, num_layers=2, bidirectional=True, variant="peephole", backend=backend
    ).eval()


def _layers(backend):
    return {"peephole-L2-bi": _peephole_stack(backend), "gru": carousel.GRU(3, 4, backend=backend)}


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_export_equals_eager(backend):
    for name, layer in _layers(backend).items():
        program = torch.export.export(layer, (torch.randn(5, 2, 3),))
        x = torch.randn(5, 2, 3)
        for ours, eager in zip(program.module()(x), layer(x), strict=True):
            torch.testing.assert_close(ours, eager, msg=name)


def test_onnx_export_runs_in_onnxruntime():
    onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is a test dependency")
    pytest.importorskip("onnxscript", reason="the dynamo ONNX exporter needs onnxscript")
    for name, layer in _layers("auto").items():
        x = torch.randn(5, 2, 3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(layer, (x,), dynamo=True, verbose=False)
        session = onnxruntime.InferenceSession(program.model_proto.SerializeToString())
        output = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        torch.testing.assert_close(
            torch.from_numpy(output), layer(x)[0].detach(), rtol=1e-5, atol=1e-5, msg=name
        )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", ["vanilla", "peephole"])
def test_compile_fullgraph_forward_and_backward(variant, backend):
    torch._dynamo.reset()
    layer = carousel.LSTM(3, 4, variant=variant, backend=backend)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    x = torch.randn(5, 2, 3, requires_grad=True)
    output, (_, c) = compiled(x)
    (output.sum() + c.sum()).backward()
    compiled_grads = [x.grad.clone()] + [p.grad.clone() for p in layer.parameters()]
    x.grad = None
    layer.zero_grad()
    eager_output, (_, eager_c) = layer(x)
    (eager_output.sum() + eager_c.sum()).backward()
    torch.testing.assert_close(output, eager_output)
    eager_grads = [x.grad] + [p.grad for p in layer.parameters()]
    for ours, eager in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(ours, eager)


def test_value_checks_do_not_break_compiled_lengths():
    torch._dynamo.reset()
    layer = carousel.GRU(3, 4, bidirectional=True)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    x, lengths = torch.randn(5, 2, 3), torch.tensor([5, 3])
    torch.testing.assert_close(compiled(x, lengths=lengths)[0], layer(x, lengths=lengths)[0])


@pytest.mark.parametrize("cls", [carousel.LSTM, carousel.GRU, carousel.RNN])
def test_jit_trace_of_a_stock_cell_holds_at_other_lengths(cls):
    layer = cls(3, 4, num_layers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(layer, (torch.randn(5, 2, 3),))
    for steps in (1, 9):
        x = torch.randn(steps, 2, 3)
        for ours, eager in zip(traced(x), layer(x), strict=True):
            torch.testing.assert_close(ours, eager)


@pytest.mark.parametrize("variant", ["peephole", "1997", "cifg"])
def test_jit_trace_of_a_python_loop_is_refused_at_trace_time(variant):
    layer = carousel.LSTM(3, 4, variant=variant)
    with pytest.raises(InputError, match=r"torch\.jit\.trace cannot record .* use torch\.export"):
        torch.jit.trace(layer, (torch.randn(5, 2, 3),))


def test_cells_export_and_compile():
    cell = carousel.LSTMCell(3, 4, variant="cifg")
    x, state = torch.randn(2, 3), (torch.randn(2, 4), torch.randn(2, 4))
    program = torch.export.export(cell, (x, state))
    for ours, eager in zip(program.module()(x, state), cell(x, state), strict=True):
        torch.testing.assert_close(ours, eager)
    torch._dynamo.reset()
    compiled = torch.compile(cell, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, state)[1], cell(x, state)[1])
