"""What a run reports: a progress bar, ``metrics.csv``, TensorBoard events and ``curve.png``.

- The progress bar (tqdm, on standard error) shows steps, ETA and the latest training and test
  metrics; ``quiet`` turns it and every other line off.
- ``metrics.csv`` has one row per ``log_every`` steps (and per evaluation): ``step``,
  ``sequences`` (seen so far, over all processes), ``seconds`` (training time), ``lr``,
  ``grad_norm`` (mean before clipping), the task's metrics on the training sequences of the
  rows' steps (``train_*``) and, where an evaluation ran, on the test set (``eval_*``).
- TensorBoard event files in ``tensorboard/`` (if ``tensorboardX`` is installed):
  ``train/<metric>``, ``eval/<metric>``, ``lr`` per step.
- ``curve.png``, the learning curves (if matplotlib is installed), drawn at the end.

When a run resumes, rows after the checkpoint's step are dropped from ``metrics.csv`` and
TensorBoard discards its events after that step, so both read as one uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from carousel.train.checkpoint import CheckpointError, atomic_write

FIXED_COLUMNS = ["step", "sequences", "seconds", "lr", "grad_norm"]


class RunLog:
    """The reports of one process (only rank 0 writes; other ranks get ``enabled=False``).

    :attr:`rows` holds the rows of ``metrics.csv`` (a resumed run's earlier ones too) as
    :func:`read_metrics` reads them back: column -> number, empty cells left out.

    Args:
        run_dir: the run directory.
        total_steps: for the progress bar.
        start_step: where this session starts (0, or the resumed checkpoint's step).
        enabled: whether this process writes anything at all.
        quiet: no progress bar and no printed lines (files are still written).
    """

    def __init__(
        self, run_dir: Path, total_steps: int, start_step: int, enabled: bool, quiet: bool
    ) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.quiet = quiet or not enabled
        self.csv_path = self.run_dir / "metrics.csv"
        self.columns: list[str] | None = None
        self.rows: list[dict[str, float]] = []  # what metrics.csv holds, as numbers
        self.last_eval_loss: float | None = None
        self.writer = None
        self.bar = None
        if not enabled:
            return
        self._truncate_csv(start_step)
        self.writer = _tensorboard_writer(self.run_dir / "tensorboard", start_step, self.quiet)
        if not self.quiet:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total_steps,
                initial=start_step,
                unit="step",
                dynamic_ncols=True,
                file=sys.stderr,
            )

    def _truncate_csv(self, start_step: int) -> None:
        """Keep the rows up to ``start_step`` (a resumed run redoes the later ones)."""
        if not self.csv_path.exists():
            return
        with open(self.csv_path, newline="") as file:
            rows = list(csv.reader(file))
        if not rows:
            return
        self.columns = rows[0]
        kept = [rows[0]] + [row for row in rows[1:] if row and int(row[0]) <= start_step]
        self.rows = [
            {k: float(v) for k, v in zip(self.columns, row, strict=True) if v} for row in kept[1:]
        ]
        buffer = io.StringIO()
        csv.writer(buffer).writerows(kept)
        atomic_write(self.csv_path, buffer.getvalue().encode())

    def step(self) -> None:
        """One training step done."""
        if self.bar is not None:
            self.bar.update(1)

    def row(
        self,
        fixed: dict[str, float],
        train: dict[str, float],
        evaluation: dict[str, float] | None,
    ) -> None:
        """Append a row: the fixed columns, training metrics and, if any, test metrics."""
        if not self.enabled:
            return
        if self.columns is None:
            self.columns = (
                FIXED_COLUMNS + [f"train_{k}" for k in train] + [f"eval_{k}" for k in train]
            )
            with open(self.csv_path, "w", newline="") as file:
                csv.writer(file).writerow(self.columns)
        values = {**fixed, **{f"train_{k}": v for k, v in train.items()}}
        if evaluation is not None:
            values.update({f"eval_{k}": v for k, v in evaluation.items()})
        with open(self.csv_path, "a", newline="") as file:
            csv.writer(file).writerow([_format(values.get(column)) for column in self.columns])
        self.rows.append({k: float(values[k]) for k in self.columns if values.get(k) is not None})
        step = int(fixed["step"])
        if self.writer is not None:
            self.writer.add_scalar("lr", fixed["lr"], step)
            for name, value in train.items():
                self.writer.add_scalar(f"train/{name}", value, step)
            for name, value in (evaluation or {}).items():
                self.writer.add_scalar(f"eval/{name}", value, step)
            self.writer.flush()
        if self.bar is not None:
            if evaluation is not None:
                self.last_eval_loss = evaluation["loss"]
            shown = {"loss": train["loss"], "eval_loss": self.last_eval_loss}
            self.bar.set_postfix(
                {k: f"{v:.4g}" for k, v in shown.items() if v is not None}, refresh=False
            )

    def message(self, text: str) -> None:
        """Print a line (above the progress bar), unless quiet."""
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self, title: str) -> None:
        """Close the bar and the event file, draw ``curve.png``."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        plot_curves(self.csv_path, self.run_dir / "curve.png", title, self.message)


def check_metrics(path: Path) -> None:
    """Raise :class:`~carousel.train.checkpoint.CheckpointError`, naming the file, the line and
    the column, unless ``path`` (if it exists) is a ``metrics.csv`` a resumed run can continue:
    a header that starts with the fixed columns, rows as wide as it, a whole ``step`` >= 0 and
    numbers (or nothing) in every other cell."""
    if not path.exists():
        return
    source = f"metrics file {str(path)!r}"
    try:
        with open(path, newline="", encoding="utf-8") as file:
            rows = list(csv.reader(file))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise CheckpointError(f"{source} cannot be read: {error}") from None
    if not rows:
        return
    header = rows[0]
    if header[: len(FIXED_COLUMNS)] != FIXED_COLUMNS:
        raise CheckpointError(
            f"{source} is corrupt: line 1: the header must start with {','.join(FIXED_COLUMNS)}; "
            f"got {','.join(header[: len(FIXED_COLUMNS)])!r}"
        )
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise CheckpointError(
                f"{source} is corrupt: line {line}: {len(row)} cells; the header has {len(header)}"
            )
        if not row[0].isdigit():
            raise CheckpointError(
                f"{source} is corrupt: line {line}, column step: expected a whole number; got {row[0]!r}"
            )
        for column, cell in zip(header[1:], row[1:], strict=True):
            try:
                float(cell or 0)
            except ValueError:
                raise CheckpointError(
                    f"{source} is corrupt: line {line}, column {column}: expected a number; got {cell!r}"
                ) from None


def _format(value) -> str:
    return "" if value is None else repr(value)


def _tensorboard_writer(directory: Path, start_step: int, quiet: bool):
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        if not quiet:
            print("note: tensorboardX is not installed; no TensorBoard events", file=sys.stderr)
        return None
    return SummaryWriter(str(directory), purge_step=start_step if start_step else None)


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The rows of a ``metrics.csv``, numbers as floats, empty cells left out."""
    with open(path, newline="") as file:
        return [
            {key: float(value) for key, value in row.items() if value not in ("", None)}
            for row in csv.DictReader(file)
        ]


def plot_curves(csv_path: Path, png_path: Path, title: str, say=print) -> None:
    """Draw the training and test loss of ``csv_path`` against steps into ``png_path``."""
    if not csv_path.exists():
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("note: matplotlib is not installed; no curve.png")
        return
    rows = read_metrics(csv_path)
    figure, axes = plt.subplots(figsize=(7, 4), layout="constrained")
    for column, label in (("train_loss", "training"), ("eval_loss", "test")):
        points = [(row["step"], row[column]) for row in rows if column in row]
        if points:
            steps, values = zip(*points, strict=True)
            axes.plot(
                steps,
                values,
                marker="o" if column == "eval_loss" else None,
                markersize=3,
                label=label,
            )
    if rows and all(row.get(c, 1) > 0 for row in rows for c in ("train_loss", "eval_loss")):
        axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    atomic_write(png_path, buffer.getvalue())
