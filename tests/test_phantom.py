"""The phantom cohort: determinism, acquisition ranges, label statistics, visual cues, files."""

import csv
import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from spine_tf import phantom, tasks
from spine_tf.io import landmarks as landmarks_io
from spine_tf.io import read_mask, read_scan
from spine_tf.phantom.anatomy import VERTEBRA_LABELS, PhantomConfig, sample_anatomy
from spine_tf.phantom.cohort import worker_context
from spine_tf.phantom.render import nucleus_signal

N_ANATOMIES = 400


def _anatomies(config=PhantomConfig(), n=N_ANATOMIES):
    return [sample_anatomy(np.random.default_rng([0, i]), f"p{i}", config) for i in range(n)]


@pytest.fixture(scope="module")
def anatomies():
    return _anatomies()


def _balanced_accuracy(truth, other, classes):
    truth, other = np.asarray(truth), np.asarray(other)
    keep = (truth >= 0) & (other >= 0)
    truth, other = truth[keep], other[keep]
    return np.mean([np.mean(other[truth == c] == c) for c in range(classes) if np.any(truth == c)])


def _labels(anatomies, reading="labels"):
    out = {name: [] for name in tasks.TASK_NAMES}
    out["level"] = []
    for anatomy in anatomies:
        for level in anatomy.visible_levels:
            for name in tasks.TASK_NAMES:
                out[name].append(getattr(anatomy, reading)[level][name])
            out["level"].append(tasks.LEVELS.index(level))
    return {k: np.array(v) for k, v in out.items()}


def test_patient_is_deterministic_and_independent_of_cohort():
    a = phantom.make_patient(3, 5)
    b = phantom.make_patient(3, 5)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.labels == b.labels and a.reread == b.reread
    c = phantom.make_patient(4, 5)
    assert c.image.shape != a.image.shape or not np.array_equal(c.image, a.image)


def test_patient_ids_parse_back_and_anatomy_matches_the_rendered_patient():
    assert phantom.parse_patient_id(phantom.patient_id(12, 345)) == (12, 345)
    for bad in ("ph12", "p12-3", "ph12-3x", "ph-1-2"):
        with pytest.raises(ValueError, match=bad):
            phantom.parse_patient_id(bad)
    patient = phantom.make_patient(3, 7)
    anatomy = phantom.patient_anatomy(*phantom.parse_patient_id(patient.patient_id))
    assert anatomy.labels == patient.labels and anatomy.reread == patient.reread
    assert anatomy.lesions == patient.anatomy.lesions


def test_acquisition_ranges(anatomies):
    thickness = np.array([a.acquisition.spacing_mm[0] for a in anatomies])
    in_plane = np.array([a.acquisition.spacing_mm[1] for a in anatomies])
    shapes = np.array([a.acquisition.shape for a in anatomies])
    assert thickness.min() >= 2.6 and thickness.max() <= 6.0
    assert 3.6 <= np.median(thickness) <= 4.4
    assert in_plane.min() >= 0.5 - 1e-9 and in_plane.max() <= 1.0 + 1e-9
    assert shapes[:, 0].min() >= 9 and shapes[:, 0].max() <= 20
    assert shapes[:, 1].min() >= 256 and shapes[:, 1].max() <= 512
    cut_off = np.mean([len(a.visible_levels) < 6 for a in anatomies])
    assert 0.05 <= cut_off <= 0.3
    # a cut-off scan loses the top levels, never the bottom ones
    for a in anatomies:
        assert a.visible_levels == tasks.LEVELS[len(tasks.LEVELS) - len(a.visible_levels):]


