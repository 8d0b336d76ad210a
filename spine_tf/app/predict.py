"""From scans to grades, hotspots and a report: ``spine-tf predict``.

For every scan: read it, localise its discs (a label mask or landmarks file
per scan, else the disc detector, ``spine_tf.detection``), extract the disc
volumes, grade them (TTA by default: 54 views, or 9 for a 1-slice model;
one disc's views per forward batch), compute the evidence hotspots of the
graded classes, and write the outputs. The model is a ``.keras`` file, a
``spine-tf train`` run directory, or a SavedModel from ``spine-tf export``.

Output folder::

    grades.csv               one row per disc of every scan
    summary.json             per scan: done or failed (with the reason); model; settings
    index.html               links to every scan's report, and the failures
    <scan>/grades.json       per disc: level, centre, confidence (the detector's; 1 for
                             masks and landmarks), per task grade, class name and
                             probabilities; discs not graded and why; detector notes;
                             the model's input_slices, the scan's scan_slices, the TTA
                             views, and notes where the two do not fit (input_notes);
                             per disc (graded or not) its box_voxel: 4 (row, col) corners
                             on its own slice (app.overview.disc_box); overview: the slice
                             shown, the task colouring the boxes, pixels per voxel
    <scan>/report.html       the overview (boxes countable, tooltips), levels x tasks
                             table, hotspots on the scan, disc and hotspot montages, model
    <scan>/overview.png      the mid-sagittal slice, every disc boxed, named and coloured by
                             its Pfirrmann grade; low-confidence discs dashed magenta "?"
    <scan>/discs.png         the disc volumes: slices 1..9, or the centre slice alone for a
                             slice scan or a 1-slice model (grades.json: montage_slices)
    <scan>/hotspots_<task>.png   hotspots over the volumes, per task
    <scan>/hotspots_scan_<task>.png   the same on the overview slice, each disc's from its
                             own centre slice
    <scan>/hotspots.nii.gz   one volume per task in the scan's own grid and affine
    <scan>/dicom/            a DICOM scan's results in its study (app.dicom_results):
                             grades_sr.dcm (TID 1500 SR), hotspots_<task>.dcm
                             (Parametric Maps); grades.json's ``dicom`` lists them, or
                             says why they could not be written (the rest still is)

Each scan's folder is written under a temporary name and renamed, so a scan
that fails half way leaves no partial folder (and an older result of the
same scan stays until a new one is complete); the cohort files are written
atomically after every scan, so an interrupted run keeps what it finished.

The scans come from ``app.scans`` (``find_scans``, ``extract_scan``), the
model from ``app.predictors`` and the pages and CSV rows from ``app.render``.

Example:
    predictor = predictors.load_predictor("saved_models/spinenet")
    jobs = scans.find_scans(["cohort/"])
    summary = run(jobs, predictor, "predictions/")
"""

import datetime
import json
import os

import numpy as np

from spine_tf.app import overview, render
from spine_tf.app.predictors import HOTSPOT_AUGMENTATIONS
from spine_tf.app.render import (CSV_NAME, GRADES_NAME, INDEX_NAME, NIFTI_NAME,
                                 REPORT_NAME, SUMMARY_NAME)
from spine_tf.app.scans import PredictError, extract_scan
from spine_tf.extraction import SLICES
from spine_tf.io.atomic import atomic_folder, write_csv, write_json, write_text
from spine_tf.io import ScanError

CENTRE_SLICE = (SLICES - 1) // 2
LOW_CONFIDENCE = 0.5
"""Discs localised with less confidence are flagged in every output."""


def _box(disc, spacing_mm):
    corners = overview.disc_box(disc, spacing_mm)
    return [[round(float(v), 3) for v in corner] for corner in corners]


def _disc_records(task_set, volumes, located, probabilities, skipped, spacing_mm):
    by_level = located.by_level()
    discs = []
    for n, volume in enumerate(volumes):
        place = by_level[volume.level]
        record = {"level": volume.level, "centre_voxel": [float(v) for v in place.centre],
                  "height_mm": float(place.height_mm), "confidence": float(volume.confidence),
                  "flagged": bool(volume.confidence < LOW_CONFIDENCE),
                  "box_voxel": _box(place, spacing_mm), "tasks": {}}
        for task, p in zip(task_set.tasks, probabilities):
            grade = int(np.argmax(p[n]))
            record["tasks"][task.name] = {
                "grade": grade, "class_name": task.class_names[grade],
                "probability": float(p[n][grade]),
                "probabilities": [float(v) for v in p[n]]}
        discs.append(record)
    not_graded = [{"level": level, "reason": reason,
                   **({"box_voxel": _box(by_level[level], spacing_mm)} if level in by_level
                      else {})} for level, reason in skipped]
    return {"discs": discs, "not_graded": not_graded}


