"""Data sources: patients as (scan, localisation, labels), whatever their origin.

Three sources feed the TFDS builder and the command line:

- ``phantom``: generated in memory from ``(seed, index)``;
- ``folder``: a folder laid out as ``spine_tf.phantom.cohort`` writes it::

      scans/<patient>.nii.gz       (or .nii / .mha, or a DICOM folder scans/<patient>/:
                                   a series, or a study read as its sagittal T2)
      masks/<patient>.nii.gz       label mask, SPIDER convention or 1 = disc / 2 = body
      landmarks/<patient>.json     instead of a mask (spine_tf.io.landmarks)
      lesions/<patient>.nii.gz     optional 4D lesion masks (phantoms): one channel per
                                   lesion task, value = disc label - 200 of the disc
      labels.csv                   spine_tf.io.labels

- ``spider``: the public SPIDER set (``images/<id>_t2.mha``,
  ``masks/<id>_t2.mha``, ``radiological_gradings.csv``), mapped as
  ``SPIDER_MAPPING`` says.

Every patient becomes a ``PatientRecord``; ``disc_examples`` cuts its disc
volumes.
"""

import csv
import dataclasses
import glob
import hashlib
import os

import numpy as np

from spine_tf import localisation, tasks
from spine_tf.extraction import extract, lesion_boxes
from spine_tf.io import scan as scan_io
from spine_tf.io.scan import ScanError, read_mask, read_scan, scan_from_array

SPLITS = ("train", "validation", "test")
SPLIT_PERCENT = (80, 10, 10)
SCAN_SUFFIXES = scan_io.NIFTI_SUFFIXES + scan_io.ITK_SUFFIXES

SPIDER_MAPPING = """\
SPIDER radiological_gradings.csv -> spine_tf labels (the spider task set, and the
paper's where SPIDER has them):
- Pfirrman grade 1..5 -> pfirrmann 0..4.
- Disc narrowing 0/1 -> narrowed 0/1; for the paper's four-grade narrowing, 0 -> 0 and
  1 -> 1 (meaning "narrowed, grade unknown": score it with the binary protocol).
- UP endplate / LOW endplate -> endplate_upper / endplate_lower.
- Modic 0..3 -> modic 0 (none) / 1 (any type): SPIDER does not say on which side of
  the disc a change lies, so the paper's marrow_upper and marrow_lower stay missing
  (-1). Keeping only the Modic-0 discs would give those heads negatives only (a
  one-class task that "learns" to say normal and scores 100 % balanced accuracy).
- Disc herniation, Disc bulging, Spondylolisthesis 0/1 -> herniation, bulging,
  spondylolisthesis.
- IVD label N is mask label 200 + N (201 = L5-S1); levels above T12-L1 are skipped.
- An empty cell is a missing label (-1).
"""


@dataclasses.dataclass
class PatientRecord:
    """One patient ready for extraction."""

    patient_id: str
    scan: object  # spine_tf.io.Scan
    localisation: localisation.Localisation
    labels: dict  # level -> {task: int}
    reread: dict  # level -> {task: int}
    lesions: np.ndarray = None  # (slices, rows, cols, lesion tasks), internal frame
    series: str = None  # the scan's own name where a patient has several; None: patient_id

    @property
    def scan_id(self):
        return self.series or self.patient_id


def split_of(patient_id, percent=SPLIT_PERCENT):
    """The split of a patient: ``percent`` (train, validation, test; default 80/10/10) by a
    hash of its id (stable, order-free)."""
    bucket = int(hashlib.sha256(patient_id.encode()).hexdigest()[:8], 16) % 100
    if bucket < percent[0]:
        return SPLITS[0]
    if bucket < percent[0] + percent[1]:
        return SPLITS[1]
    return SPLITS[2]


