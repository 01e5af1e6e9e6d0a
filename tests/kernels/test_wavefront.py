"""The wavefront over stacked layers of the numba backend (``kernels/numba_cpu/wavefront.py``):
outputs, final states and every gradient against the sequential numba path and the reference
backend, for the LSTM variants, GRU, Elman and the sLSTM, 2 and 3 layers, chunk counts that do not divide the
sequence, 2, 4 and 8 threads, with and without lengths, with dropout between layers; the same
bits for a thread count; gradcheck; and when it runs and when it hands the call back."""

from __future__ import annotations

import pytest
import torch

import carousel
from carousel.kernels import threads
from carousel.kernels.numba_cpu import shards, wavefront
from tests.helpers import assert_same, flatten, run_layer

BATCH, STEPS, INPUT, HIDDEN = 3, 7, 3, 4
LENGTHS = torch.tensor([7, 2, 5])  # one sequence ends in the first chunk, one in a middle one
CELLS = {
    "vanilla": {},
    "peephole": {},
    "1997": {"block_size": 2},  # memory blocks of two cells, gate feedback from every gate
    "gru": {},
    "elman": {},
    "slstm": {"num_heads": 2, "forget_activation": "exp"},  # four states, per-head GEMMs
}


@pytest.fixture
def chunked(monkeypatch):
    """The wavefront enabled, chunks down to one step whatever the work (``MAX_CHUNKS`` set per
    test), allowed whatever the BLAS; returns :data:`wavefront.RUNS`. Threads restored afterwards."""
    monkeypatch.setattr(wavefront, "ENABLED", True)
    monkeypatch.setattr(wavefront, "MIN_CHUNK_ROWS", 1)
    monkeypatch.setattr(wavefront, "MIN_CHUNK_WORK", 1)
    monkeypatch.setattr(wavefront, "BLAS", "mkl")
    before = torch.get_num_threads()
    yield wavefront.RUNS
    threads._requested = None
    torch.set_num_threads(before)


def _layers(variant, num_layers, dtype=torch.float64, **options):
    """The same stack on the reference and the numba backend."""
    torch.manual_seed(3)
    options = {**CELLS.get(variant, {}), **options}
    layers = [
        carousel.nn.Recurrent(
            INPUT, HIDDEN, num_layers, variant=variant, backend=backend, dtype=dtype, **options
        )
        for backend in ("reference", "numba")
    ]
    with torch.no_grad():
        for p in layers[0].parameters():
            p.uniform_(-0.5, 0.5)
    layers[1].load_state_dict(layers[0].state_dict())
    return layers


def _inputs(layer, dtype=torch.float64):
    x = torch.randn(STEPS, BATCH, INPUT, dtype=dtype, requires_grad=True)
    sizes = layer.spec.state_sizes(HIDDEN, layer.proj_size)
    stacked = layer.num_layers
    state = [torch.rand(stacked, BATCH, s, dtype=dtype, requires_grad=True) for s in sizes]
    return x, state


def _ran(runs, before) -> tuple[int, int]:
    return runs["forward"] - before["forward"], runs["backward"] - before["backward"]


@pytest.mark.parametrize("num_threads", [2, 4, 8])
@pytest.mark.parametrize("num_chunks", [2, 3, 5])
@pytest.mark.parametrize("num_layers", [2, 3])
@pytest.mark.parametrize("variant", list(CELLS))
def test_wavefront_matches_sequential_and_reference(
    variant, num_layers, num_chunks, num_threads, chunked, monkeypatch
):
    monkeypatch.setattr(wavefront, "MAX_CHUNKS", num_chunks)  # 2, 3, 5 do not divide 7 steps
    reference, fused = _layers(variant, num_layers)
    x, state = _inputs(reference)
    expected, expected_grads, upstream = run_layer(reference, x, state, LENGTHS)
    carousel.set_num_threads(1)  # the sequential numba path
    before = dict(chunked)
    sequential, sequential_grads, _ = run_layer(fused, x, state, LENGTHS, upstream)
    assert _ran(chunked, before) == (0, 0)
    carousel.set_num_threads(num_threads)
    actual, actual_grads, _ = run_layer(fused, x, state, LENGTHS, upstream)
    assert _ran(chunked, before) == (1, 1)
    what = f"{variant} x{num_layers}, {num_chunks} chunks"
    assert_same(actual, sequential, torch.float64, f"{what}: outputs vs sequential")
    assert_same(actual_grads, sequential_grads, torch.float64, f"{what}: gradients vs sequential")
    assert_same(actual, expected, torch.float64, f"{what}: outputs vs reference")
    assert_same(actual_grads, expected_grads, torch.float64, f"{what}: gradients vs reference")


