"""Grades and hotspots as DICOM: the SR and Parametric Maps of a phantom study, read back.

The ground truth of where a voxel lies comes from the phantom's DICOM writer: its T2
series' image with InstanceNumber ``s + 1`` is internal slice ``s``, and that image's pixel
``(r, c)`` is internal voxel ``(s, r, c)`` (checked against the pixels below).
"""

import copy
import dataclasses
import os
import shutil

import highdicom as hd
import numpy as np
import pydicom
import pytest

import spine_tf
from spine_tf import phantom, tasks
from spine_tf.app import dicom_results, scans
from spine_tf.io import landmarks as landmarks_io
from spine_tf.phantom.dicom import write_study

PARAMETRIC_MAP_STORAGE = "1.2.840.10008.5.1.4.1.1.30"
COMPREHENSIVE_3D_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.34"
TASK_SET = tasks.task_set("paper")


def _disc(located, volume, seed):
    """A disc's entry of grades.json (``spine_tf.app.predict``), with random probabilities."""
    rng = np.random.default_rng(seed)
    place = {d.level: d for d in located.discs}[volume.level]
    entry = {"level": volume.level, "centre_voxel": [float(v) for v in place.centre],
             "height_mm": float(place.height_mm), "confidence": float(volume.confidence),
             "flagged": False, "tasks": {}}
    for task in TASK_SET.tasks:
        p = rng.dirichlet(np.ones(task.num_classes))
        grade = int(np.argmax(p))
        entry["tasks"][task.name] = {"grade": grade, "class_name": task.class_names[grade],
                                     "probability": float(p[grade]),
                                     "probabilities": [float(v) for v in p]}
    return entry


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """A phantom study's T2 series extracted, a record with random probabilities (the
    second disc flagged), hotspots with a spike at disc ``k``'s centre for task ``k``."""
    root = tmp_path_factory.mktemp("dicom_results")
    patient = phantom.make_patient(0, 2)
    study = write_study(patient, root / "study", layout="nested")
    landmarks_io.write_landmarks(root / "landmarks.json", patient.landmarks)
    job = scans.ScanJob("case", scan=os.fspath(root / "study"),
                        landmarks=os.fspath(root / "landmarks.json"))
    scan, located, volumes, skipped = scans.extract_scan(job)
    record = {"series": {k: v for k, v in scan.series.items() if k != "files"},
              "model": "tiny test model (width 0.0625)", "task_set": TASK_SET.name,
              "discs": [_disc(located, volume, n) for n, volume in enumerate(volumes)],
              "not_graded": [{"level": level, "reason": why} for level, why in skipped]}
    record["discs"][1].update(confidence=0.3, flagged=True)
    hotspots = np.zeros(scan.shape + (len(TASK_SET.tasks),), np.float32)
    spikes = {}
    for k, task in enumerate(TASK_SET.tasks):
        disc = record["discs"][k % len(record["discs"])]
        voxel = tuple(int(round(v)) for v in disc["centre_voxel"])
        hotspots[voxel + (k,)] = 1.0
        hotspots[voxel[0], voxel[1] + 3, voxel[2] - 2, k] = 0.25
        spikes[task.name] = voxel
    out = root / "out"
    paths = dicom_results.write_dicom_results(record, scan, hotspots, out)
    return {"patient": patient, "study": study, "scan": scan, "record": record,
            "hotspots": hotspots, "spikes": spikes, "paths": paths, "out": out, "root": root}


def _sources(graded):
    return {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(f) for f in
                                             graded["study"].series["t2"].files)}


def test_writes_one_map_per_task_then_the_report_and_nothing_else(graded):
    names = [os.path.basename(p) for p in graded["paths"]]
    assert names == [f"hotspots_{t}.dcm" for t in TASK_SET.names] + ["grades_sr.dcm"]
    assert sorted(os.listdir(graded["out"])) == sorted(names)  # no temporary files


