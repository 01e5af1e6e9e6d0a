"""Run directories and checkpoints that survive crashes.

A run directory holds::

    config.json                      the run's configuration (carousel.train.config.Config)
    vocab.json                       token tasks: the vocabulary, id -> token
    metrics.csv, tensorboard/, curve.png   (carousel.train.logging)
    checkpoints/step-00000100.safetensors  weights, optimiser state, carried state
    checkpoints/step-00000100.json         progress, RNG states, optimiser settings, config,
                                           and the SHA-256 of the .safetensors file
    checkpoints/best.json                  which step checkpoint had the lowest test loss

    .lock                                  held (``flock``) by the process training in it

Every file is written atomically: to a temporary file in the same directory, flushed to disk,
then renamed over the target. A checkpoint's ``.json`` is written last and names the hash of its
tensors, so a checkpoint exists only once both files are complete: a process killed mid-write
leaves the previous checkpoint as the latest one.

A checkpoint is checked whole before any of it is used: its ``.json`` against
:data:`CHECKPOINT_SCHEMA` (types, ranges), then its ``digest`` (the SHA-256 of the rest of the
record, which includes the SHA-256 of the tensors), the tensors against their hash, and the
fields against each other and against the tensors (:func:`load`). Whatever fails raises
:class:`CheckpointError` (a ``ValueError``) naming the file and the field, without anything
being changed. Nothing is unpickled: tensors are safetensors, everything else JSON.

One process at a time trains in a run directory: :class:`RunLock` holds an OS lock on its
``.lock`` file for the run's whole life (the operating system drops it when the process dies,
so even ``SIGKILL`` leaves no stale lock); a second process is refused, told the holder's pid.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import reprlib
import socket
from pathlib import Path

import torch
from torch import Tensor

FORMAT = "carousel-checkpoint"
VERSION = 2
STEP_NAME = re.compile(r"^step-(\d+)\.json$")
LOCK_NAME = ".lock"
TENSOR_KINDS = ("model", "optimizer", "carry", "recent")
"""Prefixes of the tensor names in a checkpoint's ``.safetensors``."""

_COUNT = {"type": "integer", "minimum": 0}
_OPTIONAL_COUNT = {"type": ["integer", "null"], "minimum": 0}
_NUMBER = {"type": "number"}
_BASE64 = {"type": "string", "minLength": 4, "pattern": "^[A-Za-z0-9+/]*={0,2}$"}
_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
PROGRESS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "step": _COUNT,
        "sequences": _COUNT,
        "seconds": {"type": "number", "minimum": 0},
        "best_loss": {"type": ["number", "null"]},
        "best_step": _OPTIONAL_COUNT,
        "solved_step": _OPTIONAL_COUNT,
        "solved_sequences": _OPTIONAL_COUNT,
        "row_totals": {"type": "object", "additionalProperties": _NUMBER},
        "row_sequences": _COUNT,
        "row_steps": _COUNT,
        "row_grad_norm": _NUMBER,
    },
}
PROGRESS_SCHEMA["required"] = sorted(PROGRESS_SCHEMA["properties"])
CHECKPOINT_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "format": {"const": FORMAT},
        "version": {"const": VERSION},
        "step": _COUNT,
        "config": {"type": "object"},  # checked by Config.from_dict
        "io": {"type": "object"},  # checked by ModelIO
        "progress": PROGRESS_SCHEMA,
        "optimizer": {
            "type": "object",
            "required": ["param_groups", "scalars"],
            "additionalProperties": False,
            "properties": {
                "param_groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["params", "lr"],
                        "properties": {
                            "params": {"type": "array", "items": _COUNT, "uniqueItems": True},
                            "lr": {"type": "number", "minimum": 0},
                        },
                    },
                },
                "scalars": {
                    "type": "object",
                    "propertyNames": {"pattern": "^[0-9]+[.].+$"},
                    "additionalProperties": {"type": ["number", "boolean"]},
                },
            },
        },
        "carried": {"enum": [None, "tuple", "tensor"]},
        "world_size": {"type": "integer", "minimum": 1},
        "rng": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["torch"],
                "additionalProperties": False,
                "properties": {"torch": _BASE64, "cuda": _BASE64},
            },
        },
        "tensors": {"type": "string", "pattern": "^step-[0-9]{8,}[.]safetensors$"},
        "sha256": _SHA256,
        "digest": _SHA256,
    },
}
CHECKPOINT_SCHEMA["required"] = sorted(CHECKPOINT_SCHEMA["properties"])
"""What a checkpoint's ``.json`` holds (JSON Schema); :func:`load` adds the checks across
fields and against the tensors."""
BEST_SCHEMA = {
    "type": "object",
    "required": ["checkpoint", "step", "loss"],
    "additionalProperties": False,
    "properties": {
        "checkpoint": {"type": "string", "pattern": "^step-[0-9]{8,}[.]json$"},
        "step": _COUNT,
        "loss": _NUMBER,
    },
}
"""What ``checkpoints/best.json`` holds."""


class CheckpointError(ValueError):
    """A run directory or checkpoint that cannot be used: corrupt, in use, or from another run."""


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


def step_name(step: int) -> str:
    """The file stem of the checkpoint after ``step`` steps."""
    return f"step-{step:08d}"


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


