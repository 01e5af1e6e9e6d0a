"""Option dataclasses: the settings of a run (:mod:`carousel.train.config`) and of every task
(``Task.Options``) are dataclasses whose fields carry their ``help`` (and, for a fixed set of
values, their ``choices``) in the field's metadata. Each field becomes a key of the TOML/JSON
configuration and a command-line option of ``carousel train``.

- :func:`option` declares such a field, :func:`check_values` checks an instance against the
  ``choices`` and ``minimum`` of its fields;
- :func:`options_from_dict` builds the dataclass from plain data (a TOML table, a JSON object,
  parsed command-line options), naming the option that is unknown or of the wrong type;
- :func:`check_type` and :func:`type_names` read the field's annotation (``int``, ``float``,
  ``str``, ``bool``, or one of them ``| None``).
"""

from __future__ import annotations

import dataclasses


def option(default, help: str, **extra):
    """A dataclass field with a default, its ``help`` and any ``extra`` metadata: ``choices``
    (the values it may take) or ``minimum`` (the least value), which :func:`check_values`
    checks."""
    return dataclasses.field(default=default, metadata={"help": help, **extra})


def check_values(options, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` and the first field of the dataclass instance
    ``options`` whose value is not one of its ``choices`` or lies below its ``minimum``."""
    for field in dataclasses.fields(options):
        value, metadata = getattr(options, field.name), field.metadata
        if "choices" in metadata and value not in metadata["choices"]:
            raise ValueError(
                f"{where} option {field.name} must be one of {metadata['choices']}; got {value!r}"
            )
        if "minimum" in metadata and value < metadata["minimum"]:
            raise ValueError(
                f"{where} option {field.name} must be >= {metadata['minimum']}; got {value}"
            )


def options_from_dict(cls: type, values: dict, where: str):
    """Build the dataclass ``cls`` from ``values``, rejecting unknown keys, wrong types and values
    outside a field's ``choices`` (in its metadata)."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {where}; known: {sorted(known)}")
    checked = {}
    for name, value in values.items():
        checked[name] = check_type(value, known[name].type, f"{where} option {name!r}")
        choices = known[name].metadata.get("choices")
        if choices is not None and checked[name] not in choices:
            raise ValueError(f"{where} option {name!r} must be one of {choices}; got {value!r}")
    return cls(**checked)


def type_names(annotation) -> list[str]:
    """The type names of a field annotation: ``"int | None"`` (or ``int | None``) ->
    ``["int", "None"]``."""
    if not isinstance(annotation, str):
        annotation = getattr(annotation, "__name__", str(annotation))
    return [part.strip().replace("NoneType", "None") for part in annotation.split("|")]


def check_type(value, annotation, what: str):
    """``value`` converted to the field type ``annotation`` (``int``, ``float``, ``str``,
    ``bool``, or one of them ``| None``); ints are accepted for floats, nothing else is converted."""
    names = type_names(annotation)
    if value is None and "None" in names:
        return None
    for name in names:
        if name == "bool" and isinstance(value, bool):
            return value
        if name == "int" and isinstance(value, int) and not isinstance(value, bool):
            return value
        if name == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if name == "str" and isinstance(value, str):
            return value
    raise TypeError(f"{what} must be {annotation}; got {type(value).__name__} {value!r}")
