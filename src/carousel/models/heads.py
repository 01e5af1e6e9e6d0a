r"""Heads on top of any carousel layer: classifier, regressor, tagger, language model.

Every model here takes batch-first input and a mask, and returns ``(output, state)``::

    output, state = model(x, mask=None, state=None)

- ``x``: ``(B, T, I)`` features, or ``(B, T)`` token ids for models with an embedding;
- ``mask``: ``(B, T)`` bool, ``True`` for the steps that exist (a prefix of each row), or
  ``None`` (all steps exist); the layer skips the rest (see ``lengths=`` of
  :class:`carousel.nn.Recurrent`);
- ``state``: the layer's initial state, ``None`` for zeros; the final state is returned so that
  a stream can be continued (stateful truncated BPTT).

Dropout acts on the non-recurrent edges only: the :class:`Encoder`'s ``dropout`` on the embedded
inputs and on what the output layer reads, the layer's own ``dropout`` between stacked layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from carousel.nn import Recurrent

OUTPUT_ACTIVATIONS = {"identity": lambda z: z, "sigmoid": torch.sigmoid}


def lengths_from_mask(mask: Tensor | None, x: Tensor) -> Tensor | None:
    """``(B,)`` lengths of a prefix mask ``(B, T)`` for ``x`` ``(B, T, ...)``; ``None`` if no mask."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(
            f"mask must be a bool tensor; got {getattr(mask, 'dtype', type(mask).__name__)}"
        )
    if tuple(mask.shape) != tuple(x.shape[:2]):
        raise ValueError(
            f"mask must have the input's (B, T) = {list(x.shape[:2])}; got {list(mask.shape)}"
        )
    lengths = mask.sum(1)  # (B,)
    prefix = torch.arange(mask.shape[1], device=mask.device) < lengths.unsqueeze(1)
    if not torch.equal(prefix, mask):
        raise ValueError("mask must be True on a prefix of each row (the steps that exist)")
    return lengths.cpu()


class Encoder(nn.Module):
    """An optional token embedding followed by a batch-first recurrent layer.

    Args:
        layer: a :class:`carousel.nn.Recurrent` (or ``LSTM``/``GRU``/``RNN``) with
            ``batch_first=True``.
        vocab_size: if > 0, inputs are token ids embedded into ``layer.input_size`` features.
        dropout: on the embedded inputs and on the outputs.
    """

    def __init__(self, layer: Recurrent, vocab_size: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(layer, Recurrent):
            raise TypeError(f"layer must be a carousel.nn.Recurrent; got {type(layer).__name__}")
        if not layer.batch_first:
            raise ValueError("layer must be built with batch_first=True")
        self.layer = layer
        self.embedding = nn.Embedding(vocab_size, layer.input_size) if vocab_size else None
        self.dropout = nn.Dropout(dropout)

    @property
    def output_size(self) -> int:
        """Features of each output step: ``D * H_out``."""
        layer = self.layer
        return layer.num_directions * layer.spec.output_size(layer.hidden_size, layer.proj_size)

    def forward(self, x: Tensor, mask: Tensor | None = None, state=None):
        """``(output (B, T, D * H_out), final state)``."""
        if self.embedding is not None:
            if x.dtype != torch.long:
                raise TypeError(f"x must hold token ids (int64) for an embedding; got {x.dtype}")
            x = self.dropout(self.embedding(x))  # (B, T, E)
        output, state = self.layer(x, state, lengths=lengths_from_mask(mask, x))
        return self.dropout(output), state

    def final_hidden(self, state) -> Tensor:
        """The top layer's final output of every direction, ``(B, D * H_out)``; the reverse
        direction's is its state after reading the whole sequence back to the first step."""
        hidden = state[0] if isinstance(state, tuple) else state  # (L * D, B, H_out)
        directions = self.layer.num_directions
        return torch.cat(list(hidden[-directions:]), dim=-1)


class Head(nn.Module):
    r"""An output layer on an :class:`Encoder`: :math:`\phi(W h + b)` with ``output_activation``
    :math:`\phi` (``"identity"``: logits or a linear unit; ``"sigmoid"``: the 1997 paper's sigmoid
    output units). :meth:`readout` maps the layer's output sequence to the prediction, as
    ``forward`` does, for diagnostics that differentiate the loss by the layer's output."""

    def __init__(
        self, encoder: Encoder, output_size: int, output_activation: str = "identity"
    ) -> None:
        super().__init__()
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"output_activation must be one of {sorted(OUTPUT_ACTIVATIONS)}; got {output_activation!r}"
            )
        self.encoder = encoder
        self.output_activation = output_activation
        self.decoder = nn.Linear(encoder.output_size, output_size)

    def _predict(self, features: Tensor) -> Tensor:
        return OUTPUT_ACTIVATIONS[self.output_activation](self.decoder(features))


