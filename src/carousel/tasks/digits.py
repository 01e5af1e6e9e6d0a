r"""Classification of scikit-learn's bundled 8x8 handwritten digits, read as a sequence.

The data is :func:`sklearn.datasets.load_digits` (1,797 greyscale images of the digits 0-9,
8x8 pixels with values 0..16, bundled with scikit-learn, so nothing is downloaded). Pixels are
divided by 16, so every input lies in ``[0, 1]``; the scaling is fixed, nothing is estimated
from the data. An image is read as a sequence, as the option ``order`` says:

- ``"rows"``: 8 steps, one row of 8 pixels each, top to bottom: ``x`` is ``(B, 8, 8)``;
- ``"pixels"``: 64 steps, one pixel each, row-major (left to right, top to bottom):
  ``x`` is ``(B, 64, 1)``.

The class (the digit) is the target at the end: ``y`` is ``(B,)`` int64.

The split is fixed, the same for every training seed, so test numbers of different runs compare:
within each digit class the images are shuffled with the seed :data:`SPLIT_SEED` and the class's
first ``round(0.2 n)`` images go to the test set, the next ``round(0.2 n)`` to the validation set,
the rest (about 60 %) to the training set; each split is kept in the dataset's order. The task's
seed only decides the training order: the training images are visited epoch by epoch, each epoch
a fresh permutation drawn from the task seed, so training batch ``k`` is a pure function of the
seed, ``k`` and the batch size. The validation set (``eval_batches``) picks the best checkpoint;
the test set (``test_batches``) is only reported.

Metrics: ``loss`` (cross-entropy, nats per image), ``accuracy`` (fraction of images classified
correctly), ``errors`` (the number of misclassified images).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from carousel.options import option
from carousel.tasks.base import Batch, ModelIO, Task, generator

SPLIT_SEED = 1797
"""The seed of the fixed train/validation/test split (independent of the training seed)."""

SPLIT_FRACTIONS = {"test": 0.2, "valid": 0.2}
"""The fraction of each class held out for testing and for validation; the rest trains."""

ORDERS = ("rows", "pixels")
SIDE = 8
CLASSES = 10
EVAL_BATCH = 256


@dataclass(frozen=True)
class DigitsOptions:
    """Options of the digits task."""

    order: str = option(
        "rows",
        "how an image is read: rows (8 steps of 8 pixels) or pixels (64 steps of 1)",
        choices=ORDERS,
    )
    max_images: int = option(
        0, "use only the first N images of each split, for smoke runs (0: all)", minimum=0
    )
    target_accuracy: float = option(
        0.0, "solved when the validation accuracy reaches this (0: never)"
    )


def load_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: images ``(1797, 8, 8)`` float32 in ``[0, 1]`` (pixel / 16) and
    labels ``(1797,)`` int64 in ``0..9``.

    Raises:
        ImportError: scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "the digits task needs scikit-learn: pip install 'carousel-lstm[apps]'"
        ) from None
    data = load_digits()
    images = (np.asarray(data.images, dtype=np.float64) / 16.0).astype(np.float32)
    return images, np.asarray(data.target, dtype=np.int64)


def stratified_split(labels: np.ndarray, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """The fixed split of the indices of ``labels`` ``(N,)`` into ``"train"``, ``"valid"`` and
    ``"test"`` (each sorted ascending): per class, a seeded shuffle, then ``round(0.2 n)`` test,
    ``round(0.2 n)`` validation and the rest training images."""
    parts: dict[str, list[np.ndarray]] = {"train": [], "valid": [], "test": []}
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng = generator(seed, "digits-split", int(label))
        members = members[torch.randperm(len(members), generator=rng).numpy()]
        n_test = round(SPLIT_FRACTIONS["test"] * len(members))
        n_valid = round(SPLIT_FRACTIONS["valid"] * len(members))
        parts["test"].append(members[:n_test])
        parts["valid"].append(members[n_test : n_test + n_valid])
        parts["train"].append(members[n_test + n_valid :])
    return {name: np.sort(np.concatenate(indices)) for name, indices in parts.items()}


def as_sequences(images: np.ndarray | Tensor, order: str) -> Tensor:
    """Images ``(B, 8, 8)`` as sequences: ``(B, 8, 8)`` for ``"rows"``, ``(B, 64, 1)`` for
    ``"pixels"`` (row-major)."""
    if order not in ORDERS:
        raise ValueError(f"digits option order must be one of {ORDERS}; got {order!r}")
    images = torch.as_tensor(images, dtype=torch.float32)
    if order == "rows":
        return images.contiguous()
    return images.reshape(images.shape[0], SIDE * SIDE, 1)


class DigitsTask(Task):
    """The 8x8 digits as sequences; ``x``: ``(B, 8, 8)`` or ``(B, 64, 1)``, ``y``: ``(B,)``.

    Attributes:
        images: all images, ``(1797, 8, 8)`` float32 in ``[0, 1]``.
        labels: all labels, ``(1797,)`` int64.
        splits: ``"train"``, ``"valid"``, ``"test"`` -> indices into ``images`` (after
            ``max_images``).
    """

    name = "digits"
    Options = DigitsOptions

    def configure(self, options: DigitsOptions) -> None:
        if not 0 <= options.target_accuracy <= 1:
            raise ValueError(
                f"digits option target_accuracy must lie in [0, 1]; got {options.target_accuracy}"
            )
        self.images, self.labels = load_images()
        self.splits = stratified_split(self.labels)
        if options.max_images:
            self.splits = {k: v[: options.max_images] for k, v in self.splits.items()}
        steps, features = (SIDE, SIDE) if options.order == "rows" else (SIDE * SIDE, 1)
        self.steps = steps
        self.io = ModelIO("classifier", features, CLASSES)
        self._fixed: dict[str, list[Batch]] = {}
        self._epochs: dict[int, np.ndarray] = {}

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The images ``(n, 8, 8)`` and labels ``(n,)`` of split ``name`` (``"train"``,
        ``"valid"`` or ``"test"``)."""
        if name not in self.splits:
            raise ValueError(f"split must be one of {sorted(self.splits)}; got {name!r}")
        indices = self.splits[name]
        return self.images[indices], self.labels[indices]

    def batch(self, indices: np.ndarray) -> Batch:
        """The images ``indices`` (into :attr:`images`) as a batch of sequences."""
        x = as_sequences(self.images[indices], self.options.order)
        y = torch.as_tensor(self.labels[indices])
        mask = torch.ones(len(indices), self.steps, dtype=torch.bool)
        return Batch(x=x, y=y, mask=mask)

    def epoch(self, epoch: int) -> np.ndarray:
        """The training images' indices (into :attr:`images`) in the order of epoch ``epoch``
        (0, 1, ...), a permutation drawn from the task seed."""
        if epoch not in self._epochs:
            if len(self._epochs) >= 4:
                self._epochs.pop(next(iter(self._epochs)))
            train = self.splits["train"]
            order = torch.randperm(len(train), generator=generator(self.seed, "digits", epoch))
            self._epochs[epoch] = train[order.numpy()]
        return self._epochs[epoch]

    def train_batch(self, index: int, batch_size: int) -> Batch:
        """Positions ``[index * B, (index + 1) * B)`` of the training stream: epoch after epoch
        of the training images, each epoch in its own seeded random order."""
        count = len(self.splits["train"])
        positions = range(index * batch_size, (index + 1) * batch_size)
        indices = np.array([self.epoch(p // count)[p % count] for p in positions])
        return self.batch(indices)

    def _fixed_batches(self, name: str) -> list[Batch]:
        if name not in self._fixed:
            indices = self.splits[name]
            self._fixed[name] = [
                self.batch(indices[start : start + EVAL_BATCH])
                for start in range(0, len(indices), EVAL_BATCH)
            ]
        return self._fixed[name]

    def eval_batches(self) -> list[Batch]:
        """The validation images, in batches of 256, in the dataset's order."""
        return self._fixed_batches("valid")

    def test_batches(self) -> list[Batch]:
        """The held-out test images, in batches of 256, in the dataset's order."""
        return self._fixed_batches("test")

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        """Cross-entropy of the logits ``output`` ``(B, 10)``, averaged over the batch."""
        return F.cross_entropy(output, batch.y)

    def scores(self, output: Tensor, batch: Batch) -> dict[str, Tensor]:
        """Per image: negative log-likelihood of its class, and 1 if classified correctly."""
        return {
            "nll": F.cross_entropy(output, batch.y, reduction="none"),
            "correct": (output.argmax(-1) == batch.y).double(),
        }

    def metrics(self, totals: dict[str, float], sequences: int) -> dict[str, float]:
        """``loss`` (nats per image), ``accuracy``, ``errors`` (misclassified images)."""
        return {
            "loss": totals["nll"] / sequences,
            "accuracy": totals["correct"] / sequences,
            "errors": float(sequences - round(totals["correct"])),
        }

    def solved(self, recent: dict[str, Tensor], evaluation: dict[str, float] | None) -> bool:
        """Validation accuracy at or above ``target_accuracy`` (if set)."""
        target = self.options.target_accuracy
        return bool(target > 0 and evaluation is not None and evaluation["accuracy"] >= target)
