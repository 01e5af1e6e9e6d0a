"""Batch shards and parallel directions of the numba backend: every variant with 1, 2, 4 and 8
shards (and both directions in parallel) against the reference backend, the same results from the
same thread count, the shard ranges and the shard pool."""

from __future__ import annotations

import threading

import pytest
import torch

import carousel
from carousel.cells import VARIANTS
from carousel.kernels import threads
from carousel.kernels.numba_cpu import shards
from tests.helpers import assert_same, flatten

BATCH, STEPS, INPUT, HIDDEN = 8, 5, 3, 4
LENGTHS = torch.tensor([5, 2, 4, 5, 1, 3, 5, 4])


@pytest.fixture
def shard_counts(monkeypatch):
    """Shard down to one row per shard whatever the work; returns the list that records the
    shard count of every job run. The thread setting is restored afterwards."""
    monkeypatch.setattr(shards, "MIN_SHARD_ROWS", 1)
    monkeypatch.setattr(shards, "MIN_SHARD_WORK", 1)
    seen, forward = [], shards.forward

    def recording(jobs, keep):
        seen.extend(len(job.shards) for job in jobs)
        return forward(jobs, keep)

    monkeypatch.setattr(shards, "forward", recording)
    before = torch.get_num_threads()
    yield seen
    threads._requested = None
    torch.set_num_threads(before)


def _layers(variant, dtype, **options):
    torch.manual_seed(3)
    reference = carousel.nn.Recurrent(
        INPUT, HIDDEN, variant=variant, backend="reference", dtype=dtype, **options
    )
    with torch.no_grad():
        for p in reference.parameters():
            p.uniform_(-0.5, 0.5)
    fused = carousel.nn.Recurrent(
        INPUT, HIDDEN, variant=variant, backend="numba", dtype=dtype, **options
    )
    fused.load_state_dict(reference.state_dict())
    return reference, fused


def _run(layer, x, state, upstream=None):
    """Outputs, final states and every gradient, after backpropagating ``upstream``."""
    layer.zero_grad()
    for t in (x, *state):
        t.grad = None
    outputs = flatten(layer(x, state if len(state) > 1 else state[0], lengths=LENGTHS))
    upstream = upstream or [torch.randn_like(o) for o in outputs]
    sum((o * u).sum() for o, u in zip(outputs, upstream, strict=True)).backward()
    grads = {name: p.grad.clone() for name, p in layer.named_parameters()}
    for k, t in enumerate((x, *state)):
        grads[f"input{k}"] = torch.zeros_like(t) if t.grad is None else t.grad.clone()
    return [o.detach() for o in outputs], grads, upstream


def _compare(variant, dtype, **options):
    reference, fused = _layers(variant, dtype, **options)
    x = torch.randn(STEPS, BATCH, INPUT, dtype=dtype, requires_grad=True)
    stacked = reference.num_layers * reference.num_directions
    sizes = reference.spec.state_sizes(HIDDEN)
    state = [torch.rand(stacked, BATCH, s, dtype=dtype, requires_grad=True) for s in sizes]
    expected, expected_grads, upstream = _run(reference, x, state)
    actual, actual_grads, _ = _run(fused, x, state, upstream)
    assert_same(actual, expected, dtype, f"{variant} outputs and final states")
    assert_same(actual_grads, expected_grads, dtype, f"{variant} gradients")
    return actual, actual_grads


@pytest.mark.parametrize("num_shards", [1, 2, 4, 8])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_in_shards_matches_reference(variant, num_shards, shard_counts):
    carousel.set_num_threads(num_shards)
    _compare(variant, torch.float64)
    assert set(shard_counts) == {num_shards}


@pytest.mark.parametrize("num_shards", [2, 8])
def test_multi_head_slstm_with_exponential_forget_gate_in_shards_matches_reference(
    num_shards, shard_counts
):
    """The sLSTM's per-head recurrent GEMMs and its stabiliser state ``m``, split by rows."""
    carousel.set_num_threads(num_shards)
    _compare("slstm", torch.float64, num_heads=2, forget_activation="exp")
    assert set(shard_counts) == {num_shards}


