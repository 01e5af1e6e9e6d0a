"""A first look at carousel: a drop-in torch.nn.LSTM, the variants, and the 1997 cell.

Run with ``make demo`` or ``python examples/quickstart.py``.
"""

import torch

import carousel

torch.manual_seed(0)
x = torch.randn(50, 8, 3)  # (L, N, H_in)

# 1. The same layer as torch.nn.LSTM: same parameters, same outputs.
theirs = torch.nn.LSTM(3, 16, num_layers=2, bidirectional=True)
ours = carousel.LSTM(3, 16, num_layers=2, bidirectional=True)
ours.load_state_dict(theirs.state_dict())
difference = (ours(x)[0] - theirs(x)[0]).abs().max().item()
print(f"carousel.LSTM vs torch.nn.LSTM, largest output difference: {difference:.1e}")

# 2. Every variant of the family, one keyword away.
for variant in sorted(carousel.VARIANTS):
    layer = carousel.nn.Recurrent(3, 16, variant=variant)
    output, _ = layer(x)
    print(f"  {variant:9s} {layer.num_weights():5d} weights  output {tuple(output.shape)}")

# 3. The original LSTM of 1997: memory blocks, no forget gate, truncated gradient.
cell_1997 = carousel.LSTM(
    2,
    4,
    variant="1997",
    block_size=2,
    truncate_gradient=True,
    init=[carousel.init.uniform(0.1), carousel.init.gate_bias("i", [-3, -6])],
)
print(
    f"1997 LSTM, 2 blocks of 2 cells on 2 inputs: {cell_1997.num_weights()} weights "
    "(the adding problem's 93 minus the 5 of the output unit)"
)
