"""The compiled 1997 network against autograd through the reference layer, and the paper's
weight counts for every row of the suite."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from carousel.experiments.faithful import Faithful, Net1997, as_output, batch_arrays
from carousel.experiments.suite import EXPERIMENTS
from carousel.tasks import build_task

SETTINGS = {
    "adding": Faithful(blocks=2, block_size=2, lr=0.5, input_gate_bias=(-3.0, -6.0)),
    "linear": Faithful(blocks=2, block_size=2, lr=0.5, output_units="linear"),
    "gates-only": Faithful(
        blocks=3,
        lr=0.3,
        init_range=0.2,
        output_gate_bias=(-1.0, -2.0, -3.0),
        biased="gates",
        output_bias=False,
    ),
    "2a": EXPERIMENTS["2a-p100"].faithful,
    "full-bptt": Faithful(blocks=2, block_size=2, lr=0.2, truncate_gradient=False),
}


def reference_update(net: Net1997, x, lengths, targets, per_step):
    """One sequence's gradient step by autograd through the reference layer."""
    settings = net.settings
    layer = net.layer()
    layer.backend = "reference"
    out_weight = torch.tensor(net.out_weight, requires_grad=True)
    out_bias = torch.tensor(net.out_bias, requires_grad=True)
    steps = int(lengths[0])
    inputs = torch.from_numpy(x[0, :steps]).unsqueeze(1)  # (T, 1, I)
    cells, _ = layer(inputs)  # (T, 1, H)
    reads = torch.cat([cells, inputs], -1) if settings.output_from_inputs else cells
    net_out = reads[:, 0] @ out_weight.T + out_bias  # (T, O)
    output = net_out if settings.output_units == "linear" else torch.sigmoid(net_out)
    if not per_step:
        output = output[-1:]
    target = torch.from_numpy(targets[0, : len(output)])
    (0.5 * (output - target).square().sum()).backward()
    lr = settings.lr
    masks = {"bias_l0": net.bias_mask, "weight_hh_l0": net.hh_mask}
    expected = {}
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_l0"):
        parameter = getattr(layer, name)
        grad = parameter.grad.numpy() * masks.get(name, 1.0)
        expected[name] = parameter.detach().numpy() - lr * grad
    expected["out_weight"] = net.out_weight - lr * out_weight.grad.numpy()
    expected["out_bias"] = net.out_bias - lr * out_bias.grad.numpy() * net.out_bias_mask
    return output.detach().numpy(), expected


@pytest.mark.parametrize("name", SETTINGS)
def test_one_online_step_equals_autograd_through_the_reference(name):
    settings = SETTINGS[name]
    task, options = (
        ("longlag", {"problem": "2a", "p": 6}) if name == "2a" else ("adding", {"length": 20})
    )
    task = build_task(task, options, seed=1)
    per_step = task.io.head == "tagger"
    net = Net1997.create(settings, task.io.input_size, task.io.output_size, seed=2)
    net.weight_hh += 0.3 * net.hh_mask * np.random.default_rng(0).standard_normal(net.hh_mask.shape)
    x, lengths, targets = batch_arrays(task.train_batch(0, 1), task.io.output_size, per_step)
    output, expected = reference_update(net, x, lengths, targets, per_step)
    got = net.train(x, lengths, targets, per_step, update="sequence")
    np.testing.assert_allclose(got[0, : len(output)], output, rtol=1e-12, atol=1e-12)
    arrays = {
        "weight_ih_l0": net.weight_ih, "weight_hh_l0": net.weight_hh, "bias_l0": net.bias,
        "out_weight": net.out_weight, "out_bias": net.out_bias,
    }  # fmt: skip
    for key, value in expected.items():
        np.testing.assert_allclose(arrays[key], value, rtol=1e-11, atol=1e-12, err_msg=key)
    assert np.all(net.bias[net.bias_mask == 0] == 0), "absent biases stay zero"
    assert np.all(net.weight_hh[net.hh_mask == 0] == 0), "absent recurrent weights stay zero"


