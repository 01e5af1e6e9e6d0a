"""``carousel eval DIR``: a run's model on its task's held-out test set (``Task.test_batches``;
for generated tasks the same fixed set the trainer evaluates on); writes nothing."""

from __future__ import annotations

import argparse
import json

from carousel.commands import add_command, add_device_argument, add_run_arguments


def add_parser(subparsers) -> None:
    """Register ``carousel eval``."""
    parser = add_command(
        subparsers,
        run,
        "evaluate a run's checkpoint on its task's test set",
        description="Evaluate a checkpoint of the run in DIR on its task's test set; nothing is written.",
    )
    add_run_arguments(parser)
    add_device_argument(parser, "auto")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")


def run(args: argparse.Namespace) -> int:
    """Load the checkpoint, rebuild the task, evaluate, print."""
    from carousel.tasks import build_task
    from carousel.train.checkpoint import load_trained_model
    from carousel.train.distributed import Context, resolve_device
    from carousel.train.loop import evaluate

    device = resolve_device(args.device)
    config, model, info = load_trained_model(args.run_dir, args.checkpoint, device)
    task = build_task(config.task, config.task_options, config.train.seed)
    metrics = evaluate(model, task, Context(device=device), task.test_batches())
    if args.json:
        print(json.dumps({"step": info["step"], "task": config.task, **metrics}))
        return 0
    progress = info["progress"]
    print(f"{config.task}, step {info['step']} ({progress['sequences']} sequences), test set:")
    for name, value in metrics.items():
        print(f"  {name:12s} {value:.6g}")
    return 0
