r"""Token-type tagging of Python source: a bidirectional LSTM reads the characters of standard
library modules and tags each with the type :mod:`tokenize` gives it (task ``pytokens``, see
:mod:`carousel.tasks.pytokens` for the files, the split by file and the tag set).

The baselines, fitted on the training files' chunks only and scored on the same test chunks:

- **majority tag per character**: for each character id, the tag it has most often in the
  training files; a character never seen there (``<unk>``) gets the overall majority tag. As a
  probability model (for its loss): :math:`P(t \mid c) = (n_{c,t} + P(t)) / (n_c + 1)`, the
  character's tag frequencies smoothed towards the overall ones :math:`P(t)`, whose most likely
  tag is the majority tag (ties go to the more frequent tag overall).
- **majority tag per 5-character window**: the same for the window of the character and its two
  neighbours on each side (within the chunk, as the LSTM sees it; the chunk's edges are a
  boundary symbol), smoothed towards the 3-character window, which is smoothed towards the single
  character; a window never seen in training falls back to the shorter one.

The notes render a line of test source with its true tags and the predicted ones (one letter per
tag, :data:`~carousel.tasks.pytokens.TAG_CODES`) and list the F1 of every tag; ``tag_f1.png``
plots them.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
from torch import Tensor

from carousel.applications.runner import Metric, Report, test_metrics
from carousel.tasks.base import Batch
from carousel.tasks.pytokens import TAG_CODES, TAGS, PyTokensTask, render, tag_f1
from carousel.train.config import Config, ModelConfig, OptimConfig, TrainConfig

NAME = "tagging"
TITLE = "Token types of Python source, character by character (standard library, split by file)"
METRICS = [
    Metric("accuracy", "accuracy", higher_is_better=True),
    Metric("macro_f1", "macro-F1", higher_is_better=True),
    Metric("loss", "cross-entropy (nats/char)", higher_is_better=False),
]
WINDOWS = (1, 3, 5)
"""Window widths of the majority baselines, each smoothed towards the previous one."""


def config(quick: bool) -> Config:
    """The LSTM's run: one bidirectional layer of 64 cells on 32-wide character embeddings, Adam
    at 3e-3 with a cosine decay and the gradient norm clipped to 1, batches of 32 chunks of 256
    characters; ``quick``: a few small files, a tiny model, ten steps.

    The fused Numba kernels are asked for by name when training runs on the CPU and Numba is
    installed: on this workload (B = 32, H = 64, both directions, training) they ran several
    times faster than the oneDNN LSTM that ``backend="auto"`` picks; on a GPU ``"auto"`` stays.
    """
    on_cpu = not torch.cuda.is_available()
    backend = "numba" if on_cpu and importlib.util.find_spec("numba") is not None else "auto"
    if quick:
        return Config(
            task="pytokens",
            task_options={
                "min_bytes": 1000,
                "max_bytes": 5000,
                "max_files": 6,
                "seq_len": 64,
                "eval_batch_size": 64,
            },
            model=ModelConfig(
                hidden_size=16, bidirectional=True, embedding_size=8, backend=backend
            ),
            optim=OptimConfig(lr=1e-2, clip_norm=1.0),
            train=TrainConfig(
                steps=10, batch_size=8, eval_every=5, log_every=5, checkpoint_every=10
            ),
        )
    return Config(
        task="pytokens",
        task_options={"seq_len": 256},
        model=ModelConfig(hidden_size=64, bidirectional=True, embedding_size=32, backend=backend),
        optim=OptimConfig(lr=3e-3, clip_norm=1.0, schedule="cosine", warmup_steps=50),
        train=TrainConfig(
            steps=1000, batch_size=32, eval_every=100, log_every=20, checkpoint_every=250
        ),
    )


# ---- the baselines -------------------------------------------------------------------------


def windows(batch: Batch, width: int, boundary: int) -> Tensor:
    """The ``width`` character ids centred on every existing character of ``batch``, in the
    order of ``batch.y[batch.mask]``, ``(n, width)``; positions outside a chunk are
    ``boundary``."""
    if width % 2 != 1:
        raise ValueError(f"width must be odd; got {width}")
    half = width // 2
    ids = torch.where(batch.mask, batch.x, boundary)  # (B, T)
    padded = torch.nn.functional.pad(ids, (half, half), value=boundary)  # (B, T + 2 half)
    steps = ids.shape[1]
    stacked = torch.stack([padded[:, k : k + steps] for k in range(width)], dim=-1)  # (B, T, w)
    return stacked[batch.mask]


class WindowMajority:
    """Majority tag per character window, smoothed towards the next shorter window.

    For the window :math:`w` of width ``widths[j]``,
    :math:`P_j(t \\mid w) = (n_{w,t} + P_{j-1}(t \\mid w')) / (n_w + 1)`, with :math:`w'` the
    narrower window at the same character and :math:`P_{-1}` the overall tag frequencies of the
    training characters. Its most likely tag is the window's majority tag in training, or the
    narrower window's where the window was never seen.

    Args:
        train: the training chunks, in batches (``x`` character ids, ``y`` tags).
        vocab_size: ``V``; the boundary symbol is ``V``.
        num_tags: ``K``.
        widths: odd window widths, increasing.
    """

    def __init__(
        self, train: list[Batch], vocab_size: int, num_tags: int, widths: tuple[int, ...]
    ) -> None:
        self.boundary, self.num_tags, self.widths = vocab_size, num_tags, tuple(widths)
        self.train_windows = {
            w: torch.cat([windows(b, w, vocab_size) for b in train]) for w in widths
        }
        self.train_tags = torch.cat([b.y[b.mask] for b in train])  # (N,)
        counts = torch.bincount(self.train_tags, minlength=num_tags).double()
        self.overall = counts / counts.sum()  # (K,)

    def probabilities(self, batches: list[Batch], width: int | None = None) -> Tensor:
        """``P(tag | window)`` for every existing character of ``batches`` in order, ``(n, K)``,
        with windows up to ``width`` (default: the widest)."""
        width = self.widths[-1] if width is None else width
        tags = self.train_tags
        train_count = len(tags)
        prior = None
        for w in self.widths:
            if w > width:
                break
            test = torch.cat([windows(b, w, self.boundary) for b in batches])
            if prior is None:
                prior = self.overall.expand(len(test), -1)
            both = torch.cat([self.train_windows[w], test])
            _, inverse = torch.unique(both, dim=0, return_inverse=True)
            counts = torch.zeros(int(inverse.max()) + 1, self.num_tags, dtype=torch.float64)
            counts.index_put_(
                (inverse[:train_count], tags), torch.ones(train_count, dtype=torch.float64), True
            )
            totals = counts.sum(1, keepdim=True)
            rows = inverse[train_count:]
            prior = (counts[rows] + prior) / (totals[rows] + 1)  # (n, K)
        return prior


def batch_logits(batches: list[Batch], probabilities: Tensor) -> list[Tensor]:
    """Per-character probabilities ``(n, K)`` (in mask order) as log-probability logits
    ``(B, T, K)`` for each batch (zeros where no character is)."""
    logits, start = [], 0
    for batch in batches:
        count = int(batch.mask.sum())
        values = torch.zeros(*batch.mask.shape, probabilities.shape[1])
        values[batch.mask] = probabilities[start : start + count].log().float()
        logits.append(values)
        start += count
    return logits


def score(
    task: PyTokensTask, batches: list[Batch], logits: list[Tensor]
) -> tuple[dict[str, float], dict[str, float]]:
    """The task's metrics and the F1 of each tag (:func:`~carousel.tasks.pytokens.tag_f1`)
    for given logits ``(B, T, K)`` of every batch."""
    totals: dict[str, float] = {}
    for batch, output in zip(batches, logits, strict=True):
        for name, value in task.scores(output, batch).items():
            totals[name] = totals.get(name, 0.0) + float(value.double().sum())
    return task.metrics(totals, sum(batch.size for batch in batches)), tag_f1(totals)


@torch.no_grad()
def model_logits(model: torch.nn.Module, batches: list[Batch]) -> list[Tensor]:
    """The model's logits ``(B, T, K)`` for every batch."""
    device = next(model.parameters()).device
    model.eval()
    return [model(b.x.to(device), b.mask.to(device))[0].float().cpu() for b in batches]


