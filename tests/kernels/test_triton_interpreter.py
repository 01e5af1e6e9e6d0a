"""The triton backend against the reference backend, run by Triton's interpreter on CPU tensors.

Outputs, final states and every gradient (parameters, input, initial states) under random upstream
gradients for the output and each final state (:func:`tests.kernels.triton_cases.compare`), for
every cell, option, stacking, direction and lengths, and with the regularisers, resets and layer
normalisation (masks drawn from one seed for both backends); float64 to 1e-10, float32 to 1e-5. The
kernels are the ones compiled for GPUs, executed by NumPy (``TRITON_INTERPRET=1``), so shapes are
small (T <= 5, B <= 5, H <= 12) except where tiles with remainders are the point.

Level 1 of the backend (the per-step kernels, ``CAROUSEL_TRITON_LEVEL=1`` in every test); the
persistent kernels of level 2 are checked in ``test_triton_persistent_interpreter.py``.

The interpreter must be chosen before the kernels are first imported, so this module runs in a
subprocess with ``TRITON_INTERPRET=1`` in its environment, started by
``test_triton.py::test_interpreter_suite``; in any other process it skips with that reason. To
run it alone: ``TRITON_INTERPRET=1 pytest tests/kernels/test_triton_interpreter.py``.
"""

from __future__ import annotations

import pytest
import torch

import carousel
from tests.helpers import assert_same, flatten, run_layer
from tests.kernels.triton_cases import (
    CELLS,
    OPTIONS,
    RESET,
    Shape,
    compare,
    compare_regularized,
    every_option,
    interpreter_only,
    layers,
    split_options,
)

interpreter_only()  # skips this module outside the interpreter subprocess

SMALL = Shape(batch=3, steps=5, input=3, hidden=4, lengths=(5, 2, 4))


@pytest.fixture(autouse=True)
def _level_one(monkeypatch):
    """These tests check level 1, the per-step kernels, which ``auto`` would replace by the
    persistent kernels at these sizes; level 2 has test_triton_persistent_interpreter.py."""
    monkeypatch.setenv("CAROUSEL_TRITON_LEVEL", "1")


FULL = Shape(batch=3, steps=5, input=3, hidden=4, lengths=None)
DTYPES = [pytest.param(torch.float32, id="f32"), pytest.param(torch.float64, id="f64")]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", CELLS)
def test_every_cell_matches_reference(variant, dtype):
    """One layer, both directions, a padded batch with lengths."""
    compare(variant, dtype, SMALL, layer_options={"num_layers": 1})


@pytest.mark.parametrize(("variant", "options"), OPTIONS.values(), ids=OPTIONS.keys())
def test_every_option_matches_reference(variant, options):
    """One bidirectional layer with lengths, float64 (float32 runs the same kernels with another
    ``COMPUTE`` type, checked for every cell above)."""
    layer_options, options = split_options(options)
    compare(
        variant, torch.float64, SMALL, layer_options={"num_layers": 1} | layer_options, **options
    )


CONFIGS = {
    f"L1-{FULL}": ({"bidirectional": False}, FULL),
    f"L3-{SMALL}": ({"num_layers": 3, "bidirectional": False}, SMALL),
    f"L2-bi-{SMALL}": ({"num_layers": 2}, SMALL),
    f"L2-bi-{FULL}": ({"num_layers": 2}, FULL),
}


@pytest.mark.parametrize("variant", ["vanilla", "1997", "gru", "elman"])
@pytest.mark.parametrize(("layer_options", "shape"), CONFIGS.values(), ids=CONFIGS.keys())
def test_stacks_directions_and_lengths_match_reference(variant, layer_options, shape):
    compare(variant, torch.float64, shape, layer_options=layer_options)


