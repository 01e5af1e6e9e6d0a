"""The cost of the layer options (``carousel bench --options``): each regulariser, layer
normalisation and state resets against the same layer without them, on the numba backend, in one
process; and the layer-norm LSTM against the reference loop.

For every cell and shape ``(B, T, I, H)`` it builds one layer per option with the same weights
(the layer-norm one has its gains and shifts on top), in training mode, so the masks are drawn on
every call as in training, and times them interleaved
(:func:`carousel.benchmarks.harness.measure`): a forward pass under ``torch.no_grad()`` and a
forward plus backward pass with a fixed random upstream gradient. Each option's column is its
median time over the plain layer's. The reference loop runs the layer-norm cell, timed apart.
"""

from __future__ import annotations

import statistics

import torch

from carousel.benchmarks.harness import Runner, measure, ms, ratio

OPTIONS = {
    "layer_norm": {"layer_norm": True},
    "recurrent_dropout": {"recurrent_dropout": 0.25},
    "candidate_dropout": {"candidate_dropout": 0.25},
    "zoneout": {"zoneout": 0.1},
    "weight_drop": {"weight_drop": 0.5},
    "reset": {},
}
"""Each option as timed; ``reset`` restarts 1 % of the (step, sequence) pairs."""
RESET_RATE = 0.01
CELLS = ("vanilla", "gru", "slstm")


class _WithReset(torch.nn.Module):
    """The layer called with a fixed ``reset`` mask."""

    def __init__(self, layer: torch.nn.Module, reset: torch.Tensor) -> None:
        super().__init__()
        self.layer, self.reset = layer, reset

    def forward(self, x):
        return self.layer(x, reset=self.reset)


def runners(cell, shape, dtype, reference: bool) -> list[Runner]:
    """The plain layer, one per option, and (``reference``) the layer-norm cell on the reference
    backend; same weights, input and upstream gradient."""
    import carousel

    batch, steps, inputs, hidden = shape
    torch.manual_seed(0)

    def layer(backend="numba", **options):
        built = carousel.nn.Recurrent(
            inputs, hidden, variant=cell, backend=backend, dtype=dtype, **options
        )
        built.load_state_dict(plain.state_dict(), strict=False)
        return built

    plain = carousel.nn.Recurrent(inputs, hidden, variant=cell, backend="numba", dtype=dtype)
    layers = {"none": plain}
    for name, options in OPTIONS.items():
        try:
            layers[name] = layer(**options)
        except ValueError:  # an option the cell does not take (the sLSTM's), left out
            continue
    generator = torch.Generator().manual_seed(0)
    reset = torch.rand(steps, batch, generator=generator) < RESET_RATE
    layers["reset"] = _WithReset(layers["reset"], reset)
    if reference and "layer_norm" in layers:
        layers["reference"] = layer("reference", layer_norm=True)
    x = torch.randn(steps, batch, inputs, dtype=dtype, requires_grad=True)
    upstream = torch.randn(steps, batch, hidden, dtype=dtype)
    return [Runner(name, module, x, upstream) for name, module in layers.items()]


def benchmark(cells, shapes, dtype, seconds, reference, log=print) -> list[dict]:
    """Time every option on every cell and shape; one row per pair."""
    rows = []
    for shape in shapes:
        for cell in cells:
            timed = runners(cell, shape, dtype, reference)
            measure(timed, seconds)
            median = {r.name: statistics.median(r.backward_times) for r in timed}
            forward = {r.name: statistics.median(r.forward_times) for r in timed}
            row = {
                "cell": cell,
                "shape": shape,
                "plain": median["none"],
                "plain_forward": forward["none"],
                "ratios": {n: median[n] / median["none"] for n in OPTIONS if n in median},
                "forward_ratios": {n: forward[n] / forward["none"] for n in OPTIONS if n in median},
                "reference": median.get("reference"),
                "layer_norm": median.get("layer_norm"),
                "repeats": len(timed[0].backward_times),
            }
            rows.append(row)
            log(line(row))
    return rows


def line(row: dict) -> str:
    """One row of the markdown table."""
    b, t, i, h = row["shape"]
    speedup = row["reference"] / row["layer_norm"] if row["reference"] else None
    timed = row["ratios"]
    cells = [
        row["cell"],
        f"{b}x{t}x{i}x{h}",
        ms(row["plain"]),
        *(
            f"{ratio(timed[name])} ({ratio(row['forward_ratios'][name])})" if name in timed else "-"
            for name in OPTIONS
        ),
        ms(row["reference"]),
        ratio(speedup),
    ]
    return "| " + " | ".join(cells) + " |"


TABLE_HEADER = (
    "| cell | BxTxIxH | plain fwd+bwd ms | "
    + " | ".join(OPTIONS)
    + " | layer_norm on reference, ms | layer_norm: numba vs reference |\n"
    + "|---|---|--:|"
    + "--:|" * len(OPTIONS)
    + "--:|--:|"
)
"""Option columns: fwd+bwd time over the plain layer's (forward alone in parentheses); ``-``
where the cell refuses the option."""
