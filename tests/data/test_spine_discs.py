"""The spine_discs TFDS builder: phantom builds against the phantom's truth, the build report.

TFDS's own builder test on ``dummy_data/`` (folder and SPIDER configs) is
``datasets/spine_discs/spine_discs_dataset_builder_test.py``.
"""

import gzip
import json
import os
import pathlib
import shutil

import nibabel as nib
import numpy as np
import pytest
import tensorflow_datasets as tfds

from spine_tf import extraction, localisation, tasks
from spine_tf.io import codec
from spine_tf.data import sources, spine_discs
from spine_tf.io.scan import ScanError
from spine_tf.phantom import make_patient, patient_id
from spine_tf.phantom.anatomy import VERTEBRA_LABELS

DUMMY_FOLDER = (pathlib.Path(__file__).resolve().parents[2] / "datasets" / "spine_discs"
                / "dummy_data" / "folder")
# Seed 39's first three phantom patients fall one into each split (ids hashed).
SEED, PATIENTS = 39, 3
MID = extraction.SLICES // 2

tfds.disable_progress_bar()


def _examples(builder):
    """{split: [example]} of a prepared builder, as numpy."""
    return {split: list(tfds.as_numpy(builder.as_dataset(split=split)))
            for split in builder.info.splits}


def _record_keys(builder):
    """Makes ``builder`` record the (split, key, example) it yields; returns the list."""
    recorded = []
    original = builder._split_generators  # pylint: disable=protected-access

    def split_generators(dl_manager):
        def record(split, generator):
            for key, example in generator:
                recorded.append((split, key, example))
                yield key, example
        return {split: record(split, generator)
                for split, generator in original(dl_manager).items()}

    builder._split_generators = split_generators  # pylint: disable=protected-access
    return recorded


# ------------------------------------------------------------------ phantom


@pytest.fixture(scope="module")
def phantom_build(tmp_path_factory):
    config = spine_discs.phantom_config(PATIENTS, seed=SEED)
    builder = spine_discs.builder(config, data_dir=os.fspath(tmp_path_factory.mktemp("tfds")),
                                  workers=2)
    recorded = _record_keys(builder)
    builder.download_and_prepare()
    patients = {patient_id(SEED, i): make_patient(SEED, i) for i in range(PATIENTS)}
    return builder, recorded, _examples(builder), patients


def test_phantom_splits_are_by_patient_with_patient_level_keys(phantom_build):
    builder, recorded, examples, patients = phantom_build
    expected_splits = {pid: sources.split_of(pid) for pid in patients}
    assert sorted(expected_splits.values()) == ["test", "train", "validation"]
    assert builder.build_report()["skipped_discs"] == []
    assert builder.build_report()["skipped_scans"] == []
    # Every visible disc of every patient, once, keyed <patient>/<level>, in its patient's split.
    expected_keys = {f"{pid}/{level}": expected_splits[pid]
                     for pid, patient in patients.items() for level in patient.levels}
    assert len(expected_keys) == 18
    assert {key: split for split, key, _ in recorded} == expected_keys
    assert len(recorded) == len(expected_keys)
    for split, key, example in recorded:
        assert key == f"{example['patient_id']}/{example['level']}"
    for split, items in examples.items():
        keys = {f"{e['patient_id'].decode()}/{tasks.LEVELS[e['level']]}" for e in items}
        assert keys == {k for k, s in expected_keys.items() if s == split}
        assert builder.info.splits[split].num_examples == len(items)
    seen = {}
    for split, items in examples.items():
        for e in items:
            seen.setdefault(e["patient_id"].decode(), set()).add(split)
    assert all(len(splits) == 1 for splits in seen.values())


def test_phantom_labels_are_the_phantoms(phantom_build):
    _, _, examples, patients = phantom_build
    checked = missing = 0
    for items in examples.values():
        for e in items:
            patient = patients[e["patient_id"].decode()]
            level = tasks.LEVELS[e["level"]]
            assert {name: int(v) for name, v in e["labels"].items()} == patient.labels[level]
            assert {name: int(v) for name, v in e["labels_reread"].items()} == \
                patient.reread[level]
            checked += 1
            missing += sum(int(v) == tasks.MISSING_LABEL for v in e["labels"].values())
    assert checked == 18
    assert missing < checked * len(tasks.TASKS) // 4