REMAINDERS = {
    # 160 units: two programs of 128 along the units, the second partly masked; 5 rows: 3 of 2
    "vanilla-B5-H160": ("vanilla", {}, 160),
    "1997-blocks4-B5-H160": ("1997", {"block_size": 4}, 160),  # 40 gate units, 32 per program
    "1997-blocks3-B5-H12": ("1997", {"block_size": 3}, 12),  # 3 cells in 4 lanes
    "gru-B5-H160": ("gru", {}, 160),
    "elman-B5-H160": ("elman", {}, 160),
}


@pytest.mark.parametrize(("variant", "options", "hidden"), REMAINDERS.values(), ids=REMAINDERS)
def test_tiles_with_remainders_match_reference(variant, options, hidden):
    """Several programs per launch, the last ones partly outside the batch and the cells."""
    shape = Shape(batch=5, steps=2, input=2, hidden=hidden, lengths=(2, 1, 2, 2, 1))
    compare(variant, torch.float64, shape, layer_options={"bidirectional": False}, **options)


def test_batch_first_packed_and_unbatched_inputs_match_reference():
    reference, fused = layers("peephole", torch.float64, {}, {"batch_first": True}, SMALL, "cpu")
    x = torch.randn(SMALL.batch, SMALL.steps, SMALL.input, dtype=torch.float64)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        x, SMALL.lengths_tensor, True, enforce_sorted=False
    )
    for inputs in (x, packed, x[0]):
        assert_same(flatten(fused(inputs)), flatten(reference(inputs)), torch.float64, "outputs")


def test_dropout_between_layers_uses_the_same_masks():
    reference, fused = layers(
        "gru", torch.float64, {}, {"num_layers": 2, "dropout": 0.5}, SMALL, "cpu"
    )
    x = torch.randn(3, SMALL.batch, SMALL.input, dtype=torch.float64)
    torch.manual_seed(5)
    expected = reference(x)[0]
    torch.manual_seed(5)
    assert_same([fused(x)[0]], [expected], torch.float64, "output with dropout")


def test_forward_without_autograd_equals_forward_with_it():
    layer = carousel.LSTM(SMALL.input, 4, variant="1997", block_size=2, backend="triton")
    x = torch.randn(3, SMALL.batch, SMALL.input)
    lengths = torch.tensor([3, 1, 2])
    with_grad = flatten(layer(x, lengths=lengths))
    with torch.no_grad():
        without = flatten(layer(x, lengths=lengths))
    assert all(torch.equal(a, b) for a, b in zip(with_grad, without, strict=True))
    assert with_grad[0].grad_fn is not None and without[0].grad_fn is None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_low_precision_layers_compute_in_float32_like_the_reference(dtype):
    reference, fused = layers("cifg", dtype, {}, {}, SMALL, "cpu")
    x = torch.randn(3, SMALL.batch, SMALL.input, dtype=dtype)
    expected, actual = flatten(reference(x)), flatten(fused(x))
    assert all(t.dtype == dtype for t in actual)
    assert_same([t.float() for t in actual], [t.float() for t in expected], torch.float32, "")


@pytest.mark.parametrize("variant", ["peephole", "gru"])
def test_gradient_penalty_differentiates_through_the_reference_twin(variant):
    """create_graph=True: the backward pass is itself differentiated (second derivatives)."""
    results = []
    for backend in ("reference", "triton"):
        torch.manual_seed(3)
        layer = carousel.nn.Recurrent(
            SMALL.input, SMALL.hidden, variant=variant, backend=backend, dtype=torch.float64
        )
        x = torch.randn(3, 2, SMALL.input, dtype=torch.float64, requires_grad=True)
        (d_x,) = torch.autograd.grad(layer(x)[0].pow(2).sum(), x, create_graph=True)
        d_x.pow(2).sum().backward()
        results.append([x.grad, *(p.grad for p in layer.parameters())])
    assert_same(results[1], results[0], torch.float64, "second derivatives")