class Regressor(Head):
    r"""Sequence regression from the final state: :math:`\hat y = \phi(W h_T + b)`.

    ``output``: ``(B, output_size)``. With ``output_activation="sigmoid"`` the output units are
    the 1997 paper's sigmoid units, which read the memory cells only.
    """

    def forward(self, x: Tensor, mask: Tensor | None = None, state=None):
        """``(output (B, output_size), final state)``."""
        _, state = self.encoder(x, mask, state)
        final = self.encoder.dropout(self.encoder.final_hidden(state))  # (B, D * H_out)
        return self._predict(final), state

    def readout(self, output: Tensor) -> Tensor:
        """The prediction from the layer's output ``(B, T, D * H_out)`` of full-length sequences:
        the forward direction's last step and the reverse direction's first, ``(B, output_size)``."""
        width = output.shape[-1] // self.encoder.layer.num_directions
        parts = [output[:, -1, :width]]
        if self.encoder.layer.bidirectional:
            parts.append(output[:, 0, width:])
        return self._predict(self.encoder.dropout(torch.cat(parts, dim=-1)))


class Classifier(Regressor):
    r"""Sequence classification from the final state: logits :math:`W h_T + b`, ``(B, classes)``.

    Train with cross-entropy on the logits; :meth:`predict` gives the class ids.
    """

    def __init__(self, encoder: Encoder, num_classes: int) -> None:
        super().__init__(encoder, num_classes, "identity")

    @torch.no_grad()
    def predict(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """The most likely class of each sequence, ``(B,)``."""
        return self(x, mask)[0].argmax(-1)


class Tagger(Head):
    r"""An output per step (sequence labelling): :math:`\hat y_t = \phi(W h_t + b)`, ``(B, T, O)``.

    With a bidirectional layer :math:`h_t` concatenates both directions, so every output sees
    the whole sequence. Logits (``"identity"``) for labels, ``"sigmoid"`` for the 1997 paper's
    per-step sigmoid output units.
    """

    def forward(self, x: Tensor, mask: Tensor | None = None, state=None):
        """``(output (B, T, output_size), final state)``."""
        output, state = self.encoder(x, mask, state)  # (B, T, D * H_out), dropout applied
        return self._predict(output), state

    def readout(self, output: Tensor) -> Tensor:
        """The prediction from the layer's output ``(B, T, D * H_out)``: ``(B, T, output_size)``."""
        return self._predict(self.encoder.dropout(output))


class LanguageModel(Tagger):
    r"""Next-token prediction: embedding, recurrent layer, decoder to the vocabulary.

    ``output``: logits ``(B, T, V)`` of the next token at each step. The state is returned so that
    a stream continues across chunks. ``tie_weights`` shares the embedding matrix with the decoder
    (Press & Wolf 2017, Inan et al. 2017); it needs the layer's output width (``proj_size`` or
    ``hidden_size``) to equal the embedding size.
    """

    def __init__(self, encoder: Encoder, tie_weights: bool = False) -> None:
        if encoder.embedding is None:
            raise ValueError("a LanguageModel needs an encoder with an embedding (vocab_size > 0)")
        if encoder.layer.bidirectional:
            raise ValueError(
                "a language model predicts the next token from the past only; "
                "it cannot use a bidirectional layer"
            )
        super().__init__(encoder, encoder.embedding.num_embeddings)
        self.tie_weights = tie_weights
        if tie_weights:
            if encoder.output_size != encoder.embedding.embedding_dim:
                raise ValueError(
                    "tie_weights needs the layer's output width to equal the embedding size; got "
                    f"output width {encoder.output_size} and embedding size "
                    f"{encoder.embedding.embedding_dim}"
                )
            self.decoder.weight = encoder.embedding.weight

    @torch.no_grad()
    def sample(
        self,
        prompt: Tensor,
        length: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Continue ``prompt`` (``(P,)`` token ids, P >= 1) by ``length`` tokens, ``(length,)``.

        Each token is drawn from :math:`\\mathrm{softmax}(z / \\text{temperature})`;
        ``temperature=0`` takes the most likely token.
        """
        if prompt.dim() != 1 or len(prompt) == 0:
            raise ValueError(
                f"prompt must be a non-empty 1-D tensor of ids; got shape {list(prompt.shape)}"
            )
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0; got {temperature}")
        logits, state = self(prompt.unsqueeze(0))  # (1, P, V)
        tokens = []
        for _ in range(length):
            last = logits[0, -1]  # (V,)
            if temperature == 0:
                token = last.argmax()
            else:
                probabilities = F.softmax(last / temperature, dim=-1)
                token = torch.multinomial(probabilities.cpu(), 1, generator=generator)[0]
            tokens.append(int(token))
            step = torch.tensor([[int(token)]], device=prompt.device)
            logits, state = self(step, None, state)
        return torch.tensor(tokens, dtype=torch.long)
