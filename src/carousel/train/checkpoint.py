"""Checkpoints that survive crashes: written atomically, checked whole before use.

A checkpoint of step ``N`` is two files in a run's ``checkpoints/`` directory (see
:mod:`carousel.train.run_dir` for the rest of a run directory)::

    step-0000000N.safetensors   weights, optimiser state, carried state, recent scores
    step-0000000N.json          progress, RNG states, optimiser settings, config, and the
                                SHA-256 of the .safetensors file
    best.json                   which step checkpoint had the lowest test loss

Every file is written atomically: to a temporary file in the same directory, flushed to disk,
then renamed over the target. A checkpoint's ``.json`` is written last and names the hash of its
tensors, so a checkpoint exists only once both files are complete: a process killed mid-write
leaves the previous checkpoint as the latest one.

A checkpoint is checked whole before any of it is used: its ``.json`` against
:data:`~carousel.train.schema.CHECKPOINT_SCHEMA` (types, ranges), then its ``digest`` (the
SHA-256 of the rest of the record, which includes the SHA-256 of the tensors), the tensors
against their hash, and the fields against each other and against the tensors (:func:`load`).
Whatever fails raises :class:`CheckpointError` (a ``ValueError``) naming the file and the field,
without anything being changed. Nothing is unpickled: tensors are safetensors, everything else
JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import Tensor

from carousel.train.schema import (
    BEST_SCHEMA,
    CHECKPOINT_SCHEMA,
    FORMAT,
    STEP_NAME,
    VERSION,
    CheckpointError,
    check_record,
    check_schema,
    check_tensors,
    fail,
    step_name,
)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either its old or its new content."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible on every platform
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_json(path: Path, data) -> None:
    """Atomically write ``data`` as indented JSON."""
    atomic_write(path, (json.dumps(data, indent=1) + "\n").encode())


def read_json(path: Path, what: str):
    """The JSON in ``path``; a clear :class:`CheckpointError` if it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{what} {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{what} {str(path)!r} is corrupt: {error}") from None


# ---- checkpoints ---------------------------------------------------------------------------


def save(directory: Path, name: str, tensors: dict[str, Tensor], info: dict) -> Path:
    """Write ``name.safetensors`` (``tensors``) and then ``name.json`` (``info`` plus the file's
    hash); returns the path of the ``.json``."""
    from safetensors.torch import save as to_bytes

    directory.mkdir(parents=True, exist_ok=True)
    data = to_bytes({key: value.contiguous() for key, value in tensors.items()})
    atomic_write(directory / f"{name}.safetensors", data)
    info = {
        "format": FORMAT,
        "version": VERSION,
        **info,
        "tensors": f"{name}.safetensors",
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    info = json.loads(json.dumps(info))  # as it will read back (tuples become lists)
    info["digest"] = digest(info)
    write_json(directory / f"{name}.json", info)
    return directory / f"{name}.json"


def digest(info: dict) -> str:
    """The SHA-256 of a checkpoint record without its ``digest`` field, as canonical JSON
    (sorted keys, no spaces). The record holds the SHA-256 of the tensors, so this covers both."""
    rest = {key: value for key, value in info.items() if key != "digest"}
    text = json.dumps(rest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def load(path: Path) -> tuple[dict[str, Tensor], dict]:
    """The tensors and the info of the checkpoint whose ``.json`` is ``path``, checked whole:
    the record's schema and digest, its fields against each other (:func:`check_record`), the
    tensors' hash, and the record against the tensors (:func:`check_tensors`).

    Raises:
        CheckpointError: naming the file and the field that fails.
    """
    from safetensors.torch import load as from_bytes

    path = Path(path)
    source = f"checkpoint {str(path)!r}"
    info = read_json(path, "checkpoint")
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a carousel checkpoint")
    if info.get("version") != VERSION:
        raise CheckpointError(
            f"{source} has format version {info.get('version')!r}; this carousel reads {VERSION}"
        )
    check_schema(info, CHECKPOINT_SCHEMA, source)
    if digest(info) != info["digest"]:
        fail(source, "digest", "the record does not match the SHA-256 written with it")
    config = read_config(info, path)
    check_record(info, path, config)
    tensors_path = path.parent / info["tensors"]
    try:
        data = tensors_path.read_bytes()
    except OSError:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is incomplete: its tensors file {str(tensors_path)!r} cannot be read"
        ) from None
    if hashlib.sha256(data).hexdigest() != info.get("sha256"):
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt: {tensors_path.name} does not match the SHA-256 "
            "recorded when it was written"
        )
    try:
        tensors = from_bytes(data)
    except Exception as error:  # safetensors raises its own error types
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt: {error}") from None
    check_tensors(info, tensors, path, config)
    return tensors, info


def step_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(step, json path)`` of the complete-looking step checkpoints, oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = STEP_NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest(directory: Path) -> Path | None:
    """The ``.json`` of the newest step checkpoint in ``directory``, or ``None``."""
    found = step_checkpoints(directory)
    return found[-1][1] if found else None


def find(run_dir: Path, which: str = "latest") -> Path:
    """The checkpoint ``which`` of a run: ``"latest"``, ``"best"``, or a path to a ``.json``."""
    directory = Path(run_dir) / "checkpoints"
    if which == "latest":
        path = latest(directory)
        if path is None:
            raise CheckpointError(f"run {str(run_dir)!r} has no checkpoint yet")
        return path
    if which == "best":
        record = directory / "best.json"
        pointer = read_json(record, "best-checkpoint record")
        check_schema(pointer, BEST_SCHEMA, f"best-checkpoint record {str(record)!r}")
        if pointer["checkpoint"] != f"{step_name(pointer['step'])}.json":
            fail(f"best-checkpoint record {str(record)!r}", "checkpoint", "names another step")
        return directory / pointer["checkpoint"]
    return Path(which)


def prune(directory: Path, keep_last: int, keep: Path | None = None) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints (never ``keep``, the best one),
    orphaned tensor files and temporary files of interrupted writes."""
    found = step_checkpoints(directory)
    kept = {path.name for _, path in found[-keep_last:]} if keep_last else set()
    if keep is not None:
        kept.add(keep.name)
    for _, path in found:
        if path.name not in kept:
            path.unlink(missing_ok=True)  # the .json first: the checkpoint stops existing
            path.with_suffix(".safetensors").unlink(missing_ok=True)
    live = {path.with_suffix(".safetensors").name for _, path in step_checkpoints(directory)}
    for path in directory.iterdir():
        orphan = path.suffix == ".safetensors" and path.name not in live
        if orphan or (path.name.startswith(".") and ".tmp-" in path.name):
            path.unlink(missing_ok=True)


def load_trained_model(
    run_dir: str | Path, which: str = "latest", device: str | torch.device = "cpu"
):
    """The model of a run's checkpoint, in eval mode, for evaluation or sampling.

    Args:
        run_dir: the run directory.
        which: ``"latest"``, ``"best"`` or the path of a checkpoint's ``.json``.
        device: where to put the model.

    Returns:
        ``(config, model, info)``: the run's :class:`~carousel.train.config.Config`, the model
        and the checkpoint's JSON record.
    """
    from carousel import models
    from carousel.tasks import ModelIO

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {str(run_dir)!r} does not exist")
    if not (run_dir / "config.json").exists() and which in ("latest", "best"):
        raise CheckpointError(f"{str(run_dir)!r} is not a run directory (it has no config.json)")
    path = find(run_dir, which)
    tensors, info = load(path)
    source = repr(str(path))
    config = read_config(info, path)
    try:
        io = ModelIO(**info["io"])
    except (TypeError, ValueError) as error:
        fail(f"checkpoint {source}", "io", str(error))
    model = models.build(io, config.model)
    load_model(model, tensors, source)
    return config, model.to(device).eval(), info


def read_config(info: dict, path: Path):
    """The :class:`~carousel.train.config.Config` in a checkpoint record, or a
    :class:`CheckpointError` naming the checkpoint and the setting."""
    from carousel.train.config import Config

    try:
        return Config.from_dict(info["config"], "its config")
    except (TypeError, ValueError) as error:
        fail(f"checkpoint {str(path)!r}", "config", str(error))


# ---- model and optimiser state as flat tensors ---------------------------------------------


def model_tensors(model: torch.nn.Module) -> dict[str, Tensor]:
    """``model.<name>`` for every entry of the state dict, as independent CPU copies (tied
    weights are stored once per name)."""
    return {f"model.{k}": v.detach().cpu().clone() for k, v in model.state_dict().items()}


def load_model(model: torch.nn.Module, tensors: dict[str, Tensor], source: str) -> None:
    """Load ``model.*`` tensors into ``model``; a clear error if they do not fit it."""
    weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = [
        f"{name} {list(weights[name].shape)} != {list(expected[name].shape)}"
        for name in sorted(set(expected) & set(weights))
        if weights[name].shape != expected[name].shape
    ]
    if missing or unexpected or wrong:
        details = "; ".join(
            part
            for part in (
                f"missing {missing[:5]}" if missing else "",
                f"unexpected {unexpected[:5]}" if unexpected else "",
                f"shapes differ: {', '.join(wrong[:5])}" if wrong else "",
            )
            if part
        )
        raise CheckpointError(f"checkpoint {source} holds the weights of another model: {details}")
    model.load_state_dict(weights)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    """The optimiser's state: its tensors (``optimizer.<param>.<key>``) and the rest as JSON."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().clone()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def load_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], saved: dict, source: str
) -> None:
    """Restore what :func:`optimizer_tensors` saved."""
    entries: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            entries.setdefault(int(index), {})[key] = value
    for name, value in saved.get("scalars", {}).items():
        index, key = name.split(".", 1)
        entries.setdefault(int(index), {})[key] = value
    try:
        optimizer.load_state_dict({"state": entries, "param_groups": saved["param_groups"]})
    except (KeyError, ValueError, RuntimeError, TypeError) as error:
        raise CheckpointError(
            f"checkpoint {source} holds another optimiser's state: {error}"
        ) from None
