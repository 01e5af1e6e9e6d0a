"""What a checkpoint's record may hold, and the checks a checkpoint passes before any of it is used.

A checkpoint is a ``step-NNNNNNNN.safetensors`` (the tensors) and a ``step-NNNNNNNN.json`` (the
record: progress, RNG states, optimiser settings, configuration, the SHA-256 of the tensors and a
``digest`` of the record itself), written by :func:`carousel.train.checkpoint.save`.
:func:`carousel.train.checkpoint.load` checks it whole: the record against
:data:`CHECKPOINT_SCHEMA` (:func:`check_schema`: types, ranges), its fields against each other
(:func:`check_record`) and against the tensors (:func:`check_tensors`). Whatever fails raises
:class:`CheckpointError` naming the file and the field.
"""

from __future__ import annotations

import base64
import re
import reprlib
from pathlib import Path

import torch
from torch import Tensor

FORMAT = "carousel-checkpoint"
VERSION = 2
STEP_NAME = re.compile(r"^step-(\d+)\.json$")
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


def step_name(step: int) -> str:
    """The file stem of the checkpoint after ``step`` steps."""
    return f"step-{step:08d}"


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


def fail(source: str, field: str, message: str):
    """Raise :class:`CheckpointError`: ``source`` is corrupt at ``field``, as ``message`` says."""
    raise CheckpointError(f"{source} is corrupt: {field}: {message}")


def decode_rng(text: str, source: str, field: str) -> Tensor:
    """An RNG state saved as base64 text, as the ``uint8`` tensor torch takes."""
    try:
        data = base64.b64decode(text, validate=True)
    except ValueError:
        fail(source, field, "is not base64")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def check_record(info: dict, path: Path, config) -> None:
    """The checks of a checkpoint record across its fields (after the schema; ``config`` is its
    :class:`~carousel.train.config.Config`): the step, the counts and the RNG states agree."""
    source = f"checkpoint {str(path)!r}"
    step, progress = info["step"], info["progress"]
    match = STEP_NAME.match(path.name)
    if match and int(match.group(1)) != step:
        fail(source, "step", f"{step} differs from the file name's step {int(match.group(1))}")
    if info["tensors"] != f"{step_name(step)}.safetensors":
        fail(source, "tensors", f"{info['tensors']!r} is not the tensors file of step {step}")
    if progress["step"] != step:
        fail(source, "progress.step", f"{progress['step']} differs from step {step}")
    batch = config.train.batch_size
    for steps, sequences in (("step", "sequences"), ("row_steps", "row_sequences")):
        if progress[sequences] != progress[steps] * batch:
            fail(
                source,
                f"progress.{sequences}",
                f"{progress[sequences]} is not progress.{steps} ({progress[steps]}) batches of {batch}",
            )
    for name in ("best_step", "solved_step", "row_steps"):
        if progress[name] is not None and progress[name] > step:
            fail(source, f"progress.{name}", f"{progress[name]} lies after step {step}")
    for first, second in (("best_step", "best_loss"), ("solved_step", "solved_sequences")):
        if (progress[first] is None) != (progress[second] is None):
            fail(source, f"progress.{second}", f"must be set exactly when {first} is")
    if progress["solved_step"] is not None and progress["solved_sequences"] > progress["sequences"]:
        fail(source, "progress.solved_sequences", "exceeds progress.sequences")
    if len(info["rng"]) != info["world_size"]:
        fail(source, "rng", f"{len(info['rng'])} states for world_size {info['world_size']}")
    size = torch.get_rng_state().numel()
    for rank, state in enumerate(info["rng"]):
        for kind, text in state.items():
            length = decode_rng(text, source, f"rng.{rank}.{kind}").numel()
            if kind == "torch" and length != size:
                fail(
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
        fail(
            source,
            "carried",
            f"{info['carried']!r} does not match the carried-state tensors {carry}",
        )
    shapes = [list(tensors[name].shape) for name in carry]
    if any(len(shape) != 3 or shape[1] != config.train.batch_size for shape in shapes):
        fail(
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
            fail(source, "optimizer", f"state {name!r} belongs to no parameter of param_groups")
    recent = {tuple(tensors[name].shape) for name in tensors if name.startswith("recent.")}
    if len(recent) > 1 or any(len(shape) != 1 for shape in recent):
        fail(source, "recent", f"the recent scores are not 1-D of one length: {sorted(recent)}")
    strangers = [name for name in tensors if name.split(".", 1)[0] not in TENSOR_KINDS]
    if strangers:
        fail(
            source, "tensors", f"{info['tensors']} holds tensors of no known kind: {strangers[:3]}"
        )