@pytest.mark.parametrize("variant", ["vanilla", "1997", "gru"])
def test_wavefront_without_lengths_and_without_initial_state(variant, chunked):
    carousel.set_num_threads(2)
    reference, fused = _layers(variant, 2)
    x, _ = _inputs(reference)
    expected, expected_grads, upstream = run_layer(reference, x, None, None)
    before = dict(chunked)
    actual, actual_grads, _ = run_layer(fused, x, None, None, upstream)
    assert _ran(chunked, before) == (1, 1)
    assert_same(actual, expected, torch.float64, f"{variant} outputs")
    assert_same(actual_grads, expected_grads, torch.float64, f"{variant} gradients")


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_inference_runs_the_forward_wavefront_only(dtype, chunked):
    """Under ``torch.no_grad()`` the kernels save nothing; bfloat16 is computed in float32 and
    rounded as the sequential path rounds it."""
    reference, fused = _layers("vanilla", 3)
    fused = fused.to(dtype)
    x, state = _inputs(reference)
    x, state = x.detach().to(dtype), [s.detach().to(dtype) for s in state]
    carousel.set_num_threads(1)
    with torch.no_grad():
        sequential = fused(x, tuple(state), lengths=LENGTHS)
    carousel.set_num_threads(2)
    before = dict(chunked)
    with torch.no_grad():
        actual = fused(x, tuple(state), lengths=LENGTHS)
    assert _ran(chunked, before) == (1, 0)
    tolerance = {} if dtype == torch.float64 else {"rtol": 1e-2, "atol": 1e-2}
    for a, b in zip(flatten(actual), flatten(sequential), strict=True):
        assert a.dtype == dtype
        torch.testing.assert_close(a, b, **tolerance)
    if dtype == torch.float64:
        expected, _, _ = run_layer(reference, x, state, LENGTHS)
        assert_same(flatten(actual), expected, torch.float64, "outputs vs reference")


def test_wavefront_with_projection_and_layer_norm(chunked):
    """Options that live inside the kernels' step: a projection and layer normalisation."""
    carousel.set_num_threads(2)
    reference, fused = _layers("vanilla", 3, proj_size=3, layer_norm=True)
    x, state = _inputs(reference)
    expected, expected_grads, upstream = run_layer(reference, x, state, LENGTHS)
    before = dict(chunked)
    actual, actual_grads, _ = run_layer(fused, x, state, LENGTHS, upstream)
    assert _ran(chunked, before) == (1, 1)
    assert_same(actual, expected, torch.float64, "outputs")
    assert_same(actual_grads, expected_grads, torch.float64, "gradients")


@pytest.mark.parametrize("variant", ["vanilla", "gru"])
def test_dropout_between_layers_draws_the_sequential_masks(variant, chunked):
    """In training, dropout between layers: the same masks from the same seed as the sequential
    numba path and the reference backend (both call ``F.dropout``), hence the same results."""
    results = []
    for backend, num_threads in (("reference", 1), ("numba", 1), ("numba", 2)):
        reference, fused = _layers(variant, 3, dropout=0.4)
        layer = reference if backend == "reference" else fused
        layer.train()
        carousel.set_num_threads(num_threads)
        torch.manual_seed(11)
        x, state = _inputs(reference)
        upstream = results[0][2] if results else None
        before = dict(chunked)
        torch.manual_seed(12)  # the masks are drawn after the inputs
        results.append(run_layer(layer, x, state, LENGTHS, upstream))
        ran = _ran(chunked, before)
        assert ran == ((1, 1) if num_threads == 2 else (0, 0))
    (expected, expected_grads, _), sequential, wavefront_run = results
    for actual, actual_grads, _ in (sequential, wavefront_run):
        assert_same(actual, expected, torch.float64, f"{variant} outputs")
        assert_same(actual_grads, expected_grads, torch.float64, f"{variant} gradients")
    layer = _layers(variant, 3, dropout=0.4)[1].eval()
    torch.manual_seed(11)
    x, state = _inputs(layer)
    without, _, _ = run_layer(layer, x, state, LENGTHS)
    assert not torch.allclose(without[0], expected[0])  # the masks had an effect