def test_torch_func_calls_are_handed_over_and_match_the_reference():
    torch.manual_seed(4)
    layer = carousel.LSTM(
        SMALL.input, SMALL.hidden, variant="peephole", backend="triton", dtype=torch.float64
    )
    x = torch.randn(3, 2, SMALL.input, dtype=torch.float64)
    params = dict(layer.named_parameters())

    def loss(params):
        return torch.func.functional_call(layer, params, (x,))[0].sum()

    transformed = torch.func.grad(loss)(params)
    layer.backend = "reference"
    expected = torch.func.grad(loss)(params)
    assert_same(transformed, expected, torch.float64, "torch.func.grad")


def test_empty_batch_is_handed_to_the_reference_loop():
    layer = carousel.GRU(SMALL.input, SMALL.hidden, backend="triton")
    output, h_n = layer(torch.randn(3, 0, SMALL.input))
    assert output.shape == (3, 0, SMALL.hidden) and h_n.shape == (1, 0, SMALL.hidden)


def test_the_cuda_benchmark_runs_its_contenders(capsys):
    """``carousel bench --device cuda``'s code path, on CPU tensors (times are meaningless here)."""
    from carousel.benchmarks.cuda import TABLE_HEADER, benchmark

    rows = benchmark(["peephole", "gru"], [(2, 2, 2, 4)], torch.float32, 0.0, True, "cpu")
    columns = TABLE_HEADER.splitlines()[0].count("|") - 1
    for row, cell in zip(rows, ["peephole", "gru"], strict=True):
        values = row.strip("| ").split(" | ")
        assert len(values) == columns and values[0] == cell
        assert values[7].endswith("x") and values[9].endswith("x")  # / cuDNN LSTM, vs reference
    assert rows[0].split(" | ")[5] == "" and rows[1].split(" | ")[6].endswith("x")  # torch.nn GRU
    for row in rows:  # level 2 runs both at H = 4: its times and the ratio to level 1
        assert row.split(" | ")[11] != "" and row.split(" | ")[13].endswith("x")
    assert "flashrnn" in capsys.readouterr().out  # why its column is empty


def test_frozen_weights_skip_their_gradients_and_leave_the_others_right():
    reference, fused = layers("peephole", torch.float64, {}, {"proj_size": 2}, SMALL, "cpu")
    x = torch.randn(SMALL.steps, SMALL.batch, SMALL.input, dtype=torch.float64)
    grads = []
    for layer in (reference, fused):
        for name, p in layer.named_parameters():
            p.requires_grad_(name.startswith("weight_ih"))
            p.grad = None
        x.grad = None
        x.requires_grad_(True)
        layer(x, lengths=SMALL.lengths_tensor)[0].pow(2).sum().backward()
        assert all(p.grad is None for n, p in layer.named_parameters() if "weight_ih" not in n)
        grads.append([x.grad, layer.weight_ih_l0.grad])
    assert_same(grads[1], grads[0], torch.float64, "input and weight_ih gradients")


def test_layers_the_kernels_do_not_implement_are_refused_by_name_or_handed_over():
    """On CPU tensors under the interpreter: a family without kernels, or a cell with an option
    the kernels do not know (a spec field added later), raises a one-line error with
    ``backend="triton"`` and runs elsewhere with ``backend="auto"``."""
    from dataclasses import dataclass, fields

    from carousel.cells import FAMILIES, CellSpec, Family, make_spec, register_family

    @dataclass(frozen=True)
    class FutureSpec(CellSpec):
        future_option: bool = False

    base = make_spec("peephole")
    future = FutureSpec(
        **{f.name: getattr(base, f.name) for f in fields(CellSpec)}, future_option=True
    )
    register_family(Family("elman2", ("h",), FAMILIES["elman"].step))
    try:
        toy = CellSpec(family="elman2", variant="elman2", gates=("h",))
        x = torch.randn(3, 2, SMALL.input)
        for variant, named in ((toy, "the 'elman2' family"), (future, "future_option=True")):
            layer = carousel.nn.Recurrent(
                SMALL.input, SMALL.hidden, variant=variant, backend="triton"
            )
            with pytest.raises(ValueError, match="backend 'triton' cannot run this layer") as error:
                layer(x)
            assert named in str(error.value) and "\n" not in str(error.value)
            layer.backend = "auto"
            assert layer(x)[0].shape == (3, 2, SMALL.hidden)
    finally:
        del FAMILIES["elman2"]


