"""Data sources: 4D lesion masks, the folder and SPIDER layouts, the SPIDER label mapping."""

import csv
import pathlib
import re
import shutil

import nibabel as nib
import numpy as np
import pytest

from spine_tf import localisation, tasks
from spine_tf.data import sources
from spine_tf.io import labels as labels_io
from spine_tf.io import read_mask, read_scan
from spine_tf.io.scan import ScanError
from spine_tf.phantom import make_patient
from spine_tf.phantom.anatomy import VERTEBRA_LABELS

DUMMY = pathlib.Path(__file__).resolve().parents[2] / "datasets" / "spine_discs" / "dummy_data"
SPIDER_COLUMNS = ("Patient", "IVD label", "Modic", "UP endplate", "LOW endplate",
                  "Spondylolisthesis", "Disc herniation", "Disc narrowing", "Disc bulging",
                  "Pfirrman grade")


# ------------------------------------------------------------- 4D masks


def _pir_affine(shape):
    """File axes pointing Posterior, Inferior, Right (not the internal L, I, P)."""
    affine = np.zeros((4, 4))
    affine[1, 0], affine[2, 1], affine[0, 2] = -0.8, -0.9, 4.0
    affine[:3, 3] = (-20.0, 30.0, 40.0)
    affine[3, 3] = 1.0
    return affine


@pytest.fixture()
def pir_scan(tmp_path):
    shape = (21, 19, 9)  # file order: posterior, inferior, right
    data = np.random.default_rng(0).uniform(1, 100, shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, _pir_affine(shape)), tmp_path / "scan.nii.gz")
    return read_scan(tmp_path / "scan.nii.gz"), shape


def test_read_mask_keeps_a_trailing_channel_axis(pir_scan, tmp_path):
    scan, shape = pir_scan
    assert scan.shape == (9, 19, 21)
    channels = np.zeros(shape + (4,), np.uint8)
    channels[3, 5, 2, 0] = 6  # file (P=3, I=5, R=2), channel 0
    channels[20, 0, 8, 3] = 1
    channels[..., 2] = 2
    nib.save(nib.Nifti1Image(channels, _pir_affine(shape)), tmp_path / "lesions.nii.gz")
    mask = read_mask(tmp_path / "lesions.nii.gz", scan)
    assert mask.shape == (9, 19, 21, 4) and mask.dtype == np.int32
    # Internal (L, I, P): slice = 8 - R index, row = I index, col = P index.
    assert mask[8 - 2, 5, 3, 0] == 6 and mask[0, 0, 20, 3] == 1
    assert np.count_nonzero(mask[..., 0]) == 1 and np.count_nonzero(mask[..., 3]) == 1
    assert np.all(mask[..., 2] == 2) and not mask[..., 1].any()
    # The same voxel through the scan's own reorientation.
    np.testing.assert_array_equal(scan.to_original(mask), channels)

    # One channel, or singleton axes around the channel axis, still read as before.
    nib.save(nib.Nifti1Image(channels[..., :1], _pir_affine(shape)), tmp_path / "one.nii.gz")
    assert read_mask(tmp_path / "one.nii.gz", scan).shape == (9, 19, 21)
    nib.save(nib.Nifti1Image(channels[..., None, :], _pir_affine(shape)), tmp_path / "5d.nii.gz")
    np.testing.assert_array_equal(read_mask(tmp_path / "5d.nii.gz", scan), mask)


def test_read_mask_rejects_bad_multichannel_masks(pir_scan, tmp_path):
    scan, shape = pir_scan
    two_axes = np.zeros(shape + (2, 3), np.uint8)
    nib.save(nib.Nifti1Image(two_axes, _pir_affine(shape)), tmp_path / "two.nii.gz")
    with pytest.raises(ScanError, match=r"two\.nii\.gz: wrong number of dimensions.*one "
                                        r"trailing channel axis"):
        read_mask(tmp_path / "two.nii.gz", scan)
    small = np.zeros((shape[0] - 1,) + shape[1:] + (4,), np.uint8)
    nib.save(nib.Nifti1Image(small, _pir_affine(shape)), tmp_path / "small.nii.gz")
    with pytest.raises(ScanError, match=re.escape("mask shape (9, 19, 20) (internal frame) "
                                                  "does not match the shape (9, 19, 21)")):
        read_mask(tmp_path / "small.nii.gz", scan)


