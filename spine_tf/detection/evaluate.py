"""How well detected discs match the truth of a mask or of disc boxes.

A true disc counts as found when a detected disc's centre lies within
``TOLERANCE_MM`` of its centre in the sagittal plane (the slice coordinate of
a centre is reported separately: with 3-6 mm slices it is not a point
measurement). Truth comes from ``localisation.from_mask`` of the reference
mask, so a disc counts only where the mask itself makes it gradable (both
bodies in view); a detection is a false positive only when it lies near no
disc of the mask at all. With disc boxes (the SPIDER slices layout) a disc
counts as found when a detected centre lies in the central half of its box.

``evaluate_folder`` runs a detector over a folder (boxes or masks) and gives
the figures overall and per image (``spine-tf evaluate-detector``).
"""

import dataclasses
import os

import numpy as np
from scipy import ndimage

from spine_tf import localisation, tasks

TOLERANCE_MM = 3.0


@dataclasses.dataclass
class DiscMatch:
    """One true disc and the detection matched to it (None when missed)."""

    level: str
    found: bool
    distance_mm: float = None
    slice_error: float = None
    level_correct: bool = None
    angle_deg: float = None
    confidence: float = None


def disc_centres(mask, spacing_mm, convention):
    """(n, 3) centres of every disc in a mask, gradable or not."""
    if convention == localisation.SPIDER:
        values = [v for v in np.unique(mask) if tasks.level_of_disc_label(v)]
        regions = [mask == v for v in values]
    else:
        labelled, count = ndimage.label(mask == 1)
        regions = [labelled == i for i in range(1, count + 1)]
    return np.array([localisation.disc_geometry(r, spacing_mm)[0] for r in regions
                     if r.sum() >= 4]).reshape(-1, 3)


def match(detected, mask, spacing_mm, convention=localisation.SPIDER,
          tolerance_mm=TOLERANCE_MM):
    """Matches a detection to a reference mask.

    Returns:
        (list of DiscMatch per gradable true disc, number of detections,
        number of detections near no disc of the mask).
    """
    spacing_mm = np.asarray(spacing_mm, np.float64)
    truth = localisation.from_mask(mask, spacing_mm, convention)
    plane = spacing_mm[1:]
    found = [d for d in detected.discs]
    used = set()
    matches = []
    for true in truth.discs:
        best, best_distance = None, np.inf
        for i, disc in enumerate(found):
            distance = float(np.linalg.norm((disc.centre[1:] - true.centre[1:]) * plane))
            if i not in used and distance < best_distance:
                best, best_distance = i, distance
        if best is None or best_distance > tolerance_mm:
            matches.append(DiscMatch(true.level, False))
            continue
        used.add(best)
        disc = found[best]
        cosine = float(np.clip(abs(disc.axis @ true.axis), -1.0, 1.0))
        matches.append(DiscMatch(
            true.level, True, distance_mm=best_distance,
            slice_error=float(abs(disc.centre[0] - true.centre[0])),
            level_correct=disc.level == true.level, angle_deg=float(np.degrees(np.arccos(cosine))),
            confidence=float(disc.confidence)))
    centres = disc_centres(mask, spacing_mm, convention)
    false = 0
    for disc in found:
        near = (np.linalg.norm((centres[:, 1:] - disc.centre[1:]) * plane, axis=1)
                if len(centres) else np.array([np.inf]))
        false += int(near.min() > tolerance_mm)
    return matches, len(found), false


def summarise(matches, detections, false_positives):
    """Recall, precision, level-naming accuracy and orientation error of many matches."""
    hits = [m for m in matches if m.found]
    named = [m.level_correct for m in hits if m.level_correct is not None]
    angles = np.array([m.angle_deg for m in hits if m.angle_deg is not None])
    distances = np.array([m.distance_mm for m in hits])
    return {
        "true_discs": len(matches),
        "detections": detections,
        "recall": len(hits) / len(matches) if matches else float("nan"),
        "precision": (detections - false_positives) / detections if detections
        else float("nan"),
        "level_accuracy": (float(np.mean(named)) if named else float("nan")),
        "distance_mm_median": float(np.median(distances)) if hits else float("nan"),
        "angle_deg_median": float(np.median(angles)) if len(angles) else float("nan"),
        "angle_deg_p95": float(np.percentile(angles, 95)) if len(angles) else float("nan"),
    }


def box_level(from_bottom):
    """The lumbar level of the ``from_bottom``-th disc (1: L5-S1), or None above T12-L1."""
    return tasks.LEVELS[-from_bottom] if 1 <= from_bottom <= len(tasks.LEVELS) else None


