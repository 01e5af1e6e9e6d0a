"""The task interface: everything the trainer knows about a task.

A task is a small seeded generator (or a dataset) of :class:`Batch` es plus its loss, its
per-sequence scores, the metrics computed from them and its success criterion. The trainer
(:func:`carousel.train.train`) calls only the methods of :class:`Task`; a new task subclasses it,
sets ``name`` and ``Options`` and registers itself with :func:`carousel.tasks.register_task`.

Shapes (batch-first, as data loaders give them):

- ``B`` sequences in a batch, ``T`` steps (the longest sequence), ``I`` input features.
- ``x``: ``(B, T, I)`` floats, or ``(B, T)`` token ids (int64) when ``io.tokens``; a tuple of
  tensors for models with several inputs (seq2seq: ``(source, decoder_input)``).
- ``y``: targets at the end ``(B, O)`` (regression) or ``(B,)`` (class ids); or one per step
  ``(B, T, O)`` / ``(B, T)``.
- ``mask``: ``(B, T)`` bool, ``True`` for the steps that exist; every row is a prefix
  (``True`` up to the sequence's length, at least one step).

Contract, so that runs are exact, resumable and scale over processes:

1. :meth:`Task.train_batch` is a pure function of ``(seed, index, batch_size)``: the trainer asks
   for batch ``index`` of the training stream, so a resumed run sees the same data, and every
   process builds the same global batch and keeps its own rows (:meth:`Batch.shard`).
2. A *stream* task (hidden state carried across batches: truncated BPTT over long sequences) sets
   :attr:`Batch.reset`; row ``b`` of batch ``index + 1`` continues row ``b`` of batch ``index``
   unless ``reset[b]`` is ``True``, where the state starts from zero.
3. :meth:`Task.scores` returns per-sequence sums (additive quantities), so totals over batches,
   processes and windows are exact, and :meth:`Task.metrics` turns totals into the reported
   metrics, which always include ``"loss"`` (lower is better; it picks the best checkpoint).
4. :meth:`Task.solved` is the task's own success criterion, asked after every training step with
   the scores of the most recent :attr:`Task.window` training sequences and, after an
   evaluation, the test-set metrics.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from carousel.options import check_values

HEADS = ("regressor", "classifier", "tagger", "language_model", "seq2seq")
OUTPUT_ACTIVATIONS = ("identity", "sigmoid")


@dataclass(frozen=True)
class ModelIO:
    """What a model for a task takes and gives; :func:`carousel.models.build` reads it.

    Attributes:
        head: ``"regressor"`` / ``"classifier"`` (one output from the final state),
            ``"tagger"`` (an output per step), ``"language_model"`` (next token per step, carries
            its state across batches), ``"seq2seq"`` (encoder-decoder).
        input_size: features per step, or the vocabulary size when ``tokens``.
        output_size: regression targets, classes, or the output vocabulary size.
        tokens: inputs are token ids (the model embeds them).
        output_activation: squashing of regressor/tagger outputs, ``"identity"`` or
            ``"sigmoid"`` (the 1997 paper's sigmoid output units).
        start_token, end_token: seq2seq only: the decoder's first input and the token that ends
            an output sequence.
    """

    head: str
    input_size: int
    output_size: int
    tokens: bool = False
    output_activation: str = "identity"
    start_token: int | None = None
    end_token: int | None = None

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}; got {self.head!r}")
        if self.output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"output_activation must be one of {OUTPUT_ACTIVATIONS}; got {self.output_activation!r}"
            )
        if self.head == "seq2seq" and (self.start_token is None or self.end_token is None):
            raise ValueError("a seq2seq task must give start_token and end_token")


@dataclass(frozen=True)
class Batch:
    """One batch of sequences; see the module docstring for shapes.

    Attributes:
        x: the inputs, batch-first; a tensor or a tuple of tensors.
        y: the targets.
        mask: ``(B, T)`` bool, the steps of ``x`` that exist (prefix rows).
        target_mask: ``(B, T')`` bool for per-step targets whose length differs from the input's
            (seq2seq), else ``None`` (per-step targets then use ``mask``).
        reset: ``(B,)`` bool for stream tasks: where the carried state restarts from zero;
            ``None``: every batch starts from zero.
    """

    x: Tensor | tuple[Tensor, ...]
    y: Tensor
    mask: Tensor
    target_mask: Tensor | None = None
    reset: Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.mask, Tensor) or self.mask.dtype != torch.bool:
            raise TypeError(f"Batch.mask must be a bool tensor; got {_describe(self.mask)}")
        if self.mask.dim() != 2 or self.mask.shape[0] == 0:
            raise ValueError(f"Batch.mask must be (B, T) with B >= 1; got {_describe(self.mask)}")
        size, steps = self.mask.shape
        inputs = self.x if isinstance(self.x, tuple) else (self.x,)
        for index, tensor in enumerate(inputs):
            if not isinstance(tensor, Tensor) or tensor.dim() < 1 or tensor.shape[0] != size:
                raise ValueError(
                    f"Batch.x[{index}] must have B={size} rows; got {_describe(tensor)}"
                )
        if not isinstance(inputs[0], Tensor) or tuple(inputs[0].shape[:2]) != (size, steps):
            raise ValueError(
                f"Batch.x must be (B, T, ...) = ({size}, {steps}, ...) like mask; got {_describe(inputs[0])}"
            )
        if not isinstance(self.y, Tensor) or self.y.dim() < 1 or self.y.shape[0] != size:
            raise ValueError(f"Batch.y must have B={size} rows; got {_describe(self.y)}")
        if self.target_mask is not None and (
            self.target_mask.dtype != torch.bool
            or self.target_mask.dim() != 2
            or self.target_mask.shape[0] != size
        ):
            raise ValueError(
                f"Batch.target_mask must be (B, T') bool; got {_describe(self.target_mask)}"
            )
        if self.reset is not None and (
            self.reset.dtype != torch.bool or tuple(self.reset.shape) != (size,)
        ):
            raise ValueError(f"Batch.reset must be ({size},) bool; got {_describe(self.reset)}")

    @property
    def size(self) -> int:
        """``B``, the number of sequences."""
        return self.mask.shape[0]

    def map(self, function: Callable[[Tensor], Tensor]) -> Batch:
        """A batch with ``function`` applied to every tensor."""
        return Batch(
            x=tuple(map(function, self.x)) if isinstance(self.x, tuple) else function(self.x),
            y=function(self.y),
            mask=function(self.mask),
            target_mask=None if self.target_mask is None else function(self.target_mask),
            reset=None if self.reset is None else function(self.reset),
        )

    def to(self, device: torch.device | str) -> Batch:
        """The batch on ``device``."""
        return self.map(lambda tensor: tensor.to(device))

    def shard(self, rank: int, world_size: int) -> Batch:
        """The contiguous rows of process ``rank`` out of ``world_size`` (near-equal parts)."""
        if world_size == 1:
            return self
        start, stop = shard_range(self.size, rank, world_size)
        return self.map(lambda tensor: tensor[start:stop])


def shard_range(size: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of process ``rank``: ``size`` split in near-equal contiguous parts."""
    base, extra = divmod(size, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


@dataclass(frozen=True)
class NoOptions:
    """A task without options."""


class Task:
    """Base class of tasks; the methods below are all the trainer uses.

    Subclasses set the class attributes ``name`` (the registry key and the command-line name) and
    ``Options`` (a dataclass; each field, declared with :func:`carousel.options.option` and its
    ``help``, becomes a command-line option of ``carousel train``), and ``io`` in
    :meth:`configure`. The options are checked against the ``choices`` and ``minimum`` of their
    fields (:func:`carousel.options.check_values`) before :meth:`configure` checks the rest.

    Attributes:
        options: an instance of ``Options``.
        seed: every random choice of the task derives from it (see :func:`generator`).
        io: the :class:`ModelIO` a model for this task needs.
        window: how many of the most recent training sequences :meth:`solved` looks at (0: none).
        vocabulary: for token tasks, the token of each id; saved with a run (``vocab.json``).
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    io: ModelIO
    window: int = 0
    vocabulary: list[str] | None = None

    def __init__(self, options=None, seed: int = 0) -> None:
        if options is None:
            options = self.Options()
        if not isinstance(options, self.Options):
            raise TypeError(
                f"options of task {self.name!r} must be {self.Options.__name__}; got {type(options).__name__}"
            )
        check_values(options, self.name)
        self.options = options
        self.seed = int(seed)
        self.configure(options)

    def configure(self, options) -> None:
        """Check what the fields' ``choices`` and ``minimum`` cannot say about ``options`` and
        set ``io`` and what else derives from them; called at the end of ``__init__``."""

    def train_batch(self, index: int, batch_size: int) -> Batch:
        """Batch ``index`` (0, 1, ...) of the training stream, ``batch_size`` sequences; a pure
        function of ``(seed, index, batch_size)``."""
        raise NotImplementedError

    def eval_batches(self) -> Iterable[Batch]:
        """The fixed test (or validation) set, in batches; the same on every call."""
        raise NotImplementedError

    def test_batches(self) -> Iterable[Batch]:
        """The held-out test set a finished model is reported on, in batches.

        Tasks with data (text, files, a bundled dataset) keep it apart from
        :meth:`eval_batches`, which the trainer uses to pick the best checkpoint and to stop,
        so the reported numbers never saw model selection. Generated tasks, whose test set is a
        fresh seeded draw, return :meth:`eval_batches`.
        """
        return self.eval_batches()

    def loss(self, output, batch: Batch) -> Tensor:
        """The scalar the optimiser minimises for ``output = model(batch.x, batch.mask, state)[0]``:
        a mean over the batch's sequences or targets, so that processes average it."""
        raise NotImplementedError

    def scores(self, output, batch: Batch) -> dict[str, Tensor]:
        """Per-sequence sums, each ``(B,)``: errors, correct sequences, token counts, ..."""
        raise NotImplementedError

    def metrics(self, totals: dict[str, float], sequences: int) -> dict[str, float]:
        """Metrics from ``totals`` (the sums of :meth:`scores` over ``sequences`` sequences).

        The default reports each score's mean per sequence; ``totals["loss"]`` must exist then.
        """
        return {name: value / sequences for name, value in totals.items()}

    def solved(self, recent: dict[str, Tensor], evaluation: dict[str, float] | None) -> bool:
        """The success criterion (the trainer stops when it holds and ``stop_when_solved``).

        Args:
            recent: the :meth:`scores` of the last ``min(window, seen)`` training sequences,
                oldest first, each ``(n,)`` float64 (empty dict if ``window`` is 0).
            evaluation: the test-set metrics if an evaluation ran after this step, else ``None``.
        """
        return False


def generator(seed: int, *stream: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``seed`` and a stream name (e.g. ``"train", index``).

    Streams are independent of each other and of the process, so the ``index``-th training batch
    is the same on every run and every process.
    """
    digest = hashlib.sha256(repr((int(seed), *stream)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def check_held_out(task: str, options, below: float) -> None:
    """Raise ``ValueError`` unless the fractions of a task's data held out for validation and
    for testing, ``options.valid_fraction`` and ``options.test_fraction``, each lie in (0, 1)
    and together below ``below`` (the rest trains)."""
    valid, test = options.valid_fraction, options.test_fraction
    for name, value in (("valid_fraction", valid), ("test_fraction", test)):
        if not 0 < value < 1:
            raise ValueError(f"{task} option {name} must lie in (0, 1); got {value}")
    if valid + test >= below:
        raise ValueError(
            f"{task} options valid_fraction + test_fraction must be below {below} (the rest "
            f"trains); got {valid} + {test}"
        )


def _describe(value) -> str:
    if isinstance(value, Tensor):
        return f"{value.dtype} tensor of shape {list(value.shape)}"
    return type(value).__name__
