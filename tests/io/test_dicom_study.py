"""DICOM studies (spine_tf.io.dicom): every series of a folder in any layout, the sagittal T2
chosen by the written rules, and a study graded by spine-tf predict. The study is a phantom
patient written by spine_tf.phantom.dicom."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from spine_tf.io import dicom
from spine_tf.io.formats import ScanError
from spine_tf.io.scan import read_scan
from spine_tf.phantom import make_patient
from spine_tf.phantom.dicom import write_study

sitk = pytest.importorskip("SimpleITK")
pytest.importorskip("pydicom")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """(patient, nested study folder, flat study folder): spine_tf.phantom.dicom's four
    series (a localiser, a sagittal T1 by its times only, the sagittal T2, an axial T2)."""
    patient = make_patient(0, 2)
    root = tmp_path_factory.mktemp("dicom")
    nested = write_study(patient, root / "nested" / "STUDY1", layout="nested")
    flat = write_study(patient, root / "flat" / "STUDY1", layout="flat")
    return patient, Path(nested.folder), Path(flat.folder)


def test_every_series_with_its_orientation_and_weighting(study):
    _, nested, flat = study
    for folder in (nested, flat):
        found = dicom.study_series(folder)
        assert [(s.number, s.orientation, s.weighting, s.localizer) for s in found] == [
            (1, "sagittal", "T1", True), (2, "sagittal", "T1", False),
            (3, "sagittal", "T2", False), (4, "axial", "T2", False)]
        assert found[1].why == "TE 12 ms, TR 550 ms"
        assert found[2].why == "description 'T2 TSE SAG'"
        assert [len(s.files) for s in found] == [3, 18, 18, 6]


def test_the_sagittal_t2_is_chosen_and_a_choice_can_name_another(study):
    _, nested, _ = study
    found = dicom.study_series(nested)
    chosen, why = dicom.choose_series(found, nested)
    assert chosen.number == 3 and "one sagittal T2 series" in why
    assert dicom.choose_series(found, nested, "2")[0].weighting == "T1"
    assert dicom.choose_series(found, nested, "t2 tse ax")[0].orientation == "axial"
    with pytest.raises(ScanError, match=r"--series '9' names 0 of its series; they are: "
                                        r"series 1 'LOCALIZER' \(localiser, sagittal, T1; 3 "
                                        r"images\); series 2 'SAG TSE' \(sagittal, T1; 18"):
        dicom.choose_series(found, nested, "9")
    two = [found[2], dataclass_copy(found[2], number=5, uid="other")]
    with pytest.raises(ScanError, match="2 sagittal T2 series; choose one with --series"):
        dicom.choose_series(two, nested)
    with pytest.raises(ScanError, match="no sagittal T2 series"):
        dicom.choose_series([found[1], found[3]], nested)
    # a localiser that reads as a sagittal T2 is still never chosen unless named
    scout = dataclass_copy(found[0], weighting="T2")
    assert dicom.choose_series([scout, found[2]], nested)[0].number == 3
    with pytest.raises(ScanError, match="no sagittal T2 series"):
        dicom.choose_series([scout], nested)
    assert dicom.choose_series([scout], nested, "1")[0] is scout


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


def test_a_study_reads_as_its_chosen_series_in_any_layout(study, tmp_path):
    patient, nested, flat = study
    from_flat = read_scan(flat)
    from_folder = read_scan(nested / "SE003")  # a folder of one series reads as it is
    np.testing.assert_array_equal(from_flat.image, from_folder.image)
    np.testing.assert_allclose(from_flat.spacing_mm, patient.spacing_mm, rtol=1e-3)
    np.testing.assert_array_equal(from_flat.image, patient.image)
    assert from_flat.series["number"] == 3 and from_flat.series["images"] == 18
    assert from_flat.series["study"] == {
        "uid": from_folder.series["study"]["uid"], "patient_id": "ph0-00002",
        "date": "20260101", "accession": "PH00002", "description": "LUMBAR SPINE"}
    assert "one sagittal T2" in from_flat.series["why"]
    assert from_folder.series["why"] == "the folder's one series"
    assert [os.path.dirname(f) for f in from_folder.series["files"]] == [
        os.fspath(nested / "SE003")] * 18
    t1 = read_scan(nested, series="2")
    assert t1.series["why"] == "chosen with --series 2" and t1.shape == from_flat.shape
    with pytest.raises(ScanError, match="a series can only be chosen in a DICOM folder"):
        read_scan(_nifti(tmp_path, patient), series="2")


def _nifti(tmp_path, patient):
    import nibabel as nib
    path = tmp_path / "x.nii.gz"
    nib.save(nib.Nifti1Image(patient.image, patient.affine), path)
    return path


def test_a_dicomdir_is_read_through_its_records(tmp_path):
    """A file-set as on a CD: the DICOMDIR file names the study; its records (not a walk of
    the folder) give the files, so an unindexed stray series is not seen."""
    from spine_tf.app.scans import find_scans
    patient = make_patient(0, 2)
    study = write_study(patient, tmp_path / "CD", layout="dicomdir")
    write_study(make_patient(0, 3), tmp_path / "CD" / "stray", layout="nested")
    with pytest.raises(ScanError, match="2 sagittal T2 series"):
        read_scan(tmp_path / "CD")  # the folder walk sees both studies
    scan = read_scan(study.dicomdir)
    np.testing.assert_array_equal(scan.image, patient.image)
    assert scan.series["uid"] == study.series["t2"].uid
    [job] = find_scans([study.dicomdir], series="3")
    assert (job.name, job.series) == ("CD", "3")
    broken = tmp_path / "broken" / "DICOMDIR"
    broken.parent.mkdir()
    broken.write_bytes(b"not dicom")
    with pytest.raises(ScanError, match=r"broken/DICOMDIR: cannot read this DICOMDIR"):
        read_scan(broken)


@pytest.mark.slow
def test_predict_grades_a_study_folder_from_its_sagittal_t2(study, tmp_path):
    from spine_tf.cli import main
    _, nested, _ = study
    from spine_tf.app import dicom_results
    main(["predict", os.fspath(nested), "--out", os.fspath(tmp_path), "--augmentations", "2",
          "--no-tta"])
    record = json.loads((tmp_path / "STUDY1" / "grades.json").read_text())
    assert record["series"]["number"] == 3 and record["series"]["weighting"] == "T2"
    assert "one sagittal T2 series" in record["series"]["why"]
    assert len(record["discs"]) >= 5
    # its DICOM results: a hotspot map per task, then the report of every graded disc
    assert record["dicom"]["files"] == [f"hotspots_{t}.dcm" for t in record["hotspots"][
        "volumes"]] + ["grades_sr.dcm"]
    held = dicom_results.describe(tmp_path / "STUDY1" / "dicom" / "grades_sr.dcm")
    assert list(held["levels"]) == [d["level"] for d in record["discs"]]
    assert held["source_series"] == [record["series"]["uid"]]
    for disc in record["discs"]:
        for task, result in disc["tasks"].items():
            assert held["levels"][disc["level"]]["tasks"][task]["class_name"] == (
                result["class_name"])
    page = (tmp_path / "STUDY1" / "report.html").read_text()
    assert "Series: 3 &#x27;T2 TSE SAG&#x27;" in page
    assert ("Study: patient ID ph0-00002, date 2026-01-01, accession PH00002, &#x27;LUMBAR "
            "SPINE&#x27; (StudyInstanceUID 1.2.826.0.1.3680043.10.1342.") in page
    main(["predict", os.fspath(nested), "--out", os.fspath(tmp_path / "t1"), "--no-hotspots",
          "--no-tta", "--series", "2"])
    record = json.loads((tmp_path / "t1" / "STUDY1" / "grades.json").read_text())
    assert record["series"]["weighting"] == "T1" and record["series"]["why"] == (
        "chosen with --series 2")


def test_a_compressed_series_is_found_and_read(study, tmp_path):
    """JPEG 2000 (lossless) images: pydicom reads their headers without the pixels, and
    SimpleITK's GDCM decodes them to the same voxels."""
    import pydicom
    _, nested, _ = study
    image = sitk.ReadImage([str(p) for p in sorted((nested / "SE003").iterdir())])
    folder = tmp_path / "compressed"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetUseCompression(True)
    for k in range(image.GetDepth()):
        plane = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in {"0008|0060": "MR", "0020|000d": "1.2.826.0.1.3680043.2.1125.7",
                           "0020|0011": "7", "0020|000e": "1.2.826.0.1.3680043.2.1125.7.70",
                           "0008|103e": "T2 SAG J2K", "0020|0037": "0\\1\\0\\0\\0\\-1",
                           "0020|0013": str(k + 1),
                           "0020|0032": "\\".join(f"{v:.6f}" for v in position)}.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{k:03d}.dcm"))
        writer.Execute(plane)
    header = pydicom.dcmread(folder / "000.dcm", stop_before_pixels=True)
    assert header.file_meta.TransferSyntaxUID.is_compressed
    [series] = dicom.study_series(folder)
    assert (series.orientation, series.weighting) == ("sagittal", "T2")
    np.testing.assert_array_equal(read_scan(folder).image, read_scan(nested / "SE003").image)