def match_boxes(detected, boxes, spacing_mm):
    """Matches a detection on a one-slice scan to its disc boxes (``DiscBox``).

    A box's disc is found by the nearest detected centre in the box's central
    half; its level is right when the detection's level counts as many discs
    from the bottom (not judged above T12-L1, which the detector does not
    name). A detection in no box's central half is a false positive.

    Returns:
        (list of DiscMatch per box, number of detections, false positives).
    """
    plane = np.asarray(spacing_mm, np.float64)[-2:]
    centres = [np.asarray(d.centre[1:], np.float64) for d in detected.discs]
    used, matches = set(), []
    for box in boxes:
        inside = [i for i, c in enumerate(centres) if i not in used and box.holds(*c)]
        level = box_level(box.from_bottom)
        if not inside:
            matches.append(DiscMatch(level or f"disc {box.from_bottom} from the bottom", False))
            continue
        best = min(inside, key=lambda i: np.linalg.norm(centres[i] - box.centre))
        used.add(best)
        disc = detected.discs[best]
        matches.append(DiscMatch(
            level or f"disc {box.from_bottom} from the bottom", True,
            distance_mm=float(np.linalg.norm((centres[best] - box.centre) * plane)),
            level_correct=None if level is None else disc.level == level,
            confidence=float(disc.confidence)))
    false = sum(not any(b.holds(*c) for b in boxes) for c in centres)
    return matches, len(centres), false


def _slice_results(manual_dir, detector, pixel_size, skipped):
    from spine_tf import detection
    from spine_tf.data import spider_slices
    from spine_tf.io.scan import ScanError, read_scan
    for item in spider_slices.read_slices(
            manual_dir, on_missing=lambda patient, path, reason: skipped.append(reason)):
        if not item.boxes:
            continue
        listed = pixel_size == "listed"
        try:
            scan = read_scan(item.path, spacing_mm=item.spacing_mm if listed else None)
        except ScanError as error:
            skipped.append(str(error))
            continue
        located = detection.detect(scan, detector)
        yield (item.series, item.patient, located,
               match_boxes(located, item.boxes, item.spacing_mm),
               spider_slices.boxes_contradicted(item, located))


def _mask_results(manual_dir, detector, skipped):
    from spine_tf import detection
    from spine_tf.data import sources
    from spine_tf.io.scan import ScanError, read_mask, read_scan
    for name, scan_path, mask_path in sources.annotated_scans(manual_dir):
        try:
            scan = read_scan(scan_path)
            mask = read_mask(mask_path, scan)
        except ScanError as error:
            skipped.append(str(error))
            continue
        located = detection.detect(scan, detector)
        yield name, name, located, match(located, mask, scan.spacing_mm,
                                         localisation.guess_convention(mask)), None


def evaluate_folder(manual_dir, detector, pixel_size="listed"):
    """Recall, precision, level accuracy and centre error of ``detector`` on a folder.

    Args:
        manual_dir: the SPIDER slices layout (images with ``boxes.csv``; images
            without boxes are left out) or a folder of scans with label masks
            (``data.sources.annotated_scans``).
        detector: a loaded detector (``spine_tf.detection.load``).
        pixel_size: for the slices layout, ``"listed"`` (series.csv's spacing)
            or ``"estimate"`` (read without one: the detector estimates it).

    Returns:
        {"overall": ``summarise`` of every image, with 95 % patient-bootstrap
        intervals of recall, precision and level accuracy, "lumbar": the same
        for the discs T12-L1 .. L5-S1 only (boxes may count thoracic discs,
        which the detector does not name), "images": per image its
        name, ``summarise`` figures, the levels found and missed, the
        detector's pixel size and notes, and ``boxes_contradicted``: why the detection
        contradicts the image's boxes (``spider_slices.boxes_contradicted``: boxes off the
        discs, or one box over two discs), else None. Such an image is still counted: the
        detector judging its own truth would flatter it, so the figures hold it as it is and
        the reader sees which images to look at, "skipped": one line per image that is
        missing or cannot be read (left out, the rest go on)}.
    """
    if pixel_size not in ("listed", "estimate"):
        raise ValueError(f"pixel_size must be 'listed' or 'estimate', not {pixel_size!r}")
    from spine_tf.data import spider_slices
    boxed = os.path.exists(os.path.join(manual_dir, spider_slices.SERIES_CSV))
    skipped = []
    results = (_slice_results(manual_dir, detector, pixel_size, skipped) if boxed
               else _mask_results(manual_dir, detector, skipped))
    per_image, images = [], []
    for name, patient, located, (matches, found, wrong), doubt in results:
        per_image.append((patient, matches, found, wrong))
        images.append({"image": name, **summarise(matches, found, wrong),
                       "missed": [m.level for m in matches if not m.found],
                       "levels_wrong": [m.level for m in matches if m.level_correct is False],
                       "pixel_size_mm": located.pixel_size_mm, "notes": list(located.notes),
                       "boxes_contradicted": doubt})
    return {"layout": "boxes" if boxed else "masks", "pixel_size": pixel_size,
            "overall": _with_intervals(per_image, lambda m: True),
            "lumbar": _with_intervals(per_image, lambda m: m.level in tasks.LEVELS),
            "images": images, "skipped": skipped}


def _with_intervals(per_image, counted):
    """``summarise`` of the ``counted`` matches of every image, with 95 % patient-bootstrap
    intervals (``<figure>_interval``) of recall, precision and level accuracy."""
    from spine_tf.modeling import metrics

    def figures(items):
        matches = [m for _, image, _, _ in items for m in image if counted(m)]
        return summarise(matches, sum(item[2] for item in items),
                         sum(item[3] for item in items))

    result = figures(per_image)
    samples = [figures([per_image[i] for i in draw]) for draw in
               metrics.patient_bootstrap([patient for patient, *_ in per_image])]
    for key in ("recall", "precision", "level_accuracy"):
        result[f"{key}_interval"] = metrics.percentile_interval([s[key] for s in samples])
    return result