def disc_examples(record):
    """Extracts a patient's labelled discs.

    Returns:
        (examples, skipped): ``examples`` is a list of dicts with keys
        ``patient_id``, ``series`` (the scan), ``level``, ``disc_volume``
        (float32), ``labels``, ``labels_reread``, ``voxel_to_scan``,
        ``spacing_mm``, ``confidence``, ``position_source`` (the
        Localisation's ``source``), ``lesion_boxes``; ``skipped`` lists (level, reason)
        for discs that have
        labels but could not be extracted.
    """
    volumes, skipped = extract(record.scan, record.localisation)
    missing = {}
    examples = []
    for volume in volumes:
        if volume.level not in record.labels:
            continue
        if record.lesions is not None:
            number = tasks.disc_label_of_level(volume.level) - 200
            boxes = lesion_boxes(record.lesions, volume.voxel_to_scan, number)
        else:
            boxes = -np.ones((len(tasks.LESION_TASKS), volume.volume.shape[-1], 4), np.float32)
        examples.append({
            "patient_id": record.patient_id,
            "series": record.scan_id,
            "level": volume.level,
            "disc_volume": volume.volume,
            "labels": record.labels[volume.level],
            "labels_reread": record.reread.get(volume.level, missing),
            "voxel_to_scan": volume.voxel_to_scan,
            "spacing_mm": np.asarray(record.scan.spacing_mm, np.float32),
            "confidence": np.float32(volume.confidence),
            "position_source": record.localisation.source,
            "lesion_boxes": boxes,
        })
    skipped = [(level, reason) for level, reason in skipped if level in record.labels]
    accounted = {example["level"] for example in examples} | {level for level, _ in skipped}
    for level in tasks.LEVELS:
        if level in record.labels and level not in accounted:
            skipped.append((level, "labelled, but the disc is not in the mask or landmarks"))
    return examples, skipped


# ------------------------------------------------------------------ phantom

def phantom_record(seed, index, config):
    """PatientRecord of phantom patient ``index`` (localised from its mask)."""
    from spine_tf.phantom import make_patient
    patient = make_patient(seed, index, config)
    scan = scan_from_array(patient.image.astype(np.float32), patient.spacing_mm, patient.affine,
                           path=patient.patient_id)
    return PatientRecord(
        patient_id=patient.patient_id, scan=scan,
        localisation=localisation.from_mask(patient.mask, patient.spacing_mm),
        labels={level: patient.labels[level] for level in patient.levels},
        reread={level: patient.reread[level] for level in patient.levels},
        lesions=patient.lesions)


# ------------------------------------------------------------------- folder

def find_scan(folder, patient_id, suffixes=SCAN_SUFFIXES, dicom=False):
    """Path of a patient's file in ``folder`` with one of ``suffixes`` (with ``dicom``, or
    its DICOM folder ``folder/<patient>/``), or None."""
    for suffix in suffixes:
        path = os.path.join(folder, patient_id + suffix)
        if os.path.exists(path):
            return path
    path = os.path.join(folder, patient_id)
    return path if dicom and os.path.isdir(path) else None


def folder_patients(manual_dir):
    """Patient ids of a folder source, checking its layout.

    Raises:
        ScanError: naming what is missing (scans/, labels.csv).
    """
    scans = os.path.join(manual_dir, "scans")
    labels = os.path.join(manual_dir, "labels.csv")
    missing = [p for p in (scans, labels) if not os.path.exists(p)]
    if missing:
        raise ScanError(f"{manual_dir}: not a spine_tf folder source; missing "
                        f"{', '.join(missing)} (see the README, 'Folder layout')")
    return _ids_in(scans, SCAN_SUFFIXES, dicom=True)


def annotated_scans(manual_dir):
    """(patient id, scan path, mask path) of every scan with a label mask in a folder.

    Either layout: a folder source (``scans/`` + ``masks/``; 2D images with
    ``.npy``/``.png`` masks allowed) or a SPIDER folder (``images/<id>_t2.mha``
    + ``masks/<id>_t2.mha``). No labels are needed (detector training).

    Raises:
        ScanError: the folder has neither layout.
    """
    masks = os.path.join(manual_dir, "masks")
    spider_images = os.path.join(manual_dir, "images")
    if os.path.isdir(spider_images) and os.path.isdir(masks):
        found = []
        for path in sorted(glob.glob(os.path.join(spider_images, "*_t2.mha"))):
            mask = os.path.join(masks, os.path.basename(path))
            if os.path.exists(mask):
                found.append((os.path.basename(path)[: -len("_t2.mha")], path, mask))
        return found
    scans = os.path.join(manual_dir, "scans")
    if not (os.path.isdir(scans) and os.path.isdir(masks)):
        raise ScanError(f"{manual_dir}: no scans/ and masks/ (folder layout) or images/ and "
                        "masks/ (SPIDER layout) to read annotated scans from")
    found = []
    for patient_id in _ids_in(scans, SCAN_SUFFIXES + scan_io.IMAGE_2D_SUFFIXES):
        scan = find_scan(scans, patient_id, SCAN_SUFFIXES + scan_io.IMAGE_2D_SUFFIXES)
        mask = find_scan(masks, patient_id, SCAN_SUFFIXES + scan_io.MASK_2D_SUFFIXES)
        if mask:
            found.append((patient_id, scan, mask))
    return found


