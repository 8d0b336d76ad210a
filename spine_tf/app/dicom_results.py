"""A scan's grades and hotspots as DICOM objects of its own study, made with highdicom.

``write_dicom_results`` writes, beside a scan's other outputs::

    hotspots_<task>.dcm   per task of the model's set, a Parametric Map of the task's
                          evidence hotspot: a frame per source image of the graded series,
                          each referencing its image and carrying its position, so a viewer
                          (3D Slicer, OHIF) overlays it on that series; 16-bit (RLE
                          lossless) with a Real World Value Mapping to evidence in [0, 1]
    grades_sr.dcm         a Comprehensive 3D SR: a TID 1500 measurement report of the
                          grades (written last)

The report holds a TID 1410 measurement group per graded disc (table: docs/formats.md):
its centre as a point on the nearest source image, its level (SNOMED CT), each task's
grade (``<task code>-<class index>``) with its probability (``<task code>-p``), its height,
localisation confidence and flag; the private coding scheme ``99SPINETF``. The observer is
the device ``spine_tf``; each group names the algorithm, its version, model and task set.

Every object belongs to the source study and references the source series and images,
in a new series (numbered from 100 x the source series' number: the report, then the
hotspots in task order), with UIDs made from the source series and the results
(``result_uid``): the same results again are the same objects, so storing a rerun's adds no
copies to a PACS. The files are written atomically once every object is made, so an error
leaves none behind. ``describe`` reads a report back.

Example:
    scan, located, volumes, skipped = scans.extract_scan(job)
    paths = write_dicom_results(record, scan, hotspot_array, "predictions/case_1")
    describe(paths[-1])["levels"]["L4-L5"]["tasks"]["pfirrmann"]
"""

import hashlib
import json
import os

import numpy as np

import spine_tf
from spine_tf.app.scans import PredictError
from spine_tf.io.atomic import atomic_path
from spine_tf.io.formats import LPS_RAS
from spine_tf.tasks import TABLE, task_set as task_set_named

SR_NAME, HOTSPOT_PATTERN = "grades_sr.dcm", "hotspots_{task}.dcm"
CODING_SCHEME, SCHEME_NAME = "99SPINETF", "spine_tf tasks, classes and concepts"
EVIDENCE_LEVELS = 65535  # the stored hotspot value of evidence 1
REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
            "FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient",
            "PixelSpacing", "Rows", "Columns")  # what every source image must have
_LEVEL_CONCEPTS = {"T12-L1": "TwelfthThoracic", "L1-L2": "FirstLumbar",
                   "L2-L3": "SecondLumbar", "L3-L4": "ThirdLumbar", "L4-L5": "FourthLumbar",
                   "L5-S1": "FifthLumbar"}
_MAX_MEANING = 64  # characters of a Code Meaning (LO); spine_tf's concepts: (value, meaning)
CONFIDENCE = ("confidence", "disc localisation confidence")
LOCALISATION = ("localisation", "disc localisation")
RELIABLE = ("reliable", "localised with confidence")
FLAGGED = ("flagged", "low localisation confidence")


class DicomResultsError(PredictError):
    """Grading results that cannot be written as DICOM; the message names the scan."""


def result_uid(*parts):
    """A UID made from ``parts``: the source series UID, what the object is, its content."""
    from pydicom.uid import generate_uid
    return generate_uid(entropy_srcs=[str(part) for part in parts])


def _code(value, meaning):
    import highdicom as hd
    return hd.sr.CodedConcept(value, CODING_SCHEME, meaning[:_MAX_MEANING])


def task_concept(task):
    """A task's concept: its code (``Task.code``), meaning its description (to the first
    comma if too long)."""
    meaning = task.description
    return _code(task.code, meaning if len(meaning) <= _MAX_MEANING else meaning.split(",")[0])


def class_concept(task, class_name):
    """The coded value of a task's class: ``<task code>-<class index>``, meaning
    ``<task> <class>``."""
    return _code(f"{task.code}-{task.class_names.index(class_name)}",
                 f"{task.name} {class_name}")


def probability_concept(task):
    """The concept of a graded class's probability: ``<task code>-p``."""
    return _code(f"{task.code}-p", f"probability of the {task.name} class")