def input_notes(scan_slices, model_slices):
    """What a scan's report says when its slices do not fit the model's input mode.

    Args:
        scan_slices: the scan's sagittal slices.
        model_slices: the model's ``input_slices`` (9 or 1).

    Returns:
        A list of sentences (empty when scan and model fit).
    """
    if model_slices == 1 and scan_slices > 1:
        return ["This model was trained on single sagittal slices: only the centre slice of "
                "each disc was used."]
    if model_slices != 1 and scan_slices == 1:
        return ["This scan has one sagittal slice: the 8 neighbouring slices of each disc "
                "volume were zero-padded, and the model was trained on 9-slice volumes, so "
                "its grades may be less reliable (a model trained with "
                "model.input_slices=1 suits such scans)."]
    return []


def _series_record(series, job):
    """grades.json's ``series``: the scan's, without its file list; why it was chosen is
    the job's where the choice was made before (``ScanJob.series_why``)."""
    return {**{k: v for k, v in series.items() if k != "files"},
            **({"why": job.series_why} if job.series_why else {})}


def _localisation_source(job, detector):
    if job.mask or job.landmarks:
        return os.path.abspath(job.mask or job.landmarks)
    return f"detector {getattr(detector, 'source', detector.name)}"


def _write_hotspots(folder, scan, volumes, stacked, record, predictor, probabilities,
                    augmentations, seed):
    """Computes a scan's hotspots and writes them into its folder: per task the montage over
    the disc volumes (``stacked``: theirs, as graded) and the picture on the scan, and the
    NIfTI; notes them in the record.

    Returns:
        ({task: montage file}, {task: scan picture file}, the (slices, rows, cols, tasks)
        internal-frame hotspots in the scan's grid).
    """
    from spine_tf import hotspots as hotspots_lib
    from spine_tf.io import pictures as report
    levels = [v.level for v in volumes]
    task_set = predictor.task_set
    classes = {t.name: p.argmax(axis=1) for t, p in zip(task_set.tasks, probabilities)}
    augmentations, seed = predictor.hotspot_settings(augmentations, seed)
    per_task = predictor.hotspots(stacked, classes, augmentations, seed)
    transforms = np.stack([v.voxel_to_scan for v in volumes])
    scan_maps = hotspots_lib.save_scan_hotspots(os.path.join(folder, NIFTI_NAME), scan,
                                                per_task, transforms)
    pictures, scan_pictures = {}, {}
    for n, task in enumerate(task_set.tasks):
        pictures[task.name] = render.hotspot_picture(task.name)
        report.save_png(hotspots_lib.overlay_pictures(stacked, per_task[task.name], levels,
                                                      record["montage_slices"]),
                        os.path.join(folder, pictures[task.name]))
        scan_pictures[task.name] = render.hotspot_scan_picture(task.name)
        overview.save_scan_hotspot(os.path.join(folder, scan_pictures[task.name]), scan, record,
                                   scan_maps[..., n], transforms)
    record["hotspots"] = {"nifti": NIFTI_NAME, "volumes": list(task_set.names),
                          "augmentations": int(augmentations), "seed": seed}
    return pictures, scan_pictures, scan_maps


def _write_dicom(folder, record, scan, scan_maps):
    """A DICOM scan's grades and hotspots as DICOM; what grades.json says of them."""
    from spine_tf.app import dicom_results
    try:
        paths = dicom_results.write_dicom_results(record, scan, scan_maps, folder)
    except dicom_results.DicomResultsError as error:
        return {"error": str(error)}
    return {"folder": render.DICOM_FOLDER, "files": [os.path.basename(p) for p in paths]}


