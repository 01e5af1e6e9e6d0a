"""The worked examples of docs/architecture.md hold: a cell family added in one module runs through
the layers on the reference backend, and a backend added in one module is selected by its cost
and handed calls it cannot run."""

from __future__ import annotations

import pytest
import torch

import carousel
from carousel import kernels
from carousel.cells import FAMILIES, VARIANTS, CellSpec, Family, register_family, register_variant
from carousel.cells.activations import ACTIVATIONS
from carousel.kernels import reference, registry


def mgu_step(spec, gates_x, state, weights):
    """The minimal gated unit: f = s(W_f x + R_f h), h' = (1 - f) h + f tanh(W_h x + R_h (f h))."""
    (h,) = state
    hidden = h.shape[-1]
    forget = ACTIVATIONS[spec.gate_activation].forward(
        gates_x[:, :hidden] + h @ weights.weight_hh[:hidden].T
    )
    candidate = torch.tanh(gates_x[:, hidden:] + (forget * h) @ weights.weight_hh[hidden:].T)
    h_new = (1 - forget) * h + forget * candidate
    return h_new, (h_new,)


@pytest.fixture
def mgu_family():
    register_family(Family("mgu", ("f", "h"), mgu_step))

    @register_variant("mgu", "mgu", {"gate_activation": "sigmoid"})
    def mgu(*, gate_activation):
        """The minimal gated unit (Zhou et al. 2016)."""
        return CellSpec(
            family="mgu", variant="mgu", gates=("f", "h"), gate_activation=gate_activation
        )

    yield mgu
    del FAMILIES["mgu"], VARIANTS["mgu"]


def test_a_family_added_in_one_module_runs_through_the_layers(mgu_family):
    layer = carousel.nn.Recurrent(3, 4, num_layers=2, bidirectional=True, variant="mgu")
    assert layer.weight_hh_l0.shape == (8, 4) and layer.spec.state_names == ("h",)
    x = torch.randn(5, 2, 3, requires_grad=True)
    output, h_n = layer(x, lengths=torch.tensor([5, 3]))
    assert output.shape == (5, 2, 8) and h_n.shape == (4, 2, 4)
    output.sum().backward()
    assert x.grad.abs().sum() > 0
    work = kernels.Workload(
        spec=layer.spec, device=torch.device("cpu"), dtype=torch.float32, steps=5, batch=2,
        input_size=3, hidden_size=4, proj_size=0, num_layers=2, num_directions=2,
        has_lengths=True,
    )  # fmt: skip
    assert kernels.select("auto", work).name == "reference"
    assert "no numba kernel for the 'mgu' family" in kernels.BACKENDS["numba"].unsupported(work)
    with pytest.raises(ValueError, match="torch implements only the stock"):
        kernels.select("torch-native", work)
    cell = carousel.nn.RecurrentCell(3, 4, variant="mgu")
    assert cell(x[0].detach()).shape == (2, 4)
    double = carousel.nn.Recurrent(2, 3, variant="mgu", dtype=torch.float64)
    inputs = torch.randn(4, 1, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: double(t)[0], (inputs,))
    assert mgu_family(gate_activation="hard_sigmoid").gate_activation == "hard_sigmoid"


@pytest.fixture
def cheap_backend():
    calls = []

    def run_direction(spec, x, state, weights, lengths=None, reverse=False):
        calls.append(spec.variant)
        return reference.run_direction(spec, x, state, weights, lengths, reverse)

    def unsupported(work):
        return "it runs in eager mode only" if work.context is not None else None

    registry.register(
        registry.Backend(
            name="mine", description="a test backend", unsupported=unsupported,
            cost=lambda work: 0.01, run_direction=run_direction,
        )
    )  # fmt: skip
    yield calls
    del registry.BACKENDS["mine"]


def test_a_backend_added_in_one_module_is_selected_by_its_cost(cheap_backend):
    layer = carousel.LSTM(3, 4, variant="peephole")
    reference_layer = carousel.LSTM(3, 4, variant="peephole", backend="reference")
    reference_layer.load_state_dict(layer.state_dict())
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(layer(x)[0], reference_layer(x)[0])
    assert cheap_backend == ["peephole"]
    named = carousel.LSTM(3, 4, variant="peephole", backend="mine")
    torch.func.jacrev(lambda t: named(t)[0])(torch.randn(2, 1, 3))  # handed over: not eager
    assert cheap_backend == ["peephole"]