@pytest.mark.parametrize("layout", ["nested", "flat", "dicomdir"])
def test_a_phantom_study_in_every_layout_reads_back_as_its_scan(layout, tmp_path):
    """spine_tf.phantom.dicom: four series; the T2 chosen and read gives the phantom's voxels
    and geometry back. The flat layout names files by UID (".10" sorts before ".2"): the
    series is read in slice order all the same."""
    patient = make_patient(0, 2)
    study = write_study(patient, tmp_path / "study", layout=layout)
    found = dicom.study_series(study.folder)
    assert [(s.number, s.orientation, s.weighting, len(s.files)) for s in found] == [
        (1, "sagittal", "T1", 3), (2, "sagittal", "T1", 18), (3, "sagittal", "T2", 18),
        (4, "axial", "T2", 6)]
    chosen, _ = dicom.choose_series(found, study.folder)
    assert chosen.uid == study.series["t2"].uid
    scan = read_scan(study.folder)
    assert scan.series["files"] == list(chosen.files)
    np.testing.assert_array_equal(scan.image, patient.image)
    np.testing.assert_allclose(scan.affine, patient.affine, atol=1e-3)
    assert (study.dicomdir is not None) == (layout == "dicomdir")


def test_a_folder_of_several_studies_is_one_scan_per_study(tmp_path):
    """A PACS export of three studies: one job each, named after PatientID and StudyDate;
    the study without a sagittal T2 fails on its own, naming itself and its series."""
    import shutil
    from spine_tf.app.scans import find_scans
    root = tmp_path / "EXPORT"
    for index in (2, 3, 4):
        write_study(make_patient(0, index), root / f"S{index}", layout="nested")
    for number in (1, 2, 3):
        shutil.rmtree(root / "S4" / f"SE{number:03d}")  # study 4: only its axial series
    jobs = find_scans([root])
    assert [j.name for j in jobs] == ["EXPORT_ph0-00002_20260101", "EXPORT_ph0-00003_20260101",
                                      "EXPORT_ph0-00004_20260101"]
    assert len({j.study for j in jobs}) == 3 and {j.scan for j in jobs} == {os.fspath(root)}
    for job, index in zip(jobs[:2], (2, 3)):
        scan = read_scan(job.scan, study=job.study)
        np.testing.assert_array_equal(scan.image, np.rint(make_patient(0, index).image))
    with pytest.raises(ScanError, match=rf"EXPORT \(study {jobs[2].study}\): no sagittal T2 "
                                        r"series; .* series 4 'T2 TSE AX' \(axial"):
        read_scan(jobs[2].scan, study=jobs[2].study)
    with pytest.raises(ScanError, match="no series of study 1.2.3"):
        read_scan(root, study="1.2.3")