def test_the_report_holds_every_graded_level_with_the_records_grades(graded):
    held = dicom_results.describe(graded["paths"][-1])
    discs = graded["record"]["discs"]
    assert list(held["levels"]) == [d["level"] for d in discs]
    assert len(discs) == 6
    for disc in discs:
        level = held["levels"][disc["level"]]
        assert level["tasks"] == {
            name: {"class_name": grade["class_name"], "probability": grade["probability"]}
            for name, grade in disc["tasks"].items()}
        assert level["flagged"] == disc["flagged"]
        assert level["confidence"] == disc["confidence"]
        assert level["height_mm"] == pytest.approx(disc["height_mm"], abs=1e-9)
    assert [d["level"] for d in discs if held["levels"][d["level"]]["flagged"]] == ["L1-L2"]
    assert held["observer"] == {"name": "spine_tf", "model_name": graded["record"]["model"]}


def test_the_report_codes_levels_with_snomed_and_grades_with_the_private_scheme(graded):
    report = hd.sr.MeasurementReport.from_sequence(
        hd.sr.srread(graded["paths"][-1]).content[:1])
    groups = report.get_planar_roi_measurement_groups()
    l4 = [g for g in groups if g.finding_sites[0].value.value == "84020006"]
    assert len(l4) == 1 and l4[0].finding_sites[0].value.scheme_designator == "SCT"
    pfirrmann = [e for e in l4[0].get_qualitative_evaluations() if e.name.value == "pfirrmann"]
    assert pfirrmann[0].name.scheme_designator == "99SPINETF"
    grade = graded["record"]["discs"][4]["tasks"]["pfirrmann"]["class_name"]
    assert pfirrmann[0].value.value == f"pfirrmann-{int(grade) - 1}"
    assert pfirrmann[0].value.meaning == f"pfirrmann {grade}"
    units = {m.name.value: m.unit.value for m in l4[0].get_measurements()}
    assert units["pfirrmann-p"] == "{probability}" and units["121207"] == "mm"


def test_every_code_fits_a_dicom_code_value():
    """16 characters at most (longer ones become LongCodeValue, which many readers miss),
    and no two tasks share a code."""
    from spine_tf import tasks
    values = []
    for task in tasks.TABLE:
        values += [dicom_results.task_concept(task).value,
                   dicom_results.probability_concept(task).value]
        values += [dicom_results.class_concept(task, c).value for c in task.class_names]
    assert max(len(v) for v in values) <= 16
    assert len(set(values)) == len(values)
    assert dicom_results.task_concept(tasks.task_set("spider").tasks[-1]).value == "listhesis"


def test_the_report_declares_its_private_coding_scheme_and_the_software(graded):
    sr = pydicom.dcmread(graded["paths"][-1])
    (scheme,) = sr.CodingSchemeIdentificationSequence
    assert scheme.CodingSchemeDesignator == dicom_results.CODING_SCHEME == "99SPINETF"
    assert scheme.CodingSchemeName and scheme.CodingSchemeResponsibleOrganization == "spine_tf"
    assert (sr.Manufacturer, sr.ManufacturerModelName) == ("spine_tf", "spine_tf")
    assert sr.SoftwareVersions == spine_tf.__version__


def test_a_rerun_with_the_same_results_writes_the_same_objects(graded, tmp_path):
    """So that --store of a rerun adds no second copy to the PACS; other results are new
    objects in new series."""
    def uids(paths):
        return [(ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SeriesNumber)
                for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in paths)]
    first = uids(graded["paths"])
    again = dicom_results.write_dicom_results(graded["record"], graded["scan"],
                                              graded["hotspots"], tmp_path / "again")
    assert uids(again) == first
    assert len({uid for series, sop, _ in first for uid in (series, sop)}) == 2 * len(first)
    record = copy.deepcopy(graded["record"])
    record["discs"][0]["tasks"]["pfirrmann"]["probability"] += 0.01
    hotspots = graded["hotspots"].copy()
    hotspots[..., 0] *= 0.5
    other = uids(dicom_results.write_dicom_results(record, graded["scan"], hotspots,
                                                   tmp_path / "other"))
    assert other[1:-1] == first[1:-1]  # the maps of the other tasks did not change
    for changed in (0, -1):  # the first task's map, the report
        assert other[changed][:2] != first[changed][:2]
        assert other[changed][2] == first[changed][2]
    trackers = [[g.tracking_uid for g in hd.sr.MeasurementReport.from_sequence(
        hd.sr.srread(folder / "grades_sr.dcm").content[:1]).get_planar_roi_measurement_groups()]
        for folder in (graded["out"], tmp_path / "other")]
    assert trackers[0] == trackers[1] and len(set(trackers[0])) == 6  # a disc keeps its UID


