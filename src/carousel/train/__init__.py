"""The training system: configuration, the loop, checkpoints, logging and data parallelism.

:func:`train` runs a :class:`Config` (a task from :mod:`carousel.tasks`, a model from
:mod:`carousel.models`) into a run directory; ``carousel train`` is its command line.
"""

from carousel.train.checkpoint import CheckpointError
from carousel.train.config import Config, ModelConfig, OptimConfig, TrainConfig
from carousel.train.loop import TrainResult, train

__all__ = [
    "CheckpointError",
    "Config",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "TrainResult",
    "train",
]