# ---- the report ----------------------------------------------------------------------------


def example_line(text: str, tags: Tensor) -> tuple[int, int]:
    """``(start, stop)`` of the line of ``text`` (its newline included) to render: of those
    with 40 to 90 characters and no tab, the first with the most distinct true tags."""
    best, best_kinds, start = (0, min(len(text), 80)), -1, 0
    for line in text.splitlines(keepends=True):
        stop = start + len(line)
        if 40 <= len(line.rstrip("\n")) <= 90 and "\t" not in line:
            kinds = len(set(tags[start:stop].tolist()))
            if kinds > best_kinds:
                best, best_kinds = (start, stop), kinds
        start = stop
    return best


def report(task: PyTokensTask, model: torch.nn.Module, out_dir: Path, quiet: bool) -> Report:
    """The LSTM's and the baselines' test metrics, a rendered test line, the F1 of each tag and
    the plot ``tag_f1.png``."""
    layer = model.encoder.layer
    directions = "bidirectional" if layer.bidirectional else "unidirectional"
    lstm_name = f"LSTM ({directions}, {layer.hidden_size} cells)"
    test = task.test_batches()
    rows = {lstm_name: test_metrics(model, task)}
    logits = model_logits(model, test)
    per_tag = {lstm_name: score(task, test, logits)[1]}
    predicted = {
        lstm_name: torch.cat([out[b.mask].argmax(-1) for b, out in zip(test, logits, strict=True)])
    }

    baseline = WindowMajority(task.batches("train"), len(task.vocabulary), len(TAGS), WINDOWS)
    widest = WINDOWS[-1]
    names = {1: "majority tag per character", widest: f"majority tag per {widest}-character window"}
    for width, name in names.items():
        probabilities = baseline.probabilities(test, width)
        rows[name], per_tag[name] = score(task, test, batch_logits(test, probabilities))
        predicted[name] = probabilities.argmax(-1)

    legend = ", ".join(f"`{code}` {tag}" for code, tag in zip(TAG_CODES, TAGS, strict=True))
    notes = [
        f"Tags: {legend}. The baselines are fitted on the training files: the tag each "
        "character (or each window of the character and its neighbours within the chunk, "
        "backing off to narrower windows) has most often there; their cross-entropy is that of "
        "the window's tag frequencies smoothed towards the narrower window's.",
        "",
    ]
    notes += example_notes(task, predicted)
    notes += f1_notes(per_tag)
    notes.append(worst_files_note(task, predicted[lstm_name]))
    counts = {split: len(files) for split, files in task.files.items()}
    chars = {split: int(task.chunks[split].lengths.sum()) for split in task.files}
    notes.append(
        f"Data: {counts['train']} training, {counts['valid']} validation and {counts['test']} "
        f"test files of `{task.source_dir}` ({chars['train']:,} / {chars['valid']:,} / "
        f"{chars['test']:,} characters), chunks of {task.options.seq_len} characters; "
        f"vocabulary of {len(task.vocabulary)} ids (with `<unk>`). Test files: "
        + ", ".join(f"`{source.name}`" for source in task.files["test"])
        + "."
        + (
            f" Skipped (tokenize cannot read them): {', '.join(task.skipped)}."
            if task.skipped
            else ""
        )
    )
    files = []
    plotted = plot_f1(per_tag, out_dir / "tag_f1.png")
    if plotted:
        files.append("tag_f1.png")
    else:
        notes.append("(No plot: matplotlib is missing; pip install 'carousel-lstm[apps]'.)")
    return Report(rows=rows, notes=notes, files=files)