def test_label_distributions_are_realistic(anatomies):
    labels = _labels(anatomies)
    pfirrmann = labels["pfirrmann"][labels["pfirrmann"] >= 0]
    share = np.bincount(pfirrmann, minlength=5) / pfirrmann.size
    assert share[1] + share[2] > 0.5  # grades 2-3 most common
    assert share.min() > 0.02  # every grade occurs
    narrowing = labels["narrowing"][labels["narrowing"] >= 0]
    assert np.mean(narrowing == 0) > 0.55 and np.mean(narrowing == 3) > 0.003
    both = (labels["pfirrmann"] >= 0) & (labels["narrowing"] >= 0)
    assert np.corrcoef(labels["pfirrmann"][both], labels["narrowing"][both])[0, 1] > 0.4
    for task in tasks.LESION_TASKS:
        values, level = labels[task.name], labels["level"]
        rate = np.mean(values[values >= 0])
        assert 0.05 <= rate <= 0.2, (task.name, rate)
        top = np.mean(values[(values >= 0) & (level <= 1)])
        bottom = np.mean(values[(values >= 0) & (level >= 4)])
        assert bottom > 1.5 * top, (task.name, top, bottom)
    missing = np.mean([np.mean(labels[n] < 0) for n in tasks.TASK_NAMES])
    assert 0.02 <= missing <= 0.06


def test_reread_gives_an_intra_rater_ceiling_below_perfect(anatomies):
    first, second = _labels(anatomies), _labels(anatomies, "reread")
    agreement = {t.name: _balanced_accuracy(first[t.name], second[t.name], t.num_classes)
                 for t in tasks.TASKS}
    assert 0.55 <= agreement["pfirrmann"] <= 0.85
    assert 0.55 <= agreement["narrowing"] <= 0.85
    for task in tasks.LESION_TASKS:
        assert 0.8 <= agreement[task.name] < 0.99
    # noiseless readers agree perfectly
    exact = _anatomies(PhantomConfig(reader_noise=0.0, missing_fraction=0.0), n=60)
    a, b = _labels(exact), _labels(exact, "reread")
    for name in tasks.TASK_NAMES:
        np.testing.assert_array_equal(a[name], b[name])


def test_labels_follow_the_latent_degeneration(anatomies):
    latent, grade = [], []
    for anatomy in anatomies:
        for disc in anatomy.discs:
            label = anatomy.reread.get(disc.level, {}).get("pfirrmann", -1)
            if label >= 0:
                latent.append(disc.pfirrmann_latent)
                grade.append(label)
    latent, grade = np.array(latent), np.array(grade)
    assert np.mean(np.abs(grade - np.floor(latent)) <= 1) > 0.97
    assert np.mean(grade == np.floor(latent)) > 0.55


def _disc_stats(patient):
    """Per visible disc: nucleus signal (noise-free) and height in the mask (mm)."""
    acq = patient.anatomy.acquisition
    mid = int(round(acq.mid_slice))
    out = {}
    for disc in patient.anatomy.discs:
        if disc.level not in patient.levels:
            continue
        region = patient.mask[mid] == tasks.disc_label_of_level(disc.level)
        signal = patient.signal[mid][region]
        area = region.sum() * acq.spacing_mm[1] * acq.spacing_mm[2]
        out[disc.level] = (np.percentile(signal, 99), area / (2 * disc.half_depth), disc)
    return out


def test_rendered_cues_match_the_labels(phantom_patients):
    nucleus, latent, height, narrowing = [], [], [], []
    for patient in phantom_patients:
        for level, (signal, thickness, disc) in _disc_stats(patient).items():
            nucleus.append(signal)
            latent.append(disc.pfirrmann_latent)
            height.append(thickness / (2 * disc.half_height))
            narrowing.append(disc.narrowing_latent)
            assert signal == pytest.approx(nucleus_signal(disc.pfirrmann_latent), abs=0.12)
    # brighter nucleus for lower grades: rank correlation strongly negative
    rank = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    assert np.corrcoef(rank(nucleus), rank(latent))[0, 1] < -0.8
    # the mask's disc height is the rendered geometry's
    assert np.allclose(height, 1.0, atol=0.2)


