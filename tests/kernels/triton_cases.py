"""Cases and comparisons shared by the triton backend's tests: the interpreter on CPU tensors
(``test_triton_interpreter.py``) and the GPU (``test_triton_cuda.py``).

:func:`compare` runs a layer on the triton backend and the same layer on the reference backend
(same weights, input, initial state and random upstream gradients for the output and every final
state) and asserts that outputs, final states and every gradient (parameters, input, initial
states) agree: float64 to 1e-10, float32 to 1e-5 unless the caller passes a tolerance.
:func:`compare_regularized` does the same with the regularisers, resets and layer normalisation,
the masks drawn from one seed for both layers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch

import carousel
from carousel.cells import VARIANTS, make_spec
from tests.helpers import TOLERANCE, run_layer


def interpreter_only() -> None:
    """Skip the calling test module unless it runs under Triton's interpreter, in the subprocess
    that ``tests/kernels/test_triton.py::test_interpreter_suite`` starts (``TRITON_INTERPRET=1``
    must be set before triton is imported), or when triton is not installed."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip(
            "runs in a subprocess with TRITON_INTERPRET=1, started by "
            "tests/kernels/test_triton.py::test_interpreter_suite",
            allow_module_level=True,
        )
    pytest.importorskip(
        "triton", reason="triton is not installed (pip install 'carousel-lstm[gpu]')"
    )


LSTM_VARIANTS = [name for name in VARIANTS if make_spec(name).family == "lstm"]
CELLS = [*LSTM_VARIANTS, "gru", "elman"]


@dataclass(frozen=True)
class Shape:
    """A problem size: ``lengths`` ``(batch,)`` in ``[1, steps]`` or ``None``."""

    batch: int
    steps: int
    input: int
    hidden: int
    lengths: tuple[int, ...] | None

    @property
    def lengths_tensor(self) -> torch.Tensor | None:
        return None if self.lengths is None else torch.tensor(self.lengths)

    def __str__(self) -> str:
        return f"B{self.batch}-T{self.steps}-H{self.hidden}" + ("-lengths" if self.lengths else "")


OPTIONS = {
    "vanilla-hard_sigmoid": ("vanilla", {"gate_activation": "hard_sigmoid"}),
    "noaf-hard_sigmoid": ("noaf", {"gate_activation": "hard_sigmoid"}),
    "vanilla-identity-output": ("vanilla", {"output_activation": "identity"}),
    "vanilla-blocks2": ("vanilla", {"block_size": 2}),
    "1997-blocks2": ("1997", {"block_size": 2}),
    "1997-blocks4-truncate": ("1997", {"block_size": 4, "truncate_gradient": True}),
    "1997-truncate": ("1997", {"truncate_gradient": True}),
    "peephole-truncate": ("peephole", {"truncate_gradient": True}),
    "cifg-hard_sigmoid-truncate": (
        "cifg",
        {"gate_activation": "hard_sigmoid", "truncate_gradient": True},
    ),
    "fgr-no-peepholes": ("fgr", {"peepholes": False}),
    "nig-cell_bias-false": ("nig", {"cell_bias": False}),
    "vanilla-proj2": ("vanilla", {"proj_size": 2}),
    "peephole-proj3-no-bias": ("peephole", {"proj_size": 3, "bias": False}),
    "vanilla-proj3-truncate": ("vanilla", {"proj_size": 3, "truncate_gradient": True}),
    "vanilla-no-bias": ("vanilla", {"bias": False}),
    "gru-no-bias": ("gru", {"bias": False}),
    "gru-hard_sigmoid": ("gru", {"gate_activation": "hard_sigmoid"}),
    "elman-relu": ("elman", {"nonlinearity": "relu"}),
    "elman-no-bias": ("elman", {"bias": False}),
}


def split_options(options: dict) -> tuple[dict, dict]:
    """``(layer options, cell options)``: ``proj_size`` and ``bias`` go to the layer."""
    options = dict(options)
    layer = {k: options.pop(k) for k in ("proj_size", "bias") if k in options}
    return layer, options


def layers(variant, dtype, options, layer_options, shape, device):
    """The same layer on the reference and the triton backend, weights in [-0.5, 0.5]."""
    torch.manual_seed(1)
    reference = carousel.nn.Recurrent(
        shape.input, shape.hidden, device=device, variant=variant, backend="reference", dtype=dtype,
        **layer_options, **options,
    )  # fmt: skip
    with torch.no_grad():  # keep hard_sigmoid gates away from their kinks
        for p in reference.parameters():
            p.uniform_(-0.5, 0.5)
    fused = carousel.nn.Recurrent(
        shape.input, shape.hidden, device=device, variant=variant, backend="triton", dtype=dtype,
        **layer_options, **options,
    )  # fmt: skip
    fused.load_state_dict(reference.state_dict())
    return reference, fused


