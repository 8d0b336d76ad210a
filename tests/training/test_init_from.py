"""train.init_from: a run starts from another model's weights where layers match."""

import os

import keras
import numpy as np
import pytest

from spine_tf.modeling.model import build_model, mean_subtraction
from spine_tf.training import train
from spine_tf.training.rundir import RunDir


def test_matching_layers_are_copied_and_the_rest_left(tmp_path):
    keras.utils.set_random_seed(1)
    source = build_model(width=0.0625, input_slices=1, branch_point="conv5")
    mean_subtraction(source).set_mean(np.full(9, 0.3, np.float32))
    run = RunDir(tmp_path / "pretrained")
    os.makedirs(run.path)
    source.save(run.best_model)
    keras.utils.set_random_seed(2)
    target = build_model(width=0.0625, input_slices=1, branch_point="conv5", task_set="spider")
    mean_subtraction(target).set_mean(np.full(9, 0.6, np.float32))
    report = train.initialise_from(target, run.path)
    assert report["from"] == os.path.abspath(run.best_model)
    for name in ("conv1", "conv5", "pfirrmann", "pfirrmann_fc6", "endplate_lower_fc7"):
        assert name in report["copied"], name
        for got, want in zip(target.get_layer(name).get_weights(),
                             source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)
    assert report["left"]["modic"] == "no such layer there"
    assert report["left"]["mean_subtraction"] == "this data's mean is kept"
    np.testing.assert_allclose(mean_subtraction(target).get_weights()[0], 0.6)
    wider = build_model(width=0.125, input_slices=1, task_set="spider")
    assert train.initialise_from(wider, run.best_model)["left"]["conv1"] == (
        "other weight shapes there")


def test_a_missing_source_is_a_one_line_error(tmp_path):
    with pytest.raises(train.RunConfigError, match="init_from: .*nothing.keras: no model file"):
        train.initialise_from(build_model(width=0.0625), os.fspath(tmp_path / "nothing.keras"))
