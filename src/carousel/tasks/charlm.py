r"""Character-level language modelling of a text file, with stateful truncated BPTT.

The text (default: the help topics bundled with Python in ``pydoc_data.topics``, so nothing is
downloaded) is read as characters; the vocabulary is the sorted set of its characters. The first
``1 - valid_fraction - test_fraction`` of the text trains, the next ``valid_fraction`` is the
validation set (the trainer picks the best checkpoint on it) and the final ``test_fraction`` is
the held-out test set (:meth:`CharLMTask.test_batches`; without one, the validation set).

The training text is cut into ``B`` contiguous streams (``B`` = the batch size); batch ``k`` holds
the ``k``-th chunk of ``seq_len`` characters of every stream, the target of each character is the
next one. The trainer carries the hidden state from one chunk to the next (truncated BPTT over
the whole stream); when the streams are exhausted they start again and ``reset`` marks the
restart. The validation and test texts are cut into ``eval_streams`` streams the same way.

Metrics: ``loss`` (cross-entropy, nats per character), ``bpc`` (bits per character),
``accuracy`` (next character predicted exactly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from carousel.options import option
from carousel.tasks.base import Batch, ModelIO, Task


@dataclass(frozen=True)
class CharLMOptions:
    """Options of character-level language modelling."""

    text: str = option("", "UTF-8 text file to model; empty: Python's bundled pydoc_data.topics")
    seq_len: int = option(100, "characters per chunk: the truncated-BPTT length")
    valid_fraction: float = option(0.1, "final fraction of the text held out for validation")
    test_fraction: float = option(
        0.0, "final fraction of the text held out for testing (0: no test set)"
    )
    eval_streams: int = option(8, "parallel streams the validation text is cut into")
    max_chars: int = option(0, "use only the first N characters of the text (0: all)")
    target_bpc: float = option(
        0.0, "solved when validation bits per character reach this (0: never)"
    )


def default_text() -> str:
    """The help topics bundled with Python (``pydoc_data.topics``), in a fixed order."""
    from pydoc_data.topics import topics

    return "".join(topics[name] for name in sorted(topics))


def read_text(path: str) -> str:
    """The text of ``path``, with a clear error if it cannot be read as UTF-8."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"charlm option text: no such file {path!r}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(
            f"charlm option text: cannot read {path!r} as UTF-8 text ({error})"
        ) from None