def test_the_report_belongs_to_the_source_study_and_references_its_images(graded):
    sr = pydicom.dcmread(graded["paths"][-1])
    sources = _sources(graded)
    study = graded["study"]
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR_STORAGE and sr.Modality == "SR"
    assert sr.StudyInstanceUID == study.study_uid and sr.PatientID == study.patient_id
    assert sr.SeriesInstanceUID not in {s.uid for s in study.series.values()}
    assert sr.SeriesDescription == "spine_tf grades" and sr.SeriesNumber == 300
    (evidence,) = sr.CurrentRequestedProcedureEvidenceSequence
    assert evidence.StudyInstanceUID == study.study_uid
    (series,) = evidence.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == study.series["t2"].uid
    assert {i.ReferencedSOPInstanceUID for i in series.ReferencedSOPSequence} == set(sources)
    held = dicom_results.describe(graded["paths"][-1])
    assert held["source_series"] == [study.series["t2"].uid]
    assert {level["image"] for level in held["levels"].values()} <= set(sources)


def test_each_disc_centre_is_a_point_on_its_nearest_source_image(graded):
    sources = _sources(graded)
    scan = graded["scan"]
    held = dicom_results.describe(graded["paths"][-1])
    for disc in graded["record"]["discs"]:
        level = held["levels"][disc["level"]]
        image = sources[level["image"]]
        assert image.InstanceNumber == int(round(disc["centre_voxel"][0])) + 1
        to_patient = hd.spatial.ImageToReferenceTransformer(
            image_position=image.ImagePositionPatient,
            image_orientation=image.ImageOrientationPatient,
            pixel_spacing=image.PixelSpacing)
        point = to_patient(np.array([level["point"]]))[0]
        centre = scan.affine @ np.append(disc["centre_voxel"], 1.0)
        centre_lps = centre[:3] * (-1, -1, 1)
        normal = np.cross(np.asarray(image.ImageOrientationPatient[:3], float),
                          np.asarray(image.ImageOrientationPatient[3:], float))
        offset = centre_lps - point
        assert np.linalg.norm(offset - (offset @ normal) * normal) < 1e-3  # in plane
        assert abs(offset @ normal) <= scan.spacing_mm[0] / 2 + 1e-6


def test_the_phantoms_images_are_the_internal_slices_the_tests_assume(graded):
    image = graded["patient"].image
    for ds in _sources(graded).values():
        assert np.array_equal(ds.pixel_array, image[ds.InstanceNumber - 1])


def test_each_map_has_a_frame_per_source_image_and_its_hotspot_where_it_was(graded):
    sources = _sources(graded)
    study = graded["study"]
    series_uids = set()
    for k, task in enumerate(TASK_SET.tasks):
        pm = pydicom.dcmread(graded["paths"][k])
        assert pm.SOPClassUID == PARAMETRIC_MAP_STORAGE
        assert pm.StudyInstanceUID == study.study_uid
        assert pm.SeriesDescription == f"spine_tf hotspots {task.name}"
        assert pm.SeriesNumber == 301 + k
        series_uids.add(pm.SeriesInstanceUID)
        (referenced,) = pm.ReferencedSeriesSequence
        assert referenced.SeriesInstanceUID == study.series["t2"].uid
        frames = [f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
                  for f in pm.PerFrameFunctionalGroupsSequence]
        assert int(pm.NumberOfFrames) == len(sources) and sorted(frames) == sorted(sources)
        mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
        evidence = pm.pixel_array * mapping.RealWorldValueSlope + mapping.RealWorldValueIntercept
        frame, row, col = np.unravel_index(np.argmax(evidence), evidence.shape)
        s, r, c = graded["spikes"][task.name]
        assert sources[frames[frame]].InstanceNumber == s + 1
        assert (row, col) == (r, c) and evidence[frame, row, col] == pytest.approx(1.0)
        assert evidence[frame, r + 3, c - 2] == pytest.approx(0.25, abs=1e-4)
        assert np.count_nonzero(evidence) == 2
        assert np.array_equal(np.asarray(pm.PerFrameFunctionalGroupsSequence[frame]
                                         .PlanePositionSequence[0].ImagePositionPatient, float),
                              np.asarray(sources[frames[frame]].ImagePositionPatient, float))
    assert len(series_uids) == len(TASK_SET.tasks)
    assert not series_uids & {s.uid for s in study.series.values()}