def example_notes(task: PyTokensTask, predicted: dict[str, Tensor]) -> list[str]:
    """A test line (newline shown as ``↵``) with its true and predicted tags, one letter each."""
    text = "".join(source.text for source in task.files["test"])
    tags = torch.cat([source.tags for source in task.files["test"]])
    start, stop = example_line(text, tags)
    width = max(len("true"), *(len(name) for name in predicted))
    lines = [f"{'source':<{width}}  {text[start:stop].replace(chr(10), '↵')}"]
    lines.append(f"{'true':<{width}}  {render(tags[start:stop])}")
    for name, values in predicted.items():
        lines.append(f"{name:<{width}}  {render(values[start:stop])}")
    return ["A test line, its true tags and the predicted ones:", "", "```", *lines, "```"]


def worst_files_note(task: PyTokensTask, predicted: Tensor, count: int = 3) -> str:
    """The ``count`` test files on which the per-character accuracy of ``predicted`` (the tags of
    all test characters in file order) is lowest."""
    accuracy, start = [], 0
    for source in task.files["test"]:
        stop = start + len(source.text)
        correct = float((predicted[start:stop] == source.tags).double().mean())
        accuracy.append((correct, source.name, len(source.text)))
        start = stop
    worst = sorted(accuracy)[:count]
    listed = ", ".join(
        f"`{name}` {value:.3f} ({chars:,} characters)" for value, name, chars in worst
    )
    return f"The test files with the lowest LSTM accuracy: {listed}."


def f1_notes(per_tag: dict[str, dict[str, float]]) -> list[str]:
    """A markdown table of the F1 of each tag (``per_tag``: model -> tag -> F1), one column
    per model."""
    names = list(per_tag)
    lines = ["F1 per tag on the test files:", "", "| tag | " + " | ".join(names) + " |"]
    lines.append("|---|" + "---:|" * len(names))
    for tag in TAGS:
        cells = []
        for name in names:
            value = per_tag[name].get(tag, math.nan)
            cells.append("-" if math.isnan(value) else f"{value:.3f}")
        lines.append(f"| {tag} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def plot_f1(per_tag: dict[str, dict[str, float]], path: Path) -> bool:
    """Bar chart of the F1 of each tag (``per_tag``: model -> tag -> F1), written to ``path``;
    ``False`` without matplotlib."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 3.5))
    width = 0.8 / len(per_tag)
    for k, (name, values) in enumerate(per_tag.items()):
        heights = [values.get(tag, math.nan) for tag in TAGS]
        axes.bar(
            [i + (k - (len(per_tag) - 1) / 2) * width for i in range(len(TAGS))],
            heights,
            width,
            label=name,
        )
    axes.set_xticks(range(len(TAGS)), TAGS)
    axes.set_ylabel("F1 on the test files")
    axes.set_ylim(0, 1)
    axes.legend(fontsize=8, ncol=len(per_tag), loc="lower center", bbox_to_anchor=(0.5, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True
