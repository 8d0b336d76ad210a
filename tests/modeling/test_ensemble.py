"""Ensembles: one model averaging its members' logits, made by ``spine-tf ensemble``."""

import os

import numpy as np
import pytest
import tensorflow as tf

from spine_tf import cli, tasks
from spine_tf.modeling import model as model_lib
from spine_tf.serving import export
from spine_tf.training.rundir import RunDir


def _member(seed, mean, width=0.0625, **kwargs):
    tf.keras.utils.set_random_seed(seed)
    model = model_lib.build_model(width=width, input_slices=1, task_set="spider", **kwargs)
    model_lib.mean_subtraction(model).set_mean([mean])
    return model


@pytest.fixture(scope="module")
def members():
    # other seeds, means, widths and branch points: each is copied whole
    return [_member(0, 0.2), _member(1, 0.5, width=0.125), _member(2, 0.4, branch_point="fc7")]


@pytest.fixture(scope="module")
def volumes():
    return np.random.default_rng(5).random((3,) + tasks.VOLUME_SHAPE, dtype=np.float32)


def test_the_ensemble_grades_with_the_mean_of_its_members_logits(members, volumes):
    ensemble = model_lib.ensemble(members)
    assert list(ensemble.output_names) == list(tasks.task_set("spider").names)
    assert model_lib.task_set(ensemble) is tasks.task_set("spider")
    assert model_lib.input_slices(ensemble) == 1
    assert ensemble.count_params() == sum(m.count_params() for m in members)
    got = ensemble(volumes)
    each = [m(volumes) for m in members]
    for index in range(len(got)):
        expected = np.mean([np.asarray(logits[index]) for logits in each], axis=0)
        np.testing.assert_allclose(got[index], expected, rtol=1e-5, atol=1e-6)
    # and it differs from every member: no member stands for the whole
    assert all(np.abs(np.asarray(got[0]) - np.asarray(e[0])).max() > 1e-3 for e in each)


def test_members_of_another_task_set_or_input_mode_are_refused(members):
    with pytest.raises(ValueError, match="at least two members, not 1"):
        model_lib.ensemble(members[:1])
    paper = model_lib.build_model(width=0.0625, input_slices=1)
    with pytest.raises(ValueError, match="member 1 grades pfirrmann, narrowing"):
        model_lib.ensemble([members[0], paper])
    volume = model_lib.build_model(width=0.0625, task_set="spider")
    with pytest.raises(ValueError, match="member 2 reads 9 slice"):
        model_lib.ensemble([members[0], members[1], volume])


def test_spine_tf_ensemble_writes_one_keras_file_that_loads_and_exports(members, volumes,
                                                                        tmp_path, capsys):
    run = RunDir(os.fspath(tmp_path / "run"))
    os.makedirs(os.fspath(run))
    members[0].save(run.best_model)
    members[1].save(os.fspath(tmp_path / "b.keras"))
    out = os.fspath(tmp_path / "ensemble.keras")
    assert cli.main(["ensemble", os.fspath(run), os.fspath(tmp_path / "b.keras"),
                     "--out", out]) == 0
    assert "the mean of 2 models" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["b.keras", "ensemble.keras", "run"]  # no temp left
    loaded = model_lib.load_model(out)
    expected = model_lib.ensemble(members[:2])(volumes)
    for got, want in zip(loaded(volumes), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # served as any model: the export's probabilities and hotspots come from the mean
    path = export.export(loaded, os.fspath(tmp_path / "saved"), "ensemble", augmentations=2)
    meta = export.read_metadata(path)
    assert meta["members"] == 2 and "channel_mean" not in meta
    np.testing.assert_allclose(meta["channel_means"], [[0.2], [0.5]], rtol=1e-6)
    served = export.load(path)
    probabilities = export.signature_probabilities(
        served.signatures["serving_default"](disc_volume=tf.constant(volumes)))
    np.testing.assert_allclose(probabilities[0], tf.nn.softmax(expected[0]), rtol=1e-5,
                               atol=1e-6)
    maps = served.signatures["hotspots"](disc_volume=tf.constant(volumes),
                                         task=tf.constant("pfirrmann"),
                                         class_index=tf.constant([-1, -1, -1]))["hotspots"]
    assert maps.numpy()[..., 4].max() > 0.99


def test_spine_tf_ensemble_names_what_it_cannot_join(members, tmp_path, capsys):
    a, b = os.fspath(tmp_path / "a.keras"), os.fspath(tmp_path / "b.keras")
    members[0].save(a)
    model_lib.build_model(width=0.0625, task_set="spider").save(b)
    with pytest.raises(cli.CommandFailed):
        cli.main(["ensemble", a, b, "--out", os.fspath(tmp_path / "e.keras")])
    line = capsys.readouterr().err.strip()
    assert line == (f"spine-tf ensemble: error: {a}, {b}: member 1 reads 9 slice(s), "
                    "member 0 1")
    with pytest.raises(cli.CommandFailed):
        cli.main(["ensemble", a, os.fspath(tmp_path / "missing.keras"), "--out",
                  os.fspath(tmp_path / "e.keras")])
    assert "missing.keras: no such model" in capsys.readouterr().err
    with pytest.raises(cli.CommandFailed):
        cli.main(["ensemble", a, a, "--out", os.fspath(tmp_path / "e.h5")])
    assert "e.h5: the ensemble is written as a .keras file" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "e.keras")
