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


def slstm_forward(
    params: dict[str, np.ndarray],
    x: np.ndarray,
    hidden: int,
    num_heads: int = 1,
    forget: str = "sigmoid",
    stabilised: bool = False,
):
    """The sLSTM of Beck et al. (2024), one sequence ``x`` ``(T, I)``, zero initial state, float64.

    ``stabilised=False``: the paper's eqs. 8-14 as written, with the gates :math:`i = e^{\\tilde\\imath}`
    and :math:`f = \\sigma(\\tilde f)` or :math:`e^{\\tilde f}` themselves (no stabiliser; fine
    for moderate pre-activations). ``stabilised=True``: eqs. 15-17 taken literally, with
    :math:`m_0 = 0`. The recurrent weights are applied head by head: cell ``k`` of head ``h``
    reads only the outputs of head ``h``. Returns ``(h (T, H), c (T, H), n (T, H), m (T, H))``
    (``m`` zeros when not stabilised).
    """
    w, r, b = params["weight_ih"], params["weight_hh"], params.get("bias", np.zeros(4 * hidden))
    size = hidden // num_heads
    h_prev, c_prev, n_prev, m_prev = (np.zeros(hidden) for _ in range(4))
    rows = {name: slice(k * hidden, (k + 1) * hidden) for k, name in enumerate("ifzo")}
    history = {"h": [], "c": [], "n": [], "m": []}
    for x_t in x:
        net = {}
        for name, block in rows.items():
            value = w[block] @ x_t + b[block]
            recurrent = np.zeros(hidden)
            for head in range(num_heads):
                cells = slice(head * size, (head + 1) * size)
                recurrent[cells] = r[block][cells, cells] @ h_prev[cells]
            net[name] = value + recurrent
        z, o = np.tanh(net["z"]), 1.0 / (1.0 + np.exp(-net["o"]))
        if forget == "sigmoid":
            log_f = -np.log1p(np.exp(-net["f"]))
        else:
            log_f = net["f"]
        if stabilised:
            m = np.maximum(log_f + m_prev, net["i"])
            i_gate, f_gate = np.exp(net["i"] - m), np.exp(log_f + m_prev - m)
        else:
            m = np.zeros(hidden)
            i_gate, f_gate = np.exp(net["i"]), np.exp(log_f)
        c = f_gate * c_prev + i_gate * z
        n = f_gate * n_prev + i_gate
        h = o * (c / n)
        for name, value in zip("hcnm", (h, c, n, m), strict=True):
            history[name].append(value)
        h_prev, c_prev, n_prev, m_prev = h, c, n, m
    return tuple(np.stack(history[name]) for name in "hcnm")
