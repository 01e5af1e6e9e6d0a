"""``carousel train TASK --out DIR``: train a model on a task (also under ``torchrun``).

Settings come, each overriding the one before, from the defaults of the config dataclasses
(:mod:`carousel.train.config`), from ``--config FILE.toml`` (or the run's own ``config.json``
with ``--resume``), and from the command-line options, one per dataclass field.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

from carousel.cli import UsageError
from carousel.commands import add_command
from carousel.options import type_names
from carousel.tasks import TASKS
from carousel.train.config import SECTIONS, Config, read_config_file

GROUPS = {"model": "model", "optim": "optimiser", "train": "training"}


def flag(name: str) -> str:
    """The command-line option of a field: ``hidden_size`` -> ``--hidden-size``."""
    return "--" + name.replace("_", "-")


def _help(field: dataclasses.Field) -> str:
    default = "the variant's" if field.default is None else repr(field.default)
    return f"{field.metadata.get('help', '')} (default: {default})"


def _add_field(group, field: dataclasses.Field, dest: str, help: str, name: str) -> None:
    kind = next(name for name in type_names(field.type) if name != "None")
    if kind == "bool":
        group.add_argument(
            flag(name),
            dest=dest,
            action=argparse.BooleanOptionalAction,
            default=argparse.SUPPRESS,
            help=help,
        )
        return
    group.add_argument(
        flag(name),
        dest=dest,
        type={"int": int, "float": float, "str": str}[kind],
        choices=field.metadata.get("choices"),
        default=argparse.SUPPRESS,
        metavar=None if "choices" in field.metadata else field.name.upper(),
        help=help,
    )


def setting_name(section: str, name: str, task_options) -> str:
    """The name of setting ``name`` of ``section`` on the command line: ``name`` itself, or
    ``section_name`` where a task option has that name (``output_activation`` of ``[model]``,
    the cell's, is ``--model-output-activation``; the task's output unit keeps
    ``--output-activation``)."""
    return f"{section}_{name}" if name in task_options else name


def task_option_fields() -> dict[str, tuple[dataclasses.Field, dict[str, str]]]:
    """Every task option by name: its field and each task's help for it (names may be shared
    by tasks when they mean the same kind of value)."""
    merged: dict[str, tuple[dataclasses.Field, dict[str, str]]] = {}
    for task_name, task in sorted(TASKS.items()):
        for field in dataclasses.fields(task.Options):
            help = _help(field)
            if field.name in merged:
                known, helps = merged[field.name]
                if type_names(known.type) != type_names(field.type):
                    raise TypeError(
                        f"task option {field.name!r} has two types: {known.type}, {field.type}"
                    )
                helps[task_name] = help
            else:
                merged[field.name] = (field, {task_name: help})
    return merged


def add_parser(subparsers) -> None:
    """Register ``carousel train``."""
    parser = add_command(
        subparsers,
        run,
        "train a model on a task",
        allow_abbrev=False,
        description=(
            "Train a model on TASK into the run directory --out. Every setting below also reads "
            "from --config FILE.toml (sections [model], [optim], [train], [task_options]); "
            "options given here override it. Multi-process: torchrun --nproc_per_node=N -m carousel train ..."
        ),
    )
    parser.add_argument(
        "task", metavar="TASK", choices=sorted(TASKS), help=f"one of {', '.join(sorted(TASKS))}"
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="run directory (new or empty, or with --resume the run's)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its latest checkpoint"
    )
    parser.add_argument("--config", metavar="FILE", help="settings from a .toml (or .json) file")
    parser.add_argument("--quiet", action="store_true", help="print nothing (for scripts)")
    task_options = task_option_fields()
    names = {"task", "out", "resume", "config", "quiet"}
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{GROUPS[section]} ([{section}])")
        for field in dataclasses.fields(cls):
            name = setting_name(section, field.name, task_options)
            if name in names:
                raise TypeError(f"setting {name!r} is defined twice")
            names.add(name)
            _add_field(group, field, f"{section}.{field.name}", _help(field), name)
    group = parser.add_argument_group(
        "task options ([task_options]); each applies to the tasks named"
    )
    for name, (field, helps) in task_options.items():
        if name in names:
            raise TypeError(f"task option {name!r} clashes with a setting of the same name")
        help = "; ".join(f"{task}: {text}" for task, text in helps.items())
        _add_field(group, field, f"task_options.{name}", help, name)


def config_from_args(args: argparse.Namespace) -> Config:
    """Merge defaults, the config file (or the resumed run's config.json) and the options."""
    data: dict = {"task": args.task, "task_options": {}, **{section: {} for section in SECTIONS}}
    saved = Path(args.out) / "config.json"
    if args.resume and saved.exists():
        _merge(data, _read(saved))
    if args.config:
        _merge(data, read_config_file(args.config))
    if data["task"] != args.task:
        raise UsageError(f"TASK is {args.task!r} but the settings are for task {data['task']!r}")
    given = {k: v for k, v in vars(args).items() if "." in k}
    for key, value in given.items():
        section, name = key.split(".")
        data[section][name] = value
    options = {f.name for f in dataclasses.fields(TASKS[args.task].Options)}
    foreign = sorted(
        flag(key.split(".")[1])
        for key in given
        if key.startswith("task_options.") and key.split(".")[1] not in options
    )
    if foreign:
        known = ", ".join(flag(name) for name in sorted(options)) or "none"
        raise UsageError(
            f"{', '.join(foreign)} does not apply to task {args.task!r} (its options: {known})"
        )
    return Config.from_dict(data, "the settings")


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise UsageError(f"cannot read {str(path)!r}: {error}") from None


def _merge(data: dict, overrides: dict) -> None:
    if not isinstance(overrides, dict):
        raise UsageError("a config file must hold a table of settings")
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value


def run(args: argparse.Namespace) -> int:
    """Train, then print a summary (unless ``--quiet``)."""
    from carousel.train import train

    config = config_from_args(args)
    summary = train(config, args.out, resume=args.resume, quiet=args.quiet)
    if not args.quiet and _is_main_process():
        print(format_summary(summary, args.out))
    return 0


def format_summary(summary: dict, run_dir: str) -> str:
    """A few lines saying how the run went."""
    lines = [
        f"run {run_dir}: {summary['step']} steps, {summary['sequences']} sequences, {summary['seconds']:.1f} s"
    ]
    if summary["evaluation"]:
        lines.append("test: " + ", ".join(f"{k} {v:.4g}" for k, v in summary["evaluation"].items()))
    if summary["solved"]:
        lines.append(
            f"solved after {summary['solved_sequences']} sequences (step {summary['solved_step']})"
        )
    if summary["best_step"] is not None:
        lines.append(f"best test loss {summary['best_loss']:.4g} at step {summary['best_step']}")
    return "\n".join(lines)


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"