# ---- regularisers, resets and layer normalisation ----------------------------------------------

ALONE = {
    "layer_norm": ({"layer_norm": True}, True),
    "recurrent_dropout": ({"recurrent_dropout": 0.4}, True),
    "candidate_dropout": ({"candidate_dropout": 0.4}, True),
    "zoneout": ({"zoneout": 0.3}, True),
    "zoneout-eval": ({"zoneout": 0.3}, False),
    "reset": ({"reset": RESET}, True),
}


@pytest.mark.parametrize(("options", "training"), ALONE.values(), ids=ALONE.keys())
@pytest.mark.parametrize("variant", ["vanilla", "gru"])
def test_each_regulariser_reset_and_layer_norm_alone_matches_reference(variant, options, training):
    """One option at a time; one bidirectional layer, a padded batch with lengths, float64."""
    compare_regularized(
        variant, torch.float64, SMALL, training=training, layer_options={"num_layers": 1},
        **options,
    )  # fmt: skip


ALL_AT_ONCE = {
    "vanilla-f32": ("vanilla", torch.float32, {}),
    "gru-f32": ("gru", torch.float32, {}),
    "vanilla": ("vanilla", torch.float64, {}),
    "peephole-truncate": ("peephole", torch.float64, {"truncate_gradient": True}),
    "cifg-hard_sigmoid": ("cifg", torch.float64, {"gate_activation": "hard_sigmoid"}),
    "fgr": ("fgr", torch.float64, {}),  # fed-back gates: neither dropped nor zoned
    "1997-blocks2-truncate": ("1997", torch.float64, {"block_size": 2, "truncate_gradient": True}),
    "gru": ("gru", torch.float64, {}),
    "vanilla-proj2": ("vanilla", torch.float64, {"layer_options": {"proj_size": 2}}),
    "vanilla-eval": ("vanilla", torch.float64, {"training": False}),
    "gru-eval-no-bias": (
        "gru",
        torch.float64,
        {"training": False, "layer_options": {"bias": False}},
    ),
    "vanilla-L2-no-lengths": (
        "vanilla",
        torch.float64,
        {"layer_options": {"num_layers": 2}, "shape": FULL},
    ),
    "slstm": ("slstm", torch.float64, {"num_heads": 2}),  # weight drop and resets
    "elman": ("elman", torch.float64, {}),
}


@pytest.mark.parametrize(("variant", "dtype", "extra"), ALL_AT_ONCE.values(), ids=ALL_AT_ONCE)
def test_every_regulariser_with_resets_and_layer_norm_matches_reference(variant, dtype, extra):
    """Layer norm, recurrent and candidate dropout, zoneout, weight drop and resets together
    (what the family takes), with other cell and layer options; lengths unless the case says."""
    extra = dict(extra)
    layer_options = {"num_layers": 1} | extra.pop("layer_options", {})
    shape = extra.pop("shape", SMALL)
    compare_regularized(
        variant, dtype, shape, reset=RESET, layer_options=layer_options,
        **every_option(variant) | extra,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("variant", "options", "hidden"),
    [("vanilla", {}, 160), ("1997", {"block_size": 3}, 12)],
    ids=["vanilla-H160", "1997-blocks3-H12"],
)
def test_layer_norm_over_whole_rows_with_remainders_matches_reference(variant, options, hidden):
    """The cell state's normalisation covers a row in one program: 160 cells in 256 lanes, 5 rows
    over 3 programs; memory blocks of 3 cells in 4 lanes."""
    shape = Shape(batch=5, steps=2, input=2, hidden=hidden, lengths=(2, 1, 2, 2, 1))
    compare_regularized(
        variant, torch.float64, shape, reset=torch.tensor([[0] * 5, [1, 0, 1, 0, 0]]).bool(),
        layer_options={"bidirectional": False}, **every_option(variant) | options,
    )  # fmt: skip


