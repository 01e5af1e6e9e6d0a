"""The kernel registry: selection, overrides, and the reference backend's sequence helpers."""

from __future__ import annotations

import pytest
import torch

import carousel
from carousel import kernels
from carousel.cells import make_spec
from carousel.kernels.reference import reverse_padded


def _work(variant="vanilla", **changes):
    fields = dict(
        spec=make_spec(variant),
        device=torch.device("cpu"),
        dtype=torch.float32,
        steps=10,
        batch=2,
        input_size=3,
        hidden_size=4,
        proj_size=0,
        num_layers=1,
        num_directions=1,
        has_lengths=False,
    )
    fields.update(changes)
    return kernels.Workload(**fields)


def test_auto_prefers_a_fused_backend_and_falls_back_to_reference():
    assert kernels.select("auto", _work("vanilla")).name != "reference"
    assert kernels.select("auto", _work("peephole")).name != "torch-native"
    assert kernels.select("reference", _work("vanilla")).name == "reference"


def test_environment_variable_overrides_auto(monkeypatch):
    monkeypatch.setenv("CAROUSEL_BACKEND", "reference")
    assert kernels.select("auto", _work("vanilla")).name == "reference"
    monkeypatch.setenv("CAROUSEL_BACKEND", "bogus")
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        kernels.select("auto", _work("vanilla"))


def test_reverse_padded_reverses_within_each_length_and_is_an_involution():
    x = torch.arange(10.0).reshape(5, 2, 1)
    lengths = torch.tensor([5, 3])
    reversed_ = reverse_padded(x, lengths)
    assert reversed_[:, 0, 0].tolist() == [8, 6, 4, 2, 0]
    assert reversed_[:, 1, 0].tolist() == [5, 3, 1, 7, 9]
    assert torch.equal(reverse_padded(reversed_, lengths), x)


def test_outputs_past_each_length_are_zero_and_states_are_at_the_last_valid_step():
    layer = carousel.LSTM(3, 4, bidirectional=True, variant="peephole", backend="reference")
    x = torch.randn(6, 2, 3)
    output, (h, _) = layer(x, lengths=torch.tensor([6, 3]))
    assert torch.all(output[3:, 1] == 0)
    short, (h_short, _) = layer(x[:3, 1:])
    torch.testing.assert_close(output[:3, 1], short[:, 0])
    torch.testing.assert_close(h[:, 1], h_short[:, 0])
