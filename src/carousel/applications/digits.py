"""Digits: an LSTM classifies scikit-learn's 8x8 handwritten digits read as a sequence.

The data, its fixed stratified 60/20/20 split (seed :data:`carousel.tasks.digits.SPLIT_SEED`,
the same for every training seed) and the scaling (pixel / 16) are those of the ``digits`` task
(:mod:`carousel.tasks.digits`).

The table has three rows, all scored on the same 359 test images:

1. the LSTM the runner trains (``OUT/run``): the images read row by row, 8 steps of 8 pixels;
2. a second LSTM with the same settings (including ``--steps`` and ``--seed``) reading the
   images pixel by pixel, 64 steps of one pixel, trained inside :func:`report` with
   :func:`carousel.train.train` into ``OUT/run-pixels`` (its best-validation checkpoint is
   scored); the same digits, but eight times longer sequences with one number per step;
3. multinomial logistic regression (scikit-learn, L-BFGS, ``max_iter`` :data:`MAX_ITER`) on the
   64 pixels scaled the same way, fitted on the training split only; its inverse regularisation
   strength ``C`` is chosen from :data:`C_GRID` by validation accuracy (ties: lower validation
   cross-entropy), as the LSTMs' checkpoints are chosen on the validation set.

Plots: ``confusion.png`` (the test confusion matrix of each model) and ``misclassified.png``
(the test digits the first LSTM gets wrong, with the true and the predicted class).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from carousel.applications.runner import (
    Metric,
    Report,
    run_settings,
    test_metrics,
    train_another,
)
from carousel.tasks.digits import CLASSES, DigitsTask
from carousel.train import Config, ModelConfig, OptimConfig, TrainConfig

NAME = "digits"
TITLE = "Digits: scikit-learn's 8x8 handwritten digits read as sequences (held-out test images)"
METRICS = [
    Metric("accuracy", "accuracy", higher_is_better=True),
    Metric("errors", "errors", higher_is_better=False, digits=0),
    Metric("loss", "cross-entropy (nats)", higher_is_better=False),
]

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
"""The inverse regularisation strengths logistic regression chooses from on the validation set."""

MAX_ITER = 5000
"""L-BFGS iterations allowed to logistic regression (it converges in under 100 here)."""

ORDER_NAMES = {"rows": "rows order, 8 steps of 8 pixels", "pixels": "pixel order, 64 steps of 1"}


def config(quick: bool) -> Config:
    """The row-order LSTM: 1 layer of 128 cells (forget-gate bias 1), Adam with learning rate
    0.01, 100 steps of warm-up and cosine decay, gradient norm clipped to 1, batches of 64,
    1,500 steps (about 90 epochs of the 1,079 training images), validated every 100 steps.
    ``quick``: 16 cells, 6 steps on 64 images of each split."""
    if quick:
        return Config(
            task="digits",
            task_options={"order": "rows", "max_images": 64},
            model=ModelConfig(hidden_size=16, init="forget_bias(1.0)"),
            optim=OptimConfig(lr=1e-2, clip_norm=1.0),
            train=TrainConfig(steps=6, batch_size=16, eval_every=3, checkpoint_every=3),
        )
    return Config(
        task="digits",
        task_options={"order": "rows"},
        model=ModelConfig(hidden_size=128, init="forget_bias(1.0)"),
        optim=OptimConfig(
            lr=1e-2, schedule="cosine", warmup_steps=100, clip_norm=1.0, optimizer="adam"
        ),
        train=TrainConfig(steps=1500, batch_size=64, eval_every=100, checkpoint_every=500),
    )


def lstm_name(order: str, model_config: ModelConfig) -> str:
    """The table's name of an LSTM reading the images in ``order``."""
    return f"LSTM, {ORDER_NAMES[order]} ({model_config.hidden_size} cells)"


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``loss`` (mean negative log-likelihood in nats, probabilities floored at 1e-15),
    ``accuracy`` and ``errors`` of class ``probabilities`` ``(n, 10)`` for ``labels`` ``(n,)``;
    the predicted class is the most probable one."""
    labels = np.asarray(labels)
    if probabilities.shape != (len(labels), CLASSES):
        raise ValueError(
            f"probabilities must be (n, {CLASSES}) = ({len(labels)}, {CLASSES}); "
            f"got {probabilities.shape}"
        )
    chosen = probabilities[np.arange(len(labels)), labels]
    correct = int((probabilities.argmax(1) == labels).sum())
    return {
        "loss": float(-np.mean(np.log(np.clip(chosen, 1e-15, 1.0)))),
        "accuracy": correct / len(labels),
        "errors": float(len(labels) - correct),
    }


def logistic_regression(
    train_split: tuple[np.ndarray, np.ndarray],
    valid_split: tuple[np.ndarray, np.ndarray],
    test_split: tuple[np.ndarray, np.ndarray],
    grid: tuple[float, ...] = C_GRID,
) -> dict:
    """Multinomial logistic regression on flattened images: fitted on ``train_split`` for every
    ``C`` in ``grid``, the ``C`` of best validation accuracy (ties: lower validation loss) scored
    on ``test_split``.

    Args:
        train_split, valid_split, test_split: ``(images (n, ...), labels (n,))``; images are
            flattened to ``(n, features)`` and used as they are (already scaled).
        grid: the candidate values of ``C``.

    Returns:
        ``metrics`` (:func:`classification_metrics` on the test split), ``C`` (the chosen value),
        ``validation`` (``C`` -> validation metrics), ``probabilities`` ``(n_test, 10)``,
        ``iterations`` (L-BFGS iterations of the chosen fit).
    """
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise ImportError(
            "the digits application needs scikit-learn: pip install 'carousel-lstm[apps]'"
        ) from None

    def flat(split):
        images, labels = split
        return np.asarray(images, dtype=np.float64).reshape(len(images), -1), np.asarray(labels)

    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = map(
        flat, (train_split, valid_split, test_split)
    )

    def probabilities(fitted, x):
        result = np.zeros((len(x), CLASSES))
        result[:, fitted.classes_] = fitted.predict_proba(x)  # classes absent from training: 0
        return result

    best = None
    validation = {}
    for c in grid:
        fitted = LogisticRegression(C=c, max_iter=MAX_ITER).fit(x_train, y_train)
        validation[c] = classification_metrics(probabilities(fitted, x_valid), y_valid)
        key = (-validation[c]["accuracy"], validation[c]["loss"])
        if best is None or key < best[0]:
            best = (key, c, fitted)
    _, chosen, fitted = best
    test_probabilities = probabilities(fitted, x_test)
    return {
        "metrics": classification_metrics(test_probabilities, y_test),
        "C": chosen,
        "validation": validation,
        "probabilities": test_probabilities,
        "iterations": int(np.max(fitted.n_iter_)),
    }


@torch.no_grad()
def lstm_probabilities(model: torch.nn.Module, task: DigitsTask) -> np.ndarray:
    """The class probabilities ``(n_test, 10)`` of ``model`` on the task's test images, in the
    order of ``task.splits["test"]``."""
    model.eval()
    device = next(model.parameters()).device
    parts = []
    for batch in task.test_batches():
        batch = batch.to(device)
        logits = model(batch.x, batch.mask)[0]  # (B, 10)
        parts.append(torch.softmax(logits.double(), -1).cpu().numpy())
    return np.concatenate(parts)


def confusion(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """The confusion matrix ``(10, 10)``: row = true class, column = predicted class."""
    matrix = np.zeros((CLASSES, CLASSES), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def train_other_order(
    task: DigitsTask, settings: Config, out_dir: Path, quiet: bool
) -> tuple[DigitsTask, torch.nn.Module, dict, float]:
    """Train an LSTM with ``settings`` on the images read in the other order, into
    ``out_dir/run-ORDER``; return its task, its best-validation model, the training summary
    and the seconds it took."""
    order = "pixels" if task.options.order == "rows" else "rows"
    options = dataclasses.replace(task.options, order=order)
    other = dataclasses.replace(settings, task_options=dataclasses.asdict(options))
    other_task = DigitsTask(options, other.train.seed)
    return other_task, *train_another(other, other_task, out_dir / f"run-{order}", quiet)


def report(task: DigitsTask, model: torch.nn.Module, out_dir: Path, quiet: bool) -> Report:
    """Test metrics of the trained LSTM, of the LSTM trained on the other reading order and of
    logistic regression; the confusion matrices and the misclassified digits as plots."""
    out_dir = Path(out_dir)
    settings = run_settings(out_dir, task, config(quick=task.options.max_images > 0))
    other_task, other_model, other_summary, other_seconds = train_other_order(
        task, settings, out_dir, quiet
    )
    labels = task.split("test")[1]
    baseline = logistic_regression(task.split("train"), task.split("valid"), task.split("test"))
    names = [
        lstm_name(task.options.order, settings.model),
        lstm_name(other_task.options.order, settings.model),
        "logistic regression on the 64 pixels",
    ]
    rows = {
        names[0]: test_metrics(model, task),
        names[1]: test_metrics(other_model, other_task),
        names[2]: baseline["metrics"],
    }
    probabilities = [
        lstm_probabilities(model, task),
        lstm_probabilities(other_model, other_task),
        baseline["probabilities"],
    ]
    predictions = [p.argmax(1) for p in probabilities]
    counts = {name: len(task.splits[name]) for name in ("train", "valid", "test")}
    validation = ", ".join(
        f"C={c:g}: {metrics['accuracy']:.4f}" for c, metrics in baseline["validation"].items()
    )
    wrong = [prediction != labels for prediction in predictions]
    other_order = other_task.options.order.removesuffix("s")  # row, pixel
    notes = [
        f"Split (fixed, stratified by class, the same for every seed): {counts['train']} training, "
        f"{counts['valid']} validation, {counts['test']} test images; pixels divided by 16.",
        f"The {other_order}-order LSTM was trained with the same settings into "
        f"`run-{other_task.options.order}`: {other_summary['step']:,} steps in "
        f"{other_seconds:.0f} s; its checkpoint of step {other_summary['best_step']:,} had the "
        "best validation loss.",
        f"Logistic regression: scikit-learn LogisticRegression (multinomial, L-BFGS, "
        f"max_iter={MAX_ITER}, {baseline['iterations']} iterations), C={baseline['C']:g} chosen "
        f"by validation accuracy ({validation}).",
        f"Test images misclassified by both LSTMs: {int((wrong[0] & wrong[1]).sum())}; by all "
        f"three models: {int((wrong[0] & wrong[1] & wrong[2]).sum())}.",
    ]
    for name, prediction in zip(names, predictions, strict=True):
        notes.append(f"Most frequent confusions of {name}: {top_confusions(labels, prediction)}.")
    files = plot(task, names, labels, predictions, out_dir)
    if not files:
        notes.append("matplotlib is not installed: no plots (pip install 'carousel-lstm[apps]').")
    if not all(math.isfinite(v) for row in rows.values() for v in row.values()):
        notes.append("Some metrics are not finite: a run diverged.")
    notes = [*(f"- {note}" for note in notes), ""]  # the blank line ends the list
    return Report(rows=rows, notes=notes, files=files, ours=2)


def top_confusions(labels: np.ndarray, predictions: np.ndarray, count: int = 3) -> str:
    """The ``count`` most frequent mistakes (true as predicted): ``"8 as 1 (3), 9 as 5 (2)"``."""
    matrix = confusion(labels, predictions)
    np.fill_diagonal(matrix, 0)
    pairs = sorted(
        ((int(matrix[t, p]), t, p) for t in range(CLASSES) for p in range(CLASSES)),
        key=lambda item: (-item[0], item[1], item[2]),
    )
    shown = [f"{t} as {p} ({n})" for n, t, p in pairs[:count] if n]
    return ", ".join(shown) if shown else "none"


def plot(
    task: DigitsTask,
    names: list[str],
    labels: np.ndarray,
    predictions: list[np.ndarray],
    out_dir: Path,
) -> list[str]:
    """Write ``confusion.png`` (one test confusion matrix per model) and ``misclassified.png``
    (up to 32 test digits the first model gets wrong); the files written, ``[]`` without
    matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.4))
    for axis, name, prediction in zip(np.atleast_1d(axes), names, predictions, strict=True):
        matrix = confusion(labels, prediction)
        axis.imshow(matrix, cmap="Blues")
        for t in range(CLASSES):
            for p in range(CLASSES):
                if matrix[t, p]:
                    colour = "white" if matrix[t, p] > matrix.max() / 2 else "black"
                    axis.text(
                        p, t, str(matrix[t, p]), ha="center", va="center", fontsize=7, color=colour
                    )
        axis.set_xticks(range(CLASSES))
        axis.set_yticks(range(CLASSES))
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        errors = int((prediction != labels).sum())
        axis.set_title(f"{name}\n{errors} errors of {len(labels)}", fontsize=8)
    figure.tight_layout()
    figure.savefig(out_dir / "confusion.png", dpi=120)
    plt.close(figure)

    images = task.split("test")[0]
    wrong = np.flatnonzero(predictions[0] != labels)[:32]
    columns = 8
    rows = max(1, math.ceil(len(wrong) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.5 * rows + 0.4))
    for axis in np.atleast_1d(axes).ravel():
        axis.axis("off")
    for axis, index in zip(np.atleast_1d(axes).ravel(), wrong, strict=False):
        axis.imshow(images[index], cmap="gray_r", vmin=0, vmax=1)
        axis.set_title(f"{labels[index]} as {predictions[0][index]}", fontsize=8)
    figure.suptitle(f"Test digits misclassified by {names[0]} (true as predicted)", fontsize=9)
    figure.tight_layout()
    figure.savefig(out_dir / "misclassified.png", dpi=120)
    plt.close(figure)
    return ["confusion.png", "misclassified.png"]
