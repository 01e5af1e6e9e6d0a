r"""Sequence to sequence: an encoder reads the source, a decoder writes the target.

The encoder's final state (after each source's last step) is the decoder's initial state
(Sutskever et al. 2014). In training the decoder reads the true previous target token (teacher
forcing); at inference it reads its own previous output, chosen greedily or by beam search.

Shapes: source ``(B, S)`` token ids, ``mask`` ``(B, S)``; decoder input ``(B, T)`` token ids
(``start_token`` followed by the target without its last token); output logits ``(B, T, V)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from carousel.models.heads import Encoder


def _select(state, index: Tensor):
    """The batch rows ``index`` of a layer state (a tensor or a tuple, each ``(L * D, B, H)``)."""
    if isinstance(state, tuple):
        return tuple(s.index_select(1, index) for s in state)
    return state.index_select(1, index)


class Seq2Seq(nn.Module):
    """Encoder-decoder over token sequences.

    Args:
        encoder: reads the source; an :class:`Encoder` with an embedding, one direction.
        decoder: writes the target; an :class:`Encoder` with an embedding over the target
            vocabulary, whose layer has the encoder's cell, sizes and number of layers.
        start_token: the decoder's first input.
        end_token: ends an output sequence.
    """

    def __init__(
        self, encoder: Encoder, decoder: Encoder, start_token: int, end_token: int
    ) -> None:
        super().__init__()
        for name, part in (("encoder", encoder), ("decoder", decoder)):
            if part.embedding is None:
                raise ValueError(f"the {name} of a Seq2Seq needs an embedding (vocab_size > 0)")
            if part.layer.bidirectional:
                raise ValueError(
                    f"the {name} of a Seq2Seq must be unidirectional: the decoder starts from the "
                    "encoder's final state"
                )
        shape = lambda layer: (  # noqa: E731
            layer.spec.state_names,
            layer.spec.state_sizes(layer.hidden_size, layer.proj_size),
            layer.num_layers,
        )
        if shape(encoder.layer) != shape(decoder.layer):
            raise ValueError(
                "the decoder starts from the encoder's final state, so their states must match; got "
                f"encoder {shape(encoder.layer)} and decoder {shape(decoder.layer)} (names, sizes, layers)"
            )
        vocab_size = decoder.embedding.num_embeddings
        for name, token in (("start_token", start_token), ("end_token", end_token)):
            if not 0 <= token < vocab_size:
                raise ValueError(
                    f"{name} must be a target token id in [0, {vocab_size}); got {token}"
                )
        self.encoder = encoder
        self.decoder = decoder
        self.output = nn.Linear(decoder.output_size, vocab_size)
        self.start_token = start_token
        self.end_token = end_token

    def forward(self, x: tuple[Tensor, Tensor], mask: Tensor | None = None, state=None):
        """Teacher-forced logits ``(B, T, V)`` for ``x = (source, decoder_input)``; the returned
        state is ``None`` (a seq2seq batch does not continue the previous one)."""
        if not isinstance(x, tuple) or len(x) != 2:
            raise TypeError("x must be a tuple (source, decoder_input) for a Seq2Seq model")
        source, decoder_input = x
        _, encoded = self.encoder(source, mask, state)
        output, _ = self.decoder(decoder_input, None, encoded)  # (B, T, H_out)
        return self.output(output), None

    def _next(self, tokens: Tensor, state) -> tuple[Tensor, object]:
        """Log-probabilities ``(N, V)`` of the token after ``tokens`` ``(N,)``, and the new state."""
        output, state = self.decoder(tokens.unsqueeze(1), None, state)  # (N, 1, H_out)
        return F.log_softmax(self.output(output[:, 0]), dim=-1), state

    @torch.no_grad()
    def greedy(self, source: Tensor, mask: Tensor | None = None, max_length: int = 50) -> Tensor:
        """The most likely token at every step, ``(B, L)`` with ``L <= max_length``; after its
        ``end_token`` a row holds ``end_token``."""
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1; got {max_length}")
        _, state = self.encoder(source, mask)
        last = torch.full((source.shape[0],), self.start_token, device=source.device)
        finished = torch.zeros_like(last, dtype=torch.bool)
        tokens = []
        for _ in range(max_length):
            log_probs, state = self._next(last, state)  # (B, V)
            last = torch.where(finished, self.end_token, log_probs.argmax(-1))
            tokens.append(last)
            finished = finished | (last == self.end_token)
            if bool(finished.all()):
                break
        return torch.stack(tokens, dim=1)

    @torch.no_grad()
    def beam_search(
        self, source: Tensor, mask: Tensor | None = None, beam_width: int = 4, max_length: int = 50
    ) -> tuple[Tensor, Tensor]:
        """Beam search for the output of highest total log-probability.

        Keeps the ``beam_width`` best prefixes at each step; a prefix that emitted ``end_token``
        is finished and keeps its score. No length normalisation. ``beam_width=1`` is greedy
        decoding.

        Returns:
            ``(tokens (B, L), scores (B,))``: the best output of each source (``end_token``
            repeated after it ends) and its log-probability.
        """
        if beam_width < 1 or max_length < 1:
            raise ValueError(
                f"beam_width and max_length must be >= 1; got {beam_width}, {max_length}"
            )
        batch, beams = source.shape[0], beam_width
        _, state = self.encoder(source, mask)
        rows = torch.arange(batch, device=source.device).repeat_interleave(beams)  # (B*K,)
        state = _select(state, rows)
        scores = torch.full((batch, beams), float("-inf"), device=source.device)
        scores[:, 0] = 0.0  # one live prefix per source at the start
        last = torch.full((batch * beams,), self.start_token, device=source.device)
        finished = torch.zeros(batch * beams, dtype=torch.bool, device=source.device)
        history = torch.empty(batch * beams, 0, dtype=torch.long, device=source.device)
        for _ in range(max_length):
            log_probs, state = self._next(last, state)  # (B*K, V)
            vocab = log_probs.shape[1]
            # A finished prefix continues only with end_token, at no cost.
            log_probs = torch.where(finished.unsqueeze(1), float("-inf"), log_probs)
            log_probs[finished, self.end_token] = 0.0
            total = (scores.reshape(-1, 1) + log_probs).reshape(batch, beams * vocab)
            scores, choice = total.topk(beams, dim=1)  # (B, K)
            origin = (
                choice // vocab + torch.arange(batch, device=source.device).unsqueeze(1) * beams
            ).reshape(-1)
            last = (choice % vocab).reshape(-1)  # (B*K,)
            history = torch.cat([history[origin], last.unsqueeze(1)], dim=1)
            state = _select(state, origin)
            finished = finished[origin] | (last == self.end_token)
            if bool(finished.all()):
                break
        best = scores.argmax(1)  # (B,)
        chosen = torch.arange(batch, device=source.device) * beams + best
        return history[chosen], scores.gather(1, best.unsqueeze(1)).squeeze(1)

    @torch.no_grad()
    def log_probability(self, source: Tensor, output: Tensor, mask: Tensor | None = None) -> Tensor:
        """Teacher-forced log-probability ``(B,)`` of ``output`` ``(B, L)`` up to and including
        each row's first ``end_token`` (all ``L`` tokens if it has none)."""
        start = torch.full_like(output[:, :1], self.start_token)
        logits, _ = self((source, torch.cat([start, output[:, :-1]], dim=1)), mask)
        token_log_probs = F.log_softmax(logits, -1).gather(2, output.unsqueeze(2)).squeeze(2)
        ended = (output == self.end_token).long().cumsum(1)  # (B, L)
        counted = (ended == 0) | ((ended == 1) & (output == self.end_token))
        return (token_log_probs * counted).sum(1)
