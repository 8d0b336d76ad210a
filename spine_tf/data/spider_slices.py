"""The SPIDER slices layout: single real sagittal T2 slices with SPIDER's gradings.

A folder in this layout holds::

    images/<series>.png          one upright slice (top: head, left: anterior);
                                 .jpg, .jpeg, .tif, .tiff or .bmp as well
    series.csv                   series, patient, sequence, rows, columns,
                                 row_spacing_mm, column_spacing_mm, ...
    radiological_gradings.csv    SPIDER's gradings (Patient, IVD label, ...)
    boxes.csv                    optional: series, from_bottom, x0, y0, x1, y1
                                 (pixels, x = column; from_bottom 1 = the lowest disc)

``read_slices`` reads the images' list with their listed pixel spacing and
disc boxes. The listed spacing is the DICOM one of the original series and is
wrong for some images that were resampled before export: callers decide
whether to use it (``SpiderSlice.spacing_mm``) or let the detector estimate it.

How the ``spider_slices`` dataset places and names each image's discs
(``positions``): from its boxes where they are as many as the patient's graded
discs (every IVD label from 1 up graded, so box N from the bottom is IVD label
N), else from the disc detector, which names the lowest disc it finds above the
sacrum L5-S1; without a detector such an image is skipped. Where the detector runs, it
checks the boxes as well: an image whose boxes hold none of its discs, or one of whose
boxes holds two of them, is left out (``boxes_contradicted``). Each disc records which
(``position_source``).
Thoracic discs (IVD label 7 and up) have no level in ``tasks.LEVELS``: their boxes
shape their neighbours' bodies but they are not examples (docs/data.md). Extraction
sizes the region from the disc and its bodies, so only the ratio of row to column
spacing shapes a volume, not the pixel size itself.
"""

import csv
import dataclasses
import os

import numpy as np

from spine_tf import localisation
from spine_tf.data.sources import PatientRecord
from spine_tf.io.formats import IMAGE_2D_SUFFIXES, ScanError
from spine_tf.io.scan import read_scan
from spine_tf.phantom.anatomy import anatomical_pixel_size

SERIES_CSV = "series.csv"
BOXES_CSV = "boxes.csv"
GRADINGS_CSV = "radiological_gradings.csv"
IMAGES = "images"
SPACING_TOLERANCE = 0.2
"""Largest relative difference between a listed pixel size and the one the discs' spacing
gives before the build report says they disagree."""
SPLIT_PERCENT = (60, 20, 20)
"""Train / validation / test shares of the patients: 165 patients hold too few discs for
the usual 10 % to measure a grade with a useful interval."""


@dataclasses.dataclass(frozen=True)
class DiscBox:
    """A disc's box on a slice: ``from_bottom`` 1 is the lowest disc (L5-S1 in a spine
    without a transitional vertebra); pixel edges, x along columns."""

    from_bottom: int
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def centre(self):
        """(row, col) of the box's centre, pixels."""
        return np.array([(self.y0 + self.y1) / 2, (self.x0 + self.x1) / 2])

    def encloses(self, row, col):
        """Whether (row, col) lies in the box, its edges included."""
        return self.y0 <= row <= self.y1 and self.x0 <= col <= self.x1

    def holds(self, row, col):
        """Whether (row, col) lies in the central half of the box (a quarter of its height
        and width either side of its centre)."""
        centre = self.centre
        return (abs(row - centre[0]) <= (self.y1 - self.y0) / 4
                and abs(col - centre[1]) <= (self.x1 - self.x0) / 4)


@dataclasses.dataclass(frozen=True)
class SpiderSlice:
    """One image of the layout: its series, patient, file, listed (row, col) pixel spacing
    and disc boxes (lowest first; empty where boxes.csv has none)."""

    series: str
    patient: str
    path: str
    spacing_mm: tuple
    boxes: tuple = ()

    @property
    def row_boxes(self):
        """The boxes as ``localisation.from_boxes`` and ``box_mask`` take them:
        (from_bottom, (row0, col0, row1, col1))."""
        return [(b.from_bottom, (b.y0, b.x0, b.y1, b.x1)) for b in self.boxes]


def _rows(path):
    if not os.path.isfile(path):
        raise ScanError(f"{path}: missing (the SPIDER slices layout needs it)")
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def image_path(manual_dir, series):
    """The image file of a series (``images/<series>`` with the first of
    ``IMAGE_2D_SUFFIXES`` found), or None where there is none."""
    for suffix in IMAGE_2D_SUFFIXES:
        path = os.path.join(manual_dir, IMAGES, series + suffix)
        if os.path.isfile(path):
            return path
    return None


