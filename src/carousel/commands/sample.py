"""``carousel sample DIR``: text from a run's language model."""

from __future__ import annotations

import argparse

import torch

from carousel.cli import UsageError
from carousel.commands import add_command, add_device_argument, add_run_arguments, add_seed_argument


def add_parser(subparsers) -> None:
    """Register ``carousel sample``."""
    parser = add_command(
        subparsers,
        run,
        "generate text with a run's language model",
        description="Continue --prompt with characters drawn from the language model of the run in DIR.",
    )
    add_run_arguments(parser, "the run directory of a language model")
    parser.add_argument(
        "--prompt", "--prime", default="\n", help="text to continue (default: a newline)"
    )
    parser.add_argument("--length", type=int, default=300, help="tokens to generate (default: 300)")
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        help="softmax temperature; 0 takes the most likely token (default: 0.8)",
    )
    add_seed_argument(parser, "the draws (default: 0)")
    add_device_argument(parser, "cpu")


def run(args: argparse.Namespace) -> int:
    """Load the model and the vocabulary, sample, print prompt and continuation."""
    from pathlib import Path

    from carousel.models import LanguageModel
    from carousel.train.checkpoint import load_trained_model, read_json
    from carousel.train.distributed import resolve_device

    if args.length < 0:
        raise UsageError(f"--length must be >= 0; got {args.length}")
    device = resolve_device(args.device)
    config, model, _ = load_trained_model(args.run_dir, args.checkpoint, device)
    if not isinstance(model, LanguageModel):
        raise UsageError(
            f"the run in {args.run_dir!r} trained a {type(model).__name__} on task {config.task!r}, not a language model"
        )
    vocabulary = read_json(Path(args.run_dir) / "vocab.json", "vocabulary")
    index = {token: i for i, token in enumerate(vocabulary)}
    unknown = sorted(set(args.prompt) - set(index))
    if not args.prompt or unknown:
        raise UsageError(
            f"--prompt must be non-empty text made of the run's characters; unknown: {unknown[:10]}"
        )
    prompt = torch.tensor([index[char] for char in args.prompt], device=device)
    generator = torch.Generator().manual_seed(args.seed)
    tokens = model.sample(prompt, args.length, args.temperature, generator)
    print(args.prompt + "".join(vocabulary[i] for i in tokens.tolist()))
    return 0