def test_highdicom_reads_each_map_as_a_volume_with_the_hotspot_at_its_patient_position(graded):
    """As a viewer would: the map's own geometry puts evidence 1 where the spike's voxel
    lies in the patient (the scan's RAS affine, in DICOM's LPS)."""
    for k, task in enumerate(TASK_SET.tasks):
        volume = hd.imread(graded["paths"][k]).get_volume(apply_real_world_transform=True)
        spike = graded["scan"].affine @ np.append(graded["spikes"][task.name], 1.0)
        index = np.linalg.inv(volume.affine) @ np.append(spike[:3] * (-1, -1, 1), 1.0)
        assert np.allclose(index[:3], np.round(index[:3]), atol=1e-3)
        assert np.unravel_index(np.argmax(volume.array), volume.spatial_shape) \
            == tuple(np.round(index[:3]).astype(int))
        assert volume.array.max() == pytest.approx(1.0)


def _header(position, orientation, spacing=(0.5, 0.5), rows=4, cols=3):
    ds = pydicom.Dataset()
    ds.ImagePositionPatient, ds.ImageOrientationPatient = list(position), list(orientation)
    ds.PixelSpacing, ds.Rows, ds.Columns = list(spacing), rows, cols
    ds.SOPInstanceUID = "1.2.3"
    return ds


def test_images_whose_rows_run_along_the_scans_rows_are_transposed():
    """A scan of 2 x 3 x 4 voxels, 0.5 mm, internal (s, r, c) at RAS (-s, -c, -r) / 2 (left,
    inferior ... as the internal frame): an image whose pixel rows run along the internal
    columns, and columns along the internal rows, holds the transposed slice."""
    affine = np.array([[-0.5, 0, 0, 0], [0, 0, -0.5, 0], [0, -0.5, 0, 0], [0, 0, 0, 1.0]])
    volume = np.arange(24, dtype=np.float32).reshape(2, 3, 4, 1)
    # LPS: slice s at x = +s/2; internal rows go -z (feet), internal columns +y (back)
    straight = _header((0.5, 0, 0), (0, 1, 0, 0, 0, -1), rows=3, cols=4)
    transposed = _header((0.5, 0, 0), (0, 0, -1, 0, 1, 0), rows=4, cols=3)
    flipped = _header((0.5, 1.5, 0), (0, -1, 0, 0, 0, -1), rows=3, cols=4)

    def resampled(header):
        return dicom_results.resample_to_sources(volume, [header], affine)[0, ..., 0]

    assert np.array_equal(resampled(straight), volume[1, ..., 0])
    assert np.array_equal(resampled(transposed), volume[1, ..., 0].T)
    assert np.array_equal(resampled(flipped), volume[1, :, ::-1, 0])
    off_grid = _header((5.0, 0, 0), (0, 1, 0, 0, 0, -1), rows=3, cols=4)
    with pytest.raises(dicom_results.DicomResultsError, match="does not lie on the scan"):
        dicom_results.resample_to_sources(volume, [off_grid], affine)
    # between two slices (x = 0.25): the mean of the two, linearly interpolated
    between = _header((0.25, 0, 0), (0, 1, 0, 0, 0, -1), rows=3, cols=4)
    np.testing.assert_allclose(resampled(between), volume[:, ..., 0].mean(axis=0), atol=1e-5)


