"""From scans to grades, hotspots and a report: ``spine-tf predict``.

For every scan: read it, localise its discs (a label mask or landmarks file
per scan, else the disc detector, ``spine_tf.detection``), extract the disc
volumes, grade them (54-view TTA by default, one disc's views per forward
batch), compute the evidence hotspots of the graded classes, and write the
outputs. The model is a ``.keras`` file, a ``spine-tf train`` run
directory, or a SavedModel from ``spine-tf export``.

Output folder::

    grades.csv               one row per disc of every scan
    summary.json             per scan: done or failed (with the reason); model; settings
    index.html               links to every scan's report, and the failures
    <scan>/grades.json       per disc: level, centre, confidence (the detector's; 1 for
                             masks and landmarks), per task grade, class name and
                             probabilities; discs not graded and why; detector notes
    <scan>/report.html       levels x tasks table, disc and hotspot montages, model
    <scan>/discs.png         the disc volumes, slices 1..9
    <scan>/hotspots_<task>.png   hotspots over the volumes, per task
    <scan>/hotspots.nii.gz   one volume per task in the scan's own grid and affine

Each scan's folder is written under a temporary name and renamed, so a scan
that fails half way leaves no partial folder (and an older result of the
same scan stays until a new one is complete); the cohort files are written
atomically after every scan, so an interrupted run keeps what it finished.

Example:
    predictor = load_predictor("saved_models/spinenet")
    jobs = find_scans(["cohort/"])
    summary = run(jobs, predictor, "predictions/")
"""

import dataclasses
import functools
import datetime
import html
import json
import os
import shutil
import uuid

import numpy as np

from spine_tf import tasks
from spine_tf.io.atomic import write_csv, write_json, write_text
from spine_tf.io.scan import ITK_SUFFIXES, NIFTI_SUFFIXES, ScanError, scan_name
from spine_tf.errors import SpineTFError

SCAN_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
LOW_CONFIDENCE = 0.5
"""Discs localised with less confidence are flagged in every output."""
HOTSPOT_AUGMENTATIONS = 150
CSV_NAME, SUMMARY_NAME, INDEX_NAME = "grades.csv", "summary.json", "index.html"
GRADES_NAME, REPORT_NAME, NIFTI_NAME = "grades.json", "report.html", "hotspots.nii.gz"


class PredictError(SpineTFError, ValueError):
    """A scan or model cannot be used; the message names the file and the reason."""


# ------------------------------------------------------------------- inputs

@dataclasses.dataclass(frozen=True)
class ScanJob:
    """One scan to grade and how its discs are localised."""

    name: str
    scan: str
    mask: str = None
    landmarks: str = None


def _is_scan(path):
    return os.path.isfile(path) and path.lower().endswith(SCAN_SUFFIXES)


def _find(folder, name, suffixes):
    if not folder:
        return None
    if os.path.isfile(folder):  # one file given for one scan
        return folder
    for suffix in suffixes:
        path = os.path.join(folder, name + suffix)
        if os.path.exists(path):
            return path
    return None