def _initial_state(layer, dtype, batch, device):
    stacked = layer.num_layers * layer.num_directions
    sizes = layer.spec.state_sizes(layer.hidden_size, layer.proj_size)
    state = [torch.randn(stacked, batch, s, dtype=dtype, device=device) for s in sizes]
    if layer.spec.feedback_gates:  # gate activations lie in (0, 1)
        state[2] = torch.rand(stacked, batch, sizes[2], dtype=dtype, device=device)
    if layer.spec.family == "slstm":  # a positive normaliser n; row 1 an empty memory (zeros)
        state[2] = torch.rand(stacked, batch, sizes[2], dtype=dtype, device=device) + 0.5
        for tensor in state if batch > 1 else ():
            tensor[:, 1] = 0.0
    return tuple(s.requires_grad_(True) for s in state)


def assert_close(actual, expected, tolerance, what):
    """Lists or dicts of tensors equal within ``tolerance``: ``rtol`` and ``atol``, the latter
    times the largest magnitude of each expected tensor (at least 1) if ``scaled`` is true."""
    tolerance = dict(tolerance)
    scaled = tolerance.pop("scaled", False)
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys(), what
        pairs = [(name, actual[name], expected[name]) for name in expected]
    else:
        assert len(actual) == len(expected), what
        pairs = [(i, a, e) for i, (a, e) in enumerate(zip(actual, expected, strict=True))]
    for name, a, e in pairs:
        scale = max(1.0, e.abs().max().item()) if scaled and e.numel() else 1.0
        torch.testing.assert_close(
            a,
            e,
            rtol=tolerance["rtol"],
            atol=tolerance["atol"] * scale,
            msg=lambda message, name=name: f"{what} {name}: {message}",
        )


def compare(variant, dtype, shape, device="cpu", layer_options=None, tolerance=None, **options):
    """Assert that the triton backend computes what the reference backend computes (see the
    module docstring); ``layer_options`` (``num_layers``, ``bidirectional`` (default true),
    ``proj_size``, ...) go to the layer, ``options`` to the cell."""
    layer_options = {"bidirectional": True} | (layer_options or {})
    reference, fused = layers(variant, dtype, options, layer_options, shape, device)
    x = torch.randn(shape.steps, shape.batch, shape.input, dtype=dtype, device=device)
    x.requires_grad_(True)
    state = _initial_state(reference, dtype, shape.batch, device)
    lengths = shape.lengths_tensor
    expected, expected_grads, upstream = run_layer(reference, x, state, lengths)
    actual, actual_grads, _ = run_layer(fused, x, state, lengths, upstream)
    tolerance = tolerance or TOLERANCE[dtype]
    assert_close(actual, expected, tolerance, f"{variant} outputs and final states")
    assert_close(actual_grads, expected_grads, tolerance, f"{variant} gradients")


RESET = torch.tensor(
    [[0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0]], dtype=torch.bool
)  # (T, B) for SMALL-sized shapes: restarts inside and at the end of sequences, one in padding
EVERY = {
    "layer_norm": True,
    "recurrent_dropout": 0.3,
    "candidate_dropout": 0.3,
    "zoneout": (0.3, 0.2),
    "weight_drop": 0.3,
}
"""Every regulariser of :mod:`carousel.cells.regularizers` and layer normalisation (an LSTM's)."""


def every_option(variant: str) -> dict:
    """:data:`EVERY` for ``variant``'s family: a GRU takes one zoneout probability, an sLSTM or
    Elman cell only the weight drop (and resets)."""
    family = make_spec(variant).family
    if family == "gru":
        return dict(EVERY, zoneout=0.3)
    if family in ("slstm", "elman"):
        return {"weight_drop": EVERY["weight_drop"]}
    return dict(EVERY)


def compare_regularized(
    variant, dtype, shape, *, training=True, reset=None, layer_options=None, tolerance=None,
    device="cpu", **options,
):  # fmt: skip
    """:func:`compare` for layers with regularisers (``options`` holds the cell's and the
    layer's: ``layer_norm``, ``recurrent_dropout``, ``zoneout``, ...) in training or evaluation
    mode, with ``reset`` ``(T, B)`` or ``None``; the masks are drawn from the same seed for both
    backends."""
    layer_options = {"bidirectional": True} | (layer_options or {})
    reference, fused = layers(variant, dtype, options, layer_options, shape, device)
    reference.train(training)
    fused.train(training)
    x = torch.randn(shape.steps, shape.batch, shape.input, dtype=dtype, device=device)
    x.requires_grad_(True)
    state = _initial_state(reference, dtype, shape.batch, device)
    reset = None if reset is None else reset.to(device)
    lengths = shape.lengths_tensor  # the masks drawn from one seed: the same for both backends
    expected, expected_grads, upstream = run_layer(
        reference, x, state, lengths, reset=reset, seed=7
    )
    actual, actual_grads, _ = run_layer(fused, x, state, lengths, upstream, reset=reset, seed=7)
    tolerance = tolerance or TOLERANCE[dtype]
    what = f"{variant} {options} training={training} reset={reset is not None}"
    assert_close(actual, expected, tolerance, f"{what}: outputs and final states")
    assert_close(actual_grads, expected_grads, tolerance, f"{what}: gradients")
