"""The SpineNet model: sizes, branch points, outputs, mean subtraction, saving."""

import numpy as np
import pytest

from spine_tf.modeling import model as spine_model
from spine_tf import tasks


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_full_size_model_has_the_papers_parameter_count():
    model = spine_model.build_model()
    assert _trainable(model) == 182_765_777
    assert [tuple(o.shape) for o in model.outputs] == [(None, t.num_classes) for t in tasks.TASKS]
    assert model.output_names == list(tasks.TASK_NAMES)
    # VGG-M 1024 geometry: conv5 pooled to 2 x 6 x 512 before fc6
    assert tuple(model.get_layer("conv5_pool").output.shape) == (None, 2, 6, 512)
    assert model.get_layer("pfirrmann_fc6").kernel.shape == (6144, 4096)


@pytest.mark.parametrize("branch_point", spine_model.BRANCH_POINTS)
def test_layers_after_the_branch_point_are_per_task(branch_point):
    model = spine_model.build_model(width=0.0625, branch_point=branch_point)
    names = {layer.name for layer in model.layers}
    shared = 0 if branch_point == "none" else spine_model.LAYER_NAMES.index(branch_point) + 1
    for i, layer in enumerate(spine_model.LAYER_NAMES):
        per_task = {f"{t}_{layer}" for t in tasks.TASK_NAMES}
        if i < shared:
            assert layer in names and not per_task & names
        else:
            assert per_task <= names and layer not in names


@pytest.mark.parametrize("branch_point", ["conv5", "none"])
def test_the_outputs_see_a_centred_window_of_the_input(branch_point):
    # Which input pixels reach any output: VGG-M's valid convs and 2x2 pools
    # read only 97 x 209 of the 112 x 224 volume; that window must be the
    # centred one, so the upper and lower vertebral bodies are seen alike.
    import tensorflow as tf

    model = spine_model.build_model(width=0.0625, branch_point=branch_point)
    x = tf.constant(np.random.default_rng(0).random((2, 112, 224, 9)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.add_n([tf.reduce_sum(tf.abs(o)) for o in model(x)])
    reach = np.abs(tape.gradient(total, x).numpy()).sum(axis=(0, 3)) > 0
    rows, cols = np.flatnonzero(reach.any(axis=1)), np.flatnonzero(reach.any(axis=0))
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (7, 103, 7, 215)
    assert reach[7:104, 7:216].mean() > 0.99  # no holes inside the window


def test_width_scales_filters_and_units():
    model = spine_model.build_model(width=0.125)
    assert model.get_layer("conv1").filters == 12
    assert model.get_layer("conv5").filters == 64
    assert model.get_layer("pfirrmann_fc6").units == 512
    assert model.get_layer("pfirrmann_fc7").units == 128


def test_mean_subtraction_is_stored_and_applied():
    model = spine_model.build_model(width=0.0625)
    x = np.random.default_rng(0).random((2, 112, 224, 9)).astype(np.float32)
    mean = np.linspace(0.1, 0.9, 9)
    layer = spine_model.mean_subtraction(model)
    layer.set_mean(mean)
    np.testing.assert_allclose(layer(x), x - mean.astype(np.float32), atol=1e-6)
    assert not layer.trainable_weights


def test_unknown_branch_point_is_rejected():
    with pytest.raises(ValueError, match="conv6"):
        spine_model.build_model(branch_point="conv6")


def test_keras_file_round_trip(tmp_path):
    model = spine_model.build_model(width=0.0625, branch_point="conv3")
    spine_model.mean_subtraction(model).set_mean(np.full(9, 0.25))
    x = np.random.default_rng(1).random((3, 112, 224, 9)).astype(np.float32)
    before = model.predict_on_batch(x)
    path = tmp_path / "model.keras"
    model.save(path)
    import keras
    loaded = keras.saving.load_model(path)
    after = loaded.predict_on_batch(x)
    for a, b in zip(before, after):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(spine_model.mean_subtraction(loaded).mean.numpy(), 0.25)


def test_a_one_slice_model_reads_the_centre_slice_only():
    model = spine_model.build_model(width=0.0625, input_slices=1)
    assert model.layers[1].name == "centre_slice"
    assert tuple(model.input.shape) == (None, 112, 224, 9)
    assert model.get_layer("conv1").kernel.shape[2] == 1
    assert spine_model.input_slices(model) == 1
    assert spine_model.input_slices(spine_model.build_model(width=0.0625)) == 9
    x = np.random.default_rng(2).random((2, 112, 224, 9)).astype(np.float32)
    neighbours = x.copy()
    neighbours[..., [0, 1, 2, 3, 5, 6, 7, 8]] = 0.0  # a zero-padded single slice
    centre = x.copy()
    centre[..., 4] += 0.5
    before, same, moved = (model.predict_on_batch(v) for v in (x, neighbours, centre))
    for a, b, c in zip(before, same, moved):
        np.testing.assert_allclose(a, b, atol=1e-6)
        assert np.abs(a - c).max() > 1e-4


def test_a_one_slice_model_keeps_the_centre_slice_mean():
    model = spine_model.build_model(width=0.0625, input_slices=1)
    layer = spine_model.mean_subtraction(model)
    assert layer.channels == 1
    layer.set_mean(np.linspace(0.1, 0.9, 9))  # the per-slice means training measures
    np.testing.assert_allclose(layer.mean.numpy(), [0.5])
    layer.set_mean([0.3])
    np.testing.assert_allclose(layer.mean.numpy(), [0.3])
    with pytest.raises(ValueError):
        layer.set_mean(np.zeros(3))


def test_a_one_slice_model_round_trips_through_a_keras_file(tmp_path):
    model = spine_model.build_model(width=0.0625, input_slices=1)
    spine_model.mean_subtraction(model).set_mean([0.25])
    x = np.random.default_rng(3).random((2, 112, 224, 9)).astype(np.float32)
    before = model.predict_on_batch(x)
    model.save(tmp_path / "one_slice.keras")
    loaded = spine_model.load_model(tmp_path / "one_slice.keras")
    assert spine_model.input_slices(loaded) == 1
    for a, b in zip(before, loaded.predict_on_batch(x)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(spine_model.mean_subtraction(loaded).mean.numpy(), [0.25])


@pytest.mark.parametrize("slices", [0, 3, 9.0, "1"])
def test_other_input_slices_are_refused(slices):
    from spine_tf.config import ConfigError
    with pytest.raises(ConfigError, match="input_slices must be 9 .* or 1"):
        spine_model.build_model(width=0.0625, input_slices=slices)