def level_concept(level):
    """The finding site of a level: SNOMED CT's disc of the vertebra above it (the codes of
    DICOM's dictionary, ``pydicom.sr.codedict``), else a private code."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    if level not in _LEVEL_CONCEPTS:
        return _code(level, f"intervertebral disc {level}")
    code = getattr(codes.SCT, f"IntervertebralDiscStructureOf{_LEVEL_CONCEPTS[level]}Vertebra")
    meaning = code.meaning.removesuffix(" (body structure)")  # fits a Code Meaning
    return hd.sr.CodedConcept(code.value, code.scheme_designator, meaning)


def _level_of(concept):
    levels = {level_concept(level).value: level for level in _LEVEL_CONCEPTS}  # SNOMED CT's
    return levels.get(concept.value, concept.value)


def _what(scan):
    series = scan.series or {}
    return (f"{scan.path or 'scan'} (series {series.get('number', '?')}, "
            f"{series.get('uid', 'no UID')})")


def _read_sources(scan, record):
    """The source images' headers, checked: one single-frame series, the one graded."""
    import pydicom
    if not scan.series or not scan.series.get("files"):
        raise DicomResultsError(f"{scan.path or 'scan'}: not read from DICOM files, so there "
                                "is no source series for DICOM results to reference")
    what = _what(scan)
    graded_uid = (record.get("series") or {}).get("uid")
    if graded_uid and graded_uid != scan.series.get("uid"):
        raise DicomResultsError(f"{what}: the record grades series {graded_uid}, not this one")
    sources = []
    for path in scan.series["files"]:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (OSError, pydicom.errors.InvalidDicomError) as error:
            raise DicomResultsError(f"{what}: source image {path} cannot be read: "
                                    f"{error}") from error
        missing = [name for name in REQUIRED if ds.get(name) in (None, "")]
        if missing:
            raise DicomResultsError(f"{what}: source image {path} lacks {', '.join(missing)}")
        if int(ds.get("NumberOfFrames") or 1) != 1:
            raise DicomResultsError(f"{what}: source image {path} has several frames; DICOM "
                                    "results need a series of single-frame images")
        if ds.SeriesInstanceUID != scan.series.get("uid", ds.SeriesInstanceUID):
            raise DicomResultsError(f"{what}: source image {path} belongs to series "
                                    f"{ds.SeriesInstanceUID}")
        sources.append(ds)
    if len({(ds.StudyInstanceUID, ds.Rows, ds.Columns) for ds in sources}) > 1:
        raise DicomResultsError(f"{what}: the source images differ in study or size")
    return sources


def pixel_geometry(ds, affine):
    """Where a source image's pixels lie in the scan's internal frame.

    DICOM's patient frame is LPS and ``affine`` (internal voxel -> RAS mm) is RAS: the
    pixel at row ``i``, column ``j`` lies at ``ImagePositionPatient + j * PixelSpacing[1] *
    (row cosine) + i * PixelSpacing[0] * (column cosine)`` (LPS mm).

    Args:
        ds: the image's header.
        affine: the scan's internal voxel -> RAS affine.

    Returns:
        (origin, down, across): internal (slice, row, col) coordinates of pixel (0, 0) and
        the steps of one pixel row down and one pixel column across.
    """
    to_internal = np.linalg.inv(np.asarray(affine, float))
    cosines = np.asarray(ds.ImageOrientationPatient, float)
    row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
    position = LPS_RAS @ np.asarray(ds.ImagePositionPatient, float)
    origin = to_internal[:3, :3] @ position + to_internal[:3, 3]
    down = to_internal[:3, :3] @ LPS_RAS @ (cosines[3:] * row_mm)
    across = to_internal[:3, :3] @ LPS_RAS @ (cosines[:3] * col_mm)
    return origin, down, across