def _ids_in(folder, suffixes, dicom=False):
    """Names (without suffix) of the files in ``folder`` with one of ``suffixes`` (with
    ``dicom``, and of its sub-folders: DICOM series or studies)."""
    ids = set()
    for name in os.listdir(folder):
        if name.startswith("."):  # hidden and half-written (atomic_path) files
            continue
        if dicom and os.path.isdir(os.path.join(folder, name)):
            ids.add(name)
            continue
        for suffix in suffixes:
            if name.endswith(suffix) and len(name) > len(suffix):
                ids.add(name[: -len(suffix)])
                break
    return sorted(ids)


def folder_record(manual_dir, patient_id, labels_table):
    """Reads one patient of a folder source.

    Args:
        manual_dir: the folder.
        patient_id: the patient.
        labels_table: the result of ``spine_tf.io.labels.read_labels``.

    Raises:
        ScanError: the scan, mask, landmarks or lesion masks cannot be read,
            or neither a mask nor landmarks exist.
    """
    scan_path = find_scan(os.path.join(manual_dir, "scans"), patient_id, dicom=True)
    if scan_path is None:
        raise ScanError(f"{os.path.join(manual_dir, 'scans', patient_id)}.*: no scan file "
                        f"(suffixes {', '.join(SCAN_SUFFIXES)}) or DICOM folder")
    scan = read_scan(scan_path)
    mask_path = find_scan(os.path.join(manual_dir, "masks"), patient_id)
    landmarks_path = os.path.join(manual_dir, "landmarks", patient_id + ".json")
    if not mask_path and not os.path.exists(landmarks_path):
        raise ScanError(f"{scan.path}: no mask (masks/{patient_id}.*) and no landmarks "
                        f"(landmarks/{patient_id}.json) to localise the discs")
    located = localisation.localise(scan, mask_path=mask_path, landmarks_path=landmarks_path)
    lesions_path = find_scan(os.path.join(manual_dir, "lesions"), patient_id)
    lesions = read_lesions(lesions_path, scan) if lesions_path else None
    labels, reread = {}, {}
    for (pid, level), (first, second) in labels_table.items():
        if pid == patient_id:
            labels[level], reread[level] = first, second
    return PatientRecord(patient_id, scan, located, labels, reread, lesions)


def read_lesions(path, scan):
    """Reads 4D lesion masks (slices, rows, cols, lesion tasks) as uint8 disc numbers.

    Raises:
        ScanError: naming the file when it is unreadable, does not match the
            scan, has another number of channels than there are lesion tasks,
            or holds values that are not disc numbers (0 or 1..len(LEVELS)).
    """
    lesions = read_mask(path, scan)
    expected = len(tasks.LESION_TASKS)
    if lesions.ndim != 4 or lesions.shape[-1] != expected:
        channels = lesions.shape[-1] if lesions.ndim == 4 else 1
        raise ScanError(f"{path}: lesion masks need {expected} channels (one per lesion task: "
                        f"{', '.join(t.name for t in tasks.LESION_TASKS)}), got {channels}")
    if lesions.min() < 0 or lesions.max() > len(tasks.LEVELS):
        raise ScanError(f"{path}: lesion mask values must be 0 or a disc number 1.."
                        f"{len(tasks.LEVELS)} (disc label - 200), got {lesions.min()}.."
                        f"{lesions.max()}")
    return lesions.astype(np.uint8)


# ------------------------------------------------------------------- SPIDER

