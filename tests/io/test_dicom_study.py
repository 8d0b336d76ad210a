"""DICOM studies (spine_tf.io.dicom): every series of a folder in any layout, the sagittal T2
chosen by the written rules, and a study graded by spine-tf predict. The study is made here
from a phantom scan: a sagittal T2, a sagittal T1 and an axial T2 series."""

import json
import os

import numpy as np
import pytest

from spine_tf.io import dicom
from spine_tf.io.formats import ScanError
from spine_tf.io.scan import read_scan
from spine_tf.phantom import make_patient

sitk = pytest.importorskip("SimpleITK")
pytest.importorskip("pydicom")

STUDY_UID = "1.2.826.0.1.3680043.2.1125.7"
# (folder, series number, description, TE ms, TR ms, axial?)
SERIES = (("t2_sag", 3, "T2 TSE SAG", 100.0, 3500.0, False),
          ("t1_sag", 2, "SAG TSE", 12.0, 550.0, False),   # T1 by its times only
          ("t2_ax", 4, "T2 TSE AX", 95.0, 4000.0, True))


def _sagittal_image(patient):
    """The phantom's internal-frame voxels as a SimpleITK image with its LPS geometry."""
    scan = read_scan_from(patient)
    image = sitk.GetImageFromArray(np.round(scan.image).astype(np.int16))  # (slices, rows, cols)
    image.SetSpacing(tuple(float(s) for s in scan.spacing_mm[::-1]))
    # x: columns, towards posterior; y: rows, towards inferior; z: slices, towards left (LPS)
    image.SetDirection((0, 0, 1, 1, 0, 0, 0, -1, 0))
    return image


def read_scan_from(patient):
    from spine_tf.io import scan_from_array
    return scan_from_array(patient.image, patient.spacing_mm, patient.affine, path="phantom")


def _write_series(image, folder, number, description, te, tr, axial, uid_suffix):
    folder.mkdir(parents=True, exist_ok=True)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    orientation = (1, 0, 0, 0, 1, 0) if axial else tuple(direction[:, :2].T.ravel())
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        plane = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {"0008|0060": "MR", "0020|000d": STUDY_UID,
                "0020|000e": f"{STUDY_UID}.{uid_suffix}", "0020|0011": str(number),
                "0008|103e": description, "0018|0081": f"{te:g}", "0018|0080": f"{tr:g}",
                "0020|0037": "\\".join(f"{v:.6f}" for v in orientation),
                "0020|0032": "\\".join(f"{v:.6f}" for v in position),
                "0020|0013": str(k + 1), "0018|0050": f"{image.GetSpacing()[2]:.3f}"}
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{uid_suffix}_{k:03d}.dcm"))
        writer.Execute(plane)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """(patient, nested study folder, flat study folder)."""
    patient = make_patient(0, 2)
    image = _sagittal_image(patient)
    root = tmp_path_factory.mktemp("dicom")
    for n, (name, number, description, te, tr, axial) in enumerate(SERIES):
        for layout in ("nested", "flat"):
            folder = root / layout / "STUDY1" / (name if layout == "nested" else "")
            _write_series(image, folder, number, description, te, tr, axial, n + 1)
    return patient, root / "nested" / "STUDY1", root / "flat" / "STUDY1"


def test_every_series_with_its_orientation_and_weighting(study):
    _, nested, flat = study
    for folder in (nested, flat):
        found = dicom.study_series(folder)
        assert [(s.number, s.orientation, s.weighting) for s in found] == [
            (2, "sagittal", "T1"), (3, "sagittal", "T2"), (4, "axial", "T2")]
        assert found[0].why == "TE 12 ms, TR 550 ms"
        assert found[1].why == "description 'T2 TSE SAG'"
        assert len({len(s.files) for s in found}) == 1


def test_the_sagittal_t2_is_chosen_and_a_choice_can_name_another(study):
    _, nested, _ = study
    found = dicom.study_series(nested)
    chosen, why = dicom.choose_series(found, nested)
    assert chosen.number == 3 and "one sagittal T2 series" in why
    assert dicom.choose_series(found, nested, "2")[0].weighting == "T1"
    assert dicom.choose_series(found, nested, "t2 tse ax")[0].orientation == "axial"
    with pytest.raises(ScanError, match=r"--series '9' names 0 of its series; they are: "
                                        r"series 2 'SAG TSE' \(sagittal, T1; \d+ images\)"):
        dicom.choose_series(found, nested, "9")
    two = [found[1], dataclass_copy(found[1], number=5, uid="other")]
    with pytest.raises(ScanError, match="2 sagittal T2 series; choose one with --series"):
        dicom.choose_series(two, nested)
    with pytest.raises(ScanError, match="no sagittal T2 series"):
        dicom.choose_series([found[0], found[2]], nested)


def dataclass_copy(series, **changes):
    import dataclasses
    return dataclasses.replace(series, **changes)