class CharLMTask(Task):
    """Character-level language modelling; ``x``, ``y``: ``(B, seq_len)`` character ids."""

    name = "charlm"
    Options = CharLMOptions

    def configure(self, options: CharLMOptions) -> None:
        if options.seq_len < 1 or options.eval_streams < 1 or options.max_chars < 0:
            raise ValueError(
                "charlm options seq_len and eval_streams must be >= 1 and max_chars >= 0; got "
                f"{options.seq_len}, {options.eval_streams}, {options.max_chars}"
            )
        if not 0 < options.valid_fraction < 1:
            raise ValueError(
                f"charlm option valid_fraction must lie in (0, 1); got {options.valid_fraction}"
            )
        if not 0 <= options.test_fraction < 1 - options.valid_fraction:
            raise ValueError(
                "charlm option test_fraction must lie in [0, 1 - valid_fraction); got "
                f"{options.test_fraction}"
            )
        text = read_text(options.text) if options.text else default_text()
        if options.max_chars:
            text = text[: options.max_chars]
        self.vocabulary = sorted(set(text))
        self.index = {char: i for i, char in enumerate(self.vocabulary)}
        ids = self.encode(text)  # (N,)
        test_start = len(ids) - int(len(ids) * options.test_fraction)
        valid_start = test_start - int(len(ids) * options.valid_fraction)
        self.train_ids = ids[:valid_start]
        self.valid_ids = ids[valid_start:test_start]
        self.test_ids = ids[test_start:]
        needed = 2 * options.eval_streams
        too_short = len(self.test_ids) < needed if options.test_fraction else False
        if len(self.valid_ids) < needed or len(self.train_ids) < 2 or too_short:
            raise ValueError(
                f"charlm: the text is too short ({len(ids)} characters) for eval_streams="
                f"{options.eval_streams}, valid_fraction={options.valid_fraction} and "
                f"test_fraction={options.test_fraction}"
            )
        self.io = ModelIO("language_model", len(self.vocabulary), len(self.vocabulary), tokens=True)
        self._streams: dict[int, Tensor] = {}
        self._held_out: dict[str, list[Batch]] = {}

    def encode(self, text: str) -> Tensor:
        """Character ids of ``text``, ``(len(text),)`` int64."""
        unknown = sorted(set(text) - set(self.index))
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {unknown[:10]}")
        return torch.tensor([self.index[char] for char in text], dtype=torch.long)

    def decode(self, ids: Tensor) -> str:
        """The text of character ids."""
        return "".join(self.vocabulary[i] for i in ids.tolist())

    def chunks(self, ids: Tensor, streams: int) -> Tensor:
        """``ids`` cut into ``streams`` contiguous rows of equal length ``S + 1``, ``(streams, S + 1)``:
        inputs are ``[:, :-1]``, next-character targets ``[:, 1:]``."""
        length = (len(ids) - 1) // streams
        if length < 1:
            raise ValueError(
                f"charlm: {len(ids)} characters cannot be cut into {streams} streams; "
                "use a longer text or a smaller batch"
            )
        rows = [ids[b * length : (b + 1) * length + 1] for b in range(streams)]
        return torch.stack(rows)  # (streams, S + 1)

    def chunk_count(self, streams: Tensor) -> int:
        """Chunks of ``seq_len`` in each row of ``streams``."""
        return math.ceil((streams.shape[1] - 1) / self.options.seq_len)

    def chunk(self, streams: Tensor, index: int) -> Batch:
        """Chunk ``index`` of every stream; the last chunk of a stream may be shorter (masked)."""
        seq_len = self.options.seq_len
        start = index * seq_len
        stop = min(start + seq_len, streams.shape[1] - 1)
        x = torch.zeros(streams.shape[0], seq_len, dtype=torch.long)
        y = torch.zeros_like(x)
        x[:, : stop - start] = streams[:, start:stop]
        y[:, : stop - start] = streams[:, start + 1 : stop + 1]
        mask = (torch.arange(seq_len) < stop - start).expand(streams.shape[0], seq_len)
        reset = torch.full((streams.shape[0],), index == 0)
        return Batch(x=x, y=y, mask=mask.contiguous(), reset=reset)

    def train_batch(self, index: int, batch_size: int) -> Batch:
        """Chunk ``index`` (modulo the chunks per stream) of ``batch_size`` training streams."""
        if batch_size not in self._streams:
            self._streams[batch_size] = self.chunks(self.train_ids, batch_size)
        streams = self._streams[batch_size]
        return self.chunk(streams, index % self.chunk_count(streams))

    def held_out(self, ids: Tensor, name: str) -> list[Batch]:
        """A held-out text ``ids`` as ``eval_streams`` streams, chunk after chunk (cached as
        ``name``)."""
        if name not in self._held_out:
            streams = self.chunks(ids, self.options.eval_streams)
            self._held_out[name] = [
                self.chunk(streams, k) for k in range(self.chunk_count(streams))
            ]
        return self._held_out[name]

    def eval_batches(self) -> list[Batch]:
        """The validation text, ``eval_streams`` streams, chunk after chunk."""
        return self.held_out(self.valid_ids, "valid")

    def test_batches(self) -> list[Batch]:
        """The test text like the validation text; the validation text if ``test_fraction`` is 0."""
        if not self.options.test_fraction:
            return self.eval_batches()
        return self.held_out(self.test_ids, "test")

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        """Cross-entropy per character, averaged over the characters that exist;
        ``output``: logits ``(B, T, V)``."""
        return F.cross_entropy(output[batch.mask], batch.y[batch.mask])

    def scores(self, output: Tensor, batch: Batch) -> dict[str, Tensor]:
        """Per stream: summed negative log-likelihood, characters, correctly predicted ones."""
        nll = F.cross_entropy(output.transpose(1, 2), batch.y, reduction="none")  # (B, T)
        correct = (output.argmax(-1) == batch.y) & batch.mask
        return {
            "nll": (nll * batch.mask).sum(1),
            "chars": batch.mask.sum(1),
            "correct": correct.sum(1),
        }

    def metrics(self, totals: dict[str, float], sequences: int) -> dict[str, float]:
        """``loss`` (nats per character), ``bpc``, ``accuracy``."""
        loss = totals["nll"] / totals["chars"]
        return {
            "loss": loss,
            "bpc": loss / math.log(2),
            "accuracy": totals["correct"] / totals["chars"],
        }

    def solved(self, recent: dict[str, Tensor], evaluation: dict[str, float] | None) -> bool:
        """Validation bits per character at or below ``target_bpc`` (if set)."""
        target = self.options.target_bpc
        return bool(target > 0 and evaluation is not None and evaluation["bpc"] <= target)