def spider_patients(manual_dir):
    """Patient ids of a SPIDER folder (those with a T2 image and mask)."""
    expected = [os.path.join(manual_dir, p) for p in
                ("images", "masks", "radiological_gradings.csv")]
    missing = [p for p in expected if not os.path.exists(p)]
    if missing:
        raise ScanError(f"{manual_dir}: not a SPIDER folder; missing {', '.join(missing)}")
    ids = []
    for path in sorted(glob.glob(os.path.join(manual_dir, "images", "*_t2.mha"))):
        patient = os.path.basename(path)[: -len("_t2.mha")]
        if os.path.exists(os.path.join(manual_dir, "masks", f"{patient}_t2.mha")):
            ids.append(patient)
    return ids


def read_spider_gradings(path):
    """SPIDER gradings as {(patient, level): labels} (see SPIDER_MAPPING).

    Raises:
        ScanError: naming the file and line for a missing column, a value
            that is not a number or is outside its grading's range, or a disc
            graded twice.
    """
    table = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(enumerate(reader, start=2))
    except OSError as error:
        raise ScanError(f"{path}: cannot read SPIDER gradings: {error}") from error
    missing = [c for c in SPIDER_COLUMNS_USED if c not in (reader.fieldnames or ())]
    if missing:
        raise ScanError(f"{path}: SPIDER gradings lack column(s) {', '.join(missing)}")
    for line, row in rows:
        try:
            level = tasks.level_of_disc_label(200 + int(row["IVD label"]))
            if level is None:
                continue
            key = (row["Patient"].strip(), level)
            labels = spider_labels(row)
        except (KeyError, ValueError, TypeError, AttributeError) as error:
            raise ScanError(f"{path}: line {line}: cannot read SPIDER grading "
                            f"({type(error).__name__}: {error})") from error
        if key in table:
            raise ScanError(f"{path}: line {line}: disc {key} is graded twice")
        table[key] = labels
    return table


# SPIDER column, lowest valid value, highest valid value.
_SPIDER_RANGES = {"Modic": (0, 3), "UP endplate": (0, 1), "LOW endplate": (0, 1),
                  "Disc narrowing": (0, 1), "Pfirrman grade": (1, 5),
                  "Disc herniation": (0, 1), "Disc bulging": (0, 1),
                  "Spondylolisthesis": (0, 1)}
SPIDER_COLUMNS_USED = ("Patient", "IVD label") + tuple(_SPIDER_RANGES)


def spider_labels(row):
    """The task labels of one row of SPIDER's radiological_gradings.csv: the spider task
    set's and the paper's.

    Args:
        row: dict of the SPIDER columns (strings or numbers).

    Returns:
        dict task -> int (-1 missing), mapped as SPIDER_MAPPING says.

    Raises:
        KeyError: a column is missing; ValueError: a value is not an integer or
            is outside its range.
    """
    values = {}
    for column, (low, high) in _SPIDER_RANGES.items():
        text = str(row[column]).strip()
        if text in ("", "nan", "NA"):
            values[column] = None
            continue
        number = float(text)
        if not (number.is_integer() and low <= number <= high):
            raise ValueError(f"{column} {text!r} is not an integer in {low}..{high}")
        values[column] = int(number)

    def label(value, offset=0):
        return tasks.MISSING_LABEL if value is None else value - offset

    marrow = tasks.MISSING_LABEL  # see SPIDER_MAPPING
    modic = values["Modic"]
    return {
        "pfirrmann": label(values["Pfirrman grade"], offset=1),
        "narrowing": label(values["Disc narrowing"]),
        "endplate_upper": label(values["UP endplate"]),
        "endplate_lower": label(values["LOW endplate"]),
        "marrow_upper": marrow,
        "marrow_lower": marrow,
        "narrowed": label(values["Disc narrowing"]),
        "modic": tasks.MISSING_LABEL if modic is None else int(modic > 0),
        "herniation": label(values["Disc herniation"]),
        "bulging": label(values["Disc bulging"]),
        "spondylolisthesis": label(values["Spondylolisthesis"]),
    }


def spider_record(manual_dir, patient_id, gradings):
    """Reads one SPIDER patient (T2 image, mask, gradings)."""
    scan = read_scan(os.path.join(manual_dir, "images", f"{patient_id}_t2.mha"))
    mask = read_mask(os.path.join(manual_dir, "masks", f"{patient_id}_t2.mha"), scan)
    labels = {level: value for (pid, level), value in gradings.items() if pid == patient_id}
    return PatientRecord(patient_id, scan, localisation.from_mask(mask, scan.spacing_mm),
                         labels, reread={})