def resample_to_sources(volume, sources, affine, what="scan"):
    """An internal-frame volume on the source images' pixel grids.

    Args:
        volume: (slices, rows, cols, channels) internal-frame array.
        sources: the source images' headers (``Rows`` x ``Columns`` each).
        affine: the scan's internal voxel -> RAS affine.
        what: names the scan in errors.

    Returns:
        float32 (images, Rows, Columns, channels): each image's pixels; the voxels
        themselves where the grids coincide (a scan read from these images), else
        linearly interpolated.

    Raises:
        DicomResultsError: a source image that does not lie on the scan's grid."""
    from scipy import ndimage
    volume, out = np.asarray(volume, np.float32), []
    shape = np.asarray(volume.shape[:3])
    for ds in sources:
        origin, down, across = pixel_geometry(ds, affine)
        rows, cols = np.arange(ds.Rows), np.arange(ds.Columns)
        coords = (origin[:, None, None] + down[:, None, None] * rows[None, :, None]
                  + across[:, None, None] * cols[None, None, :])
        coords = np.round(coords, 3)  # header positions are rounded: snap to the grid
        flat = coords.reshape(3, -1)
        if np.any(flat.min(axis=1) < -0.5) or np.any(flat.max(axis=1) > shape - 0.5):
            raise DicomResultsError(f"{what}: source image {ds.SOPInstanceUID} does not lie on "
                                    "the scan's grid (not the series the scan was read from?)")
        index = np.round(coords).astype(int)
        out.append(volume[index[0], index[1], index[2]] if np.array_equal(coords, index) else
                   np.stack([ndimage.map_coordinates(volume[..., k], coords, order=1,
                                                     mode="nearest")
                             for k in range(volume.shape[3])], axis=-1))
    return np.stack(out)


def nearest_image(centre_voxel, sources, affine):
    """The source image nearest an internal voxel, and the voxel's place on it.

    Returns:
        (index into ``sources``, (column, row) image coordinates: DICOM's, with (0, 0) the
        top left corner of the top left pixel, so a pixel's centre is at + 0.5).
    """
    centre = np.asarray(affine, float) @ np.append(np.asarray(centre_voxel, float), 1.0)
    point = LPS_RAS @ centre[:3]
    best = None
    for index, ds in enumerate(sources):
        cosines = np.asarray(ds.ImageOrientationPatient, float)
        offset = point - np.asarray(ds.ImagePositionPatient, float)
        distance = abs(offset @ np.cross(cosines[:3], cosines[3:]))
        if best is None or distance < best[0]:
            row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
            place = (offset @ cosines[:3] / col_mm + 0.5, offset @ cosines[3:] / row_mm + 0.5)
            best = (distance, index, place)
    return best[1], best[2]


def _series_base(scan, sources):
    return 100 * int(scan.series.get("number") or sources[0].get("SeriesNumber") or 99)


def _hotspot_maps(record, scan, hotspots, sources, task_set, base):
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import RLELossless
    what = _what(scan)
    hotspots = np.asarray(hotspots)
    expected = tuple(scan.shape) + (len(task_set.tasks),)
    if hotspots.shape != expected:
        raise DicomResultsError(f"{what}: hotspots of shape {hotspots.shape}, expected "
                                f"{expected} (the scan's shape x the {task_set.name} tasks)")
    if not np.all(np.isfinite(hotspots)) or hotspots.min() < 0 or hotspots.max() > 1:
        raise DicomResultsError(f"{what}: hotspot values must be finite and in [0, 1]")
    pixels = resample_to_sources(hotspots, sources, scan.affine, what)
    stored = np.round(np.clip(pixels, 0, 1) * EVIDENCE_LEVELS).astype(np.uint16)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="EVIDENCE", lut_explanation="hotspot evidence, 0 (none) to 1 (most)",
        unit=codes.UCUM.NoUnits, value_range=(0, EVIDENCE_LEVELS),
        slope=1.0 / EVIDENCE_LEVELS, intercept=0.0)
    window = hd.VOILUTTransformation(window_center=EVIDENCE_LEVELS / 2,
                                     window_width=EVIDENCE_LEVELS)
    serial = hashlib.sha1(str(record.get("model", "")).encode()).hexdigest()[:16]  # the model
    maps = []
    for k, task in enumerate(task_set.tasks):
        key = (scan.series["uid"], "hotspots", task.name, record.get("model", ""),
               hashlib.sha1(stored[..., k].tobytes()).hexdigest())
        try:
            maps.append(hd.pm.ParametricMap(
                sources, stored[..., k], series_instance_uid=result_uid(*key, "series"),
                series_number=base + 1 + k, sop_instance_uid=result_uid(*key, "instance"),
                instance_number=1,
                manufacturer="spine_tf", manufacturer_model_name="spine_tf",
                software_versions=spine_tf.__version__,
                device_serial_number=serial,
                contains_recognizable_visual_features=False,
                real_world_value_mappings=[mapping], voi_lut_transformations=[window],
                transfer_syntax_uid=RLELossless, content_label="HOTSPOT",
                content_description=f"spine_tf evidence: {task.name}",
                series_description=f"spine_tf hotspots {task.name}"))
        except ValueError as error:
            raise DicomResultsError(f"{what}: hotspots of {task.name}: {error}") from error
    return maps


