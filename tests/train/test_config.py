"""Configuration: defaults, files, validation of values and combinations."""

from __future__ import annotations

import pytest

from carousel.train import Config, ModelConfig, OptimConfig, TrainConfig
from carousel.train.config import read_config_file


def test_round_trip_fills_every_task_option():
    config = Config("adding", {"length": 50}, ModelConfig(variant="1997", block_size=2))
    data = config.to_dict()
    assert data["task_options"]["length"] == 50 and data["task_options"]["test_size"] == 2560
    assert Config.from_dict(data) == config
    assert config.differences(Config.from_dict(data)) == []


def test_toml_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        'task = "adding"\n[task_options]\nlength = 20\n[model]\nvariant = "1997"\nhidden_size = 4\n'
        'block_size = 2\n[optim]\noptimizer = "sgd"\nlr = 1\n[train]\nbatch_size = 1\n'
    )
    config = Config.from_dict(read_config_file(path))
    assert config.optim.lr == 1.0 and isinstance(config.optim.lr, float)
    assert (config.model.block_size, config.train.batch_size, config.task_options["length"]) == (
        2,
        1,
        20,
    )


@pytest.mark.parametrize(
    "data, message",
    [
        ({"task": "nope"}, "unknown task"),
        ({"task": "adding", "modle": {}}, "unknown section"),
        ({"task": "adding", "model": {"hidden": 3}}, r"unknown option\(s\) \['hidden'\]"),
        ({"task": "adding", "model": {"hidden_size": "3"}}, "hidden_size' must be int"),
        ({"task": "adding", "train": {"stop_when_solved": 1}}, "must be bool"),
        ({"task": "adding", "task_options": {"seq_len": 3}}, "unknown option"),
        (
            {"task": "adding", "optim": {"optimizer": "adam", "momentum": 0.9}},
            "momentum applies to optimizer sgd",
        ),
        ({"task": "adding", "optim": {"optimizer": "rmsprop"}}, "'optimizer' must be one of"),
        ({"task": "adding", "task_options": {"output_activation": "relu"}}, "must be one of"),
        (
            {"task": "adding", "optim": {"warmup_steps": 10}, "train": {"steps": 10}},
            "fewer than steps",
        ),
        ({"task": "adding", "train": {"batch_size": 0}}, "batch_size must be at least 1"),
        ({"task": "adding", "model": {"dropout": 1.0}}, "dropout must lie in"),
        ({"task": "adding", "optim": {"clip_norm": -1.0}}, "clip_norm must be >= 0"),
    ],
)
def test_bad_settings_name_the_setting(data, message):
    with pytest.raises((ValueError, TypeError), match=message):
        Config.from_dict(data)


def test_bad_config_files(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        read_config_file(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("task = \n")
    with pytest.raises(ValueError, match="not valid TOML"):
        read_config_file(broken)
    with pytest.raises(ValueError, match=r"\.toml or \.json"):
        read_config_file(tmp_path / "x.yaml")


def test_settings_changed_after_construction_are_checked_again():
    config = Config("adding")
    config.optim.schedule = "exponential"
    with pytest.raises(ValueError, match="'schedule' must be one of"):
        config.check()


def test_every_setting_has_help():
    import dataclasses

    for section in (ModelConfig, OptimConfig, TrainConfig):
        for field in dataclasses.fields(section):
            assert field.metadata.get("help"), f"{section.__name__}.{field.name}"