def test_truncation_changes_the_update():
    task = build_task("adding", {"length": 20}, seed=1)
    x, lengths, targets = batch_arrays(task.train_batch(0, 1), 1, False)
    updates = []
    for truncate in (True, False):
        settings = Faithful(blocks=2, block_size=2, lr=0.5, truncate_gradient=truncate)
        net = Net1997.create(settings, 2, 1, seed=3)
        net.weight_hh *= 20
        net.train(x, lengths, targets, False)
        updates.append(net.weight_ih.copy())
    assert not np.allclose(updates[0], updates[1])


def test_predict_gives_the_outputs_training_saw_first():
    task = build_task("adding", {"length": 30}, seed=0)
    net = Net1997.create(SETTINGS["adding"], 2, 1, seed=0)
    batch = task.train_batch(0, 5)
    x, lengths, targets = batch_arrays(batch, 1, False)
    before = net.predict(x, lengths, False)  # padded batch, lengths differ
    seen = net.train(x[:1], lengths[:1], targets[:1], False)
    np.testing.assert_allclose(seen[0], before[0], rtol=1e-12)
    after = net.predict(x, lengths, False)
    assert not np.allclose(after, before)
    assert as_output(after, False).shape == (5, 1)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_row_has_the_papers_weight_count(name):
    row = EXPERIMENTS[name]
    io = build_task(row.task, row.options).io
    net = Net1997.create(row.faithful, io.input_size, io.output_size, seed=0)
    paper = row.paper or EXPERIMENTS["4-T100"].paper  # beyond the paper: the adding network
    assert net.num_weights() == paper.weights


@pytest.mark.parametrize(
    "options, message",
    [
        ({"blocks": 0, "lr": 0.1}, "blocks"),
        ({"blocks": 2, "lr": 0.0}, "lr"),
        ({"blocks": 2, "lr": 0.1, "biased": "some"}, "biased"),
        ({"blocks": 2, "lr": 0.1, "input_gate_bias": (-1.0,)}, "input_gate_bias"),
        ({"blocks": 2, "lr": 0.1, "output_units": "tanh"}, "output_units"),
        (
            {"blocks": 1, "lr": 0.1, "output_gate": False, "output_gate_bias": (-1.0,)},
            "output_gate",
        ),
    ],
)
def test_bad_settings_name_the_field(options, message):
    with pytest.raises(ValueError, match=message):
        Faithful(**options)


@pytest.mark.parametrize("name", ["adding", "gates-only", "2a", "linear"])
def test_the_papers_forward_algorithm_sums_to_the_bptt_gradient(name):
    """Truncated RTRL with its gradients summed over a sequence equals truncated BPTT."""
    settings = SETTINGS[name]
    task, options = ("longlag", {"problem": "2a", "p": 6}) if name == "2a" else ("reber", {})
    if name in ("adding", "linear"):
        task, options = "adding", {"length": 20}
    task = build_task(task, options, seed=1)
    per_step = task.io.head == "tagger"
    x, lengths, targets = batch_arrays(task.train_batch(0, 3), task.io.output_size, per_step)
    nets = [Net1997.create(settings, task.io.input_size, task.io.output_size, seed=2) for _ in "ab"]
    first = nets[0].train(x, lengths, targets, per_step, update="sequence")
    second = nets[1].train(x, lengths, targets, per_step, update="summed-steps")
    np.testing.assert_allclose(second, first, rtol=1e-12, atol=1e-13)
    for field in ("weight_ih", "weight_hh", "bias", "out_weight", "out_bias"):
        np.testing.assert_allclose(
            getattr(nets[1], field), getattr(nets[0], field), rtol=1e-11, atol=1e-13, err_msg=field
        )


def test_per_step_updates_change_the_weights_within_a_sequence():
    task = build_task("reber", {}, seed=0)
    x, lengths, targets = batch_arrays(task.train_batch(0, 1), 7, True)
    settings = EXPERIMENTS["1-3x2-lr0.5"].faithful
    summed, stepped = (Net1997.create(settings, 7, 7, seed=0) for _ in range(2))
    seen_summed = summed.train(x, lengths, targets, True, update="summed-steps")
    seen_stepped = stepped.train(x, lengths, targets, True, update="step")
    np.testing.assert_allclose(seen_stepped[0, 0], seen_summed[0, 0], rtol=1e-12)  # same start
    assert not np.allclose(seen_stepped[0, 1 : lengths[0]], seen_summed[0, 1 : lengths[0]])
    assert not np.allclose(stepped.out_weight, summed.out_weight)