@pytest.mark.parametrize("num_threads", [1, 2, 4, 8])
@pytest.mark.parametrize("variant", ["vanilla", "1997", "gru", "elman", "slstm"])
def test_parallel_directions_of_a_stack_match_reference(variant, num_threads, shard_counts):
    """Two bidirectional layers: both directions of a layer in one call, each on half the
    threads' worth of shards."""
    carousel.set_num_threads(num_threads)
    _compare(variant, torch.float64, num_layers=2, bidirectional=True)
    assert shard_counts == [max(1, num_threads // 2)] * 4  # 2 layers x 2 directions


def test_results_are_the_same_for_a_thread_count(shard_counts):
    """float32, where summation order shows: two runs with 4 shards agree bit for bit, and
    agree with one shard within float32 rounding."""
    results = {}
    for num_threads in (4, 4, 1):
        carousel.set_num_threads(num_threads)
        torch.manual_seed(5)
        results.setdefault(num_threads, []).append(_compare("vanilla", torch.float32))
    (first, first_grads), (again, again_grads) = results[4]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(torch.equal(first_grads[k], again_grads[k]) for k in first_grads)
    assert_same(first_grads, results[1][0][1], torch.float32, "4 shards vs 1")


def test_shard_ranges_cover_the_batch_one_shard_per_thread():
    assert shards.split(10, 4) == ((0, 2), (2, 5), (5, 7), (7, 10))
    large = shards.MIN_SHARD_WORK * 64
    assert shards.shard_ranges(64, large, num_threads=8) == shards.split(64, 8)
    assert len(shards.shard_ranges(64, large, num_threads=2)) == 2
    assert len(shards.shard_ranges(1, large, num_threads=8)) == 1  # batch 1: nothing to split
    few_rows = shards.MIN_SHARD_ROWS * 3
    assert len(shards.shard_ranges(few_rows, large, num_threads=8)) == 3
    assert len(shards.shard_ranges(64, shards.MIN_SHARD_WORK, num_threads=8)) == 1  # small work


def test_run_parallel_runs_tasks_at_once_in_order_and_raises_their_error(shard_counts):
    carousel.set_num_threads(2)
    meeting = threading.Barrier(2, timeout=30)  # passes only if both tasks run at the same time
    assert threads.run_parallel(
        [lambda: meeting.wait() * 0 + 1, lambda: meeting.wait() * 0 + 2]
    ) == [1, 2]
    assert threads.run_parallel([lambda k=k: k for k in range(5)]) == [0, 1, 2, 3, 4]
    finished = []

    def fails():
        raise ValueError("shard failed")

    def slow():
        threading.Event().wait(0.05)
        finished.append(True)

    with pytest.raises(ValueError, match="shard failed"):
        threads.run_parallel([slow, fails, slow])
    assert finished == [True, True]  # every task ended before the error was raised


RESET = torch.zeros(STEPS, BATCH, dtype=torch.bool)
RESET[2, ::2] = RESET[3, 1] = RESET[1, 7] = True


@pytest.mark.parametrize("num_shards", [2, 8])
@pytest.mark.parametrize("variant", ["vanilla", "1997", "gru", "slstm"])
def test_regularisers_and_resets_in_shards_match_reference(variant, num_shards, shard_counts):
    """Every mask is split on its own batch axis: the per-sequence ones ``(B, W)``, zoneout's and
    the resets ``(T, B, ...)``; same masks for both backends from one seed."""
    carousel.set_num_threads(num_shards)
    options = {"weight_drop": 0.3}
    if variant != "slstm":
        options |= {"recurrent_dropout": 0.3, "candidate_dropout": 0.3, "zoneout": 0.2}
        options |= {"layer_norm": True}
    reference, fused = _layers(variant, torch.float64, bidirectional=True, **options)
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64, requires_grad=True)
    sizes = reference.spec.state_sizes(HIDDEN)
    state = [torch.rand(2, BATCH, s, dtype=torch.float64, requires_grad=True) for s in sizes]
    results, upstream = [], None
    for layer in (reference, fused):
        for t in (x, *state):
            t.grad = None
        torch.manual_seed(5)
        hx = state if len(state) > 1 else state[0]
        outputs = flatten(layer(x, hx, lengths=LENGTHS, reset=RESET))
        upstream = upstream or [torch.randn_like(o) for o in outputs]
        sum((o * u).sum() for o, u in zip(outputs, upstream, strict=True)).backward()
        grads = [p.grad.clone() for p in layer.parameters()] + [t.grad for t in (x, *state)]
        results.append(([o.detach() for o in outputs], grads))
    assert_same(results[1][0], results[0][0], torch.float64, f"{variant} outputs")
    assert_same(results[1][1], results[0][1], torch.float64, f"{variant} gradients")
    assert set(shard_counts) == {num_shards}