def test_rules_for_weighting_and_orientation():
    assert dicom.weighting_of("Sag STIR", 60, 4000)[0] == "STIR"
    assert dicom.weighting_of("", 110, 3000) == ("T2", "TE 110 ms, TR 3000 ms")
    assert dicom.weighting_of("", 10, 3000)[0] == "PD"
    assert dicom.weighting_of(None, None, None)[0] == "unknown"
    assert dicom.orientation_of([0, 1, 0, 0, 0, -1]) == "sagittal"
    assert dicom.orientation_of([1, 0, 0, 0, 0, -1]) == "coronal"
    assert dicom.orientation_of([1, 0, 0, 0, 1, 0]) == "axial"
    assert dicom.orientation_of(None) == "unknown"


def test_a_flat_study_reads_the_chosen_series_as_its_own_folder_would(study):
    patient, nested, flat = study
    chosen, _ = dicom.choose_series(dicom.study_series(flat), flat)
    from_flat = read_scan(flat, series_files=chosen.files)
    from_folder = read_scan(nested / "t2_sag")
    np.testing.assert_array_equal(from_flat.image, from_folder.image)
    np.testing.assert_allclose(from_flat.spacing_mm, patient.spacing_mm, rtol=1e-3)
    np.testing.assert_allclose(from_flat.image, np.round(patient.image), atol=0.5)


@pytest.mark.slow
def test_predict_grades_a_study_folder_from_its_sagittal_t2(study, tmp_path):
    from spine_tf.cli import main
    _, nested, _ = study
    main(["predict", os.fspath(nested), "--out", os.fspath(tmp_path), "--no-hotspots",
          "--no-tta"])
    record = json.loads((tmp_path / "STUDY1" / "grades.json").read_text())
    assert record["series"]["number"] == 3 and record["series"]["weighting"] == "T2"
    assert "one sagittal T2 series" in record["series"]["why"]
    assert len(record["discs"]) >= 5
    assert "Series: 3 &#x27;T2 TSE SAG&#x27;" in (tmp_path / "STUDY1" / "report.html").read_text()
    main(["predict", os.fspath(nested), "--out", os.fspath(tmp_path / "t1"), "--no-hotspots",
          "--no-tta", "--series", "2"])
    record = json.loads((tmp_path / "t1" / "STUDY1" / "grades.json").read_text())
    assert record["series"]["weighting"] == "T1" and record["series"]["why"] == (
        "chosen with --series 2")


def test_a_compressed_series_is_found_and_read(study, tmp_path):
    """JPEG 2000 (lossless) images: pydicom reads their headers without the pixels, and
    SimpleITK's GDCM decodes them to the same voxels."""
    import pydicom
    patient, nested, _ = study
    image = _sagittal_image(patient)
    folder = tmp_path / "compressed"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetUseCompression(True)
    for k in range(image.GetDepth()):
        plane = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in {"0008|0060": "MR", "0020|000d": STUDY_UID, "0020|0011": "7",
                           "0020|000e": f"{STUDY_UID}.70", "0008|103e": "T2 SAG J2K",
                           "0020|0037": "0\\1\\0\\0\\0\\-1", "0020|0013": str(k + 1),
                           "0020|0032": "\\".join(f"{v:.6f}" for v in position)}.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{k:03d}.dcm"))
        writer.Execute(plane)
    header = pydicom.dcmread(folder / "000.dcm", stop_before_pixels=True)
    assert header.file_meta.TransferSyntaxUID.is_compressed
    [series] = dicom.study_series(folder)
    assert (series.orientation, series.weighting) == ("sagittal", "T2")
    np.testing.assert_array_equal(read_scan(folder).image, read_scan(nested / "t2_sag").image)


@pytest.mark.parametrize("layout", ["nested", "flat", "dicomdir"])
def test_a_phantom_study_in_every_layout_reads_back_as_its_scan(layout, tmp_path):
    """spine_tf.phantom.dicom: four series; the T2 chosen and read gives the phantom's voxels
    and geometry back. The flat layout names files by UID (".10" sorts before ".2"): the
    series is read in slice order all the same."""
    from spine_tf.phantom.dicom import write_study
    patient = make_patient(0, 2)
    study = write_study(patient, tmp_path / "study", layout=layout)
    found = dicom.study_series(study.folder)
    assert [(s.number, s.orientation, s.weighting, len(s.files)) for s in found] == [
        (1, "sagittal", "T1", 3), (2, "sagittal", "T1", 18), (3, "sagittal", "T2", 18),
        (4, "axial", "T2", 6)]
    chosen, _ = dicom.choose_series(found, study.folder)
    assert chosen.uid == study.series["t2"].uid
    scan = read_scan(study.folder, series_files=chosen.files)
    np.testing.assert_array_equal(scan.image, patient.image)
    np.testing.assert_allclose(scan.affine, patient.affine, atol=1e-3)
    assert (study.dicomdir is not None) == (layout == "dicomdir")
