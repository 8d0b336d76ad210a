"""spine-tf predict: finding scans, grading, outputs, failures, Keras vs SavedModel."""

import csv
import json
import os
import pathlib
import shutil

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from spine_tf import extraction, tasks, tta
from spine_tf.serving import export
from spine_tf.app import predict, predictors, scans
from spine_tf.modeling import model as model_lib
from spine_tf.localisation import localise
from spine_tf.io.scan import read_scan


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    model = model_lib.build_model(width=0.0625)
    model_lib.mean_subtraction(model).set_mean(np.full(9, 0.2))
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return os.fspath(path)


@pytest.fixture(scope="module")
def cohort(phantom_cohort_dir, tmp_path_factory):
    """The 4-patient phantom cohort plus a broken scan and a scan without mask or landmarks."""
    out = tmp_path_factory.mktemp("predict_cohort")
    shutil.copytree(phantom_cohort_dir, out, dirs_exist_ok=True)
    (out / "scans" / "broken.nii.gz").write_bytes(b"not a nifti file")
    shutil.copy(out / "scans" / "ph1-00000.nii.gz", out / "scans" / "unlocalised.nii.gz")
    return out


@pytest.fixture(scope="module")
def predicted(cohort, tiny_model_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("predictions")
    jobs = scans.find_scans([cohort])
    predictor = predictors.load_predictor(tiny_model_file)
    chosen = [j for j in jobs if j.name in ("broken", "ph1-00000", "ph1-00001", "unlocalised")]
    summary = predict.run(chosen, predictor, os.fspath(out), augmentations=3)
    return out, summary, predictor


def test_find_scans_in_the_folder_layout(cohort):
    jobs = {j.name: j for j in scans.find_scans([cohort])}
    assert sorted(jobs) == ["broken", "ph1-00000", "ph1-00001", "ph1-00002", "ph1-00003",
                            "unlocalised"]
    assert jobs["ph1-00001"].mask == os.fspath(cohort / "masks" / "ph1-00001.nii.gz")
    assert jobs["ph1-00001"].landmarks == os.fspath(cohort / "landmarks" / "ph1-00001.json")
    assert jobs["unlocalised"].mask is None and jobs["unlocalised"].landmarks is None
    one = scans.find_scans([cohort / "scans" / "ph1-00002.nii.gz"],
                           landmarks=cohort / "landmarks" / "ph1-00002.json")
    assert one == [scans.ScanJob("ph1-00002", os.fspath(cohort / "scans" / "ph1-00002.nii.gz"),
                                 None, os.fspath(cohort / "landmarks" / "ph1-00002.json"))]


def test_find_scans_refuses_bad_inputs(cohort, tmp_path):
    with pytest.raises(scans.PredictError, match="no such file or folder"):
        scans.find_scans([tmp_path / "absent"])
    with pytest.raises(scans.PredictError, match="no scan files"):
        scans.find_scans([tmp_path])
    with pytest.raises(scans.PredictError, match="one --masks file for 6 scans"):
        scans.find_scans([cohort], masks=cohort / "masks" / "ph1-00000.nii.gz")
    with pytest.raises(scans.PredictError, match="several scans are called ph1-00000"):
        scans.find_scans([cohort, cohort / "scans" / "ph1-00000.nii.gz"])


def test_failures_are_reported_and_the_run_goes_on(predicted):
    out, summary, _ = predicted
    status = {s["name"]: s for s in summary["scans"]}
    assert [status[n]["status"] for n in ("broken", "ph1-00000", "ph1-00001", "unlocalised")] \
        == ["failed", "done", "done", "failed"]
    assert "broken.nii.gz" in status["broken"]["reason"]
    assert "no mask or landmarks" in status["unlocalised"]["reason"]
    assert sorted(os.listdir(out)) == ["grades.csv", "index.html", "ph1-00000", "ph1-00001",
                                       "summary.json"]  # no folder for failed scans, no temp
    assert json.loads((out / "summary.json").read_text()) == summary


def test_grades_are_the_models_tta_probabilities(predicted, cohort, tiny_model_file):
    out, summary, predictor = predicted
    scan = read_scan(cohort / "scans" / "ph1-00001.nii.gz")
    volumes, _ = extraction.extract(scan, localise(scan, cohort / "masks" / "ph1-00001.nii.gz"))
    expected = tta.predict(predictor.model, np.stack([v.volume for v in volumes]))
    record = json.loads((out / "ph1-00001" / "grades.json").read_text())
    assert [d["level"] for d in record["discs"]] == [v.level for v in volumes]
    for n, disc in enumerate(record["discs"]):
        for task, p in zip(tasks.TASKS, expected):
            got = disc["tasks"][task.name]
            np.testing.assert_allclose(got["probabilities"], p[n], rtol=1e-5, atol=1e-6)
            assert got["grade"] == int(p[n].argmax())
            assert got["class_name"] == task.class_names[got["grade"]]
        assert disc["confidence"] == 1.0 and not disc["flagged"]
    with open(out / "grades.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    done = [s for s in summary["scans"] if s["status"] == "done"]
    assert len(rows) == sum(s["discs"] for s in done)
    mine = [r for r in rows if r["scan"] == "ph1-00001"]
    assert [int(r["narrowing_grade"]) for r in mine] == \
        [d["tasks"]["narrowing"]["grade"] for d in record["discs"]]


def test_hotspot_nifti_overlays_the_scan_file(predicted, cohort):
    out, _, _ = predicted
    original = nib.load(cohort / "scans" / "ph1-00000.nii.gz")
    hotspot = nib.load(out / "ph1-00000" / predict.NIFTI_NAME)
    assert hotspot.shape == original.shape + (len(tasks.TASKS),)
    np.testing.assert_allclose(hotspot.affine, original.affine, atol=1e-5)
    data = hotspot.get_fdata()
    assert data.min() >= 0 and 0.5 < data.max() <= 1.0
    disc_mask = np.asarray(nib.load(cohort / "masks" / "ph1-00000.nii.gz").dataobj) > 200
    peak = np.unravel_index(np.argmax(data[..., 0]), data.shape[:3])
    # the Pfirrmann hotspot's peak lies in the extracted regions: near a disc
    near = np.argwhere(disc_mask)
    spacing = original.header.get_zooms()[:3]
    assert np.min(np.linalg.norm((near - peak) * spacing, axis=1)) < 40


def test_html_report_names_levels_tasks_and_pictures(predicted):
    out, _, _ = predicted
    page = (out / "ph1-00000" / "report.html").read_text()
    record = json.loads((out / "ph1-00000" / "grades.json").read_text())
    for disc in record["discs"]:
        assert f"<th>{disc['level']}" in page
    for task in tasks.TASKS:
        assert task.name.replace("_", " ") in page
        assert (out / "ph1-00000" / f"hotspots_{task.name}.png").exists()
        assert f'src="hotspots_{task.name}.png"' in page
    index = (out / "index.html").read_text()
    assert 'href="ph1-00001/report.html"' in index and "failed" in index


def test_a_rerun_replaces_a_scan_folder_whole(predicted, cohort):
    out, _, predictor = predicted
    job = [j for j in scans.find_scans([cohort]) if j.name == "ph1-00000"][0]
    (out / "ph1-00000" / "stale.txt").write_text("from an older run")
    predict.predict_scan(job, predictor, os.fspath(out), hotspots=False)
    assert not (out / "ph1-00000" / "stale.txt").exists()
    assert not (out / "ph1-00000" / predict.NIFTI_NAME).exists()
    assert not [n for n in os.listdir(out) if n.startswith(".")]


def test_saved_model_predicts_what_the_keras_model_does(predicted, cohort, tmp_path):
    _, _, keras_predictor = predicted
    path = export.export(keras_predictor.model, os.fspath(tmp_path), "tiny", augmentations=2)
    served = predictors.load_predictor(tmp_path / "tiny")  # the base folder: newest version
    assert served.source == path
    scan = read_scan(cohort / "scans" / "ph1-00002.nii.gz")
    volumes, _ = extraction.extract(
        scan, localise(scan, landmarks_path=cohort / "landmarks" / "ph1-00002.json"))
    stacked = np.stack([v.volume for v in volumes])
    for tta_on in (True, False):
        for a, b in zip(served.probabilities(stacked, tta_on),
                        keras_predictor.probabilities(stacked, tta_on)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert served.hotspot_settings(150, 7) == (2, 0)
    classes = {t.name: np.arange(len(stacked)) % t.num_classes for t in tasks.TASKS}
    got = served.hotspots(stacked, classes)
    want = keras_predictor.hotspots(stacked, classes, augmentations=2, seed=0)
    for task in tasks.TASKS:
        np.testing.assert_allclose(got[task.name].maps, want[task.name].maps, rtol=1e-4,
                                   atol=1e-5)
        np.testing.assert_array_equal(got[task.name].classes, classes[task.name])
        np.testing.assert_allclose(got[task.name].probabilities,
                                   want[task.name].probabilities, rtol=1e-5)


@pytest.fixture(scope="module")
def one_slice_predictor():
    model = model_lib.build_model(width=0.0625, input_slices=1)
    model_lib.mean_subtraction(model).set_mean(np.full(9, 0.2))
    return predictors.KerasPredictor(model, "one_slice.keras")


@pytest.fixture(scope="module")
def single_slice_job(phantom_cohort_dir, tmp_path_factory):
    """A phantom scan's middle sagittal slice as a PNG picture, with its mask as .npy."""
    from PIL import Image

    from spine_tf.io.scan import read_mask
    out = tmp_path_factory.mktemp("single_slice")
    scan = read_scan(phantom_cohort_dir / "scans" / "ph1-00000.nii.gz")
    labels = read_mask(phantom_cohort_dir / "masks" / "ph1-00000.nii.gz", scan)
    middle = scan.num_slices // 2
    image = scan.image[middle]
    image = np.round(255 * (image - image.min()) / np.ptp(image)).astype(np.uint8)
    Image.fromarray(image).save(out / "mid.png")
    np.save(out / "mid.npy", labels[middle])
    return scans.ScanJob("mid", os.fspath(out / "mid.png"), mask=os.fspath(out / "mid.npy"),
                         spacing_mm=tuple(scan.spacing_mm[1:]))


def test_a_one_slice_model_grading_a_volume_says_it_used_the_centre_slice(
        one_slice_predictor, cohort, predicted, tmp_path):
    job = [j for j in scans.find_scans([cohort]) if j.name == "ph1-00001"][0]
    record = predict.predict_scan(job, one_slice_predictor, os.fspath(tmp_path), hotspots=False)
    sentence = ("This model was trained on single sagittal slices: only the centre slice of "
                "each disc was used.")
    scan = read_scan(job.scan)
    assert scan.num_slices > 1
    assert (record["input_slices"], record["scan_slices"], record["tta_views"]) == \
        (1, scan.num_slices, 9)
    assert record["input_notes"] == [sentence]
    assert json.loads((tmp_path / "ph1-00001" / "grades.json").read_text()) == record
    page = (tmp_path / "ph1-00001" / "report.html").read_text()
    assert sentence in page and "Test-time augmentation: 9 views" in page
    # its montage shows the slice it read, one 224-wide column per disc
    assert record["montage_slices"] == [4] and "The centre slice (the one the model" in page
    assert Image.open(tmp_path / "ph1-00001" / "discs.png").size[0] == 224
    # the grades are the 9-view TTA of the model
    volumes, _ = extraction.extract(scan, localise(scan, job.mask))
    expected = tta.predict(one_slice_predictor.model, np.stack([v.volume for v in volumes]))
    for n, disc in enumerate(record["discs"]):
        np.testing.assert_allclose(disc["tasks"]["pfirrmann"]["probabilities"], expected[0][n],
                                   rtol=1e-5, atol=1e-6)
    # a volume model on a volume scan: nothing to say, the 54 views
    out, _, _ = predicted
    volume_record = json.loads((out / "ph1-00001" / "grades.json").read_text())
    assert (volume_record["input_slices"], volume_record["tta_views"]) == (9, 54)
    assert volume_record["input_notes"] == []
    assert "Test-time augmentation: 54 views" in (out / "ph1-00001" / "report.html").read_text()
    assert volume_record["montage_slices"] == list(range(9))
    assert Image.open(out / "ph1-00001" / "discs.png").size[0] > 9 * 224


def test_a_single_slice_scan_graded_by_a_volume_model_says_its_slices_were_zero_padded(
        single_slice_job, tiny_model_file, one_slice_predictor, tmp_path):
    volume_predictor = predictors.load_predictor(tiny_model_file)
    record = predict.predict_scan(single_slice_job, volume_predictor, os.fspath(tmp_path / "9"),
                                  hotspots=False)
    assert (record["input_slices"], record["scan_slices"]) == (9, 1)
    assert record["montage_slices"] == [4]  # the others are zero padding
    assert len(record["discs"]) >= 4
    [note] = record["input_notes"]
    assert "8 neighbouring slices" in note and "zero-padded" in note
    assert "trained on 9-slice volumes" in note
    page = (tmp_path / "9" / "mid" / "report.html").read_text()
    assert "zero-padded" in page
    # the model made for such scans grades it without a note
    record = predict.predict_scan(single_slice_job, one_slice_predictor,
                                  os.fspath(tmp_path / "1"), hotspots=False)
    assert (record["input_slices"], record["scan_slices"], record["input_notes"]) == (1, 1, [])


def test_a_saved_model_predictor_reads_the_input_mode_from_the_export(one_slice_predictor,
                                                                      tmp_path):
    export.export(one_slice_predictor.model, os.fspath(tmp_path), "one", augmentations=1)
    served = predictors.load_predictor(tmp_path / "one")
    assert (served.input_slices, served.tta_views) == (1, 9)
    # an export made before the input modes records neither: a 9-slice, 54-view model
    del served.metadata["input_slices"], served.metadata["tta_views"]
    (pathlib.Path(served.source) / "assets" / export.METADATA_NAME).write_text(
        json.dumps(served.metadata))
    older = predictors.load_predictor(tmp_path / "one")
    assert (older.input_slices, older.tta_views) == (9, 54)


def test_load_predictor_refuses_what_is_not_a_model(tmp_path):
    with pytest.raises(scans.PredictError, match="no such model"):
        predictors.load_predictor(tmp_path / "absent.keras")
    with pytest.raises(scans.PredictError, match="not a SavedModel"):
        predictors.load_predictor(tmp_path)
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"zip? no")
    with pytest.raises(scans.PredictError, match="broken.keras: cannot load the model"):
        predictors.load_predictor(broken)


def test_a_model_saved_by_training_loads_for_prediction_alone(tmp_path):
    """A run's best.keras holds its compile config (spine_tf's loss and metrics); predict
    must load it in a process that never imported the training code."""
    import subprocess
    import sys

    from spine_tf import config as config_lib
    from spine_tf.training import train
    config = config_lib.override(config_lib.ExperimentConfig(), ["model.width=0.0625"])
    train.build_compiled_model(config, np.zeros(9)).save(tmp_path / "best.keras")
    code = ("import sys; from spine_tf.app import predictors; "
            "p = predictors.load_predictor(sys.argv[1]); "
            "assert 'spine_tf.training.train' not in sys.modules; print(p.model.count_params())")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          encoding="utf-8", errors="replace", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) > 0


def test_report_renders_in_a_headless_browser(predicted, tmp_path):
    import subprocess

    from PIL import Image
    if not shutil.which("chromium"):
        pytest.skip("chromium is not installed (apt install chromium)")
    out, _, _ = predicted
    script = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "tools",
                          "screenshot-report")
    png = tmp_path / "report.png"
    # ph1-00001: test_a_rerun_replaces_a_scan_folder_whole grades ph1-00000 again without
    # hotspots
    subprocess.run([script, str(out / "ph1-00001" / "report.html"), str(png), "1000,6000"],
                   check=True, capture_output=True, timeout=120)
    picture = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert picture.shape == (6000, 1000, 3)
    # the overview and the grade table load: much of the first screen is neither white nor
    # the text colour
    painted = (np.abs(picture[:1400] - 255).sum(axis=2) > 60).mean()
    assert painted > 0.3
    # further down, below the table and the disc volumes, the hotspot pictures: the heat
    # colours are there (red >> blue). The grade table's colours follow the untrained
    # model's grades, so they are left out of this count
    red = picture[3400:5600, :, 0] - picture[3400:5600, :, 2] > 80
    assert red.mean() > 0.01