def test_without_hotspots_only_the_report_is_written(graded, tmp_path):
    paths = dicom_results.write_dicom_results(graded["record"], graded["scan"], None, tmp_path)
    assert paths == [os.fspath(tmp_path / "grades_sr.dcm")]
    assert os.listdir(tmp_path) == ["grades_sr.dcm"]


def _fails(graded, folder, match, record=None, scan=None, hotspots=None):
    with pytest.raises(scans.PredictError, match=match) as error:
        dicom_results.write_dicom_results(record or graded["record"], scan or graded["scan"],
                                          hotspots, folder)
    assert "\n" not in str(error.value)
    assert not os.path.exists(folder) or os.listdir(folder) == []
    return str(error.value)


def test_bad_inputs_raise_one_line_errors_and_write_nothing(graded, tmp_path):
    scan, record = graded["scan"], graded["record"]
    message = _fails(graded, tmp_path / "a", "not read from DICOM files",
                     scan=dataclasses.replace(scan, series=None))
    assert message.startswith(scan.path)
    _fails(graded, tmp_path / "b", r"hotspots of shape \(18, 329, 329, 2\)",
           hotspots=graded["hotspots"][..., :2])
    _fails(graded, tmp_path / "c", "finite and in", hotspots=graded["hotspots"] * 2)
    other = dict(record, series=dict(record["series"], uid="1.2.3.4"))
    _fails(graded, tmp_path / "d", "the record grades series 1.2.3.4", record=other)
    ungraded = dict(record, discs=[dict(record["discs"][0], tasks={})])
    _fails(graded, tmp_path / "e", "disc T12-L1 has no grade for pfirrmann", record=ungraded)
    _fails(graded, tmp_path / "f", "task_set", record=dict(record, task_set="nonsense"))


def test_a_source_image_without_its_position_is_named(graded, tmp_path):
    files = []
    for path in graded["scan"].series["files"]:
        files.append(os.fspath(tmp_path / "series" / os.path.basename(path)))
        os.makedirs(os.path.dirname(files[-1]), exist_ok=True)
        shutil.copy(path, files[-1])
    broken = pydicom.dcmread(files[3])
    del broken.ImagePositionPatient
    broken.save_as(files[3])
    scan = dataclasses.replace(graded["scan"], series=dict(graded["scan"].series, files=files))
    message = _fails(graded, tmp_path / "out", "lacks ImagePositionPatient", scan=scan)
    assert files[3] in message and "series 3" in message


def test_describe_rejects_what_is_not_a_report(graded):
    with pytest.raises(dicom_results.DicomResultsError, match="not a TID 1500"):
        dicom_results.describe(graded["paths"][0])


def test_predict_keeps_a_scans_grades_when_its_dicom_results_cannot_be_written(graded,
                                                                               tmp_path):
    """predict records why (grades.json's ``dicom``) and the report shows it; what was made
    before is kept and nothing is left in the DICOM folder."""
    from spine_tf.app import predict, render
    record = dict(graded["record"], name="case", scan="study", localisation="landmarks",
                  model="m", tta=False, task_set=TASK_SET.name)
    folder = tmp_path / "dicom"
    written = predict._write_dicom(folder, record, graded["scan"], graded["hotspots"])
    assert written == {"folder": "dicom", "files": [f"hotspots_{t}.dcm" for t in
                                                    TASK_SET.names] + ["grades_sr.dcm"]}
    failed = predict._write_dicom(tmp_path / "none", record, graded["scan"],
                                  graded["hotspots"][..., :1])
    assert set(failed) == {"error"} and "hotspots of shape" in failed["error"]
    assert not os.path.exists(tmp_path / "none") or not os.listdir(tmp_path / "none")
    page = render.scan_page(dict(record, dicom=failed), {})
    assert "No DICOM results: " in page
    page = render.scan_page(dict(record, dicom=written), {})
    assert '<a href="dicom/grades_sr.dcm">grades_sr.dcm</a>' in page