def test_extract_reads_a_study_as_its_sagittal_t2_or_the_series_named(study, tmp_path, capsys):
    from spine_tf.cli import main
    from spine_tf.io import landmarks as landmarks_io
    patient, nested, _ = study
    landmarks = tmp_path / "landmarks.json"
    landmarks_io.write_landmarks(landmarks, patient.landmarks)
    volumes = {}
    for series, out in ((None, tmp_path / "t2"), ("2", tmp_path / "t1")):
        args = ["extract", os.fspath(nested), "--landmarks", os.fspath(landmarks), "--out",
                os.fspath(out)] + (["--series", series] if series else [])
        out.mkdir()
        assert main(args) == 0
        volumes[series] = np.load(out / "STUDY1_discs.npz")
    printed = capsys.readouterr().out
    assert "series 3 'T2 TSE SAG': the study's one sagittal T2 series" in printed
    assert "series 2 'SAG TSE': chosen with --series 2" in printed
    t2, t1 = (volumes[k] for k in (None, "2"))
    assert list(t2["levels"]) == list(t1["levels"]) == list(patient.levels)
    np.testing.assert_allclose(t2["voxel_to_scan"], t1["voxel_to_scan"])  # the same places
    # the same discs cut from another series: another contrast
    assert np.abs(t1["volumes"] - t2["volumes"]).mean() > 0.05