def test_phantom_disc_volumes_are_normalised_to_the_body_median(phantom_build):
    _, _, examples, patients = phantom_build
    located = {pid: localisation.from_mask(p.mask, p.spacing_mm).by_level()
               for pid, p in patients.items()}
    medians = []
    for items in examples.values():
        for e in items:
            assert e["disc_volume"].dtype == np.uint16
            assert e["disc_volume"].shape == extraction.VOLUME_SHAPE
            volume = codec.from_stored(e["disc_volume"]).numpy()
            assert volume.dtype == np.float32
            assert volume.min() >= 0.0 and volume.max() <= 1.0
            assert volume.max() > 0.9  # bright nucleus / CSF / fat: the range is used
            disc = located[e["patient_id"].decode()][tasks.LEVELS[e["level"]]]
            bodies = extraction.body_masks(disc, e["voxel_to_scan"]).any(axis=0)
            assert bodies.sum() > 1000
            medians.append(np.median(volume[..., MID][bodies]))
            np.testing.assert_allclose(e["spacing_mm"],
                                       patients[e["patient_id"].decode()].spacing_mm, rtol=1e-6)
    np.testing.assert_allclose(medians, 0.5, atol=2e-3)


def test_phantom_lesion_boxes_mark_exactly_the_slices_with_lesions(phantom_build):
    _, _, examples, patients = phantom_build
    boxes_seen = 0
    for items in examples.values():
        for e in items:
            patient = patients[e["patient_id"].decode()]
            number = tasks.disc_label_of_level(tasks.LEVELS[e["level"]]) - 200
            first = int(round(e["voxel_to_scan"][0, 3]))
            boxes = e["lesion_boxes"]
            assert boxes.shape == (len(tasks.LESION_TASKS), extraction.SLICES, 4)
            for t in range(len(tasks.LESION_TASKS)):
                for k in range(extraction.SLICES):
                    s = first + k
                    has_lesion = bool(0 <= s < patient.lesions.shape[0]
                                      and np.any(patient.lesions[s, ..., t] == number))
                    box = boxes[t, k]
                    assert (box[0] >= 0) == has_lesion, (e["patient_id"], e["level"], t, k)
                    if has_lesion:
                        boxes_seen += 1
                        assert np.all((box >= 0) & (box <= 1))
                        assert box[0] < box[2] and box[1] < box[3]
                    else:
                        np.testing.assert_array_equal(box, -1)
    assert boxes_seen >= 10


def test_split_of_is_stable_and_about_80_10_10():
    ids = [patient_id(7, i) for i in range(2000)]
    splits = [sources.split_of(pid) for pid in ids]
    assert splits == [sources.split_of(pid) for pid in ids]
    share = {split: splits.count(split) / len(ids) for split in sources.SPLITS}
    assert abs(share["train"] - 0.8) < 0.03
    assert abs(share["validation"] - 0.1) < 0.02
    assert abs(share["test"] - 0.1) < 0.02
    # Pinned: changing the hash would silently move patients between splits.
    assert [sources.split_of(pid) for pid in ("ph0-00000", "ph0-00011", "ph0-00021", "9", "24")] \
        == ["test", "train", "validation", "validation", "test"]


def test_stored_volume_round_trip():
    volume = np.array([-0.2, 0.0, 0.25, 0.5, 1.0, 1.7], np.float32)
    stored = codec.to_stored(volume)
    assert stored.dtype == np.uint16
    np.testing.assert_array_equal(stored, [0, 0, 16384, 32768, 65535, 65535])
    np.testing.assert_allclose(codec.from_stored(stored).numpy(),
                               [0, 0, 0.25, 0.5, 1, 1], atol=1 / 65535)


# ------------------------------------------------------------- build report


