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


def layer_norm(a: np.ndarray, gain: np.ndarray, shift: np.ndarray, eps: float = 1e-5):
    """Ba, Kiros & Hinton (2016), eqs. (3)-(4): the mean and standard deviation over the summed
    inputs of one layer, then a gain and a bias."""
    mean = a.sum() / a.size
    deviation = np.sqrt(((a - mean) ** 2).sum() / a.size + eps)
    return gain * (a - mean) / deviation + shift


def lstm_forward(spec, params: dict[str, np.ndarray], x: np.ndarray, hidden: int, masks=None):
    """One direction of one LSTM layer, one sequence ``x`` of shape ``(T, I)``, zero initial state.

    Follows Greff et al. (2017), eqs. of the vanilla (peephole) LSTM, with each variant's change,
    and Hochreiter & Schmidhuber (1997) for memory blocks and gate feedback. With
    ``spec.layer_norm``, Ba et al. (2016)'s layer-normalised LSTM: both summed inputs
    normalised over all gates, and the cell state before the output squashing. ``masks`` (a dict,
    optional): ``recurrent`` ``(H,)`` multiplies h_{t-1} where the recurrent weights read it (Gal &
    Ghahramani 2016), ``candidate`` ``(H,)`` the cell input (Semeniuta et al. 2016),
    ``zoneout_cell`` and ``zoneout_hidden`` ``(T, H)`` are the zoneout weights d of the previous
    c and h (Krueger et al. 2017: c_t = d c_{t-1} + (1 - d) c~_t, the same for h, where
    h~_t = o tanh(c~_t) comes from the un-zoned cell). Returns ``(T, H)``.
    """
    masks = masks or {}
    sigma = SQUASH[spec.gate_activation]
    g, h = SQUASH[spec.candidate_activation], SQUASH[spec.output_activation]
    blocks = hidden // spec.block_size
    sizes = {"i": blocks, "f": blocks, "o": blocks, "g": hidden}
    rows, start = {}, 0
    for name in spec.gates:
        rows[name] = slice(start, start + sizes[name])
        start += sizes[name]
    w, r = params["weight_ih"], params["weight_hh"]
    bias = (
        params["bias"] if "bias" in params else params.get("bias_ih", 0) + params.get("bias_hh", 0)
    )
    peep = {}
    if "weight_peephole" in params:
        peep = dict(
            zip([n for n in spec.gates if n in "ifo"], params["weight_peephole"], strict=True)
        )
    cell_of_block = np.arange(hidden) // spec.block_size
    keep_h = masks.get("recurrent", np.ones(hidden))
    keep_g = masks.get("candidate", np.ones(hidden))

    y_prev = np.zeros(hidden)
    c_prev = np.zeros(hidden)
    gates_prev = {name: np.zeros(blocks) for name in "ifo"}
    outputs = []
    for t, x_t in enumerate(x):
        feedback = (
            [gates_prev[n] for n in spec.gates if n != "g"] if spec.gate_feedback != "none" else []
        )
        source = np.concatenate([keep_h * y_prev, *feedback])
        from_input = w @ x_t
        from_state = np.zeros(start)
        for name in spec.gates:
            weights, reads = r[rows[name]], source
            if name == "g" and spec.gate_feedback == "gates":  # FGR: cell inputs do not read gates
                weights, reads = weights[:, :hidden], source[:hidden]
            from_state[rows[name]] = weights @ reads
        if spec.layer_norm:
            from_input = layer_norm(from_input, params["ln_ih_weight"], params["ln_ih_bias"])
            from_state = layer_norm(from_state, params["ln_hh_weight"], params["ln_hh_bias"])
        summed = from_input + from_state + bias
        net = {name: summed[rows[name]] for name in spec.gates}

        def peephole(name, cell):
            return peep[name] * cell if name in peep else 0.0

        i = sigma(net["i"] + peephole("i", c_prev)) if "i" in spec.gates else np.ones(blocks)
        if "f" in spec.gates:
            f = sigma(net["f"] + peephole("f", c_prev))
        elif spec.coupled_input_forget:
            f = 1.0 - i
        else:
            f = np.ones(blocks)
        c = f[cell_of_block] * c_prev + i[cell_of_block] * keep_g * g(net["g"])
        o = sigma(net["o"] + peephole("o", c)) if "o" in spec.gates else np.ones(blocks)
        shown = (
            layer_norm(c, params["ln_cell_weight"], params["ln_cell_bias"])
            if spec.layer_norm
            else c
        )
        y = o[cell_of_block] * h(shown)
        if "zoneout_cell" in masks:
            c = masks["zoneout_cell"][t] * c_prev + (1 - masks["zoneout_cell"][t]) * c
        if "zoneout_hidden" in masks:
            y = masks["zoneout_hidden"][t] * y_prev + (1 - masks["zoneout_hidden"][t]) * y
        outputs.append(y)
        y_prev, c_prev, gates_prev = y, c, {"i": i, "f": f, "o": o}
    return np.stack(outputs)


def gru_forward(
    params: dict[str, np.ndarray], x: np.ndarray, hidden: int, layer_norm_=False, masks=None
):
    """One GRU layer (Cho et al. 2014, with torch's b_hn inside the reset gate), one sequence
    ``(T, I)``, zero initial state. ``layer_norm_``: Ba et al. (2016)'s normalisation of the two
    summed inputs before their biases. ``masks`` as in :func:`lstm_forward` (``candidate``
    multiplies n_t where it enters h_t; ``zoneout_hidden``). Returns ``(T, H)``."""
    masks = masks or {}
    keep_h = masks.get("recurrent", np.ones(hidden))
    keep_n = masks.get("candidate", np.ones(hidden))
    h_prev = np.zeros(hidden)
    outputs = []
    for t, x_t in enumerate(x):
        from_input = params["weight_ih"] @ x_t
        from_state = params["weight_hh"] @ (keep_h * h_prev)
        if layer_norm_:
            from_input = layer_norm(from_input, params["ln_ih_weight"], params["ln_ih_bias"])
            from_state = layer_norm(from_state, params["ln_hh_weight"], params["ln_hh_bias"])
        a = from_input + params["bias_ih"]
        b = from_state + params["bias_hh"]
        reset = SQUASH["sigmoid"](a[:hidden] + b[:hidden])
        update = SQUASH["sigmoid"](a[hidden : 2 * hidden] + b[hidden : 2 * hidden])
        new = np.tanh(a[2 * hidden :] + reset * b[2 * hidden :])
        h = (1 - update) * keep_n * new + update * h_prev
        if "zoneout_hidden" in masks:
            h = masks["zoneout_hidden"][t] * h_prev + (1 - masks["zoneout_hidden"][t]) * h
        outputs.append(h)
        h_prev = h
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
