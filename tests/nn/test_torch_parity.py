"""carousel.LSTM / GRU / RNN against torch.nn.LSTM / GRU / RNN: same state_dict, same outputs, same
final states, same gradients for every parameter, the input and the initial state, under random
upstream gradients for the output and every final state."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import carousel
from tests.helpers import assert_same, flatten, forward_backward

STEPS, BATCH, INPUT, HIDDEN = 5, 3, 4, 6
LENGTHS = torch.tensor([5, 2, 4])

KINDS = {
    "lstm": (torch.nn.LSTM, carousel.LSTM, {}),
    "gru": (torch.nn.GRU, carousel.GRU, {}),
    "rnn-tanh": (torch.nn.RNN, carousel.RNN, {"nonlinearity": "tanh"}),
    "rnn-relu": (torch.nn.RNN, carousel.RNN, {"nonlinearity": "relu"}),
}
CONFIGS = {
    "L1": {},
    "L2-bi": {"num_layers": 2, "bidirectional": True},
    "L3": {"num_layers": 3},
    "L1-bi-batch_first": {"bidirectional": True, "batch_first": True},
    "L2-nobias": {"num_layers": 2, "bias": False},
    "L2-bi-proj3": {"num_layers": 2, "bidirectional": True, "proj_size": 3},
}
MODES = ["padded", "lengths", "packed", "unbatched"]


def _pair(kind: str, config: dict, dtype, backend: str):
    torch_cls, ours_cls, extra = KINDS[kind]
    torch.manual_seed(1)
    theirs = torch_cls(INPUT, HIDDEN, dtype=dtype, **extra, **config)
    ours = ours_cls(INPUT, HIDDEN, dtype=dtype, backend=backend, **extra, **config)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def _state(kind, module, dtype, batched=True):
    stacked = module.num_layers * (2 if module.bidirectional else 1)
    out = module.proj_size if getattr(module, "proj_size", 0) else module.hidden_size
    lead = (stacked, BATCH) if batched else (stacked,)
    h = torch.randn(*lead, out, dtype=dtype, requires_grad=True)
    if kind != "lstm":
        return h
    return (h, torch.randn(*lead, module.hidden_size, dtype=dtype, requires_grad=True))


# proj_size exists for LSTM only (its rejection for the others is tested in test_errors).
CASES = [
    pytest.param(kind, config, id=f"{kind}-{name}")
    for kind in KINDS
    for name, config in CONFIGS.items()
    if kind == "lstm" or "proj_size" not in config
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("kind", "config"), CASES)
@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_matches_torch(kind, config, mode, backend, dtype):
    theirs, ours = _pair(kind, config, dtype, backend)
    batch_first = config.get("batch_first", False)
    x = torch.randn(STEPS, BATCH, INPUT, dtype=dtype)
    hx = _state(kind, theirs, dtype, batched=mode != "unbatched")
    if mode == "unbatched":
        x = x[:, 0]
    elif batch_first:
        x = x.transpose(0, 1).contiguous()
    x.requires_grad_(True)

    def run_torch(x, hx):
        if mode in ("lengths", "packed"):
            packed = pack_padded_sequence(x, LENGTHS, batch_first=batch_first, enforce_sorted=False)
            output, state = theirs(packed, hx)
            if mode == "lengths":
                output, _ = pad_packed_sequence(output, batch_first=batch_first, total_length=STEPS)
            return output, state
        return theirs(x, hx)

    def run_ours(x, hx):
        if mode == "packed":
            packed = pack_padded_sequence(x, LENGTHS, batch_first=batch_first, enforce_sorted=False)
            return ours(packed, hx)
        return ours(x, hx, lengths=LENGTHS if mode == "lengths" else None)

    shapes_source = run_torch(x, hx)

    upstream = [torch.randn_like(t) for t in flatten(shapes_source)]
    wrapped_torch = _Call(theirs, run_torch)
    wrapped_ours = _Call(ours, run_ours)
    expected_out, expected_grads = forward_backward(wrapped_torch, (x, hx), upstream)
    actual_out, actual_grads = forward_backward(wrapped_ours, (x, hx), upstream)
    assert_same(actual_out, expected_out, dtype, "outputs and final states")
    assert_same(actual_grads, expected_grads, dtype, "gradients")


class _Call(torch.nn.Module):
    """Wrap a module and a call function so forward_backward sees one module."""

    def __init__(self, module, call):
        super().__init__()
        self.module = module
        self.call = call

    def forward(self, x, hx):
        return self.call(x, hx)


@pytest.mark.parametrize("kind", KINDS)
def test_seeded_initialisation_equals_torch(kind):
    torch_cls, ours_cls, extra = KINDS[kind]
    config = {"num_layers": 2, "bidirectional": True}
    if kind == "lstm":
        config["proj_size"] = 2
    torch.manual_seed(7)
    theirs = torch_cls(INPUT, HIDDEN, **extra, **config)
    torch.manual_seed(7)
    ours = ours_cls(INPUT, HIDDEN, **extra, **config)
    names = [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_parameters()] == names
    for (name, p), q in zip(theirs.named_parameters(), ours.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_dropout_between_layers_is_active_in_training_only():
    layer = carousel.LSTM(INPUT, HIDDEN, num_layers=2, dropout=0.5, backend="reference")
    x = torch.randn(STEPS, BATCH, INPUT)
    layer.eval()
    first, _ = layer(x)
    second, _ = layer(x)
    assert torch.equal(first, second)
    layer.train()
    torch.manual_seed(3)
    dropped, _ = layer(x)
    assert not torch.allclose(dropped, first)


def test_all_weights_and_flatten_parameters_as_torch():
    theirs, ours = _pair("lstm", {"num_layers": 2, "bidirectional": True}, torch.float32, "auto")
    ours.flatten_parameters()
    assert [[p.shape for p in group] for group in ours.all_weights] == [
        [p.shape for p in group] for group in theirs.all_weights
    ]