@pytest.mark.parametrize("name", ["localizer", "t2", "axial"])
def test_every_phantom_image_lies_where_its_voxels_are(name, tmp_path):
    """Each pixel of each image (the localiser's three planes too), placed by its own
    ImagePositionPatient, ImageOrientationPatient and PixelSpacing, lands on the phantom
    voxel whose value it holds."""
    import pydicom
    patient = make_patient(0, 2)
    study = write_study(patient, tmp_path / "study", layout="nested")
    to_voxel = np.linalg.inv(patient.affine)
    for path in study.series[name].files:
        ds = pydicom.dcmread(path)
        cosines = np.asarray(ds.ImageOrientationPatient, float)
        row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
        rows, cols = np.meshgrid(np.arange(ds.Rows), np.arange(ds.Columns), indexing="ij")
        lps = (np.asarray(ds.ImagePositionPatient, float)[:, None, None]
               + cosines[:3, None, None] * cols * col_mm + cosines[3:, None, None] * rows * row_mm)
        ras = np.diag([-1.0, -1.0, 1.0]) @ lps.reshape(3, -1)
        voxels = to_voxel[:3, :3] @ ras + to_voxel[:3, 3:]
        np.testing.assert_allclose(voxels, np.round(voxels), atol=1e-2)
        s, r, c = np.round(voxels).astype(int)
        expected = np.asarray(patient.image)[s, r, c].reshape(ds.Rows, ds.Columns)
        np.testing.assert_array_equal(ds.pixel_array, np.rint(expected))


def _copy_series(study, folder):
    """The T2 series (SE003) of the nested ``study`` copied to ``folder``; its files."""
    import shutil
    shutil.copytree(study / "SE003", folder)
    return sorted(folder.iterdir())


def test_a_series_with_a_repeated_or_missing_slice_is_refused_naming_it(study, tmp_path):
    """An image stored twice under a new UID, or one missing: a reader would misplace the
    slices (ITK only warns), so the series is refused with one line naming it."""
    import pydicom
    files = _copy_series(study[1], tmp_path / "repeated")
    again = pydicom.dcmread(files[0])
    again.SOPInstanceUID = again.file_meta.MediaStorageSOPInstanceUID = \
        again.SOPInstanceUID + ".9"
    again.save_as(tmp_path / "repeated" / "IM00099")
    with pytest.raises(ScanError) as error:
        read_scan(tmp_path / "repeated")
    assert str(error.value) == (
        f"{tmp_path / 'repeated'}: series 3 'T2 TSE SAG' (sagittal, T2; 19 images): 1 of its "
        "19 images repeat another's slice position (an image stored twice, or several "
        "acquisitions in one series)")
    files = _copy_series(study[1], tmp_path / "missing")
    os.remove(files[6])
    with pytest.raises(ScanError, match=r"^\S+missing: series 3 'T2 TSE SAG' \(sagittal, T2; "
                       r"17 images\): uneven slice gaps \(3.34 to 6.68 mm; a missing slice"):
        read_scan(tmp_path / "missing")
    assert dicom.slice_problem([pydicom.dcmread(f) for f in files[:6]]) == ""