def _disc_group(disc, task_set, sources, affine, algorithm, series_uid):
    import highdicom as hd
    from pydicom.sr.codedict import codes
    index, place = nearest_image(disc["centre_voxel"], sources, affine)
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POINT, graphic_data=np.array([place]),
        source_image=hd.sr.SourceImageForRegion.from_source_image(sources[index]))
    evaluations, measurements = [], []
    for task in task_set.tasks:
        grade = disc["tasks"][task.name]
        evaluations.append(hd.sr.QualitativeEvaluation(
            task_concept(task), class_concept(task, grade["class_name"])))
        measurements.append(hd.sr.Measurement(
            probability_concept(task), float(grade["probability"]),
            hd.sr.CodedConcept("{probability}", "UCUM", "probability")))
    evaluations.append(hd.sr.QualitativeEvaluation(
        _code(*LOCALISATION), _code(*(FLAGGED if disc["flagged"] else RELIABLE))))
    measurements.append(hd.sr.Measurement(_code(*CONFIDENCE), float(disc["confidence"]),
                                          codes.UCUM.NoUnits))
    measurements.append(hd.sr.Measurement(codes.DCM.Height, float(disc["height_mm"]),
                                          codes.UCUM.Millimeter))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(  # the same disc: the same UID
            uid=result_uid(series_uid, "disc", disc["level"]), identifier=f"disc {disc['level']}"),
        referenced_region=region, geometric_purpose=codes.DCM.Center,
        finding_sites=[hd.sr.FindingSite(level_concept(disc["level"]))],
        algorithm_id=algorithm, measurements=measurements,
        qualitative_evaluations=evaluations)


def _report(record, scan, sources, task_set, base):
    import highdicom as hd
    from highdicom.coding_schemes import CodingSchemeIdentificationItem
    from pydicom.sr.codedict import codes
    what = _what(scan)
    model = str(record.get("model", ""))
    algorithm = hd.sr.AlgorithmIdentification(
        name="spine_tf", version=spine_tf.__version__,
        parameters=[f"model: {model}", f"task set: {task_set.name}"])
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=result_uid("spine_tf", spine_tf.__version__, model),
            name="spine_tf", manufacturer_name="spine_tf", model_name=model))
    groups = []
    for disc in record["discs"]:
        missing = [t.name for t in task_set.tasks if t.name not in disc.get("tasks", {})]
        if missing:
            raise DicomResultsError(f"{what}: disc {disc.get('level')} has no grade for "
                                    f"{', '.join(missing)}")
        groups.append(_disc_group(disc, task_set, sources, scan.affine, algorithm,
                                  scan.series["uid"]))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.SCT.ImagingProcedure, imaging_measurements=groups)
    key = (scan.series["uid"], "grades", model, task_set.name,
           json.dumps(record["discs"], sort_keys=True))
    try:
        return hd.sr.Comprehensive3DSR(
            evidence=sources, content=report[0], series_instance_uid=result_uid(*key, "series"),
            series_number=base, sop_instance_uid=result_uid(*key, "instance"),
            instance_number=1, manufacturer="spine_tf", is_complete=True, is_final=False,
            series_description="spine_tf grades", manufacturer_model_name="spine_tf",
            software_versions=spine_tf.__version__, coding_schemes=[  # the private scheme
                CodingSchemeIdentificationItem(CODING_SCHEME, name=SCHEME_NAME,
                                               responsible_organization="spine_tf")])
    except ValueError as error:
        raise DicomResultsError(f"{what}: grades report: {error}") from error