@pytest.fixture(scope="module")
def broken_folder(tmp_path_factory):
    """The dummy folder cohort with a truncated scan (ph0-00021, the only validation
    patient) and a mask without the L2 body (ph0-00011)."""
    out = tmp_path_factory.mktemp("broken") / "cohort"
    shutil.copytree(DUMMY_FOLDER, out)
    scan = out / "scans" / "ph0-00021.nii.gz"
    data = gzip.decompress(scan.read_bytes())
    scan.write_bytes(gzip.compress(data[: len(data) // 2]))
    mask_path = out / "masks" / "ph0-00011.nii.gz"
    mask = nib.load(mask_path)
    labels = np.asarray(mask.dataobj)
    assert np.any(labels == VERTEBRA_LABELS["L2"])
    labels = np.where(labels == VERTEBRA_LABELS["L2"], 0, labels).astype(labels.dtype)
    nib.save(nib.Nifti1Image(labels, mask.affine, mask.header), mask_path)
    return out


def _folder_builder(name, data_dir, workers=2, strict=False):
    config = spine_discs.SpineDiscsConfig(name=name, source="folder")
    return spine_discs.builder(config, data_dir=os.fspath(data_dir), workers=workers,
                               strict=strict)


def _prepare(builder, manual_dir, **kwargs):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=os.fspath(manual_dir), **kwargs))


def _check_report(report, manual_dir):
    assert [item["patient"] for item in report["skipped_scans"]] == ["ph0-00021"]
    scan = report["skipped_scans"][0]
    assert scan["file"] == os.path.join(os.fspath(manual_dir), "scans", "ph0-00021.nii.gz")
    assert scan["reason"].startswith(scan["file"] + ": ")
    assert "corrupt or truncated" in scan["reason"]
    discs = {(item["patient"], item["level"]): item["reason"] for item in report["skipped_discs"]}
    assert sorted(discs) == [("ph0-00011", "L1-L2"), ("ph0-00011", "L2-L3")]
    assert "no vertebral body found below" in discs[("ph0-00011", "L1-L2")]
    assert "no vertebral body found above" in discs[("ph0-00011", "L2-L3")]
    assert report["patients"] == 4


def test_build_skips_broken_scans_and_reports_them(broken_folder, tmp_path):
    builder = _folder_builder("folder_broken", tmp_path)
    _prepare(builder, broken_folder)
    # The report is in the final dataset folder, next to the data, and nothing else is left.
    data_dir = pathlib.Path(builder.data_dir)
    assert "incomplete" not in data_dir.name
    assert (data_dir / spine_discs.REPORT_NAME).is_file()
    assert not (data_dir / spine_discs.CACHE_NAME).exists()
    assert [p.name for p in data_dir.parent.iterdir()] == [data_dir.name]
    report = json.loads((data_dir / spine_discs.REPORT_NAME).read_text())
    _check_report(report, broken_folder)
    # The validation split had only the broken patient: it is left out, not a failure.
    assert report["examples"] == {"train": 8, "test": 6}
    assert {s: i.num_examples for s, i in builder.info.splits.items()} == {"train": 8, "test": 6}
    examples = _examples(builder)
    keys = {f"{e['patient_id'].decode()}/{tasks.LEVELS[e['level']]}"
            for items in examples.values() for e in items}
    assert "ph0-00011/L3-L4" in keys and "ph0-00011/L1-L2" not in keys
    assert not any(key.startswith("ph0-00021/") for key in keys)
    assert sum(key.startswith("ph0-00000/") for key in keys) == 6
    # A reloaded builder reads the same report.
    assert _folder_builder("folder_broken", tmp_path).build_report() == report


def test_report_is_complete_when_tfds_stops_generators_early(broken_folder, tmp_path):
    builder = _folder_builder("folder_capped", tmp_path)
    _prepare(builder, broken_folder, max_examples_per_split=1)
    assert {s: i.num_examples for s, i in builder.info.splits.items()} == {"train": 1, "test": 1}
    _check_report(builder.build_report(), broken_folder)


def test_strict_build_raises_naming_the_file(broken_folder, tmp_path):
    builder = _folder_builder("folder_strict", tmp_path, strict=True)
    with pytest.raises(ScanError, match=r"scans/ph0-00021\.nii\.gz: cannot read corrupt"):
        _prepare(builder, broken_folder)
    assert not pathlib.Path(builder.data_dir).exists()


def test_labelled_patients_without_scans_and_unlabelled_scans_are_reported(tmp_path):
    cohort = tmp_path / "cohort"
    shutil.copytree(DUMMY_FOLDER, cohort)
    (cohort / "scans" / "ph0-00007.nii.gz").unlink()
    lines = (cohort / "labels.csv").read_text().splitlines()
    (cohort / "labels.csv").write_text(
        "\n".join(line for line in lines if not line.startswith("ph0-00000,")) + "\n")
    builder = _folder_builder("folder_partial", tmp_path, workers=1)
    _prepare(builder, cohort)
    report = builder.build_report()
    reasons = {item["patient"]: item["reason"] for item in report["skipped_scans"]}
    assert sorted(reasons) == ["ph0-00000", "ph0-00007"]
    assert "no labelled disc in labels.csv" in reasons["ph0-00000"]
    assert "has labels in labels.csv but no scans/ph0-00007.*" in reasons["ph0-00007"]
    assert report["examples"] == {"train": 6, "validation": 6}


def test_no_usable_patient_fails_with_the_reasons(tmp_path):
    cohort = tmp_path / "cohort"
    shutil.copytree(DUMMY_FOLDER, cohort)
    for scan in (cohort / "scans").iterdir():
        scan.write_bytes(b"not a scan")
    builder = _folder_builder("folder_empty", tmp_path, workers=1)
    with pytest.raises(ScanError, match="no labelled disc could be extracted from any of the 4"):
        _prepare(builder, cohort)


def test_wrong_layout_fails_listing_the_expected_paths(tmp_path):
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    (cohort / "labels.csv").write_text("patient,level\n")
    with pytest.raises(ScanError, match=r"not a spine_tf folder source; missing .*cohort/scans"):
        _prepare(_folder_builder("folder_layout", tmp_path), cohort)
    config = spine_discs.SpineDiscsConfig(name="spider_layout", source="spider")
    with pytest.raises(ScanError, match=r"not a SPIDER folder; missing .*cohort/images, "
                                        r".*cohort/masks, .*radiological_gradings\.csv"):
        _prepare(spine_discs.builder(config, data_dir=os.fspath(tmp_path)), cohort)