def test_a_series_whose_pixels_cannot_be_read_is_named_in_one_line(study, tmp_path):
    files = _copy_series(study[1], tmp_path / "truncated")
    with open(files[4], "r+b") as f:
        f.truncate(2000)
    with pytest.raises(ScanError) as error:
        read_scan(tmp_path / "truncated")
    text = str(error.value)
    assert "\n" not in text
    assert text.startswith(f"{tmp_path / 'truncated'}: series 3 'T2 TSE SAG' (sagittal, T2; "
                           "18 images): cannot read corrupt or unrecognised image file")


def _enhanced(classic_folder, path, shuffle=False, spacing_error=False):
    """The classic series of ``classic_folder`` as one enhanced multi-frame file: geometry in
    shared and per-frame functional groups, each frame's own rescale."""
    import pydicom
    from pydicom.dataset import Dataset
    slices = [pydicom.dcmread(p) for p in sorted(classic_folder.iterdir())]
    order = list(range(len(slices)))[::-1] if shuffle else list(range(len(slices)))
    stored = np.stack([(slices[k].pixel_array.astype(np.int32) + 10) // 2 for k in order])
    ds = slices[0]
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
    ds.NumberOfFrames = len(slices)
    plane, pixels, shared = Dataset(), Dataset(), Dataset()
    plane.ImageOrientationPatient = ds.ImageOrientationPatient
    pixels.PixelSpacing, pixels.SliceThickness = ds.PixelSpacing, ds.SliceThickness
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = [plane], [pixels]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for n, k in enumerate(order):
        frame, position, scale = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = list(slices[k].ImagePositionPatient)
        if spacing_error and n == 3:
            position.ImagePositionPatient[0] += 1.5
        scale.RescaleSlope, scale.RescaleIntercept = 2, -10  # stored (v + 10) / 2
        frame.PlanePositionSequence, frame.PixelValueTransformationSequence = [position], [scale]
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = stored.astype("<i2").tobytes()
    for keyword in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
        delattr(ds, keyword)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)


def test_an_enhanced_multi_frame_series_reads_as_its_classic_images(study, tmp_path):
    """One enhanced MR file (frames stored in reverse, values through each frame's rescale):
    recognised as the sagittal T2 by its shared orientation and description, read to the
    classic series' voxels (up to the rescale's rounding) and geometry. Uneven frames, or a
    series of several multi-frame files, are refused in one line naming it."""
    _, nested, _ = study
    classic = read_scan(nested / "SE003")
    _enhanced(nested / "SE003", tmp_path / "enhanced" / "t2.dcm", shuffle=True)
    [series] = dicom.study_series(tmp_path / "enhanced")
    assert (series.orientation, series.weighting, series.multiframe) == ("sagittal", "T2",
                                                                         True)
    scan = read_scan(tmp_path / "enhanced")
    np.testing.assert_allclose(scan.image, classic.image, atol=1.0)
    np.testing.assert_allclose(scan.affine, classic.affine, atol=1e-3)
    _enhanced(nested / "SE003", tmp_path / "uneven" / "t2.dcm", spacing_error=True)
    with pytest.raises(ScanError, match=r"uneven: series 3 'T2 TSE SAG' \(sagittal, T2; 1 "
                                        r"images\): .*t2.dcm: its frames are not evenly spaced"):
        read_scan(tmp_path / "uneven")
    _enhanced(nested / "SE003", tmp_path / "two" / "a.dcm")
    _enhanced(nested / "SE003", tmp_path / "two" / "b.dcm")
    with pytest.raises(ScanError, match="stored as several multi-frame files"):
        read_scan(tmp_path / "two")