def find_scans(inputs, masks=None, landmarks=None):
    """The scans of ``inputs`` (files or folders) with their masks or landmarks.

    A folder contributes its scan files (NIfTI, .mha/.mhd/.nrrd), or, when
    it has a ``scans/`` sub-folder (the folder layout of ``spine-tf
    phantom``), those, with its ``masks/`` and ``landmarks/`` as defaults.
    A scan's mask is ``<masks>/<name>.<suffix>`` and its landmarks
    ``<landmarks>/<name>.json`` (``name`` the scan's file name without its
    suffix); ``masks`` or ``landmarks`` may also be a single file when
    there is one scan.

    Raises:
        PredictError: an input that does not exist or holds no scan, or one
            file given as the mask or landmarks of several scans.
    """
    masks = os.fspath(masks) if masks else None
    landmarks = os.fspath(landmarks) if landmarks else None
    jobs = []
    for path in inputs:
        path = os.fspath(path)
        if not os.path.exists(path):
            raise PredictError(f"{path}: no such file or folder")
        folder_masks, folder_landmarks, files = None, None, [path]
        if os.path.isdir(path):
            if os.path.isdir(os.path.join(path, "scans")):
                folder_masks = os.path.join(path, "masks")
                folder_landmarks = os.path.join(path, "landmarks")
                path = os.path.join(path, "scans")
            files = sorted(os.path.join(path, f) for f in os.listdir(path))
            files = [f for f in files if _is_scan(f)]
            if not files:
                raise PredictError(f"{path}: no scan files ({', '.join(SCAN_SUFFIXES)})")
        for file in files:
            name = scan_name(file)
            jobs.append(ScanJob(
                name=name, scan=file,
                mask=_find(masks or folder_masks, name, SCAN_SUFFIXES),
                landmarks=_find(landmarks or folder_landmarks, name, (".json",))))
    for option, value in (("--masks", masks), ("--landmarks", landmarks)):
        if value and os.path.isfile(value) and len(jobs) > 1:
            raise PredictError(f"{value}: one {option} file for {len(jobs)} scans; give a "
                               "folder of files named after the scans")
    names = [j.name for j in jobs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise PredictError(f"several scans are called {', '.join(twice)}: outputs are named "
                           "after the scan, so the names must differ")
    return jobs


# ------------------------------------------------------------------- models

class KerasPredictor:
    """Grades and hotspots from a Keras SpineNet model."""

    def __init__(self, model, source):
        from spine_tf import hotspots
        self.model, self.source = model, source
        self._hotspots = hotspots.Hotspots(model)
        self.description = f"{source} (Keras, {model.count_params():,} parameters)"

    def probabilities(self, volumes, tta=True):
        from spine_tf import tta as tta_lib
        # one disc's 54 views per forward batch: measured faster on CPU than a scan's
        # discs together (docs/benchmarks.md), and what the SavedModel's predict_tta does
        return tta_lib.predict(self.model, volumes, tta=tta, discs_per_batch=1)

    def hotspot_settings(self, augmentations, seed):
        """(copies per disc, seed) the hotspots will use."""
        return int(augmentations), seed

    def hotspots(self, volumes, classes, augmentations=HOTSPOT_AUGMENTATIONS, seed=0):
        """{task: TaskHotspots} for the given class of every task (``classes``: {task: (n,)})."""
        return self._hotspots.explain(volumes, tasks.TASK_NAMES, classes=classes,
                                      augmentations=augmentations, seed=seed)


class SavedModelPredictor:
    """Grades (and hotspots, when the export has the signature) from an export."""

    def __init__(self, export_dir):
        from spine_tf.serving import export
        self.loaded = export.load(export_dir)
        self.metadata = export.read_metadata(export_dir)
        self.source = export_dir
        self.description = (f"{export_dir} (SavedModel, spine_tf "
                            f"{self.metadata.get('package_version')}, "
                            f"{self.metadata.get('parameters', 0):,} parameters)")

    def probabilities(self, volumes, tta=True):
        import tensorflow as tf
        from spine_tf.serving import export
        signature = self.loaded.signatures["predict_tta" if tta else "serving_default"]
        return export.signature_probabilities(signature(disc_volume=tf.constant(volumes)))

    def hotspot_settings(self, augmentations, seed):
        """The export fixes the copies per disc and the seed (its metadata says which)."""
        return int(self.metadata.get("hotspot_augmentations", 0)), 0

    def hotspots(self, volumes, classes, augmentations=None, seed=None):
        """{task: TaskHotspots} through the export's ``hotspots`` signature (its settings)."""
        if "hotspots" not in self.loaded.signatures:
            raise PredictError(f"{self.source}: this export has no hotspots signature; use "
                               "--no-hotspots, or a .keras model")
        import tensorflow as tf
        from spine_tf.serving import export
        from spine_tf.hotspots import TaskHotspots
        single = export.signature_probabilities(
            self.loaded.signatures["serving_default"](disc_volume=tf.constant(volumes)))
        out = {}
        for task, p in zip(tasks.TASKS, single):
            chosen = np.asarray(classes[task.name], np.int32)
            maps = self.loaded.signatures["hotspots"](
                disc_volume=tf.constant(volumes), task=tf.constant(task.name),
                class_index=tf.constant(chosen))["hotspots"].numpy()
            out[task.name] = TaskHotspots(task.name, maps, chosen,
                                          p[np.arange(len(p)), chosen], p.argmax(axis=1))
        return out


def load_predictor(path):
    """A predictor for a ``.keras`` file, a run directory, a SavedModel or a model base folder.

    A model base folder (``saved_models/<name>``) gives its highest version.

    Raises:
        PredictError: nothing usable at ``path``.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "saved_model.pb")):
            return SavedModelPredictor(path)
        best = os.path.join(path, "best.keras")
        if os.path.exists(best):
            path = best
        else:
            from spine_tf.serving.export import versions
            complete = [v for v in versions(path)
                        if os.path.exists(os.path.join(path, str(v), "saved_model.pb"))]
            if complete:
                return SavedModelPredictor(os.path.join(path, str(complete[-1])))
            raise PredictError(f"{path}: not a SavedModel (no saved_model.pb), a model base "
                               "folder (no numbered versions) or a run directory (no best.keras)")
    if not os.path.isfile(path):
        raise PredictError(f"{path}: no such model")
    if not path.endswith(".keras"):
        raise PredictError(f"{path}: a model is a .keras file, a run directory or a SavedModel")
    from spine_tf.modeling.model import load_model
    try:
        model = load_model(path)
    except Exception as error:  # Keras raises many kinds on a broken file
        raise PredictError(f"{path}: cannot load the model: {error}") from error
    return KerasPredictor(model, path)


# ------------------------------------------------------------------ one scan

def _disc_records(volumes, located, probabilities, skipped):
    by_level = {d.level: d for d in located.discs}
    discs = []
    for n, volume in enumerate(volumes):
        place = by_level[volume.level]
        record = {"level": volume.level, "centre_voxel": [float(v) for v in place.centre],
                  "height_mm": float(place.height_mm), "confidence": float(volume.confidence),
                  "flagged": bool(volume.confidence < LOW_CONFIDENCE), "tasks": {}}
        for task, p in zip(tasks.TASKS, probabilities):
            grade = int(np.argmax(p[n]))
            record["tasks"][task.name] = {
                "grade": grade, "class_name": task.class_names[grade],
                "probability": float(p[n][grade]),
                "probabilities": [float(v) for v in p[n]]}
        discs.append(record)
    return {"discs": discs, "not_graded": [{"level": level, "reason": reason}
                                           for level, reason in skipped]}


def extract_scan(job, detector=None):
    """Reads a job's scan, localises and extracts its discs.

    The job's mask or landmarks localise the discs; without either,
    ``detector`` (``spine_tf.detection``) finds them.

    Returns:
        (scan, localisation, DiscVolumes top to bottom, skipped (level, reason)).

    Raises:
        ScanError, PredictError: unreadable files, nothing to localise with,
            or no disc extracted.
    """
    from spine_tf import detection, extraction, localisation
    from spine_tf.io.scan import read_scan
    if not job.mask and not job.landmarks and detector is None:
        raise PredictError(f"{job.scan}: no mask or landmarks file for this scan and no "
                           "detector (give --masks, --landmarks or --detector)")
    scan = read_scan(job.scan)
    located = localisation.localise(
        scan, mask_path=job.mask, landmarks_path=job.landmarks,
        detect=None if detector is None else functools.partial(detection.detect,
                                                               detector=detector))
    volumes, skipped = extraction.extract(scan, located)
    if not volumes:
        reasons = "; ".join(f"{level}: {reason}" for level, reason in skipped) or "none found"
        raise PredictError(f"{job.scan}: no disc could be extracted ({reasons})")
    return scan, located, volumes, skipped


def _localisation_source(job, detector):
    if job.mask or job.landmarks:
        return os.path.abspath(job.mask or job.landmarks)
    return f"detector {getattr(detector, 'source', detector.name)}"


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
              "localisation": _localisation_source(job, detector),
              "localisation_notes": list(located.notes),
              "model": predictor.description, "tta": bool(tta),
              "written": datetime.datetime.now().isoformat(timespec="seconds"),
              **_disc_records(volumes, located, probabilities, skipped)}
    levels = [v.level for v in volumes]
    target = os.path.join(out_dir, job.name)
    tmp = os.path.join(out_dir, f".tmp-{uuid.uuid4().hex[:12]}-{job.name}")
    os.makedirs(tmp)
    try:
        report.save_png(report.montage(list(stacked), levels), os.path.join(tmp, "discs.png"))
        pictures = {}
        if hotspots:
            from spine_tf import hotspots as hotspots_lib
            classes = {t.name: p.argmax(axis=1) for t, p in zip(tasks.TASKS, probabilities)}
            augmentations, seed = predictor.hotspot_settings(augmentations, seed)
            per_task = predictor.hotspots(stacked, classes, augmentations, seed)
            for task in tasks.TASKS:
                pictures[task.name] = f"hotspots_{task.name}.png"
                report.save_png(hotspots_lib.overlay_pictures(stacked, per_task[task.name],
                                                              levels),
                                os.path.join(tmp, pictures[task.name]))
            transforms = np.stack([v.voxel_to_scan for v in volumes])
            hotspots_lib.save_scan_hotspots(os.path.join(tmp, NIFTI_NAME), scan, per_task,
                                            transforms)
            record["hotspots"] = {"nifti": NIFTI_NAME, "volumes": list(tasks.TASK_NAMES),
                                  "augmentations": int(augmentations), "seed": seed}
        with open(os.path.join(tmp, GRADES_NAME), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
        with open(os.path.join(tmp, REPORT_NAME), "w", encoding="utf-8") as f:
            f.write(scan_page(record, pictures))
        old = None
        if os.path.exists(target):
            old = os.path.join(out_dir, f".old-{uuid.uuid4().hex[:12]}-{job.name}")
            os.rename(target, old)
        os.rename(tmp, target)
        if old:
            shutil.rmtree(old)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    return record


# -------------------------------------------------------------------- HTML

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: center; }
th { background: #eee; }
td.flagged, span.flagged, p.flagged { color: #b00; font-weight: bold; }
small { color: #666; }
img { max-width: 100%; border: 1px solid #ccc; }
.failed { color: #b00; }
"""


def _page(title, body):
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")


def scan_page(record, pictures):
    """The HTML report of one scan: grades table, montages, model (self-contained, offline)."""
    e = html.escape
    head = "".join(f"<th>{e(t.name.replace('_', ' '))}</th>" for t in tasks.TASKS)
    rows = []
    for disc in record["discs"]:
        cells = []
        for task in tasks.TASKS:
            result = disc["tasks"][task.name]
            shade = result["grade"] / (task.num_classes - 1)
            cells.append(f"<td style=\"background: rgba(230, 120, 30, {0.5 * shade:.2f})\">"
                         f"{e(result['class_name'])}<br>"
                         f"<small>p = {result['probability']:.2f}</small></td>")
        flag = (" <span class=\"flagged\">(low localisation confidence "
                f"{disc['confidence']:.2f}: check it)</span>") if disc["flagged"] else ""
        rows.append(f"<tr><th>{e(disc['level'])}{flag}</th>{''.join(cells)}</tr>")
    parts = [f"<h1>{e(record['name'])}</h1>",
             f"<p>Scan: <code>{e(record['scan'])}</code><br>Discs localised from: "
             f"<code>{e(record['localisation'])}</code><br>Model: {e(record['model'])}<br>"
             f"Test-time augmentation: {'54 views' if record['tta'] else 'off'}</p>",
             *(f"<p class=\"flagged\">Detector: {e(note)}</p>"
               for note in record.get("localisation_notes", [])),
             f"<table><tr><th>level</th>{head}</tr>{''.join(rows)}</table>",
             "<p><small>Each cell: the predicted class and its probability; the higher "
             "the class, the darker the shade.</small></p>"]
    if record["not_graded"]:
        parts.append("<h2>Not graded</h2><ul>" + "".join(
            f"<li>{e(d['level'])}: {e(d['reason'])}</li>" for d in record["not_graded"])
            + "</ul>")
    parts.append("<h2>Disc volumes</h2><p><small>Slices 1..9 of every disc, top to bottom."
                 "</small></p><img src=\"discs.png\" alt=\"disc volumes\">")
    if pictures:
        parts.append("<h2>Evidence hotspots</h2><p><small>Where the evidence for each "
                     "predicted class lies (brighter = more), from "
                     f"{record['hotspots']['augmentations']} augmented copies per disc. The "
                     f"same maps in the scan's grid: <code>{NIFTI_NAME}</code> (one volume per "
                     "task, in table order).</small></p>")
        for task in tasks.TASKS:
            parts.append(f"<h3>{e(task.description)}</h3>"
                         f"<img src=\"{e(pictures[task.name])}\" alt=\"{e(task.name)}\">")
    parts.append(f"<p><small>spine_tf; written {e(record.get('written', ''))}</small></p>")
    return _page(f"spine_tf: {record['name']}", "\n".join(parts))


def index_page(summary):
    """The HTML index of a run: one line per scan, links to the reports, failures."""
    e = html.escape
    items = []
    for scan in summary["scans"]:
        if scan["status"] == "done":
            items.append(f"<li><a href=\"{e(scan['name'])}/{REPORT_NAME}\">{e(scan['name'])}"
                         f"</a>: {scan['discs']} discs graded</li>")
        else:
            items.append(f"<li class=\"failed\">{e(scan['name'])}: failed: "
                         f"{e(scan['reason'])}</li>")
    done = sum(s["status"] == "done" for s in summary["scans"])
    body = (f"<h1>spine_tf predictions</h1><p>Model: {e(summary['model'])}<br>"
            f"{done} of {len(summary['scans'])} scans graded; all grades in "
            f"<a href=\"{CSV_NAME}\">{CSV_NAME}</a>.</p><ul>{''.join(items)}</ul>")
    return _page("spine_tf predictions", body)


# ------------------------------------------------------------------- cohort

def csv_header():
    header = ["scan", "level", "confidence", "flagged"]
    for task in tasks.TASKS:
        header += [f"{task.name}_grade", f"{task.name}_class", f"{task.name}_probability"]
    return header


def csv_rows(record):
    rows = []
    for disc in record["discs"]:
        row = [record["name"], disc["level"], f"{disc['confidence']:.3f}", int(disc["flagged"])]
        for task in tasks.TASKS:
            result = disc["tasks"][task.name]
            row += [result["grade"], result["class_name"], f"{result['probability']:.4f}"]
        rows.append(row)
    return rows


def _write_cohort(out_dir, summary, rows):
    write_csv(os.path.join(out_dir, CSV_NAME), [csv_header()] + rows)
    write_json(os.path.join(out_dir, SUMMARY_NAME), summary)
    write_text(os.path.join(out_dir, INDEX_NAME), index_page(summary))


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
            rows += csv_rows(record)
        summary["scans"].append(entry)
        _write_cohort(out_dir, summary, rows)
    return summary


__all__ = ["INDEX_NAME", "KerasPredictor", "LOW_CONFIDENCE", "PredictError",
           "SavedModelPredictor", "ScanJob", "csv_header", "csv_rows", "extract_scan",
           "find_scans", "index_page", "load_predictor", "predict_scan", "run", "scan_page"]
