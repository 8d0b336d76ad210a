"""Evidence hotspots: the augmented map against a hand loop, baselines, the IoU metric,
outputs (PNG, NIfTI, TensorBoard), and on small trained models (slow) localisation."""

import os

import keras
import nibabel as nib
import numpy as np
import pytest
import tensorflow as tf

from spine_tf import augment, detection, extraction, hotspots, tasks
from spine_tf.evaluation import runs
from spine_tf.io import pictures as report
from spine_tf.modeling.model import build_model

SHAPE = (112, 224, 9)


@pytest.fixture(scope="module")
def tiny_model():
    return build_model(width=0.0625)


def _volumes(n, seed=0):
    return np.random.default_rng(seed).random((n,) + SHAPE).astype(np.float32)


class _Energy(keras.layers.Layer):
    """Logit of class c = (c + 1) / 2 * sum(x^2): its input gradient is (c + 1) * x."""

    def __init__(self, classes, **kwargs):
        super().__init__(**kwargs)
        self.classes = classes

    def call(self, x):
        energy = 0.5 * tf.reduce_sum(tf.square(x), axis=[1, 2, 3])
        return energy[:, None] * tf.range(1, self.classes + 1, dtype=x.dtype)[None, :]


def _energy_model():
    inputs = keras.Input(SHAPE)
    return keras.Model(inputs, [_Energy(t.num_classes, name=t.name)(inputs) for t in tasks.TASKS])


def _reference(model, task_index, volume, class_index, draws):
    """The method written out: one augmented copy at a time, gradient, inverse warp, mean."""
    total = np.zeros(SHAPE, np.float64)
    count = int(draws["angle"].shape[0])
    for i in range(count):
        one = {k: v[i:i + 1] for k, v in draws.items()}
        copy = augment.apply(volume[None], one)
        with tf.GradientTape() as tape:
            tape.watch(copy)
            logit = model(copy, training=False)[task_index][0, class_index]
        total += augment.invert(tf.abs(tape.gradient(logit, copy)), one)[0].numpy()
    mean = total / count
    return mean / mean.max()


def test_batched_hotspot_equals_the_loop_over_augmentations(tiny_model):
    x = _volumes(2, seed=1)
    # chunks of 4 over 2 x 5 copies: a chunk holds copies of both discs
    explainer = hotspots.Hotspots(tiny_model, chunk=4)
    maps = explainer("marrow_lower", x, class_index=[1, 0], augmentations=5, seed=(3, 4))
    assert maps.shape == (2,) + SHAPE and maps.dtype == np.float32
    draws = augment.draw(10, (3, 4))  # disc-major: disc d's copies are rows 5d..5d+4
    index = tasks.TASK_NAMES.index("marrow_lower")
    for d, c in ((0, 1), (1, 0)):
        expected = _reference(tiny_model, index, x[d], c, {k: v[5 * d:5 * d + 5]
                                                           for k, v in draws.items()})
        np.testing.assert_allclose(maps[d], expected, atol=2e-5)
    assert maps.min() >= 0 and np.isclose(maps.reshape(2, -1).max(axis=1), 1).all()
    # the same seed gives the same map, another seed another, another class another
    np.testing.assert_array_equal(
        explainer("marrow_lower", x, [1, 0], 5, (3, 4)), maps)
    assert np.abs(explainer("marrow_lower", x, [1, 0], 5, (3, 5)) - maps).max() > 0.05
    assert np.abs(explainer("marrow_lower", x, [0, 0], 5, (3, 4))[0] - maps[0]).max() > 0.05
    # training's mirror setting is dropped: a reflected copy's upper evidence is the lower head's
    mirroring = augment.AugmentConfig(mirror_probability=1.0)
    np.testing.assert_array_equal(hotspots.Hotspots(tiny_model, mirroring, chunk=4)(
        "marrow_lower", x, [1, 0], 5, (3, 4)), maps)