def read_slices(manual_dir, on_missing=None):
    """Every image of a folder in the SPIDER slices layout, in series.csv's order.

    Args:
        manual_dir: a folder in the layout.
        on_missing: called with (patient, path, message) for each listed image without a
            file, which is then left out, so that one missing image does not stop a batch;
            None raises instead.

    Raises:
        ScanError: series.csv missing or without its columns, an image missing (without
            ``on_missing``), or a box row that names no listed series; each message names
            the file.
    """
    series_csv = os.path.join(manual_dir, SERIES_CSV)
    rows = _rows(series_csv)
    boxes = {}
    boxes_csv = os.path.join(manual_dir, BOXES_CSV)
    if os.path.exists(boxes_csv):
        for n, row in enumerate(_rows(boxes_csv), start=2):
            try:
                box = DiscBox(int(row["from_bottom"]),
                              *(float(row[k]) for k in ("x0", "y0", "x1", "y1")))
            except (KeyError, TypeError, ValueError) as error:
                raise ScanError(f"{boxes_csv}, line {n}: not a box "
                                f"(series, from_bottom, x0, y0, x1, y1): {error}") from error
            boxes.setdefault(row["series"], []).append(box)
    slices = []
    for n, row in enumerate(rows, start=2):
        try:
            series, patient = row["series"], row["patient"]
            spacing = (float(row["row_spacing_mm"]), float(row["column_spacing_mm"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ScanError(f"{series_csv}, line {n}: needs series, patient, row_spacing_mm "
                            f"and column_spacing_mm: {error}") from error
        image_boxes = tuple(sorted(boxes.pop(series, []), key=lambda b: b.from_bottom))
        path = image_path(manual_dir, series)
        if path is None:
            path = os.path.join(manual_dir, IMAGES, series + IMAGE_2D_SUFFIXES[0])
            message = f"{path}: missing (listed in {series_csv}, line {n})"
            if on_missing is None:
                raise ScanError(message)
            on_missing(patient, path, message)
            continue
        slices.append(SpiderSlice(series, patient, path, spacing, image_boxes))
    if boxes:
        raise ScanError(f"{boxes_csv}: boxes for series not in {SERIES_CSV}: "
                        f"{', '.join(sorted(boxes))}")
    return slices


def graded_numbers(gradings_path):
    """{patient: sorted IVD labels graded} of SPIDER's gradings, thoracic discs included.

    Raises:
        ScanError: the file is missing or a row lacks Patient / IVD label.
    """
    graded = {}
    for n, row in enumerate(_rows(gradings_path), start=2):
        try:
            graded.setdefault(row["Patient"].strip(), []).append(int(row["IVD label"]))
        except (KeyError, AttributeError, ValueError) as error:
            raise ScanError(f"{gradings_path}, line {n}: needs Patient and an integer "
                            f"IVD label: {error}") from error
    return {patient: sorted(numbers) for patient, numbers in graded.items()}


def boxes_name_levels(image, numbers):
    """Whether an image's boxes are the patient's graded discs, one each: as many boxes as
    graded discs, graded 1 upwards with no gap."""
    return bool(image.boxes) and numbers == list(range(1, len(image.boxes) + 1))


def spacing_check(image, located):
    """The listed row spacing of a boxed image beside the pixel size at which its discs
    (``located``, from its boxes) lie as far apart as a typical spine's
    (``phantom.anatomy.anatomical_pixel_size``): a dict with ``file``, ``listed_mm``,
    ``anatomy_mm`` and ``agrees`` (within ``SPACING_TOLERANCE``), or None with too few
    lumbar discs."""
    estimate = anatomical_pixel_size(located)
    if estimate is None:
        return None
    listed = float(image.spacing_mm[0])
    return {"file": image.path, "listed_mm": listed, "anatomy_mm": round(estimate, 3),
            "agrees": bool(abs(estimate / listed - 1) <= SPACING_TOLERANCE)}


CONTRADICTING_DISCS = 3
"""Discs a detection must place, none of them in a box, to contradict an image's boxes."""


def boxes_contradicted(image, detected):
    """Why a detection (a Localisation in the image's pixels) contradicts an image's boxes,
    or None where it does not:

    - it places at least ``CONTRADICTING_DISCS`` discs and not one of them lies in the
      central half of a box: boxes drawn off the discs (two images of ../shared have
      theirs on the vertebral bodies, half a level up) would teach a disc's grades on a
      body;
    - from the bottom, every box holds one of its discs but one box, which holds two, and
      at least ``CONTRADICTING_DISCS`` boxes hold one (the boxes above the discs found,
      thoracic ones, may hold none): a box drawn over two discs (two images of ../shared
      have box 1 over L5-S1 and L4-L5 together), so that each box above it names the disc
      below its own.
    """
    discs = [disc.centre[1:] for disc in detected.discs]
    if len(discs) >= CONTRADICTING_DISCS and not any(box.holds(*centre) for centre in discs
                                                     for box in image.boxes):
        return (f"none of the {len(discs)} discs the detector found lies in one of its "
                f"{len(image.boxes)} boxes (boxes off the discs?)")
    counts = [sum(box.encloses(*centre) for centre in discs) for box in image.boxes]
    while counts and counts[-1] == 0:  # boxes above the discs found (thoracic ones)
        counts.pop()
    if (counts.count(2) == 1 and counts.count(1) == len(counts) - 1
            and len(counts) > CONTRADICTING_DISCS):
        box = image.boxes[counts.index(2)]
        return (f"box {box.from_bottom} holds two of the discs the detector found, where "
                "each other box holds one (a box over two discs, every level above it one "
                "off?)")
    return None


def positions(image, numbers, detect=None):
    """Where an image's discs are: a Localisation from its boxes (``boxes_name_levels``),
    else ``detect(scan)`` (run where it is given: the detector needs TensorFlow, the
    build's workers do not load it), else None. Its ``source`` says which. Where
    ``detect`` is given, it checks the boxes too (``boxes_contradicted``).

    Raises:
        ScanError: the image cannot be read, or the detector contradicts its boxes.
    """
    boxed = boxes_name_levels(image, numbers)
    detected = None if detect is None else detect(
        read_scan(image.path, spacing_mm=image.spacing_mm))
    if not boxed:
        return detected
    why = None if detected is None else boxes_contradicted(image, detected)
    if why:
        raise ScanError(f"{image.path}: {why}; left out")
    return localisation.from_boxes(image.row_boxes, (1.0, *image.spacing_mm))


def slice_record(image, labels, located):
    """PatientRecord of one image: ``labels`` {level: labels} of its patient, its discs as
    ``located`` (``positions``) places them.

    Raises:
        ScanError: the image cannot be read.
    """
    scan = read_scan(image.path, spacing_mm=image.spacing_mm)
    return PatientRecord(image.patient, scan, located, labels, reread={}, series=image.series)


def write_box_masks(manual_dir, out_dir, patients=None, detect=None):
    """Writes the images of a SPIDER slices folder whose boxes name their patient's graded
    discs (``boxes_name_levels``) and, where ``detect`` is given, are not contradicted by
    it (``boxes_contradicted``) in the folder layout, with masks drawn from the boxes
    (``localisation.box_mask``): ``scans/<series>.nii.gz`` (the slice with its listed
    spacing) and ``masks/<series>.nii.gz``. This is the disc detector's training data
    where a data set has boxes and no masks (``spine-tf train-detector --masks-dir``).

    Args:
        manual_dir: a folder in the SPIDER slices layout.
        out_dir: the folder to write (created).
        patients: only these patients (e.g. a training split's), or None for all.
        detect: a function scan -> Localisation (the disc detector) to check the boxes.

    Returns:
        (the series written, the boxed series ``detect`` contradicted and so left out).
    """
    from spine_tf.io.formats import save_nifti
    numbers = graded_numbers(os.path.join(manual_dir, GRADINGS_CSV))
    written, contradicted = [], []
    for image in read_slices(manual_dir):
        if patients is not None and image.patient not in patients:
            continue
        if not boxes_name_levels(image, numbers.get(image.patient, [])):
            continue
        scan = read_scan(image.path, spacing_mm=image.spacing_mm)
        if detect is not None and boxes_contradicted(image, detect(scan)):
            contradicted.append(image.series)
            continue
        mask = localisation.box_mask(image.row_boxes, scan.spacing_mm, scan.shape[1:])
        save_nifti(scan.image, os.path.join(out_dir, "scans", f"{image.series}.nii.gz"), scan)
        save_nifti(mask[None], os.path.join(out_dir, "masks", f"{image.series}.nii.gz"), scan)
        written.append(image.series)
    return written, contradicted
