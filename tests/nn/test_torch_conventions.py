"""Conventions of torch.nn that code written for it relies on: empty batches, cells of width 0,
PackedSequence in every layout torch accepts, exceptions catchable as torch's, and the flat weight
lists. Oracle: torch.nn with the same state_dict."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pack_sequence

import carousel
from carousel.errors import InputError, InputTypeError
from tests.helpers import assert_same, flatten, forward_backward

BACKENDS = ["reference", "numba", "auto"]
PAIRS = {
    "lstm": (torch.nn.LSTM, carousel.LSTM),
    "gru": (torch.nn.GRU, carousel.GRU),
    "rnn": (torch.nn.RNN, carousel.RNN),
}


def _pair(kind, backend, **options):
    theirs = PAIRS[kind][0](3, 4, **options)
    ours = PAIRS[kind][1](3, 4, backend=backend, **options)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", PAIRS)
def test_an_empty_batch_gives_torchs_empty_results(kind, backend):
    theirs, ours = _pair(kind, backend, num_layers=2, bidirectional=True)
    x = torch.randn(5, 0, 3, requires_grad=True)
    upstream = [torch.randn_like(t) for t in flatten(theirs(x))]
    expected = forward_backward(theirs, (x,), upstream)
    actual = forward_backward(ours, (x,), upstream)
    assert [t.shape for t in actual[0]] == [t.shape for t in expected[0]]
    assert_same(actual[1], expected[1])


@pytest.mark.parametrize(
    ("ours_cls", "theirs_cls"),
    [
        (carousel.LSTMCell, torch.nn.LSTMCell),
        (carousel.GRUCell, torch.nn.GRUCell),
        (carousel.RNNCell, torch.nn.RNNCell),
    ],
)
def test_cells_of_width_zero_and_empty_batches(ours_cls, theirs_cls):
    for input_size, hidden_size, batch in [(3, 0, 2), (0, 4, 2), (3, 4, 0)]:
        theirs = theirs_cls(input_size, hidden_size)
        ours = ours_cls(input_size, hidden_size)
        ours.load_state_dict(theirs.state_dict())
        x = torch.randn(batch, input_size)
        for a, b in zip(flatten(ours(x)), flatten(theirs(x)), strict=True):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b)


def _packings():
    x = torch.randn(5, 3, 3)
    yield "full-sorted", pack_padded_sequence(x, [5, 5, 5])
    yield "full-unsorted", pack_padded_sequence(x, [5, 5, 5], enforce_sorted=False)
    yield "sorted", pack_padded_sequence(x, [5, 4, 2])
    yield "unsorted", pack_padded_sequence(x, [2, 5, 4], enforce_sorted=False)
    yield (
        "batch_first",
        pack_padded_sequence(x.transpose(0, 1), [3, 5, 1], batch_first=True, enforce_sorted=False),
    )
    yield "one-sequence", pack_sequence([torch.randn(4, 3)])
    yield (
        "pack_sequence",
        pack_sequence([torch.randn(n, 3) for n in (2, 5, 3)], enforce_sorted=False),
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", PAIRS)
def test_packed_sequences_in_every_layout(kind, backend):
    theirs, ours = _pair(kind, backend, num_layers=2, bidirectional=True)
    for name, packed in _packings():
        packed.data.requires_grad_(True)
        upstream = [torch.randn_like(t) for t in flatten(theirs(packed))]
        expected = forward_backward(theirs, (packed,), upstream)
        actual = forward_backward(ours, (packed,), upstream)
        assert_same(actual[0], expected[0], what=name)
        assert_same(actual[1], expected[1], what=name)
        out = ours(packed)[0]
        assert torch.equal(out.batch_sizes, packed.batch_sizes), name
        for field in ("sorted_indices", "unsorted_indices"):
            a, b = getattr(out, field), getattr(packed, field)
            assert (a is None and b is None) or torch.equal(a, b), name


@pytest.mark.parametrize(
    ("call", "torch_words"),
    [
        (
            lambda: carousel.LSTM(3, 4)(torch.randn(5, 2, 7)),
            "input.size(-1) must be equal to input_size. Expected 3, got 7",
        ),
        (
            lambda: carousel.GRU(3, 4)(torch.randn(5, 2, 3), torch.randn(1, 2, 5)),
            "Expected hidden size (1, 2, 4), got [1, 2, 5]",
        ),
        (
            lambda: carousel.LSTM(3, 4)(
                torch.randn(5, 2, 3), (torch.randn(1, 3, 4), torch.randn(1, 2, 4))
            ),
            "Expected hidden[0] size (1, 2, 4), got [1, 3, 4]",
        ),
        (
            lambda: carousel.LSTM(3, 4)(torch.randn(0, 2, 3)),
            "Expected sequence length to be larger than 0 in RNN",
        ),
        (
            lambda: carousel.LSTMCell(3, 4)(torch.randn(2, 5)),
            "input has inconsistent input_size: got 5 expected 3",
        ),
        (
            lambda: carousel.GRUCell(3, 4)(torch.randn(2, 3), torch.randn(2, 5)),
            "hidden0 has inconsistent hidden_size: got 5, expected 4",
        ),
        (
            lambda: carousel.RNNCell(3, 4)(torch.randn(2, 3), torch.randn(3, 4)),
            "Input batch size 2 doesn't match hidden0 batch size 3",
        ),
    ],
)
def test_errors_torch_raises_as_runtime_error_are_runtime_errors_with_its_wording(
    call, torch_words
):
    with pytest.raises(RuntimeError) as caught:
        call()
    assert isinstance(caught.value, ValueError)  # carousel's own contract still holds
    message = str(caught.value)
    assert message.startswith(torch_words)
    assert len(message) > len(torch_words) + 10  # followed by ours: expected and received


def test_a_dtype_mismatch_is_a_type_value_and_runtime_error():
    with pytest.raises(InputTypeError) as caught:
        carousel.LSTM(3, 4)(torch.randn(5, 2, 3, dtype=torch.float64))
    assert isinstance(caught.value, TypeError | ValueError | RuntimeError)
    assert str(caught.value).startswith("RNN input dtype (torch.float64) does not match weight")
    assert issubclass(InputError, ValueError) and issubclass(InputError, RuntimeError)


@pytest.mark.parametrize("kind", PAIRS)
def test_flat_weights_follow_torch_and_replaced_parameters(kind):
    options = {"num_layers": 2, "bidirectional": True}
    if kind == "lstm":
        options["proj_size"] = 2
    theirs, ours = _pair(kind, "auto", **options)
    assert ours._flat_weights_names == theirs._flat_weights_names
    assert [w.shape for w in ours._flat_weights] == [w.shape for w in theirs._flat_weights]
    assert [[w.shape for w in g] for g in ours.all_weights] == [
        [w.shape for w in g] for g in theirs.all_weights
    ]
    torch.nn.utils.parametrizations.weight_norm(ours, "weight_hh_l0")
    torch.nn.utils.parametrizations.weight_norm(theirs, "weight_hh_l0")
    index = ours._flat_weights_names.index("weight_hh_l0")
    torch.testing.assert_close(ours._flat_weights[index], theirs._flat_weights[index])
    x = torch.randn(4, 2, 3)
    assert_same(flatten(ours(x)), flatten(theirs(x)))


def test_a_weight_drop_assigning_plain_tensors_is_followed():
    layer = carousel.LSTM(3, 4)
    raw = layer.weight_hh_l0
    del layer._parameters["weight_hh_l0"]
    dropped = torch.nn.functional.dropout(raw, 0.5, training=True)
    layer.weight_hh_l0 = dropped
    assert layer._flat_weights[1] is dropped
    reference = carousel.LSTM(3, 4)
    reference.load_state_dict({**layer.state_dict(), "weight_hh_l0": dropped.detach()})
    x = torch.randn(4, 2, 3)
    torch.testing.assert_close(layer(x)[0], reference(x)[0])
    layer(x)[0].sum().backward()
    assert raw.grad is not None and raw.grad.abs().sum() > 0