@pytest.mark.parametrize("variant", ["peephole", "gru"])
def test_second_derivatives_with_every_regulariser_go_through_the_reference_twin(variant):
    """create_graph=True with masks, resets and layer norm: the differentiable recomputation
    applies them as the reference loop does."""
    results = []
    for backend in ("reference", "triton"):
        torch.manual_seed(3)
        layer = carousel.nn.Recurrent(
            SMALL.input, SMALL.hidden, variant=variant, backend=backend, dtype=torch.float64,
            **every_option(variant),
        )  # fmt: skip
        x = torch.randn(5, 3, SMALL.input, dtype=torch.float64, requires_grad=True)
        torch.manual_seed(7)
        output = layer(x, lengths=SMALL.lengths_tensor, reset=RESET)[0]
        (d_x,) = torch.autograd.grad(output.pow(2).sum(), x, create_graph=True)
        d_x.pow(2).sum().backward()
        results.append([x.grad, *(p.grad for p in layer.parameters())])
    assert_same(results[1], results[0], torch.float64, "second derivatives")


# ---- the sLSTM ---------------------------------------------------------------------------------


def _slstm_state(layer, dtype, batch, empty_rows=(1,)):
    """A random state (h, c, n, m) with a positive normaliser, and empty rows (all zeros)."""
    shape = (layer.num_layers * layer.num_directions, batch, layer.hidden_size)
    h, c, m = (torch.randn(shape, dtype=dtype) for _ in range(3))
    n = torch.rand(shape, dtype=dtype) + 0.5
    for row in empty_rows:
        for tensor in (h, c, n, m):
            tensor[:, row] = 0.0
    return tuple(t.requires_grad_(True) for t in (h, c, n, m))


def _slstm_compare(dtype, shape, state="random", layer_options=None, **options):
    """:func:`compare` for the sLSTM with a state it can hold: random with an empty row, all
    zeros (every row empty, the layer's default), or ``None`` (no state passed)."""
    layer_options = {"num_layers": 2, "bidirectional": True} | (layer_options or {})
    reference, fused = layers("slstm", dtype, options, layer_options, shape, "cpu")
    x = torch.randn(shape.steps, shape.batch, shape.input, dtype=dtype, requires_grad=True)
    initial = None if state is None else _slstm_state(reference, dtype, shape.batch)
    if state == "zeros":
        initial = tuple(torch.zeros_like(t).requires_grad_(True) for t in initial)
    expected, expected_grads, upstream = run_layer(reference, x, initial, shape.lengths_tensor)
    actual, actual_grads, _ = run_layer(fused, x, initial, shape.lengths_tensor, upstream)
    assert_same(actual, expected, dtype, "sLSTM outputs and final states (h, c, n, m)")
    assert_same(actual_grads, expected_grads, dtype, "sLSTM gradients")
    return actual, actual_grads


SLSTM_CASES = {
    "heads1-sigmoid": {},
    "heads2-sigmoid": {"num_heads": 2},
    "heads4-exp": {"num_heads": 4, "forget_activation": "exp"},
    "hard_sigmoid-tanh-output": {"gate_activation": "hard_sigmoid", "output_activation": "tanh"},
    "no-bias-zero-state": {"layer_options": {"bias": False}, "state": "zeros"},
    "L3-no-lengths-no-state": {
        "layer_options": {"num_layers": 3, "bidirectional": False},
        "state": None,
    },
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SLSTM_CASES.values(), ids=[f"{SMALL}-{k}" for k in SLSTM_CASES])
def test_slstm_matches_reference(case, dtype):
    """Outputs, final (h, c, n, m) and every gradient; a random state with an empty row unless
    the case says otherwise; two layers both ways, a padded batch."""
    case = dict(case)
    shape = FULL if case.get("state", "random") is None else SMALL
    _slstm_compare(dtype, shape, **case)