def test_read_lesions_checks_channels_and_values(pir_scan, tmp_path):
    scan, shape = pir_scan
    nib.save(nib.Nifti1Image(np.zeros(shape + (3,), np.uint8), _pir_affine(shape)),
             tmp_path / "three.nii.gz")
    with pytest.raises(ScanError, match="lesion masks need 4 channels .* got 3"):
        sources.read_lesions(tmp_path / "three.nii.gz", scan)
    bad = np.zeros(shape + (4,), np.int16)
    bad[0, 0, 0, 1] = 9
    nib.save(nib.Nifti1Image(bad, _pir_affine(shape)), tmp_path / "nine.nii.gz")
    with pytest.raises(ScanError, match=r"values must be 0 or a disc number 1\.\.6.* got 0\.\.9"):
        sources.read_lesions(tmp_path / "nine.nii.gz", scan)


# ---------------------------------------------------------- folder layout


def test_folder_record_reads_4d_lesions_and_labels():
    folder = DUMMY / "folder"
    assert sources.folder_patients(folder) == ["ph0-00000", "ph0-00007", "ph0-00011",
                                               "ph0-00021"]
    table = labels_io.read_labels(folder / "labels.csv")
    record = sources.folder_record(str(folder), "ph0-00011", table)
    assert record.lesions.dtype == np.uint8
    assert record.lesions.shape == record.scan.shape + (len(tasks.LESION_TASKS),)
    assert set(np.unique(record.lesions)) <= set(range(len(tasks.LEVELS) + 1))
    assert record.lesions.any()
    assert sorted(record.labels) == sorted(tasks.LEVELS)
    assert record.labels == {level: table[("ph0-00011", level)][0] for level in tasks.LEVELS}
    assert [d.level for d in record.localisation.discs] == list(tasks.LEVELS)
    examples, skipped = sources.disc_examples(record)
    assert [e["level"] for e in examples] == list(tasks.LEVELS) and skipped == []
    # every lesion the labels call present has a box on some slice of its disc volume
    for example in examples:
        for t, task in enumerate(tasks.LESION_TASKS):
            if example["labels"][task.name] == 1:
                assert (example["lesion_boxes"][t, :, 0] >= 0).any(), (example["level"], task)


def test_folder_patients_ignore_hidden_files_and_report_missing_discs(tmp_path):
    folder = tmp_path / "cohort"
    shutil.copytree(DUMMY / "folder", folder)
    shutil.copy(folder / "scans" / "ph0-00011.nii.gz", folder / "scans" / ".tmp-1-x.nii.gz")
    (folder / "scans" / "notes.txt").write_text("not a scan")
    assert sources.folder_patients(folder) == ["ph0-00000", "ph0-00007", "ph0-00011",
                                               "ph0-00021"]
    # A labelled disc whose label is missing from the mask is reported, not silently dropped.
    mask_path = folder / "masks" / "ph0-00011.nii.gz"
    mask = nib.load(mask_path)
    labels = np.asarray(mask.dataobj)
    disc = tasks.disc_label_of_level("L3-L4")
    nib.save(nib.Nifti1Image(np.where(labels == disc, 0, labels).astype(labels.dtype),
                             mask.affine, mask.header), mask_path)
    table = labels_io.read_labels(folder / "labels.csv")
    examples, skipped = sources.disc_examples(
        sources.folder_record(str(folder), "ph0-00011", table))
    assert len(examples) == 5
    assert [level for level, _ in skipped] == ["L3-L4"]
    assert "not in the mask" in skipped[0][1]
    with pytest.raises(ScanError, match=r"scans/nobody\.\*: no scan file"):
        sources.folder_record(str(folder), "nobody", table)


# ---------------------------------------------------------------- SPIDER