def test_the_gradient_is_warped_back_onto_the_disc():
    # the energy model's gradient is the augmented copy itself, so the warped-back
    # mean must sit where the bright spot is in the original volume, on its slice
    x = np.zeros((1,) + SHAPE, np.float32)
    x[0, 40:44, 150:154, 2] = 1.0
    geometry_only = augment.AugmentConfig(intensity=0.0)
    maps = hotspots.Hotspots(_energy_model(), geometry_only)("pfirrmann", x, augmentations=24)
    peak = np.unravel_index(maps[0].argmax(), SHAPE)
    assert 39 <= peak[0] <= 44 and 149 <= peak[1] <= 154 and peak[2] == 2
    inside = maps[0, 40:44, 150:154, 2].mean()
    assert inside > 0.8 and maps[0].sum() - maps[0, 38:46, 148:156, 2].sum() < 0.05 * inside
    # without the inverse warp the same copies spread over +-32 columns and all slices
    draws = augment.draw(24, (0, 0), geometry_only)
    unwarped = tf.reduce_mean(augment.apply(tf.repeat(x, 24, 0), draws, intensity=False), 0)
    assert unwarped.numpy()[40:44, 150:154, 2].mean() < 0.5 * x[0, 40:44, 150:154, 2].mean()


def test_explain_all_tasks_matches_one_task_at_a_time(tiny_model):
    x = _volumes(1, seed=2)
    explainer = hotspots.Hotspots(tiny_model)
    per_task = explainer.explain(x, augmentations=3, seed=9)
    assert list(per_task) == list(tasks.TASK_NAMES)
    logits = tiny_model.predict_on_batch(x)
    for index, (name, result) in enumerate(per_task.items()):
        predicted = logits[index].argmax(axis=1)
        np.testing.assert_array_equal(result.classes, predicted)  # default: predicted class
        p = tf.nn.softmax(logits[index]).numpy()[0, predicted[0]]
        np.testing.assert_allclose(result.probabilities, [p], rtol=1e-5)
        np.testing.assert_allclose(result.maps, explainer(name, x, None, 3, 9), atol=1e-5)
    title = per_task["endplate_upper"].titles(["L4-L5"])[0]
    names = tasks.task("endplate_upper").class_names
    assert title.startswith("L4-L5 endplate_upper: " + names[per_task["endplate_upper"].classes[0]])


def test_a_one_slice_models_hotspots_lie_on_the_centre_slice():
    from spine_tf.config import AugmentConfig
    model = build_model(width=0.0625, input_slices=1)
    explainer = hotspots.Hotspots(model)
    ranges = explainer.augment_config
    assert (ranges.shift_slices, ranges.flip_probability) == (0, 0.0)
    assert ranges.rotation_deg == AugmentConfig().rotation_deg  # in-plane ranges as training's
    # its copies keep the slice window even when asked to move it
    assert hotspots.Hotspots(model, AugmentConfig(shift_slices=3)).augment_config == ranges
    assert hotspots.Hotspots(build_model(width=0.0625)).augment_config.shift_slices == 2
    x = _volumes(2, seed=8)
    maps = explainer("pfirrmann", x, augmentations=6, seed=1)
    assert maps.shape == (2,) + SHAPE
    assert not maps[..., [0, 1, 2, 3, 5, 6, 7, 8]].any()
    np.testing.assert_allclose(maps[..., 4].reshape(2, -1).max(axis=1), 1.0)
    # the graph version (the export's) uses the same ranges
    graph = hotspots.graph_hotspots(model, 0, tf.constant(x), tf.constant([0, 1]),
                                    augmentations=6, seed=1)
    assert not graph.numpy()[..., [0, 1, 2, 3, 5, 6, 7, 8]].any()


