"""Comparisons of outputs, states and gradients shared by the tests."""

from __future__ import annotations

import torch

TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)}


def flatten(value) -> list[torch.Tensor]:
    """Tensors of a nested output/state structure, in order (PackedSequence -> its data)."""
    if isinstance(value, torch.nn.utils.rnn.PackedSequence):
        return [value.data]
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for item in value for t in flatten(item)]


def forward_backward(module, inputs, upstream):
    """Run ``module(*inputs)``, backpropagate ``upstream`` (one random tensor per output tensor)
    and return the flat outputs and the gradients of every parameter and every float input."""
    module.zero_grad()
    for t in flatten(inputs):
        t.grad = None
    outputs = flatten(module(*inputs))
    loss = sum((o * u).sum() for o, u in zip(outputs, upstream, strict=True))
    loss.backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    for i, t in enumerate(flatten(inputs)):
        if t.requires_grad:
            grads[f"input{i}"] = t.grad.clone()
    return [o.detach() for o in outputs], grads


def run_layer(layer, x, state, lengths, upstream=None, *, reset=None, seed=None):
    """Run ``layer(x, state, lengths=lengths)`` (``state`` a tuple of initial states, or empty or
    ``None``; ``reset=reset`` too when given), backpropagate ``upstream`` (random when ``None``)
    and return the flat outputs, the gradients (every parameter, ``input``, ``state0``, ...) and
    the upstream used. With ``seed``, torch's generator is seeded just before the forward pass,
    so that layers with regularisers draw the same masks on every backend.

    An input the result does not depend on (the initial ``h`` under the truncated gradient) has
    no gradient in the reference; it counts as zero.
    """
    state = tuple(state or ())
    layer.zero_grad()
    for t in (x, *state):
        t.grad = None
    hx = state if len(state) > 1 else state[0] if state else None
    if seed is not None:
        torch.manual_seed(seed)
    output, final = layer(x, hx, lengths=lengths, **({} if reset is None else {"reset": reset}))
    outputs = flatten((output, final))
    if upstream is None:
        upstream = [torch.randn_like(o) for o in outputs]
    sum((o * u).sum() for o, u in zip(outputs, upstream, strict=True)).backward()
    grads = {name: p.grad.clone() for name, p in layer.named_parameters()}
    for name, t in [("input", x)] + [(f"state{i}", s) for i, s in enumerate(state)]:
        grads[name] = torch.zeros_like(t) if t.grad is None else t.grad.clone()
    return [o.detach() for o in outputs], grads, upstream


def assert_same(actual, expected, dtype=torch.float32, what=""):
    """Assert two lists/dicts of tensors are equal within the dtype's tolerance."""
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys(), what
        for key in expected:
            torch.testing.assert_close(
                actual[key], expected[key], **TOLERANCE[dtype], msg=f"{what} {key}"
            )
        return
    assert len(actual) == len(expected), what
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        torch.testing.assert_close(a, e, **TOLERANCE[dtype], msg=f"{what} [{i}]")


def gradcheck_with_fixed_masks(layer) -> bool:
    """float64 ``gradcheck`` (fast mode) of ``layer`` on a ``(5, 2, 2)`` input with lengths
    ``[5, 4]`` and a reset in each sequence, through every parameter and the input; the masks are
    fixed by reseeding torch's generator before each forward pass."""
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in layer.parameters()]
    x = torch.randn(5, 2, 2, dtype=torch.float64, requires_grad=True)
    reset = torch.zeros(5, 2, dtype=torch.bool)
    reset[2, 0] = reset[3, 1] = True
    lengths = torch.tensor([5, 4])

    def run(x, *params):
        torch.manual_seed(11)
        output, final = torch.func.functional_call(
            layer, dict(zip(names, params, strict=True)), (x,), {"lengths": lengths, "reset": reset}
        )
        return (output, *flatten(final))

    return torch.autograd.gradcheck(run, (x, *params), eps=1e-6, atol=1e-7, fast_mode=True)
