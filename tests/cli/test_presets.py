"""Named experiment presets (spine_tf.config.PRESETS) and the commands that use them."""

import json
import os

import pytest

from spine_tf import config as config_lib
from spine_tf.cli import demo
from spine_tf.cli.parser import build_parser

# what spine-tf demo passed to train.resolved_config before the presets, with its defaults
OLD_DEMO = ["data.config='folder'", "data.data_dir='out/tfds'", "data.manual_dir='out/cohort'",
            "data.workers=None", "model.width=0.125", "pipeline.batch_size=32",
            "train.epochs=40", "train.learning_rate=0.01", "train.lr_patience=10",
            "train.early_stopping_patience=0"]


def test_paper_preset_is_the_defaults():
    assert config_lib.preset("paper") == config_lib.preset() == config_lib.ExperimentConfig()


def test_demo_preset_is_what_the_demo_trained_before():
    old = config_lib.override(config_lib.ExperimentConfig(), OLD_DEMO)
    args = build_parser().parse_args(["demo", "--out", "out"])
    assert demo.demo_config(args, "out/tfds", "out/cohort") == old
    assert config_lib.preset("demo", assignments=["data.config='folder'",
                                                  "data.data_dir='out/tfds'",
                                                  "data.manual_dir='out/cohort'"]) == old
    # the demo's flags still change what they name
    args = build_parser().parse_args(["demo", "--width", "0.25", "--epochs", "2"])
    changed = demo.demo_config(args, "out/tfds", "out/cohort")
    assert (changed.model.width, changed.train.epochs) == (0.25, 2)
    assert changed.train.lr_patience == 10


def test_spider_preset_is_the_selected_real_data_model():
    """The width, branch point and schedule chosen on the validation split of the SPIDER
    slices; a 1-slice model of the spider task set (docs/results/grading.md)."""
    config = config_lib.preset("spider")
    demo_config = config_lib.preset("demo")
    assert (config.data.config, config.model.task_set, config.model.input_slices) == (
        "spider_slices", "spider", 1)
    assert (config.model.width, config.model.branch_point) == (0.25, "fc6")
    assert (config.train.epochs, config.train.learning_rate, config.train.lr_patience) == (
        300, 0.003, 30)
    assert config.train.ordinal_tasks == ()  # tried on validation, not taken
    assert config.pipeline.batch_size == demo_config.pipeline.batch_size
    # a 1-slice model never moves its slice window
    assert config.pipeline.augmentation.shift_slices == 0


def test_a_config_file_goes_over_the_preset_and_set_over_both(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model": {"branch_point": "fc6"},
                                "pipeline": {"augmentation": {"scale": [0.8, 1.2]}},
                                "train": {"task_weights": {"pfirrmann": 1}}}))
    config = config_lib.preset("demo", os.fspath(path), ["train.epochs=3"])
    assert config.model == config_lib.ModelConfig(branch_point="fc6", width=0.125)
    assert config.pipeline.augmentation.scale == (0.8, 1.2)
    assert config.pipeline.augmentation.rotation_deg == 15.0
    assert config.train.task_weights == {"pfirrmann": 1}
    assert (config.train.epochs, config.train.lr_patience) == (3, 10)
    # the paper preset with a file is what --config/--set always gave
    assert config_lib.preset("paper", os.fspath(path), ["train.epochs=3"]) == \
        config_lib.override(config_lib.load(path), ["train.epochs=3"])


def test_unknown_presets_and_settings_are_named():
    with pytest.raises(KeyError, match="unknown preset 'fast'; presets: paper, demo"):
        config_lib.preset("fast")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--run-dir", "r", "--preset", "fast"])


@pytest.mark.parametrize("flags, verbose", [([], "line"), (["--keras-log"], 2)])
def test_train_command_applies_the_preset_then_set_then_shortcuts(flags, verbose, monkeypatch,
                                                                  tmp_path, capsys):
    from spine_tf import cli
    from spine_tf.training import train
    calls = []

    def fake_train(config, run_dir, verbose="line", detect=None):
        assert detect is None  # a phantom dataset needs no detector to build
        calls.append((config, run_dir, verbose))
        return None, {"loss": [1.0, 0.9], train.MONITOR: [0.4, 0.5]}

    monkeypatch.setattr(train, "train", fake_train)
    run = os.fspath(tmp_path / "run")
    assert cli.main(["train", "--run-dir", run, "--preset", "demo", "--set", "train.epochs=5",
                     "--set", "model.width=0.5", "--width", "0.25", *flags]) == 0
    config, run_dir, used = calls[0]
    assert config == config_lib.preset("demo", assignments=["train.epochs=5",
                                                            "model.width=0.25"])
    assert (run_dir, used) == (run, verbose)
    assert "trained 2 epochs" in capsys.readouterr().out


def test_a_spider_slices_run_gets_the_detector_to_build_its_data(monkeypatch, tmp_path):
    """Training or evaluating on spider_slices builds the same dataset build-data does: the
    detector places the images without boxes (loaded only when a scan needs it)."""
    from spine_tf import cli, detection
    from spine_tf.training import train
    loads, seen = [], []
    monkeypatch.setattr(detection, "load", lambda path=None: loads.append(path) or "detector")
    monkeypatch.setattr(detection, "detect",
                        lambda scan, detector, pixel_sizes=None: (scan, detector, pixel_sizes))

    def fake_train(config, run_dir, verbose="line", detect=None):
        seen.append(detect)
        return None, {"loss": [1.0], train.MONITOR: [0.5]}

    monkeypatch.setattr(train, "train", fake_train)
    assert cli.main(["train", "--run-dir", os.fspath(tmp_path / "run"), "--preset", "spider",
                     "--set", "data.manual_dir='x'"]) == 0
    assert loads == []  # nothing to detect yet: the detector is not loaded
    scan, detector, sizes = seen[0]("scan")
    assert (scan, detector, loads) == ("scan", "detector", [None]) and sizes[0] == 0.25
    seen[0]("another scan")
    assert loads == [None]  # loaded once