def test_bad_input_raises_naming_the_problem(tiny_model):
    explainer = hotspots.Hotspots(tiny_model)
    x = _volumes(1)
    with pytest.raises(ValueError, match="shape"):
        explainer("pfirrmann", np.zeros((1, 112, 112, 9)))
    with pytest.raises(ValueError, match="class must be an integer 0..1"):
        explainer("endplate_upper", x, class_index=2)
    with pytest.raises(ValueError, match="2 classes given for 1 discs"):
        explainer("endplate_upper", x, class_index=[0, 1])
    with pytest.raises(hotspots.UnknownTaskError, match="unknown task 'modic'; the paper tasks"):
        explainer("modic", x)
    with pytest.raises(ValueError, match="augmentations"):
        explainer("pfirrmann", x, augmentations=0)
    with pytest.raises(ValueError, match="NaN"):
        explainer("pfirrmann", np.full((1,) + SHAPE, np.nan))
    inputs = keras.Input(SHAPE)
    with pytest.raises(ValueError, match="no task set has the tasks flatten"):
        hotspots.Hotspots(keras.Model(inputs, keras.layers.Flatten()(inputs)))


def test_plain_saliency_is_the_max_over_slices_of_the_logit_gradient(tiny_model):
    x = _volumes(2, seed=3)
    index = tasks.TASK_NAMES.index("narrowing")
    with tf.GradientTape() as tape:
        volumes = tf.constant(x)
        tape.watch(volumes)
        logits = tiny_model(volumes, training=False)[index]
        score = tf.reduce_sum(tf.gather(logits, [3, 1], batch_dims=1))
    gradient = np.abs(tape.gradient(score, volumes).numpy())
    for keepdims, expected in ((False, gradient.max(axis=-1)), (True, gradient)):
        lo = expected.min(axis=tuple(range(1, expected.ndim)), keepdims=True)
        hi = expected.max(axis=tuple(range(1, expected.ndim)), keepdims=True)
        got = hotspots.plain_saliency(tiny_model, "narrowing", x, [3, 1], keepdims=keepdims)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, (expected - lo) / (hi - lo), atol=1e-4)
    np.random.seed(0)
    smooth = hotspots.smoothgrad(tiny_model, "narrowing", x, [3, 1], samples=3)
    assert smooth.shape == (2, 112, 224) and 0.05 < np.abs(smooth - got.max(-1)).mean()


def test_boxes_from_a_percentile_threshold_by_hand():
    hotspot = np.zeros(SHAPE, np.float32)
    hotspot[10:20, 30:50, 4] = 2.0  # 200 voxels
    hotspot[60, 100, 6] = 1.0
    hotspot[0, 0, 0] = 0.5
    # 225,792 voxels; the 99.9th percentile is 0 (only 202 are non-zero): zeros never count
    boxes = hotspots.hotspot_boxes(hotspot, 99.9)
    np.testing.assert_allclose(boxes[4], [10 / 112, 30 / 224, 20 / 112, 50 / 224])
    np.testing.assert_allclose(boxes[6], [60 / 112, 100 / 224, 61 / 112, 101 / 224])
    np.testing.assert_allclose(boxes[0], [0, 0, 1 / 112, 1 / 224])
    assert (boxes[[1, 2, 3, 5, 7, 8]] == -1).all()
    # the 99.95th percentile (the top 113 voxels) is 2.0: only the block is left
    boxes = hotspots.hotspot_boxes(hotspot, 99.95)
    assert (boxes[[0, 6]] == -1).all() and boxes[4, 0] == pytest.approx(10 / 112)
    # a 2D map (no slices) gives the same box on every slice
    flat = hotspots.hotspot_boxes(hotspot[..., 4], 99.9)
    np.testing.assert_allclose(flat, np.tile(boxes[4], (9, 1)))
    with pytest.raises(ValueError, match="percentile"):
        hotspots.hotspot_boxes(hotspot, 100)
    with pytest.raises(ValueError, match="shape"):
        hotspots.hotspot_boxes(hotspot[..., :8])