def _write_gradings(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=SPIDER_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({column: 0 for column in SPIDER_COLUMNS} | row)


def test_spider_gradings_mapping(tmp_path):
    path = tmp_path / "radiological_gradings.csv"
    _write_gradings(path, [
        {"Patient": "3", "IVD label": 1, "Modic": 0, "Pfirrman grade": 1,
         "Disc narrowing": 0, "UP endplate": 1, "LOW endplate": 0},
        {"Patient": "3", "IVD label": 2, "Modic": 2, "Pfirrman grade": 4,
         "Disc narrowing": 1, "UP endplate": 0, "LOW endplate": 1},
        {"Patient": "3", "IVD label": 6, "Modic": 1, "Pfirrman grade": 5},
        {"Patient": "3", "IVD label": 7, "Modic": 3, "Pfirrman grade": 5},  # T11-T12: skipped
        {"Patient": " 12 ", "IVD label": 3, "Modic": "", "Pfirrman grade": "",
         "Disc narrowing": "", "UP endplate": "1.0"},
    ])
    table = sources.read_spider_gradings(path)
    assert sorted(table) == [("12", "L3-L4"), ("3", "L4-L5"), ("3", "L5-S1"), ("3", "T12-L1")]
    # Marrow is always missing: SPIDER's Modic has no side (and Modic 0 alone
    # would make a one-class task); Modic of any type is the spider set's modic.
    assert table[("3", "L5-S1")] == {"pfirrmann": 0, "narrowing": 0, "endplate_upper": 1,
                                     "endplate_lower": 0, "marrow_upper": -1, "marrow_lower": -1,
                                     "narrowed": 0, "modic": 0, "herniation": 0, "bulging": 0,
                                     "spondylolisthesis": 0}
    assert table[("3", "L4-L5")] == {"pfirrmann": 3, "narrowing": 1, "endplate_upper": 0,
                                     "endplate_lower": 1, "marrow_upper": -1, "marrow_lower": -1,
                                     "narrowed": 1, "modic": 1, "herniation": 0, "bulging": 0,
                                     "spondylolisthesis": 0}
    assert table[("3", "T12-L1")]["pfirrmann"] == 4
    assert table[("3", "T12-L1")]["marrow_upper"] == -1
    assert table[("3", "T12-L1")]["modic"] == 1  # type 1 is a change as well as type 2
    assert table[("12", "L3-L4")] == {"pfirrmann": -1, "narrowing": -1, "endplate_upper": 1,
                                      "endplate_lower": 0, "marrow_upper": -1,
                                      "marrow_lower": -1, "narrowed": -1, "modic": -1,
                                      "herniation": 0, "bulging": 0, "spondylolisthesis": 0}
    assert "the paper's marrow_upper and marrow_lower stay missing" in " ".join(
        sources.SPIDER_MAPPING.split())


@pytest.mark.parametrize("row, message", [
    ({"Pfirrman grade": 6}, "Pfirrman grade '6' is not an integer in 1..5"),
    ({"Pfirrman grade": 3, "Disc narrowing": 2}, "Disc narrowing '2' is not an integer in 0..1"),
    ({"Pfirrman grade": 3, "Modic": "x"}, "could not convert string to float"),
    ({"Pfirrman grade": 3, "Modic": "1.5"}, "Modic '1.5' is not an integer"),
])
def test_spider_gradings_errors_name_the_line(tmp_path, row, message):
    path = tmp_path / "radiological_gradings.csv"
    _write_gradings(path, [{"Patient": "1", "IVD label": 1, "Pfirrman grade": 2},
                           {"Patient": "1", "IVD label": 2} | row])
    with pytest.raises(ScanError, match=rf"radiological_gradings\.csv: line 3: .*{message}"):
        sources.read_spider_gradings(path)


def test_spider_gradings_missing_column_and_duplicates(tmp_path):
    path = tmp_path / "radiological_gradings.csv"
    path.write_text("Patient,IVD label,Pfirrman grade\n1,1,2\n")
    with pytest.raises(ScanError, match="lack column.s. Modic, UP endplate, LOW endplate, "
                                        "Disc narrowing"):
        sources.read_spider_gradings(path)
    _write_gradings(path, [{"Patient": "1", "IVD label": 1, "Pfirrman grade": 2},
                           {"Patient": "1", "IVD label": 1, "Pfirrman grade": 3}])
    with pytest.raises(ScanError, match=r"line 3: disc \('1', 'L5-S1'\) is graded twice"):
        sources.read_spider_gradings(path)


def test_spider_dummy_patient_matches_its_phantom():
    """SPIDER patient "1" of the dummy data is phantom patient 9 of seed 0, shrunk."""
    pytest.importorskip("SimpleITK")
    folder = DUMMY / "spider"
    assert sources.spider_patients(str(folder)) == ["1", "24", "9"]
    gradings = sources.read_spider_gradings(folder / "radiological_gradings.csv")
    record = sources.spider_record(str(folder), "1", gradings)
    patient = make_patient(0, 9)
    assert sorted(record.labels) == sorted(patient.levels)
    for level, labels in record.labels.items():
        truth = patient.labels[level]
        assert labels["pfirrmann"] == truth["pfirrmann"]
        assert labels["narrowing"] == (-1 if truth["narrowing"] < 0 else min(truth["narrowing"], 1))
        assert labels["endplate_upper"] == truth["endplate_upper"]
        assert labels["endplate_lower"] == truth["endplate_lower"]
        assert labels["marrow_upper"] == labels["marrow_lower"] == -1  # no side in SPIDER
    # The .mha geometry puts the spine upright: discs top to bottom down the rows, on
    # the phantom's mid-sagittal slice.
    discs = record.localisation.discs
    assert [d.level for d in discs] == list(patient.levels)
    rows = [d.centre[1] for d in discs]
    assert rows == sorted(rows)
    assert abs(discs[-1].centre[0] - patient.anatomy.acquisition.mid_slice) < 1.0
    np.testing.assert_allclose(record.scan.spacing_mm[0], patient.spacing_mm[0], rtol=1e-6)
    mask = read_mask(folder / "masks" / "1_t2.mha", record.scan)
    assert set(np.unique(mask)) >= {VERTEBRA_LABELS["L5"], 100, 201, 206}
    assert localisation.from_mask(mask, record.scan.spacing_mm).skipped == []


def test_a_folder_source_reads_a_patient_s_dicom_study(tmp_path):
    """scans/<patient>/ may be a DICOM study (here the phantom's four series): the patient
    is read as its sagittal T2, and gives the discs its NIfTI scan gives."""
    import types
    from spine_tf.phantom.dicom import write_study
    folder = tmp_path / "cohort"
    shutil.copytree(DUMMY / "folder", folder)
    table = labels_io.read_labels(folder / "labels.csv")
    from_nifti = sources.folder_record(str(folder), "ph0-00011", table)
    (folder / "scans" / "ph0-00011.nii.gz").unlink()
    scan = from_nifti.scan  # the dummy data's smaller phantom, as a DICOM study
    write_study(types.SimpleNamespace(patient_id="ph0-00011", affine=scan.affine,
                                      image=np.round(scan.image).astype(np.int16)),
                folder / "scans" / "ph0-00011", layout="nested")
    assert sources.folder_patients(folder) == ["ph0-00000", "ph0-00007", "ph0-00011",
                                               "ph0-00021"]
    record = sources.folder_record(str(folder), "ph0-00011", table)
    assert record.scan.series["number"] == 3 and record.scan.series["images"] > 1
    np.testing.assert_array_equal(record.scan.image, np.round(scan.image))
    examples, skipped = sources.disc_examples(record)
    expected, _ = sources.disc_examples(from_nifti)
    assert [e["level"] for e in examples] == [e["level"] for e in expected] and not skipped
    a, b = (np.asarray(e[2]["disc_volume"], np.float64).ravel() for e in (examples, expected))
    assert np.corrcoef(a, b)[0, 1] > 0.999  # the same disc, up to the int16 rounding
