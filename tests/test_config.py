"""Experiment settings: the model's input mode and the augmentation it allows."""

import json
import os

import pytest

from spine_tf import config as config_lib


def test_input_slices_defaults_to_the_volume_and_keeps_the_augmentation():
    config = config_lib.preset()
    assert config.model.input_slices == 9
    assert config.pipeline.augmentation == config_lib.AugmentConfig()
    assert config.pipeline.augmentation.shift_slices == 2
    assert config.pipeline.augmentation.flip_probability == 0.5


def test_a_one_slice_model_trains_without_moving_the_slice_window(tmp_path):
    config = config_lib.preset("demo", assignments=["model.input_slices=1"])
    augmentation = config.pipeline.augmentation
    assert (augmentation.shift_slices, augmentation.flip_probability) == (0, 0.0)
    # every other range is training's as before
    assert augmentation == config_lib.AugmentConfig(shift_slices=0, flip_probability=0.0)
    # whichever way the config is made: a file asking for slice shifts, a dataclass
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model": {"input_slices": 1},
                                "pipeline": {"augmentation": {"shift_slices": 3}}}))
    assert config_lib.preset("paper", os.fspath(path)).pipeline.augmentation == augmentation
    made = config_lib.ExperimentConfig(model=config_lib.ModelConfig(input_slices=1))
    assert made.pipeline.augmentation == augmentation
    # a run saves the augmentation it trains with, and loads back the same config
    config_lib.save(made, tmp_path / "run.json")
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["pipeline"]["augmentation"]["shift_slices"] == 0
    assert config_lib.load(tmp_path / "run.json") == made


@pytest.mark.parametrize("value", ["3", "0", "9.0", "'one'", "True"])
def test_input_slices_other_than_9_or_1_is_a_config_error(value, tmp_path):
    with pytest.raises(config_lib.ConfigError, match="model.input_slices must be 9"):
        config_lib.override(config_lib.ExperimentConfig(), [f"model.input_slices={value}"])
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model": {"input_slices": 2}}))
    with pytest.raises(config_lib.ConfigError, match="not 2"):
        config_lib.load(path)
    with pytest.raises(config_lib.ConfigError, match="not 2"):
        config_lib.preset("demo", os.fspath(path))