def test_volume_iou_by_hand():
    none = [-1, -1, -1, -1]
    truth = np.array([none] * 9, np.float32)
    truth[3] = [0.0, 0.0, 0.5, 0.5]  # area 0.25
    truth[4] = [0.5, 0.5, 1.0, 1.0]  # area 0.25
    boxes = np.array([none] * 9, np.float32)
    boxes[3] = [0.25, 0.25, 0.75, 0.75]  # overlaps slice 3's truth by 0.0625
    boxes[5] = [0.0, 0.0, 0.1, 0.1]  # a box where there is no lesion: area 0.01
    # intersection 0.0625; union 0.25 + 0.01 + 0.25 + 0.25 - 0.0625
    assert hotspots.volume_iou(boxes, truth) == pytest.approx(0.0625 / 0.6975)
    assert hotspots.volume_iou(truth, truth) == pytest.approx(1.0)
    # whole volume: 0.5 of lesion area over 9 whole slices
    assert hotspots.volume_iou(hotspots.WHOLE_VOLUME, truth) == pytest.approx(0.5 / 9)
    assert hotspots.volume_iou(np.array([none] * 9), truth) == 0.0
    with pytest.raises(ValueError, match="no box"):
        hotspots.volume_iou(boxes, np.array([none] * 9))
    with pytest.raises(ValueError, match="ymax < ymin"):
        hotspots.volume_iou(np.array([[0.5, 0, 0.2, 1]] * 9), truth)
    with pytest.raises(ValueError, match=r"\(9, 4\)"):
        hotspots.volume_iou(boxes[:8], truth)


def test_upper_fraction_counts_rows_towards_the_head():
    hotspot = np.zeros(SHAPE, np.float32)
    hotspot[10, 5, 1] = 3.0  # upper half
    hotspot[56, 5, 8] = 1.0  # first row of the lower half
    assert hotspots.upper_fraction(hotspot) == pytest.approx(0.75)
    assert hotspots.upper_fraction(hotspot[..., 1]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="all zero"):
        hotspots.upper_fraction(np.zeros(SHAPE))


def test_localisation_table_of_a_model(tiny_model):
    from spine_tf.io.codec import to_stored
    x = _volumes(3, seed=4)
    none = -np.ones((4, 9, 4), np.float32)
    with_lesion = none.copy()
    with_lesion[2, 4] = [0.0, 0.0, 0.5, 0.25]  # marrow_upper only
    examples = [{"disc_volume": to_stored(x[0]), "lesion_boxes": with_lesion},
                {"disc_volume": x[1], "lesion_boxes": none},  # no lesion: left out
                {"disc_volume": x[2], "lesion_boxes": with_lesion}]
    result = hotspots.localisation(tiny_model, examples, augmentations=2, percentiles=(97.0,))
    counts = {name: entry["discs"] for name, entry in result["tasks"].items()}
    assert counts == {"endplate_upper": 0, "endplate_lower": 0, "marrow_upper": 2,
                      "marrow_lower": 0}
    entry = result["tasks"]["marrow_upper"]
    assert entry["whole_volume"] == pytest.approx(0.125 / 9)
    maps = hotspots.Hotspots(tiny_model)("marrow_upper", x[[0, 2]], 1, 2, 0)
    expected = np.mean([hotspots.volume_iou(hotspots.hotspot_boxes(m, 97.0), with_lesion[2])
                        for m in maps])
    assert entry["hotspot"]["97.0"] == pytest.approx(expected, abs=2e-3)  # x[0] went via uint16
    assert result["tasks"]["endplate_upper"]["hotspot"]["97.0"] is None
    text = hotspots.localisation_markdown(result)
    assert "| marrow_upper | 2 |" in text and "| endplate_upper | 0 | n/a" in text


