"""Independent NumPy forward passes, written straight from the papers' equations.

They share no code with carousel: they read parameters by name and recompute the published
equations one unit at a time, in float64. The cell tests use them to check what the reference
backend computes for every LSTM variant.
"""

from __future__ import annotations

import numpy as np

SQUASH = {
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "hard_sigmoid": lambda x: np.clip(x, 0.0, 1.0),
    "tanh": np.tanh,
    "identity": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "g1997": lambda x: 4.0 / (1.0 + np.exp(-x)) - 2.0,
    "h1997": lambda x: 2.0 / (1.0 + np.exp(-x)) - 1.0,
}


def lstm_forward(spec, params: dict[str, np.ndarray], x: np.ndarray, hidden: int):
    """One direction of one LSTM layer, one sequence ``x`` of shape ``(T, I)``, zero initial state.

    Follows Greff et al. (2017), eqs. of the vanilla (peephole) LSTM, with each variant's change,
    and Hochreiter & Schmidhuber (1997) for memory blocks and gate feedback. Returns ``(T, H)``.
    """
    sigma = SQUASH[spec.gate_activation]
    g, h = SQUASH[spec.candidate_activation], SQUASH[spec.output_activation]
    blocks = hidden // spec.block_size
    sizes = {"i": blocks, "f": blocks, "o": blocks, "g": hidden}
    rows, start = {}, 0
    for name in spec.gates:
        rows[name] = slice(start, start + sizes[name])
        start += sizes[name]
    w, r = params["weight_ih"], params["weight_hh"]
    has_bias = "bias" in params or "bias_ih" in params
    bias = (
        params["bias"] if "bias" in params else params.get("bias_ih", 0) + params.get("bias_hh", 0)
    )
    peep = {}
    if "weight_peephole" in params:
        peep = dict(
            zip([n for n in spec.gates if n in "ifo"], params["weight_peephole"], strict=True)
        )
    cell_of_block = np.arange(hidden) // spec.block_size

    y_prev = np.zeros(hidden)
    c_prev = np.zeros(hidden)
    gates_prev = {name: np.zeros(blocks) for name in "ifo"}
    outputs = []
    for x_t in x:
        feedback = (
            [gates_prev[n] for n in spec.gates if n != "g"] if spec.gate_feedback != "none" else []
        )
        source = np.concatenate([y_prev, *feedback])
        net = {}
        for name in spec.gates:
            weights, reads = r[rows[name]], source
            if name == "g" and spec.gate_feedback == "gates":  # FGR: cell inputs do not read gates
                weights, reads = weights[:, :hidden], y_prev
            net[name] = (
                w[rows[name]] @ x_t + weights @ reads + (bias[rows[name]] if has_bias else 0)
            )

        def peephole(name, cell):
            return peep[name] * cell if name in peep else 0.0

        i = sigma(net["i"] + peephole("i", c_prev)) if "i" in spec.gates else np.ones(blocks)
        if "f" in spec.gates:
            f = sigma(net["f"] + peephole("f", c_prev))
        elif spec.coupled_input_forget:
            f = 1.0 - i
        else:
            f = np.ones(blocks)
        c = f[cell_of_block] * c_prev + i[cell_of_block] * g(net["g"])
        o = sigma(net["o"] + peephole("o", c)) if "o" in spec.gates else np.ones(blocks)
        y = o[cell_of_block] * h(c)
        outputs.append(y)
        y_prev, c_prev, gates_prev = y, c, {"i": i, "f": f, "o": o}
    return np.stack(outputs)