def test_lesions_have_masks_and_change_the_signal(phantom_patients):
    checked = 0
    for patient in phantom_patients:
        for lesion in patient.anatomy.lesions:
            task = tasks.task(lesion.task)
            channel = tasks.LESION_TASKS.index(task)
            number = tasks.disc_label_of_level(lesion.level) - 200
            region = patient.lesions[..., channel] == number
            if lesion.strength < 0.3 or not region.any():
                continue
            kind, side = task.lesion
            levels = tasks.LEVELS.index(lesion.level)
            body = phantom.anatomy.VERTEBRAE[levels + (0 if side == "upper" else 1)]
            in_body = patient.mask == VERTEBRA_LABELS[body]
            assert np.mean(in_body[region]) > 0.9  # lesions lie in their vertebra
            healthy = in_body & ~region & (patient.lesions.max(axis=-1) == 0)
            baseline = np.median(patient.signal[healthy])
            inside = np.median(patient.signal[region])
            if kind == "endplate":
                assert inside > baseline * 1.2, (lesion, inside, baseline)
            else:
                ratio = inside / baseline
                assert ratio > 1.15 or ratio < 0.85, (lesion, ratio)
            checked += 1
    assert checked >= 2


def test_cut_off_patient_has_fewer_levels(phantom_patients):
    assert len(phantom_patients[2].levels) < 6
    assert set(phantom_patients[2].labels) == set(phantom_patients[2].levels)


def test_written_cohort_round_trips(phantom_cohort_dir):
    root = os.fspath(phantom_cohort_dir)
    with open(os.path.join(root, "cohort.json"), encoding="utf-8") as f:
        assert json.load(f)["patients"] == 4
    with open(os.path.join(root, "labels.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    orientations = set()
    for index in range(4):
        patient = phantom.make_patient(1, index)
        pid = patient.patient_id
        scan = read_scan(os.path.join(root, "scans", f"{pid}.nii.gz"))
        orientations.add(nib.aff2axcodes(nib.load(os.path.join(root, "scans",
                                                               f"{pid}.nii.gz")).affine))
        np.testing.assert_allclose(scan.image, patient.image.astype(np.float32))
        np.testing.assert_allclose(scan.affine, patient.affine, atol=1e-5)
        mask = read_mask(os.path.join(root, "masks", f"{pid}.nii.gz"), scan)
        np.testing.assert_array_equal(mask, patient.mask)
        landmarks = landmarks_io.read_landmarks(os.path.join(root, "landmarks", f"{pid}.json"))
        for name, vertebra in patient.landmarks.items():
            np.testing.assert_allclose(landmarks[name].corners, vertebra.corners, atol=1e-3)
        mine = [r for r in rows if r["patient"] == pid]
        assert [r["level"] for r in mine] == list(patient.levels)
        for r in mine:
            for name in tasks.TASK_NAMES:
                assert int(r[name]) == patient.labels[r["level"]][name]
                assert int(r[name + "_reread"]) == patient.reread[r["level"]][name]
    assert len(orientations) >= 2  # files are stored in varied orientations


def test_storage_orientation_is_undone_by_reading(tmp_path):
    patient = phantom.make_patient(0, 7)
    phantom.cohort.write_patient(patient, os.fspath(tmp_path))
    stored = nib.load(tmp_path / "scans" / f"{patient.patient_id}.nii.gz")
    assert nib.aff2axcodes(stored.affine) == patient.anatomy.acquisition.storage_axcodes
    scan = read_scan(os.fspath(tmp_path / "scans" / f"{patient.patient_id}.nii.gz"))
    np.testing.assert_array_equal(scan.image, patient.image.astype(np.float32))


def test_worker_processes_fork_only_while_tensorflow_is_not_loaded():
    """A forked copy of a running TensorFlow process can die on inherited locks.

    Without TensorFlow the pools fork; the workers' modules must not load it
    either, or a forkserver worker would spend seconds importing it.
    """
    code = ("import sys; from spine_tf.phantom.cohort import worker_context; "
            "import spine_tf.data.jobs, spine_tf.detection.data; "
            "print(worker_context().get_start_method(), 'tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          encoding="utf-8", errors="replace", check=True)
    assert done.stdout.split() == ["fork", "False"]
    import tensorflow  # noqa: F401  (loaded by the test session anyway)
    assert worker_context().get_start_method() in ("forkserver", "spawn")
