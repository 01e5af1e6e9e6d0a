"""Run directories: what one holds, who may write to it, and the checks before anything is.

A run directory holds::

    config.json         the run's configuration (:class:`~carousel.train.config.Config`)
    vocab.json          token tasks: the vocabulary, id -> token
    metrics.csv, tensorboard/, curve.png    (:mod:`carousel.train.logging`)
    checkpoints/        step checkpoints and best.json (:mod:`carousel.train.checkpoint`)
    .lock               held (``flock``) by the process training in it

One process at a time trains in a run directory: :class:`RunLock` holds an OS lock on its
``.lock`` file for the run's whole life (the operating system drops it when the process dies,
so even ``SIGKILL`` leaves no stale lock); a second process is refused, told the holder's pid.

Before a run writes anything, :func:`open_run_directory` locks the directory and checks it
(:func:`check_run_directory`): a new run needs it empty, a resumed one needs it to hold the same
run (up to the settings in :data:`RESUMABLE`); only then does :func:`write_run_files` write the
configuration and the vocabulary.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from carousel.train import checkpoint, distributed
from carousel.train.checkpoint import CheckpointError
from carousel.train.config import Config
from carousel.train.logging import check_metrics

LOCK_NAME = ".lock"
"""The lock file of a run directory (:class:`RunLock`)."""
RESUMABLE = (
    "train.steps",
    "train.eval_every",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_last",
    "train.stop_when_solved",
    "train.device",
    "train.threads",
    "model.backend",
)
"""Settings a resumed run may change; any other difference from the saved run is an error."""


class RunLock:
    """An exclusive lock on a run directory, held while one process trains in it.

    :meth:`acquire` takes an OS lock (``flock``, through ``filelock``) on the directory's
    ``.lock`` file and writes this process's pid and host into it; the operating system releases
    the lock when the process ends, however it ends. A second process is refused with the
    holder's pid. The file stays after the run (removing it could let two processes lock two
    different files).
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.descriptor: int | None = None

    def acquire(self) -> RunLock:
        """Lock the directory (creating it and the lock file if needed).

        Raises:
            CheckpointError: another process holds the lock (named by its pid), or the
                directory cannot be locked.
        """
        from filelock import lock_descriptor

        directory = self.path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise CheckpointError(
                f"cannot lock run directory {str(directory)!r}: {error.strerror}"
            ) from None
        try:
            locked = lock_descriptor(descriptor, blocking=False)
        except OSError as error:
            os.close(descriptor)
            raise CheckpointError(
                f"cannot lock run directory {str(directory)!r}: {error.strerror}"
            ) from None
        if not locked:
            holder = os.read(descriptor, 200).decode(errors="replace").split()
            os.close(descriptor)
            who = f"pid {holder[0]}" + (f" on {holder[1]}" if len(holder) > 1 else "")
            raise CheckpointError(
                f"run directory {str(directory)!r} is in use by another process ({who if holder else 'pid unknown'}); "
                "wait for it to end, or choose another --out"
            )
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self.descriptor = descriptor
        return self

    def release(self) -> None:
        """Unlock (closing the file releases the lock)."""
        if self.descriptor is not None:
            os.close(self.descriptor)
            self.descriptor = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


def open_run_directory(
    run_dir: Path, config: Config, resume: bool, lock: RunLock | None, vocabulary, context
) -> Path | None:
    """Lock (rank 0, with ``lock``) and check ``run_dir`` (:func:`check_run_directory`); every
    process gets the checkpoint to resume from (``None``: start at step 0) or rank 0's error."""
    return _broadcast_checked(
        context, lambda: check_run_directory(run_dir, config, resume, lock, vocabulary)
    )


def check_run_directory(
    run_dir: Path,
    config: Config,
    resume: bool,
    lock: RunLock | None = None,
    vocabulary=None,
) -> Path | None:
    """Check that training may write to ``run_dir``, taking ``lock`` (if given) first; return
    the checkpoint to resume from.

    A new run needs a missing or empty directory. A resumed run needs the run's
    ``config.json`` to match ``config`` (up to :data:`RESUMABLE`), its ``vocab.json`` (if any) to
    equal ``vocabulary`` and its ``metrics.csv`` to be readable; it continues from the latest
    checkpoint, or from step 0 if none was written yet. The lock is taken only where a run
    may be: never in a directory that is neither empty nor a run's.
    """
    config_path = run_dir / "config.json"
    if not resume:
        if run_dir.exists() and not run_dir.is_dir():
            raise CheckpointError(
                f"output directory {str(run_dir)!r} is a file; choose another --out"
            )
        is_run = config_path.exists() or (run_dir / LOCK_NAME).exists()
        if lock is not None and (is_run or not _contents(run_dir)):
            lock.acquire()
        if _contents(run_dir):
            raise CheckpointError(
                f"output directory {str(run_dir)!r} is not empty; pass --resume to continue the "
                "run in it, or choose another --out"
            )
        return None
    if not config_path.exists():
        raise CheckpointError(f"nothing to resume in {str(run_dir)!r}: it has no config.json")
    if lock is not None:
        lock.acquire()
    saved = Config.from_dict(
        checkpoint.read_json(config_path, "run configuration"), str(config_path)
    )
    differences = config.differences(saved, ignore=RESUMABLE)
    if differences:
        raise CheckpointError(
            f"the run in {str(run_dir)!r} was made with other settings ({'; '.join(differences[:4])}); "
            "resume it with its own settings, or choose another --out"
        )
    vocabulary_path = run_dir / "vocab.json"
    if vocabulary_path.exists():
        if vocabulary != checkpoint.read_json(vocabulary_path, "vocabulary"):
            raise CheckpointError(
                f"the task's vocabulary differs from the one saved in {str(vocabulary_path)!r} "
                "(has the text changed?)"
            )
    check_metrics(run_dir / "metrics.csv")
    return checkpoint.latest(run_dir / "checkpoints")


def _contents(directory: Path) -> list[str]:
    """The entries of ``directory`` (none if it does not exist) but its lock file."""
    if not directory.is_dir():
        return []
    return [path.name for path in directory.iterdir() if path.name != LOCK_NAME]


def _broadcast_checked(context, check):
    """Run ``check`` on rank 0 and give its result, or raise its error, on every process."""
    outcome = None
    if context.is_main:
        try:
            outcome = ("ok", check())
        except ValueError as error:
            outcome = (type(error).__name__, str(error))
    outcome = distributed.broadcast_object(context, outcome)
    if outcome[0] != "ok":
        raise (CheckpointError if outcome[0] == "CheckpointError" else ValueError)(outcome[1])
    return outcome[1]


def write_run_files(run_dir: Path, config: Config, vocabulary) -> None:
    """Write the configuration (``config.json``) and, for token tasks, the ``vocabulary``
    (``vocab.json``) into ``run_dir``, creating it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint.write_json(run_dir / "config.json", config.to_dict())
    if vocabulary is not None:
        checkpoint.write_json(run_dir / "vocab.json", vocabulary)