def test_results_are_the_same_for_a_thread_count(chunked, monkeypatch):
    """float32, where summation order shows: two wavefront runs at 4 threads agree bit for bit,
    and agree with the sequential path within float32 rounding."""
    monkeypatch.setattr(wavefront, "MAX_CHUNKS", 3)
    _, fused = _layers("vanilla", 3, dtype=torch.float32)
    torch.manual_seed(5)
    x, state = _inputs(fused, torch.float32)
    runs = {}
    upstream = None
    for num_threads in (4, 4, 1):
        carousel.set_num_threads(num_threads)
        outputs, grads, upstream = run_layer(fused, x, state, LENGTHS, upstream)
        runs.setdefault(num_threads, []).append((outputs, grads))
    (first, first_grads), (again, again_grads) = runs[4]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(torch.equal(first_grads[k], again_grads[k]) for k in first_grads)
    assert_same(first, runs[1][0][0], torch.float32, "wavefront vs sequential outputs")
    assert_same(first_grads, runs[1][0][1], torch.float32, "wavefront vs sequential gradients")


@pytest.mark.parametrize("variant", ["vanilla", "gru"])
def test_gradcheck_and_gradgradcheck(variant, chunked, monkeypatch):
    """First derivatives from the chunked backward kernels; second ones through the reference
    twin (the backward pass differentiated)."""
    monkeypatch.setattr(wavefront, "MAX_CHUNKS", 2)
    carousel.set_num_threads(2)
    _, fused = _layers(variant, 2)
    x = torch.randn(3, 2, INPUT, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, HIDDEN, dtype=torch.float64, requires_grad=True)
    hx = (h0, torch.randn_like(h0, requires_grad=True)) if variant == "vanilla" else (h0,)
    lengths = torch.tensor([3, 2])

    def function(x, *hx):
        output, final = fused(x, hx if len(hx) > 1 else hx[0], lengths=lengths)
        return (output, *(final if isinstance(final, tuple) else (final,)))

    before = dict(chunked)
    assert torch.autograd.gradcheck(function, (x, *hx))
    assert _ran(chunked, before)[1] > 0
    assert torch.autograd.gradgradcheck(function, (x, *hx))


def test_where_the_wavefront_does_not_run(chunked, monkeypatch):
    """One thread, one layer, a bidirectional stack, the regularisers, resets, a batch that
    shards: the sequential path (the results are checked against the reference elsewhere)."""
    x = torch.randn(STEPS, BATCH, INPUT)

    def runs(num_threads=2, reset=None, **options):
        carousel.set_num_threads(num_threads)
        layer = carousel.nn.Recurrent(INPUT, HIDDEN, backend="numba", **options).train()
        before = dict(chunked)
        layer(x, reset=reset)[0].sum().backward()
        return _ran(chunked, before)

    assert runs(num_layers=2) == (1, 1)
    assert runs(num_threads=1, num_layers=2) == (0, 0)
    assert runs(num_layers=1) == (0, 0)
    assert runs(num_layers=2, bidirectional=True) == (0, 0)
    assert runs(num_layers=2, zoneout=0.1) == (0, 0)
    assert runs(num_layers=2, reset=torch.zeros(STEPS, BATCH, dtype=torch.bool)) == (0, 0)
    monkeypatch.setattr(shards, "MIN_SHARD_ROWS", 1)
    monkeypatch.setattr(shards, "MIN_SHARD_WORK", 1)
    assert runs(num_layers=2) == (0, 0)  # the batch shards instead


def test_chunk_count_thresholds(monkeypatch):
    monkeypatch.setattr(wavefront, "BLAS", "mkl")
    rows, work = wavefront.MIN_CHUNK_ROWS, wavefront.MIN_CHUNK_WORK
    big = [work * 1000] * 2
    monkeypatch.setattr(wavefront, "ENABLED", False)
    assert wavefront.chunk_count(1000, 1, big, 2) == 1  # off unless enabled
    monkeypatch.setattr(wavefront, "ENABLED", True)
    assert wavefront.chunk_count(1000, 1, big, 2) == wavefront.MAX_CHUNKS
    assert wavefront.chunk_count(1000, 1, big, 1) == 1  # one thread
    assert wavefront.chunk_count(1000, 1, big[:1], 2) == 1  # one layer
    assert wavefront.chunk_count(3 * rows, 1, big, 2) == 3  # steps x batch per chunk
    assert wavefront.chunk_count(1000, 1, [work * 1000, work * 2], 2) == 2  # the lightest layer
    assert wavefront.chunk_count(1000, 1, [work * 1000, work], 2) == 1
    monkeypatch.setattr(wavefront, "BLAS", "openblas")
    assert wavefront.chunk_count(1000, 1, big, 2) == 1
