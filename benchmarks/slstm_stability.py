"""The sLSTM's stabiliser at work: long sequences and large pre-activations, stabilised and not.

For each setting an sLSTM layer (H = 16, 4 heads, the numba backend) runs a batch of 8 random
sequences forward and backward (random upstream gradient on every output) and the table reports
whether every output, final state and gradient is finite, the largest |h|, the range of the
stabiliser m_T and the gradient norm of weight_hh. Beside it, the same weights run through the
paper's equations *without* the stabiliser (i = exp(net_i), f = exp(net_f) or sigmoid(net_f), in
PyTorch ops, same dtype): the first step at which a value stops being finite, if any.

Usage: ``PYTHONPATH=src python benchmarks/slstm_stability.py [--output docs/slstm.md]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import carousel
from carousel.commands.bench import write_block

HIDDEN, HEADS, INPUTS, BATCH = 16, 4, 4, 8


def unstabilised_first_failure(layer, x: torch.Tensor) -> int | None:
    """The first step (from 1) where the unstabilised equations give a non-finite h, or None."""
    weight_ih, weight_hh = layer.weight_ih_l0.detach(), layer.cell_weights(0).weight_hh.detach()
    bias = layer.bias_l0.detach()
    h = c = n = torch.zeros(x.shape[1], HIDDEN, dtype=x.dtype)
    exp_forget = layer.spec.forget_activation == "exp"
    for t in range(x.shape[0]):
        net = x[t] @ weight_ih.T + bias + h @ weight_hh.T
        i, f, z, o = net.split(HIDDEN, dim=-1)
        input_gate = torch.exp(i)
        forget_gate = torch.exp(f) if exp_forget else torch.sigmoid(f)
        c = forget_gate * c + input_gate * torch.tanh(z)
        n = forget_gate * n + input_gate
        h = torch.sigmoid(o) * c / n
        if not bool(torch.isfinite(h).all()):
            return t + 1
    return None


def measure(steps: int, forget: str, scale: float, dtype: torch.dtype) -> dict:
    torch.manual_seed(0)
    layer = carousel.LSTM(
        INPUTS, HIDDEN, variant="slstm", num_heads=HEADS, forget_activation=forget,
        backend="numba", dtype=dtype,
    )  # fmt: skip
    with torch.no_grad():
        for p in layer.parameters():
            p.uniform_(-scale, scale)
    x = torch.randn(steps, BATCH, INPUTS, dtype=dtype, requires_grad=True)
    output, (h, c, n, m) = layer(x)
    output.backward(torch.randn_like(output))
    tensors = [output, h, c, n, m, x.grad, *(p.grad for p in layer.parameters())]
    with torch.no_grad():
        nets = x.detach() @ layer.weight_ih_l0.T
    return {
        "finite": all(bool(torch.isfinite(t).all()) for t in tensors),
        "h_max": float(output.detach().abs().max()),
        "m_range": (float(m.detach().min()), float(m.detach().max())),
        "grad_norm": float(layer.weight_hh_l0.grad.norm()),
        "net_max": float(nets.abs().max()),
        "unstabilised": unstabilised_first_failure(layer, x.detach()),
    }


SETTINGS = [
    (10_000, "sigmoid", 0.5),
    (10_000, "exp", 0.5),
    (10_000, "sigmoid", 30.0),
    (10_000, "exp", 30.0),
    (1_000, "exp", 3.0),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="write the table into this markdown file")
    args = parser.parse_args()
    lines = [
        f"sLSTM, H = {HIDDEN}, {HEADS} heads, {INPUTS} inputs, batch {BATCH}, weights uniform in "
        "[-s, s], inputs N(0, 1); numba backend, forward and backward.",
        "",
        "| T | forget gate | s | dtype | largest net input | finite (outputs, states, gradients) "
        "| max abs h | m_T range | norm of dL/dW_hh | unstabilised equations |",
        "|--:|---|--:|---|--:|---|--:|---|--:|---|",
    ]
    for steps, forget, scale in SETTINGS:
        for dtype in (torch.float32, torch.float64):
            r = measure(steps, forget, scale, dtype)
            failure = r["unstabilised"]
            lines.append(
                f"| {steps:,} | {forget} | {scale:g} | {str(dtype)[6:]} | {r['net_max']:.3g} "
                f"| {'yes' if r['finite'] else '**no**'} | {r['h_max']:.3f} "
                f"| {r['m_range'][0]:.4g} .. {r['m_range'][1]:.4g} | {r['grad_norm']:.3g} "
                f"| {'finite' if failure is None else f'non-finite from step {failure:,}'} |"
            )
            print(lines[-1], flush=True)
    if args.output is not None:
        write_block(args.output, "slstm-stability", "\n".join(lines))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
