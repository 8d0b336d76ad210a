"""How well detected discs match the truth of a mask.

A true disc counts as found when a detected disc's centre lies within
``TOLERANCE_MM`` of its centre in the sagittal plane (the slice coordinate of
a centre is reported separately: with 3-6 mm slices it is not a point
measurement). Truth comes from ``localisation.from_mask`` of the reference
mask, so a disc counts only where the mask itself makes it gradable (both
bodies in view); a detection is a false positive only when it lies near no
disc of the mask at all.
"""

import dataclasses

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
    angles = np.array([m.angle_deg for m in hits])
    distances = np.array([m.distance_mm for m in hits])
    return {
        "true_discs": len(matches),
        "detections": detections,
        "recall": len(hits) / len(matches) if matches else float("nan"),
        "precision": (detections - false_positives) / detections if detections
        else float("nan"),
        "level_accuracy": (float(np.mean([m.level_correct for m in hits])) if hits
                           else float("nan")),
        "distance_mm_median": float(np.median(distances)) if hits else float("nan"),
        "angle_deg_median": float(np.median(angles)) if hits else float("nan"),
        "angle_deg_p95": float(np.percentile(angles, 95)) if hits else float("nan"),
    }