def test_overlay_montage_colours():
    volume = np.full(SHAPE, 0.5, np.float32)
    hotspot = np.zeros(SHAPE, np.float32)
    hotspot[0:10, 0:10, :] = 1.0
    picture = report.overlay_montage([volume], [hotspot], ["L4-L5 x"], slices=[0, 1])
    assert picture.shape == (14 + 112, 2 * 224 + 2, 3) and picture.dtype == np.uint8
    np.testing.assert_array_equal(picture[14 + 50, 50], [127, 127, 127])  # grey, no map
    np.testing.assert_array_equal(picture[14 + 5, 5], [255, 255, 255])  # map 1 = white heat
    assert picture[:14].max() > 200  # the title is drawn (white text)
    np.testing.assert_allclose(report.heat_colours([0.5])[0], [1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="one map per volume"):
        report.overlay_montage([volume], [hotspot[..., :3]])


def test_scan_hotspot_nifti_overlays_the_lesion(tmp_path):
    # a hotspot that is exactly the lesion in the disc volume must peak inside the
    # lesion mask when mapped back onto the scan and written in the file's grid
    from spine_tf import phantom
    from spine_tf.data.sources import phantom_record
    from spine_tf.phantom import PhantomConfig
    patient = phantom.make_patient(0, 2)
    record = phantom_record(0, 2, PhantomConfig())
    volumes, _ = extraction.extract(record.scan, record.localisation)
    disc = next(v for v in volumes if v.level == "L1-L2")  # marrow_lower lesion, disc 5
    channel = [t.name for t in tasks.LESION_TASKS].index("marrow_lower")
    lesion = (patient.lesions[..., channel] == 5).astype(np.float32)
    hotspot = extraction.sample_into_volume(lesion, disc.voxel_to_scan, order=1)
    assert hotspot.max() == 1.0
    result = hotspots.TaskHotspots("marrow_lower", hotspot[None], np.array([1]),
                                   np.array([0.9], np.float32), np.array([1]))
    path = os.fspath(tmp_path / "scan_hotspots.nii.gz")
    internal = hotspots.save_scan_hotspots(path, record.scan, {"marrow_lower": result},
                                           disc.voxel_to_scan[None])
    assert internal.shape == record.scan.shape + (1,)
    peak = np.unravel_index(internal[..., 0].argmax(), record.scan.shape)
    assert lesion[peak] == 1.0
    assert internal[..., 0][lesion == 0].max() < 1.0  # blurred edges only
    image = nib.load(path)
    np.testing.assert_allclose(image.affine, record.scan.original_affine, atol=1e-5)
    np.testing.assert_allclose(np.asarray(image.dataobj)[..., 0],
                               record.scan.to_original(internal[..., 0]), atol=1e-6)


def test_tensorboard_callback_writes_one_image_per_task(tiny_model, tmp_path):
    callback = hotspots.HotspotImages(os.fspath(tmp_path), _volumes(2, seed=5),
                                      task_names=("pfirrmann", "marrow_lower"), augmentations=2)
    callback.set_model(tiny_model)
    callback.on_epoch_end(0)
    callback.on_epoch_end(1)
    callback.on_train_end()
    seen = []
    for name in os.listdir(tmp_path):
        for event in tf.compat.v1.train.summary_iterator(os.fspath(tmp_path / name)):
            for value in event.summary.value:
                picture = tf.io.decode_png(tf.make_ndarray(value.tensor)[2]).numpy()
                seen.append((value.tag, event.step, picture.shape))
    rows = 2 * (112 + 14) + 2
    assert sorted(seen) == sorted((f"hotspots/{t}", s, (rows, 9 * 226 - 2, 3))
                                  for t in ("pfirrmann", "marrow_lower") for s in (0, 1))


def test_command_on_a_scan_writes_arrays_pictures_and_nifti(tiny_model, tmp_path, capsys):
    from PIL import Image

    from spine_tf import cli
    cohort = tmp_path / "cohort"
    cli.main(["phantom", "--patients", "1", "--seed", "5", "--out", str(cohort),
              "--workers", "1"])
    scan, mask = (cohort / folder / "ph5-00000.nii.gz" for folder in ("scans", "masks"))
    model_path = tmp_path / "tiny.keras"
    tiny_model.save(model_path)
    out = tmp_path / "out"
    assert cli.main(["hotspots", str(scan), "--mask", str(mask), "--model", str(model_path),
                     "--tasks", "marrow_lower", "endplate_upper", "--augmentations", "2",
                     "--out", str(out)]) == 0
    saved = np.load(out / "ph5-00000_hotspots.npz")
    discs = len(saved["levels"])
    assert discs >= 4 and saved["maps"].shape == (discs, 2) + SHAPE
    assert list(saved["tasks"]) == ["marrow_lower", "endplate_upper"]
    assert np.isclose(saved["maps"].reshape(discs * 2, -1).max(axis=1), 1).all()
    assert saved["classes"].shape == saved["probabilities"].shape == (discs, 2)
    picture = np.asarray(Image.open(out / "ph5-00000_hotspots_marrow_lower.png"))
    assert picture.shape == (discs * (112 + 14 + 2) - 2, 9 * 226 - 2, 3)
    written = nib.load(out / "ph5-00000_hotspots.nii.gz")
    original = nib.load(scan)
    assert written.shape == original.shape + (2,)
    np.testing.assert_allclose(written.affine, original.affine, atol=1e-4)
    # each task's volume is its discs' hotspots put on the scan grid, in the file's order
    from spine_tf.io.scan import read_scan
    read = read_scan(os.fspath(scan))
    for t in range(2):
        expected = hotspots.scan_hotspots(saved["maps"][:, t], saved["voxel_to_scan"],
                                          read.shape)
        assert expected.max() > 0.1
        np.testing.assert_allclose(np.asarray(written.dataobj)[..., t],
                                   read.to_original(expected), atol=1e-6)
    assert "discs (" in capsys.readouterr().out
    # without a mask the shipped detector finds the discs
    if os.path.exists(detection.WEIGHTS):
        detected = tmp_path / "detected"
        assert cli.main(["hotspots", str(scan), "--model", str(model_path), "--tasks",
                         "endplate_upper", "--augmentations", "1", "--out", str(detected)]) == 0
        assert len(np.load(detected / "ph5-00000_hotspots.npz")["levels"]) >= 4
    with pytest.raises(SystemExit, match="cannot load the detector"):
        cli.main(["hotspots", str(scan), "--model", str(model_path), "--detector",
                  str(tmp_path / "absent.keras")])
    with pytest.raises(SystemExit, match="unknown task"):
        cli.main(["hotspots", str(scan), "--mask", str(mask), "--model", str(model_path),
                  "--tasks", "modic"])
    with pytest.raises(SystemExit, match="--measure works on a run"):
        cli.main(["hotspots", str(scan), "--mask", str(mask), "--model", str(model_path),
                  "--measure"])


class _Halves(keras.layers.Layer):
    """Logits (0, energy of the upper or lower half of the rows): looks at one side only."""

    def __init__(self, classes, side, **kwargs):
        super().__init__(**kwargs)
        self.classes = classes
        self.side = side

    def call(self, x):
        half = x[:, :56] if self.side == "upper" else x[:, 56:]
        energy = 0.5 * tf.reduce_sum(tf.square(half), axis=[1, 2, 3])
        return tf.stack([tf.zeros_like(energy)] + [energy] * (self.classes - 1), axis=1)


def test_task_specificity_of_a_model_that_looks_at_one_side():
    inputs = keras.Input(SHAPE)
    outputs = [_Halves(t.num_classes, t.lesion[1] if t.lesion else "upper", name=t.name)(inputs)
               for t in tasks.TASKS]
    model = keras.Model(inputs, outputs)
    x = _volumes(3, seed=6)
    none = -np.ones((4, 9, 4), np.float32)
    both_marrow = none.copy()
    both_marrow[2:4, 4] = [0.1, 0.1, 0.2, 0.2]  # marrow_upper and marrow_lower
    one_endplate = none.copy()
    one_endplate[0, 4] = [0.1, 0.1, 0.2, 0.2]
    examples = [{"disc_volume": x[0], "lesion_boxes": both_marrow},
                {"disc_volume": x[1], "lesion_boxes": one_endplate},
                {"disc_volume": x[2], "lesion_boxes": both_marrow}]
    result = hotspots.task_specificity(model, examples, augmentations=8)
    assert result["endplate"] == {"discs": 0, "upper_task": [], "lower_task": [],
                                  "specific": None}
    marrow = result["marrow"]
    assert marrow["discs"] == 2 and marrow["specific"] == 1.0
    # shifts of up to 24 rows and rotations move some mass across the middle, not most
    assert min(marrow["upper_task"]) > 0.75 and max(marrow["lower_task"]) < 0.25


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A width-0.0625 model trained for 2 epochs on a 5-patient phantom cohort."""
    from spine_tf import config as config_lib
    from spine_tf.training import train
    base = tmp_path_factory.mktemp("hotspots_run")
    config = config_lib.override(config_lib.ExperimentConfig(), [
        "data.patients=5", "data.seed=24", "data.workers=2",
        f"data.data_dir={os.fspath(base / 'tfds')!r}", "model.width=0.0625",
        "pipeline.batch_size=8", "train.epochs=2", "train.learning_rate=0.01"])
    run_dir = os.fspath(base / "run")
    train.train(config, run_dir, verbose=0)
    return run_dir, train.prepare_dataset(config.data)


@pytest.mark.slow
def test_measure_run_tabulates_the_lesion_discs_of_a_trained_run(trained_run):
    run_dir, builder = trained_run
    examples = list(builder.as_dataset(split="train").as_numpy_iterator())
    result, out = runs.measure_hotspots(run_dir, split="train", model_file="final.keras",
                                        augmentations=4, percentiles=(95.0, 99.0))
    assert out == os.path.join(run_dir, "hotspots_train") and result["split"] == "train"
    for j, task in enumerate(tasks.LESION_TASKS):
        truth = [e["lesion_boxes"][j] for e in examples if (e["lesion_boxes"][j, :, 0] >= 0).any()]
        entry = result["tasks"][task.name]
        assert entry["discs"] == len(truth) > 0
        # the whole volume's IoU is the lesion's share of the volume, by hand
        shares = [np.sum([(b[2] - b[0]) * (b[3] - b[1]) for b in t if b[0] >= 0]) / 9
                  for t in truth]
        assert entry["whole_volume"] == pytest.approx(np.mean(shares), rel=1e-5)
        for kind in ("hotspot", "plain"):
            assert all(0.0 <= entry[kind][p] <= 1.0 for p in ("95.0", "99.0"))
    with open(os.path.join(out, hotspots.LOCALISATION_JSON), encoding="utf-8") as f:
        assert json_load(f)["tasks"] == result["tasks"]
    text = open(os.path.join(out, hotspots.LOCALISATION_MARKDOWN), encoding="utf-8").read()
    assert all(f"| {t.name} | " in text for t in tasks.LESION_TASKS)


def json_load(f):
    import json
    return json.load(f)


@pytest.mark.slow
def test_specificity_figures_on_a_trained_run(trained_run):
    # a model trained for two epochs is not expected to be task-specific: this checks
    # the figures are made for every disc with lesions on both sides
    run_dir, builder = trained_run
    model = keras.saving.load_model(os.path.join(run_dir, "final.keras"))
    examples = list(builder.as_dataset(split="train").as_numpy_iterator())
    result = hotspots.task_specificity(model, examples, augmentations=4)
    assert sum(entry["discs"] for entry in result.values()) > 0
    for entry in result.values():
        assert len(entry["upper_task"]) == len(entry["lower_task"]) == entry["discs"]
        assert all(0.0 < f < 1.0 for f in entry["upper_task"] + entry["lower_task"])