def test_slstm_with_remainder_tiles_matches_reference():
    """160 cells: two programs along the cells, the second partly masked; 5 rows."""
    shape = Shape(batch=5, steps=2, input=2, hidden=160, lengths=(2, 1, 2, 2, 1))
    _slstm_compare(torch.float64, shape, layer_options={"num_layers": 1}, num_heads=4)


def test_slstm_ties_of_the_stabiliser_split_the_error_as_torch_maximum():
    """Identical input- and forget-gate nets with the exponential forget gate and m = 0 make
    log f + m equal the input net exactly: both backends give each side half the error."""
    hidden = SMALL.hidden
    reference, fused = layers(
        "slstm", torch.float64, {"forget_activation": "exp"}, {}, SMALL, "cpu"
    )
    for layer in (reference, fused):
        with torch.no_grad():
            layer.weight_ih_l0[hidden : 2 * hidden] = layer.weight_ih_l0[:hidden]
            layer.bias_l0[hidden : 2 * hidden] = layer.bias_l0[:hidden]
            layer.weight_hh_l0.zero_()
    x = torch.randn(1, SMALL.batch, SMALL.input, dtype=torch.float64)
    ones = torch.ones(1, SMALL.batch, hidden, dtype=torch.float64)
    results = []
    for layer in (reference, fused):
        state = tuple(t.clone().requires_grad_(True) for t in (0 * ones, ones, ones, 0 * ones))
        output, final = layer(x, state)
        (output.sum() + sum(f.pow(2).sum() for f in final)).backward()
        results.append([output, *final, *(s.grad for s in state)])
    assert_same(results[1], results[0], torch.float64, "outputs and gradients at a tie")
    assert float(results[0][-1].abs().min()) > 0.0  # m_0 got its half


@pytest.mark.parametrize("forget", ["sigmoid", "exp"])
def test_slstm_large_pre_activations_stay_finite_and_agree(forget):
    """Weights uniform in [-30, 30], inputs of size 10: gate nets of several hundred, where exp()
    overflows float32 without the stabiliser."""
    torch.manual_seed(2)
    shape = Shape(batch=3, steps=12, input=3, hidden=4, lengths=(12, 5, 9))
    reference, fused = layers("slstm", torch.float32, {"forget_activation": forget}, {}, shape,
                              "cpu")  # fmt: skip
    with torch.no_grad():
        for a, b in zip(reference.parameters(), fused.parameters(), strict=True):
            a.uniform_(-30, 30)
            b.copy_(a)
    x = 10 * torch.randn(shape.steps, shape.batch, shape.input)
    results = []
    for layer in (reference, fused):
        output, final = layer(x, lengths=shape.lengths_tensor)
        output.sum().backward()
        results.append([output.detach(), *(f.detach() for f in final),
                        *(p.grad for p in layer.parameters())])  # fmt: skip
    for tensor in (t for result in results for t in result):
        assert bool(torch.isfinite(tensor).all())
    for a, e in zip(results[1][:5], results[0][:5], strict=True):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


def test_slstm_second_derivatives_through_the_reference_twin():
    results = []
    for backend in ("reference", "triton"):
        torch.manual_seed(3)
        layer = carousel.nn.Recurrent(SMALL.input, SMALL.hidden, variant="slstm", num_heads=2,
                                      backend=backend, dtype=torch.float64)  # fmt: skip
        with torch.no_grad():
            for p in layer.parameters():
                p.uniform_(-0.5, 0.5)
        x = torch.randn(3, 2, SMALL.input, dtype=torch.float64, requires_grad=True)
        (d_x,) = torch.autograd.grad(layer(x)[0].pow(2).sum(), x, create_graph=True)
        d_x.pow(2).sum().backward()
        results.append([x.grad, *(p.grad for p in layer.parameters())])
    assert_same(results[1], results[0], torch.float64, "second derivatives")