def predict_scan(job, predictor, out_dir, tta=True, hotspots=True,
                 augmentations=HOTSPOT_AUGMENTATIONS, seed=0, detector=None):
    """Grades one scan and writes its folder ``out_dir/<name>`` (see the module docstring).

    Returns:
        The scan's record (what ``grades.json`` holds).

    Raises:
        ScanError, PredictError: the scan cannot be read, localised or graded.
    """
    from spine_tf.io import pictures as report
    scan, located, volumes, skipped = extract_scan(job, detector)
    stacked = np.stack([v.volume for v in volumes])
    probabilities = predictor.probabilities(stacked, tta=tta)
    record = {"scan": os.path.abspath(job.scan), "name": job.name,
              **({"series": _series_record(scan.series, job)} if scan.series else {}),
              "localisation": _localisation_source(job, detector),
              "localisation_notes": list(located.notes),
              **({"pixel_size_mm": located.pixel_size_mm} if located.pixel_size_mm else {}),
              "model": predictor.description, "task_set": predictor.task_set.name,
              "tta": bool(tta),
              **({"tta_views": predictor.tta_views} if tta else {}),
              "input_slices": predictor.input_slices, "scan_slices": scan.num_slices,
              "input_notes": input_notes(scan.num_slices, predictor.input_slices),
              "written": datetime.datetime.now().isoformat(timespec="seconds"),
              **_disc_records(predictor.task_set, volumes, located, probabilities, skipped,
                              scan.spacing_mm)}
    levels = [v.level for v in volumes]
    # the slices that hold the disc and that the model reads: a slice scan's volumes are its
    # one slice with zeros around it, and a 1-slice model reads the centre slice only
    one_slice = 1 in (predictor.input_slices, scan.num_slices)
    record["montage_slices"] = [CENTRE_SLICE] if one_slice else list(range(SLICES))
    with atomic_folder(os.path.join(out_dir, job.name)) as tmp:
        report.save_png(report.montage(list(stacked), levels, record["montage_slices"]),
                        os.path.join(tmp, render.DISCS_PICTURE))
        record["overview"] = overview.save_overview(
            os.path.join(tmp, render.OVERVIEW_PICTURE), scan, record)
        pictures, scan_pictures, scan_maps = {}, {}, None  # the maps: for later writers
        if hotspots:
            pictures, scan_pictures, scan_maps = _write_hotspots(
                tmp, scan, volumes, stacked, record, predictor, probabilities, augmentations,
                seed)
        if scan.series:
            record["dicom"] = _write_dicom(os.path.join(tmp, render.DICOM_FOLDER), record,
                                           scan, scan_maps)
        with open(os.path.join(tmp, GRADES_NAME), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
        with open(os.path.join(tmp, REPORT_NAME), "w", encoding="utf-8") as f:
            f.write(render.scan_page(record, pictures, scan_pictures))
    return record


def _write_cohort(out_dir, summary, rows, task_set):
    write_csv(os.path.join(out_dir, CSV_NAME), [render.csv_header(task_set)] + rows)
    write_json(os.path.join(out_dir, SUMMARY_NAME), summary)
    write_text(os.path.join(out_dir, INDEX_NAME), render.index_page(summary))


def run(jobs, predictor, out_dir, tta=True, hotspots=True,
        augmentations=HOTSPOT_AUGMENTATIONS, seed=0, progress=False, detector=None):
    """Grades every scan; a scan that fails is recorded with its reason and the run goes on.

    Returns:
        The summary (``summary.json``): ``model``, settings, and per scan
        ``name``, ``scan``, ``status`` (``done``/``failed``), ``discs`` or
        ``reason``.
    """
    os.makedirs(out_dir, exist_ok=True)
    summary = {"model": predictor.description, "tta": bool(tta), "hotspots": bool(hotspots),
               "started": datetime.datetime.now().isoformat(timespec="seconds"), "scans": []}
    rows = []
    iterator = jobs
    if progress:
        from tqdm import tqdm
        iterator = tqdm(jobs, unit="scan", desc="Grading")
    for job in iterator:
        entry = {"name": job.name, "scan": os.path.abspath(job.scan)}
        try:
            record = predict_scan(job, predictor, out_dir, tta=tta, hotspots=hotspots,
                                  augmentations=augmentations, seed=seed, detector=detector)
        except (ScanError, PredictError, ValueError, OSError) as error:
            entry.update(status="failed", reason=str(error))
        else:
            entry.update(status="done", discs=len(record["discs"]),
                         not_graded=len(record["not_graded"]))
            rows += render.csv_rows(record)
        summary["scans"].append(entry)
        _write_cohort(out_dir, summary, rows, predictor.task_set)
    return summary


__all__ = ["CSV_NAME", "GRADES_NAME", "INDEX_NAME", "LOW_CONFIDENCE", "NIFTI_NAME",
           "REPORT_NAME", "SUMMARY_NAME", "input_notes", "predict_scan", "run"]
