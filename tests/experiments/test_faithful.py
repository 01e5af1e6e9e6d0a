"""The compiled 1997 network against autograd through the reference layer, and the paper's
weight counts for every row of the suite."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from carousel.experiments.faithful import Faithful, Net1997, Plateau, as_output, batch_arrays
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
    "error-as-written": Faithful(blocks=2, block_size=2, lr=0.5, error_factor=1.0),
    "staged-1-of-2": Faithful(blocks=2, block_size=2, lr=0.5, staged=True),
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
    (settings.error_factor * (output - target).square().sum()).backward()
    lr = settings.lr
    masks = {"bias_l0": net.bias_mask, "weight_hh_l0": net.hh_mask}
    expected = {}
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_l0"):
        parameter = getattr(layer, name)
        grad = parameter.grad.numpy() * masks.get(name, 1.0)
        expected[name] = parameter.detach().numpy() - lr * grad
    expected["out_weight"] = net.out_weight - lr * out_weight.grad.numpy() * net.out_mask
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
    if name == "staged-1-of-2":
        net.add_block()  # the second block is not in the network yet
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
    assert np.all(net.bias[net.connectivity["bias"] == 0] == 0), "absent biases stay zero"
    absent = net.connectivity["hh"] == 0
    assert np.all(net.weight_hh[absent] == 0), "absent recurrent weights stay zero"
    assert np.all(net.out_weight[net.out_mask == 0] == 0), "weights from absent cells are zero"


def test_the_error_as_written_is_the_default_rule_at_twice_the_learning_rate():
    task = build_task("adding", {"length": 20}, seed=1)
    x, lengths, targets = batch_arrays(task.train_batch(0, 4), 1, False)
    written = Faithful(blocks=2, block_size=2, lr=0.25, error_factor=1.0)
    nets = [
        Net1997.create(settings, 2, 1, seed=3)
        for settings in (written, Faithful(blocks=2, block_size=2, lr=0.5), written)
    ]
    assert nets[0].step_size == nets[1].step_size == 0.5
    for net in nets[:2]:
        net.train(x, lengths, targets, False)
    for field in ("weight_ih", "weight_hh", "bias", "out_weight", "out_bias"):
        np.testing.assert_array_equal(getattr(nets[0], field), getattr(nets[1], field))
    assert not np.allclose(nets[0].weight_ih, nets[2].weight_ih), "training changed them"


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
    if row.faithful.staged:  # the count of the network once its blocks are added
        assert net.active_blocks == 0 and net.num_weights() < paper.weights
        while net.active_blocks < row.faithful.blocks:
            net.add_block()
    assert net.num_weights() == paper.weights


@pytest.mark.parametrize("name", ["2a-p100", "2b-p100"])
def test_experiment_2_is_built_sequentially_as_the_paper_says(name):
    row = EXPERIMENTS[name]
    assert row.faithful.staged
    net = Net1997.create(row.faithful, 101, 101, seed=0)
    assert net.num_weights() == 101 * 101  # the output units read the inputs only
    net.add_block()
    assert net.num_weights() == 10_504  # + cell and input gate from the inputs, cell to outputs
    with pytest.raises(ValueError, match="add_block: all 1 blocks"):
        net.add_block()


def test_a_staged_network_without_blocks_is_the_output_units_on_the_inputs_alone():
    task = build_task("longlag", {"problem": "2a", "p": 6}, seed=0)
    settings = EXPERIMENTS["2a-p100"].faithful
    net = Net1997.create(settings, 7, 7, seed=4)
    whole = Net1997.create(dataclasses.replace(settings, staged=False), 7, 7, seed=4)
    np.testing.assert_array_equal(net.out_weight[:, 1:], whole.out_weight[:, 1:])
    assert np.all(net.out_weight[:, 0] == 0) and np.all(net.out_mask[:, 0] == 0)
    layer = (net.weight_ih.copy(), net.bias.copy(), net.weight_hh.copy())
    x, lengths, targets = batch_arrays(task.train_batch(0, 20), 7, True)
    seen = net.train(x, lengths, targets, True)
    inputs_only = 1.0 / (1.0 + np.exp(-(x[-1] @ net.out_weight[:, 1:].T)))  # (T, O)
    np.testing.assert_allclose(net.predict(x[-1:], lengths[-1:], True)[0], inputs_only, rtol=1e-12)
    assert not np.allclose(seen[-1], seen[0]), "the output units learned"
    for before, after in zip(layer, (net.weight_ih, net.bias, net.weight_hh), strict=True):
        np.testing.assert_array_equal(before, after)  # no error reached the absent block
    assert np.all(net.out_weight[:, 0] == 0)
    net.add_block()  # the cell's output weights arrive with their initial values
    np.testing.assert_array_equal(net.out_weight[:, 0], whole.out_weight[:, 0])
    assert np.all(net.out_mask == 1)


def test_blocks_are_added_one_at_a_time_with_their_connections():
    settings = Faithful(blocks=3, block_size=2, lr=0.1, staged=True)
    net = Net1997.create(settings, 4, 2, seed=0)
    whole = Net1997.create(Faithful(blocks=3, block_size=2, lr=0.1), 4, 2, seed=0)
    counts = [net.num_weights()]
    for blocks in (1, 2, 3):
        net.add_block()
        counts.append(net.num_weights())
        rows, sources, cells = net.block_units(blocks)
        assert (rows.sum(), sources.sum(), cells.sum()) == (4 * blocks, 4 * blocks, 2 * blocks)
        np.testing.assert_array_equal(net.hh_mask, rows[:, None] * sources[None, :])
        present = sources > 0  # weights from present units: their initial values; others 0
        np.testing.assert_array_equal(net.weight_hh[:, present], whole.weight_hh[:, present])
        assert np.all(net.weight_hh[:, ~present] == 0)
    # 2 output biases; each block: 4 rows x (4 inputs + 1 bias) and 2 x 2 output weights, and
    # rows x sources grow from (4b)^2: 16, 64, 144 recurrent weights
    assert counts == [2, 2 + 20 + 4 + 16, 2 + 40 + 8 + 64, 2 + 60 + 12 + 144]
    assert counts[-1] == whole.num_weights()


@pytest.mark.parametrize(
    "means, holds",
    [
        ([10.0, 9, 8, 7, 6, 5], False),  # still decreasing
        ([10.0, 5, 5, 5, 5], True),  # three windows no better than the best before them
        ([10.0, 5, 5, 5], False),  # not yet three windows after the best
        ([10.0, 5, 4.99, 5.01, 5], True),  # within the threshold of 1 % below the best
        ([10.0, 5, 4.9, 5, 5], False),  # 2 % below the best: still decreasing
        ([10.0, 5, 6, 7, 8], True),  # rising counts as not decreasing
        ([5.0, 5, 5], False),  # fewer than patience + 1 windows
    ],
)
def test_the_plateau_criterion(means, holds):
    assert Plateau(window=100, patience=3, threshold=0.01).holds(means) is holds


@pytest.mark.parametrize(
    "options, message",
    [
        ({"window": 0}, "window and patience must be >= 1"),
        ({"patience": 0}, "window and patience must be >= 1"),
        ({"threshold": 1.0}, "threshold must be in"),
        ({"threshold": -0.1}, "threshold must be in"),
    ],
)
def test_bad_plateau_settings_name_the_field(options, message):
    with pytest.raises(ValueError, match=message):
        Plateau(**options)


def test_random_input_gate_biases_in_their_own_range_leave_the_other_weights_unchanged():
    common = {"blocks": 40, "block_size": 1, "lr": 0.1, "init_range": 0.2, "biased": "gates"}
    narrow = Net1997.create(Faithful(**common, input_gate_bias_range=0.1), 7, 7, seed=5)
    wide = Net1997.create(Faithful(**common), 7, 7, seed=5)
    gates = narrow.settings.spec().gate_slices(40)
    assert np.all(np.abs(narrow.bias[gates["i"]]) <= 0.1)
    assert np.abs(wide.bias[gates["i"]]).max() > 0.1  # 40 draws from [-0.2, 0.2]
    np.testing.assert_array_equal(narrow.bias[gates["o"]], wide.bias[gates["o"]])
    for field in ("weight_ih", "weight_hh", "out_weight"):
        np.testing.assert_array_equal(getattr(narrow, field), getattr(wide, field))
    assert EXPERIMENTS["1-3x2-lr0.5"].faithful.input_gate_bias_range == 0.1


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
        ({"blocks": 1, "lr": 0.1, "input_gate_bias_range": -0.1}, "input_gate_bias_range"),
        (
            {"blocks": 1, "lr": 0.1, "input_gate_bias_range": 0.1, "input_gate_bias": (-1.0,)},
            "input_gate_bias_range needs random",
        ),
        ({"blocks": 1, "lr": 0.1, "error_factor": 0.0}, "error_factor"),
    ],
)
def test_bad_settings_name_the_field(options, message):
    with pytest.raises(ValueError, match=message):
        Faithful(**options)


@pytest.mark.parametrize("name", ["adding", "gates-only", "2a", "linear", "staged-1-of-2"])
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
    if settings.staged:
        for net in nets:
            net.add_block()
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
