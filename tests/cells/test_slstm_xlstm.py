"""Parity with the paper's reference implementation: the ``xlstm`` package's pure-PyTorch
("vanilla") sLSTM cell, with carousel's weights mapped into it explicitly.

The package's cell takes the input projection :math:`W x_t` (its layer computes it with head-wise
linear maps and a convolution, which are not part of the cell), a recurrent kernel of shape
``(num_heads, 4 D, D)`` and one bias ``(4 H,)`` laid out gate-major, ``(i, f, z, o)``, head by
head. carousel's ``weight_hh`` ``(4 H, H)`` holds the same numbers in its diagonal blocks:
``R[head, g D + k, j] = weight_hh[g H + head D + k, head D + j]``. The package computes in float32
at most (its dtypes are bfloat16, float16 and float32)."""

from __future__ import annotations

import pytest
import torch

import carousel

xlstm_cell = pytest.importorskip(
    "xlstm.blocks.slstm.cell",
    reason="the xlstm package (a test-only dependency, pip install xlstm) is not installed or "
    "does not import here",
)

HIDDEN, HEADS, INPUT, STEPS, BATCH = 8, 2, 3, 7, 4
HEAD = HIDDEN // HEADS


def _theirs(layer: carousel.LSTM):
    config = xlstm_cell.sLSTMCellConfig(
        hidden_size=HIDDEN, num_heads=HEADS, backend="vanilla", dtype="float32",
        input_shape="SBGNH", output_shape="SBH",
    )  # fmt: skip
    cell = xlstm_cell.sLSTMCell(config)
    weight_hh = layer.weight_hh_l0.detach()
    kernel = torch.empty(HEADS, 4 * HEAD, HEAD)
    for head in range(HEADS):
        cells = slice(head * HEAD, (head + 1) * HEAD)
        for gate in range(4):
            rows = slice(gate * HIDDEN + head * HEAD, gate * HIDDEN + (head + 1) * HEAD)
            kernel[head, gate * HEAD : (gate + 1) * HEAD] = weight_hh[rows, cells]
    with torch.no_grad():
        cell._recurrent_kernel_.copy_(kernel)
        cell._bias_.copy_(layer.bias_l0.detach())
    return cell


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_outputs_states_and_gradients_match_the_xlstm_package(backend):
    torch.manual_seed(0)
    ours = carousel.LSTM(INPUT, HIDDEN, variant="slstm", num_heads=HEADS, backend=backend)
    with torch.no_grad():
        for p in ours.parameters():
            p.uniform_(-0.8, 0.8)
    theirs = _theirs(ours)
    x = torch.randn(STEPS, BATCH, INPUT)
    output, state = ours(x)
    projected = (x @ ours.weight_ih_l0.T).detach().requires_grad_(True)  # (T, B, 4H): W x_t
    their_output, their_state = theirs(projected)
    torch.testing.assert_close(output, their_output)
    for index, name in enumerate("hcnm"):
        torch.testing.assert_close(state[index][0], their_state[index], msg=name)

    upstream = torch.randn_like(output)
    (output * upstream).sum().backward()
    (their_output * upstream).sum().backward()
    d_kernel = theirs._recurrent_kernel_.grad
    d_weight_hh = ours.weight_hh_l0.grad
    for head in range(HEADS):
        cells = slice(head * HEAD, (head + 1) * HEAD)
        for gate in range(4):
            rows = slice(gate * HIDDEN + head * HEAD, gate * HIDDEN + (head + 1) * HEAD)
            torch.testing.assert_close(
                d_weight_hh[rows, cells], d_kernel[head, gate * HEAD : (gate + 1) * HEAD]
            )
    torch.testing.assert_close(ours.bias_l0.grad, theirs._bias_.grad)
    # the input projection's gradient, pulled back through W, is the input weights' gradient
    d_weight_ih = projected.grad.reshape(-1, 4 * HIDDEN).T @ x.reshape(-1, INPUT)
    torch.testing.assert_close(ours.weight_ih_l0.grad, d_weight_ih, rtol=1e-4, atol=1e-5)