def check_schema(data, schema: dict, source: str) -> None:
    """Raise :class:`CheckpointError` naming ``source`` and the first offending field if
    ``data`` does not follow the JSON Schema ``schema`` (integers must be JSON integers)."""
    from jsonschema import Draft202012Validator, validators

    checker = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    )
    validator = validators.extend(Draft202012Validator, type_checker=checker)(schema)
    errors = sorted(
        validator.iter_errors(data), key=lambda e: ([str(p) for p in e.absolute_path], e.message)
    )
    if errors:
        error = errors[0]
        field = ".".join(str(part) for part in error.absolute_path) or "the record"
        message = error.message
        if len(message) > 160:  # a long value (e.g. an RNG state) would fill the screen
            message = f"{reprlib.repr(error.instance)} fails {error.validator!r} {reprlib.repr(error.validator_value)}"
        raise CheckpointError(f"{source} is corrupt: {field}: {message}")


def _fail(source: str, field: str, message: str):
    raise CheckpointError(f"{source} is corrupt: {field}: {message}")


def decode_rng(text: str, source: str, field: str) -> Tensor:
    """An RNG state saved as base64 text, as the ``uint8`` tensor torch takes."""
    try:
        data = base64.b64decode(text, validate=True)
    except ValueError:
        _fail(source, field, "is not base64")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def check_record(info: dict, path: Path, config) -> None:
    """The checks of a checkpoint record across its fields (after the schema; ``config`` is its
    :class:`~carousel.train.config.Config`): the step, the counts and the RNG states agree."""
    source = f"checkpoint {str(path)!r}"
    step, progress = info["step"], info["progress"]
    match = STEP_NAME.match(path.name)
    if match and int(match.group(1)) != step:
        _fail(source, "step", f"{step} differs from the file name's step {int(match.group(1))}")
    if info["tensors"] != f"{step_name(step)}.safetensors":
        _fail(source, "tensors", f"{info['tensors']!r} is not the tensors file of step {step}")
    if progress["step"] != step:
        _fail(source, "progress.step", f"{progress['step']} differs from step {step}")
    batch = config.train.batch_size
    for steps, sequences in (("step", "sequences"), ("row_steps", "row_sequences")):
        if progress[sequences] != progress[steps] * batch:
            _fail(
                source,
                f"progress.{sequences}",
                f"{progress[sequences]} is not progress.{steps} ({progress[steps]}) batches of {batch}",
            )
    for name in ("best_step", "solved_step", "row_steps"):
        if progress[name] is not None and progress[name] > step:
            _fail(source, f"progress.{name}", f"{progress[name]} lies after step {step}")
    for first, second in (("best_step", "best_loss"), ("solved_step", "solved_sequences")):
        if (progress[first] is None) != (progress[second] is None):
            _fail(source, f"progress.{second}", f"must be set exactly when {first} is")
    if progress["solved_step"] is not None and progress["solved_sequences"] > progress["sequences"]:
        _fail(source, "progress.solved_sequences", "exceeds progress.sequences")
    if len(info["rng"]) != info["world_size"]:
        _fail(source, "rng", f"{len(info['rng'])} states for world_size {info['world_size']}")
    size = torch.get_rng_state().numel()
    for rank, state in enumerate(info["rng"]):
        for kind, text in state.items():
            length = decode_rng(text, source, f"rng.{rank}.{kind}").numel()
            if kind == "torch" and length != size:
                _fail(
                    source,
                    f"rng.{rank}.torch",
                    f"holds {length} bytes; a CPU generator's state has {size}",
                )


def check_tensors(info: dict, tensors: dict[str, Tensor], path: Path, config) -> None:
    """The checks of a checkpoint record against its tensors: the carried state, optimiser
    state and recent scores it describes are there, and nothing else."""
    source = f"checkpoint {str(path)!r}"
    carry = sorted(name for name in tensors if name.startswith("carry."))
    expected = {None: 0, "tensor": 1, "tuple": max(1, len(carry))}[info["carried"]]
    if carry != [f"carry.{k}" for k in range(expected)]:
        _fail(
            source,
            "carried",
            f"{info['carried']!r} does not match the carried-state tensors {carry}",
        )
    shapes = [list(tensors[name].shape) for name in carry]
    if any(len(shape) != 3 or shape[1] != config.train.batch_size for shape in shapes):
        _fail(
            source,
            "carried",
            f"the carried-state tensors {shapes} are not (layers, batch, width) with a batch of "
            f"{config.train.batch_size}",
        )
    optimizer = info["optimizer"]
    params = {index for group in optimizer["param_groups"] for index in group["params"]}
    states = [name.removeprefix("optimizer.") for name in tensors if name.startswith("optimizer.")]
    for name in [*states, *optimizer["scalars"]]:
        index, _, key = name.partition(".")
        if not key or not index.isdigit() or int(index) not in params:
            _fail(source, "optimizer", f"state {name!r} belongs to no parameter of param_groups")
    recent = {tuple(tensors[name].shape) for name in tensors if name.startswith("recent.")}
    if len(recent) > 1 or any(len(shape) != 1 for shape in recent):
        _fail(source, "recent", f"the recent scores are not 1-D of one length: {sorted(recent)}")
    strangers = [name for name in tensors if name.split(".", 1)[0] not in TENSOR_KINDS]
    if strangers:
        _fail(
            source, "tensors", f"{info['tensors']} holds tensors of no known kind: {strangers[:3]}"
        )


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
        _fail(source, "digest", "the record does not match the SHA-256 written with it")
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
            _fail(f"best-checkpoint record {str(record)!r}", "checkpoint", "names another step")
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
        _fail(f"checkpoint {source}", "io", str(error))
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
        _fail(f"checkpoint {str(path)!r}", "config", str(error))


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
