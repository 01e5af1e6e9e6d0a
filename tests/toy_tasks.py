"""Small tasks that exercise the classifier, tagger and seq2seq heads through the task interface.

Each is a seeded generator of variable-length sequences, as a real task would be. Tests register
them with ``monkeypatch.setitem(carousel.tasks.TASKS, ...)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from carousel.tasks import Batch, ModelIO, Task, generator


def _lengths_mask(count: int, low: int, high: int, rng) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.randint(low, high + 1, (count,), generator=rng)
    mask = torch.arange(int(lengths.max())) < lengths.unsqueeze(1)  # (B, T)
    return lengths, mask


class _Toy(Task):
    """Shared plumbing: batches from ``make(count, rng)``, a fixed test set of 256 sequences."""

    def train_batch(self, index: int, batch_size: int) -> Batch:
        return self.make(batch_size, generator(self.seed, self.name, index))

    def eval_batches(self) -> list[Batch]:
        if not hasattr(self, "_test"):
            self._test = [self.make(256, generator(self.seed, self.name, "test"))]
        return self._test


class _PerStepLabels(_Toy):
    """Cross-entropy per labelled step; ``loss`` and ``accuracy`` per step."""

    def _labels(self, batch: Batch) -> torch.Tensor:
        return batch.mask if batch.target_mask is None else batch.target_mask

    def loss(self, output, batch):
        labelled = self._labels(batch)
        return F.cross_entropy(output[labelled], batch.y[labelled])

    def scores(self, output, batch):
        labelled = self._labels(batch)
        nll = F.cross_entropy(output.transpose(1, 2), batch.y, reduction="none")
        correct = (output.argmax(-1) == batch.y) & labelled
        return {"nll": (nll * labelled).sum(1), "steps": labelled.sum(1), "correct": correct.sum(1)}

    def metrics(self, totals, sequences):
        return {
            "loss": totals["nll"] / totals["steps"],
            "accuracy": totals["correct"] / totals["steps"],
        }


class SignTask(_Toy):
    """Classifier: is the sum of a sequence of Gaussian numbers positive?"""

    name = "toy-sign"

    def __init__(self, options=None, seed: int = 0) -> None:
        super().__init__(options, seed)
        self.io = ModelIO("classifier", 1, 2)

    def make(self, count, rng):
        _, mask = _lengths_mask(count, 3, 8, rng)
        x = torch.randn(*mask.shape, 1, generator=rng) * mask.unsqueeze(-1)
        return Batch(x=x, y=(x.sum((1, 2)) > 0).long(), mask=mask)

    def loss(self, output, batch):
        return F.cross_entropy(output, batch.y)

    def scores(self, output, batch):
        return {
            "loss": F.cross_entropy(output, batch.y, reduction="none"),
            "accuracy": (output.argmax(-1) == batch.y).double(),
        }


class NextSignTask(_PerStepLabels):
    """Tagger: label each step with the sign of the *next* input (needs the backward direction)."""

    name = "toy-next-sign"

    def __init__(self, options=None, seed: int = 0) -> None:
        super().__init__(options, seed)
        self.io = ModelIO("tagger", 1, 2)

    def make(self, count, rng):
        lengths, mask = _lengths_mask(count, 4, 10, rng)
        x = torch.randn(*mask.shape, 1, generator=rng) * mask.unsqueeze(-1)
        following = torch.cat([x[:, 1:, 0], torch.zeros(count, 1)], dim=1)
        labels = (following > 0).long()
        labelled = mask.clone()
        labelled[torch.arange(count), lengths - 1] = False  # the last step has no next input
        return Batch(x=x, y=labels, mask=mask, target_mask=labelled)


START, END, SYMBOLS = 0, 1, 4


class ReverseTask(_PerStepLabels):
    """Seq2seq: write a sequence of 2-4 symbols backwards, then the end token."""

    name = "toy-reverse"

    def __init__(self, options=None, seed: int = 0) -> None:
        super().__init__(options, seed)
        vocab = 2 + SYMBOLS
        self.io = ModelIO("seq2seq", vocab, vocab, tokens=True, start_token=START, end_token=END)

    def make(self, count, rng):
        lengths, mask = _lengths_mask(count, 2, 4, rng)
        source = torch.randint(2, 2 + SYMBOLS, mask.shape, generator=rng) * mask
        target = torch.full((count, mask.shape[1] + 1), END)
        for row, length in enumerate(lengths.tolist()):
            target[row, :length] = source[row, :length].flip(0)
        decoder_input = torch.cat([torch.full((count, 1), START), target[:, :-1]], dim=1)
        target_mask = torch.arange(target.shape[1]) <= lengths.unsqueeze(1)
        return Batch(x=(source, decoder_input), y=target, mask=mask, target_mask=target_mask)


TOY_TASKS = {task.name: task for task in (SignTask, NextSignTask, ReverseTask)}
