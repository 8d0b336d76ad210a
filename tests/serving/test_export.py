"""SavedModel export: signatures match the in-memory model after a reload, layout, metadata."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from spine_tf import tasks, tta
from spine_tf.serving import export
from spine_tf.modeling import model as model_lib

CHANNEL_MEAN = np.linspace(0.1, 0.5, 9)


@pytest.fixture(scope="module")
def small_model():
    model = model_lib.build_model(width=0.0625)
    model_lib.mean_subtraction(model).set_mean(CHANNEL_MEAN)
    return model


@pytest.fixture(scope="module")
def exported(small_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("saved_models")
    path = export.export(small_model, os.fspath(base), "spinenet",
                         config={"model": {"width": 0.0625}})
    return base, path


@pytest.fixture(scope="module")
def volumes():
    return np.random.default_rng(3).random((3,) + tasks.VOLUME_SHAPE, dtype=np.float32)


def test_layout_and_metadata(exported, small_model):
    base, path = exported
    assert path == os.path.join(base, "spinenet", "1")
    assert sorted(os.listdir(os.path.join(base, "spinenet"))) == ["1"]  # no temp folder left
    assert os.path.exists(os.path.join(path, "saved_model.pb"))
    meta = export.read_metadata(path)
    assert [t["name"] for t in meta["tasks"]] == list(tasks.TASK_NAMES)
    assert meta["tasks"][0]["class_names"] == list(tasks.TASKS[0].class_names)
    assert meta["tasks"][1]["outputs"] == ["narrowing_probabilities", "narrowing_grade"]
    np.testing.assert_allclose(meta["channel_mean"], CHANNEL_MEAN, rtol=1e-6)
    assert meta["input"]["shape"] == [None, 112, 224, 9]
    assert (meta["input_slices"], meta["tta_views"]) == (9, 54)
    assert meta["signatures"]["predict_tta"] == "54-view test-time augmentation"
    assert meta["training_config"] == {"model": {"width": 0.0625}}
    assert meta["parameters"] == small_model.count_params()
    json.dumps(meta)


def test_signatures_match_the_in_memory_model_after_reload(exported, small_model, volumes):
    served = export.load(exported[1])
    assert set(export.SIGNATURES) <= set(served.signatures)
    single = served.signatures["serving_default"](disc_volume=tf.constant(volumes))
    expected = [tf.nn.softmax(x).numpy() for x in small_model(volumes, training=False)]
    for task, got, want in zip(tasks.TASKS, export.signature_probabilities(single), expected):
        assert got.shape == (3, task.num_classes)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        grade = single[task.output_names[1]].numpy()
        assert grade.dtype == np.int32
        np.testing.assert_array_equal(grade, want.argmax(axis=1))
    with_tta = served.signatures["predict_tta"](disc_volume=tf.constant(volumes))
    expected = tta.predict(small_model, volumes)
    got = export.signature_probabilities(with_tta)
    for p, want in zip(got, expected):
        np.testing.assert_allclose(p, want, rtol=1e-5, atol=1e-6)
    # TTA is not the single view: the views differ, so do the averaged probabilities
    assert max(np.abs(a - b).max() for a, b in
               zip(got, export.signature_probabilities(single))) > 1e-4


@pytest.mark.parametrize("shape", [(112, 224, 9), (2, 112, 224, 8), (1, 224, 112, 9)])
def test_wrong_shape_is_refused_with_the_expected_shape_named(exported, shape):
    served = export.load(exported[1])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"disc_volume must be float32 \[batch, 112, 224, 9\]"):
        served.signatures["serving_default"](disc_volume=tf.zeros(shape))


def test_wrong_dtype_is_refused(exported):
    served = export.load(exported[1])
    with pytest.raises((tf.errors.InvalidArgumentError, TypeError, ValueError), match="float"):
        served.signatures["serving_default"](
            disc_volume=tf.zeros((1,) + tasks.VOLUME_SHAPE, tf.int32))


def test_versions_count_up_and_are_never_overwritten(tmp_path, small_model, monkeypatch):
    base = os.fspath(tmp_path)
    os.makedirs(os.path.join(base, "m", "3"))
    os.makedirs(os.path.join(base, "m", "notes"))
    assert export.next_version(os.path.join(base, "m")) == 4
    assert export.next_version(os.path.join(base, "absent")) == 1
    with pytest.raises(FileExistsError, match="exists already"):
        export.export(small_model, base, "m", version=3)
    with pytest.raises(ValueError, match="model name"):
        export.export(small_model, base, "../escape")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        export.export(small_model, base, "m")
    assert sorted(os.listdir(os.path.join(base, "m"))) == ["3", "notes"]  # nothing half-written


def test_load_refuses_a_folder_that_is_not_an_export(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a spine_tf export"):
        export.load(os.fspath(tmp_path))


def test_hotspots_signature_matches_the_keras_hotspots(exported, small_model, volumes):
    from spine_tf import hotspots
    base, _ = exported
    path = export.export(small_model, os.fspath(base), "few", augmentations=3)
    assert export.read_metadata(path)["hotspot_augmentations"] == 3
    served = export.load(path)
    explainer = hotspots.Hotspots(small_model)
    for task, classes in (("marrow_lower", [1, 0, -1]), ("pfirrmann", [-1, -1, 4])):
        got = served.signatures["hotspots"](disc_volume=tf.constant(volumes),
                                            task=tf.constant(task),
                                            class_index=tf.constant(classes, tf.int32))
        predicted = explainer.explain(volumes, (task,), augmentations=3)[task].predicted
        chosen = np.where(np.array(classes) < 0, predicted, classes)
        want = explainer(task, volumes, class_index=chosen, augmentations=3, seed=0)
        np.testing.assert_allclose(got["hotspots"].numpy(), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="task must be one of pfirrmann"):
        served.signatures["hotspots"](disc_volume=tf.constant(volumes), task=tf.constant("x"),
                                      class_index=tf.constant([0, 0, 0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="marrow_upper has classes 0..1"):
        served.signatures["hotspots"](disc_volume=tf.constant(volumes),
                                      task=tf.constant("marrow_upper"),
                                      class_index=tf.constant([0, 2, 0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="one class per disc volume"):
        served.signatures["hotspots"](disc_volume=tf.constant(volumes),
                                      task=tf.constant("marrow_upper"),
                                      class_index=tf.constant([0]))


def test_a_one_slice_export_records_its_input_mode_and_uses_9_tta_views(tmp_path, volumes):
    model = model_lib.build_model(width=0.0625, input_slices=1)
    model_lib.mean_subtraction(model).set_mean(CHANNEL_MEAN)  # keeps the centre slice's
    path = export.export(model, os.fspath(tmp_path), "one_slice", augmentations=2)
    meta = export.read_metadata(path)
    assert (meta["input_slices"], meta["tta_views"]) == (1, 9)
    assert meta["signatures"]["predict_tta"] == "9-view test-time augmentation"
    np.testing.assert_allclose(meta["channel_mean"], CHANNEL_MEAN[4:5], rtol=1e-6)
    assert meta["input"]["shape"] == [None, 112, 224, 9]
    served = export.load(path)
    got = export.signature_probabilities(
        served.signatures["predict_tta"](disc_volume=tf.constant(volumes)))
    for g, e in zip(got, tta.predict(model, volumes)):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    maps = served.signatures["hotspots"](disc_volume=tf.constant(volumes),
                                         task=tf.constant("pfirrmann"),
                                         class_index=tf.constant([-1, -1, -1]))["hotspots"]
    off_centre = np.delete(maps.numpy(), 4, axis=-1)
    assert not off_centre.any() and maps.numpy()[..., 4].max() > 0.99


def test_the_metadata_and_outputs_follow_the_models_task_set():
    model = model_lib.build_model(width=0.0625, task_set="spider")
    described = export.metadata(model)
    assert described["task_set"] == "spider"
    assert [t["name"] for t in described["tasks"]] == list(tasks.task_set("spider").names)
    module = export.ServingModule(model)
    outputs = module.serving_default(tf.zeros((1,) + tasks.VOLUME_SHAPE))
    assert export.signature_task_set(outputs) is tasks.task_set("spider")
    assert [p.shape for p in export.signature_probabilities(outputs)] == [
        (1, t.num_classes) for t in tasks.task_set("spider").tasks]
