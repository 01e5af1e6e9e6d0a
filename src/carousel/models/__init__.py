"""Models: heads on top of carousel's recurrent layers.

==================  ===========================================================================
``Regressor``       final state -> linear (-> sigmoid): one output vector per sequence
``Classifier``      final state -> logits: one class per sequence
``Tagger``          an output per step; works with bidirectional layers
``LanguageModel``   embedding -> layers -> decoder to the vocabulary, optional weight tying
``Seq2Seq``         encoder -> decoder, teacher forcing; greedy and beam-search decoding
==================  ===========================================================================

:func:`build` makes the model a task asks for (its :class:`~carousel.tasks.ModelIO`) from a
:class:`~carousel.train.config.ModelConfig`.
"""

from __future__ import annotations

import ast

from torch import nn

from carousel.cells import init as initializers
from carousel.cells.options import CELL_OPTIONS, REGULARIZER_OPTIONS, parse_zoneout
from carousel.models.heads import Classifier, Encoder, LanguageModel, Regressor, Tagger
from carousel.models.seq2seq import Seq2Seq
from carousel.nn import Recurrent

INITIALIZERS = ("uniform", "forget_bias", "chrono", "gate_bias", "orthogonal_recurrent")
"""The initialiser factories of :mod:`carousel.cells.init` that :func:`parse_init` accepts."""


def parse_init(text: str) -> list:
    """Named initialisers from text such as ``"uniform(0.1), gate_bias('i', [-3, -6])"``.

    The text is a comma-separated list of calls of :data:`INITIALIZERS` with literal arguments;
    it is parsed, never evaluated. An empty text gives no initialiser.
    """
    if not text.strip():
        return []
    try:
        calls = []
        for call in ast.parse(f"[{text}]", mode="eval").body.elts:
            if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
                raise ValueError
            if call.func.id not in INITIALIZERS:
                raise ValueError
            args = [ast.literal_eval(arg) for arg in call.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
            calls.append((getattr(initializers, call.func.id), args, kwargs))
    except (SyntaxError, ValueError, TypeError):
        raise ValueError(
            f"init must be calls of {', '.join(INITIALIZERS)} with literal arguments, "
            f'e.g. "forget_bias(1.0)" or "uniform(0.1), gate_bias(\'i\', [-3, -6])"; got {text!r}'
        ) from None
    try:
        return [factory(*args, **kwargs) for factory, args, kwargs in calls]
    except (ValueError, TypeError) as error:  # the initialiser's own message names the argument
        raise ValueError(f"init {text!r}: {error}") from None


def build(io, config) -> nn.Module:
    """The model for a task's ``io`` (:class:`~carousel.tasks.ModelIO`) with the layer, sizes
    and dropout of ``config`` (:class:`~carousel.train.config.ModelConfig`).

    Raises:
        ValueError: options that do not go together (e.g. ``tie_weights`` for a head without
            an embedding, a bidirectional language model).
    """
    cell_options = {
        name: getattr(config, name)
        for name in (*CELL_OPTIONS, *REGULARIZER_OPTIONS)
        if getattr(config, name) is not None
    }
    if isinstance(cell_options.get("zoneout"), str):
        cell_options["zoneout"] = parse_zoneout(cell_options["zoneout"])
    width = config.proj_size or config.hidden_size
    embedding_size = config.embedding_size or (width if config.tie_weights else config.hidden_size)
    if io.head in ("language_model", "seq2seq") and not io.tokens:
        raise ValueError(f"a {io.head} head reads token ids; the task's io must set tokens=True")
    if config.tie_weights and io.head != "language_model":
        raise ValueError(
            f"tie_weights applies to language models only; this task's head is {io.head!r}"
        )
    if config.bidirectional and io.head in ("language_model", "seq2seq"):
        raise ValueError(
            f"bidirectional does not apply to a {io.head} head (it must not read the future); "
            "use it with classifier, regressor or tagger heads"
        )

    init = parse_init(config.init)

    def encoder(vocab_size: int = 0) -> Encoder:
        layer = Recurrent(
            embedding_size if vocab_size else io.input_size,
            config.hidden_size,
            config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            bidirectional=config.bidirectional,
            proj_size=config.proj_size,
            variant=config.variant,
            backend=config.backend,
            init=init,
            **cell_options,
        )
        return Encoder(layer, vocab_size, config.dropout)

    vocab_size = io.input_size if io.tokens else 0
    if io.head == "regressor":
        return Regressor(encoder(vocab_size), io.output_size, io.output_activation)
    if io.head == "classifier":
        return Classifier(encoder(vocab_size), io.output_size)
    if io.head == "tagger":
        return Tagger(encoder(vocab_size), io.output_size, io.output_activation)
    if io.head == "language_model":
        return LanguageModel(encoder(io.input_size), config.tie_weights)
    return Seq2Seq(encoder(io.input_size), encoder(io.output_size), io.start_token, io.end_token)


__all__ = [
    "Classifier",
    "Encoder",
    "LanguageModel",
    "Regressor",
    "Seq2Seq",
    "Tagger",
    "build",
]