def write_dicom_results(record, scan, hotspots, folder):
    """Writes a scan's grades (a TID 1500 SR) and hotspots (Parametric Maps) as DICOM.

    Args:
        record: the scan's record, as ``spine_tf.app.predict.predict_scan`` returns it
            (``discs``, ``task_set``, ``model``, ``series``).
        scan: the graded ``spine_tf.io.Scan``, read from DICOM (``scan.series["files"]``,
            the source images in slice order).
        hotspots: None, or float32 (slices, rows, cols, tasks) internal-frame evidence in
            [0, 1], the tasks in the set's order (``hotspots.save_scan_hotspots``).
        folder: where to write (created).

    Returns:
        The paths written: ``hotspots_<task>.dcm`` per task (none without hotspots), then
        ``grades_sr.dcm``.

    Raises:
        DicomResultsError: (a PredictError) a scan without DICOM sources, a source image
            that cannot be read or lacks a needed attribute, or a record or hotspots that
            do not fit the scan or the task set; nothing is written then.
    """
    what = _what(scan)
    try:
        task_set = task_set_named(record["task_set"])
    except KeyError as error:
        raise DicomResultsError(f"{what}: record without a known task_set ({error})") from None
    sources = _read_sources(scan, record)
    base = _series_base(scan, sources)
    objects = []
    if hotspots is not None:
        maps = _hotspot_maps(record, scan, hotspots, sources, task_set, base)
        objects += [(HOTSPOT_PATTERN.format(task=t.name), m)
                    for t, m in zip(task_set.tasks, maps)]
    objects.append((SR_NAME, _report(record, scan, sources, task_set, base)))
    paths = []
    for name, dataset in objects:
        path = os.path.join(os.fspath(folder), name)
        with atomic_path(path) as tmp:
            dataset.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    return paths


def _described(group):
    """(level, what it holds) of one measurement group (``describe``)."""
    from pydicom.sr.codedict import codes
    entry = {"tasks": {}}
    evaluations = {e.name.value: e.value for e in group.get_qualitative_evaluations()
                   if e.name.scheme_designator == CODING_SCHEME}
    values = {m.name.value: m.value for m in group.get_measurements()}
    by_code = {task.code: task for task in TABLE}
    for code, value in evaluations.items():
        if code == LOCALISATION[0]:
            entry["flagged"] = value.value == FLAGGED[0]
        else:
            task = by_code[code]
            entry["tasks"][task.name] = {
                "class_name": task.class_names[int(value.value.rsplit("-", 1)[1])],
                "probability": float(values[probability_concept(task).value])}
    entry["confidence"] = float(values[CONFIDENCE[0]])
    entry["height_mm"] = float(values[codes.DCM.Height.value])
    region = group.roi  # the point; its content item names the image it lies on
    entry["image"] = region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    entry["point"] = tuple(float(v) for v in region.value[0])
    return _level_of(group.finding_sites[0].value), entry


def describe(path):
    """What a grades report (``grades_sr.dcm``) holds.

    Returns:
        A dict: ``study_uid``, ``series_uid`` and ``series_description`` of the report,
        ``source_series`` (the referenced series UIDs), ``observer`` (device name and model
        name) and ``levels``: {level: {``tasks``: {task: {``class_name``,
        ``probability``}}, ``flagged``, ``confidence``, ``height_mm``, ``image`` (the
        SOPInstanceUID of the image the centre ``point`` (column, row) lies on)}}.

    Raises:
        DicomResultsError: the file is not a spine_tf grades report.
    """
    import highdicom as hd
    try:
        sr = hd.sr.srread(path)
        report = hd.sr.MeasurementReport.from_sequence(sr.content[:1])
    except (OSError, ValueError, RuntimeError, AttributeError, IndexError) as error:
        raise DicomResultsError(f"{path}: not a TID 1500 measurement report: {error}") from None
    try:
        device = report.get_observer_contexts()[0].observer_identifying_attributes
        levels = dict(_described(group) for group in report.get_planar_roi_measurement_groups())
    except (KeyError, IndexError, AttributeError) as error:
        raise DicomResultsError(f"{path}: not a spine_tf grades report (no {error})") from None
    return {"study_uid": sr.StudyInstanceUID, "series_uid": sr.SeriesInstanceUID,
            "series_description": sr.get("SeriesDescription", ""),
            "source_series": sorted({s.SeriesInstanceUID
                                     for e in sr.CurrentRequestedProcedureEvidenceSequence
                                     for s in e.ReferencedSeriesSequence}),
            "observer": {"name": device.name, "model_name": device.model_name},
            "levels": levels}


__all__ = ["DicomResultsError", "HOTSPOT_PATTERN", "SR_NAME", "describe", "nearest_image",
           "pixel_geometry", "resample_to_sources", "result_uid", "write_dicom_results"]
