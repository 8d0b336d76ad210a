"""Finding and naming the discs of a raw scan with the detector.

``detect(scan, detector)`` runs the U-Net on every sagittal slice (resampled
to ``data.SPACING_MM``), then:

1. disc candidates: 3D connected regions of disc pixels; a region holding
   several centre-heatmap peaks more than ``_SPLIT_MM`` apart in plane is
   split between them (two discs touching through partial volume); a
   candidate without bone (body or sacrum) just above and below it is dropped;
2. the spine's line (``detection.spine_line``): starting at the disc just
   above the sacrum, each next disc is the nearest candidate above the last
   one along its normal; candidates off that line are ignored. Levels are
   named upwards from L5-S1, past a disc the network missed. An L5-S1 whose
   sacrum the network missed is still taken, where it is clearly a disc one
   step below L4-L5. Without a sacrum in view the lowest disc is taken as
   L5-S1 and every disc's confidence halved, so such discs are flagged rather
   than silently graded;
3. the discs on the line and every vertebral body found are written into a
   SPIDER-convention label map, and ``localisation.from_mask`` turns it into
   the same ``Localisation`` a manual mask gives, with coordinates mapped
   back to the scan's voxels. A disc's confidence is its heatmap peak.

Thin slices (at most ``THIN_SLICE_MM``, as a 3D acquisition's reconstruction gives) are
read on the mid-sagittal slab instead of the whole volume: steps 1-3 run on the mean
outputs over the slices within ``SLAB_MM`` of the mid-sagittal slice, and each disc and
body is then placed on its own slices (``_locate_thin``). On noisy thin-slice phantoms this
keeps every disc where the whole volume lost a third of them (docs/results/detection.md).
"""

import dataclasses

import numpy as np
import tensorflow as tf
from scipy import ndimage

from spine_tf import localisation, tasks
from spine_tf.detection import data, model, spine_line
from spine_tf.phantom.anatomy import anatomical_pixel_size

_MIN_DISC_MM2 = 20.0
_MIN_BODY_MM2 = 80.0
_SPLIT_MM = 12.0
NO_SACRUM_FACTOR = 0.5


def segment(scan, detector, batch_size=8):
    """Class probabilities and centre heatmap of every slice at the detector's spacing.

    Returns:
        (probabilities (slices, rows, cols, 4), heat (slices, rows, cols),
        zoom factors (rows, cols) from scan pixels to detector pixels).
    """
    planes, factors = [], None
    for plane in scan.image:
        resampled, factors = data.resample_slice(plane, scan.spacing_mm[1:], order=1)
        planes.append(resampled)
    images = tf.constant(np.stack(planes)[..., None], tf.float32)
    padded, (rows, cols) = model.pad_to_multiple(images)
    probabilities, heat = [], []
    for start in range(0, len(planes), batch_size):
        seg_logits, centre_logits = detector(padded[start:start + batch_size], training=False)
        probabilities.append(tf.nn.softmax(seg_logits)[:, :rows, :cols].numpy())
        heat.append(tf.sigmoid(centre_logits)[:, :rows, :cols, 0].numpy())
    return np.concatenate(probabilities), np.concatenate(heat), factors


def _cluster(points, values, radius):
    """Greedy clustering: strongest point first, absorbing points within ``radius``."""
    order = np.argsort(values)[::-1]
    centres = []
    for i in order:
        if all(np.linalg.norm(points[i] - c) > radius for c in centres):
            centres.append(points[i])
    return np.array(centres)


def _disc_candidates(disc, heat, spacing):
    """Disc regions, split where one region holds several distinct centre peaks."""
    peak = ((heat == ndimage.maximum_filter(heat, size=(1, 7, 7)))
            & (heat >= spine_line.PEAK_THRESHOLD))
    candidates = []
    for voxels in _components(disc, spacing, _MIN_DISC_MM2):
        at_peak = peak[tuple(voxels.T)]
        points = voxels[at_peak, 1:] * spacing[1:]
        centres = _cluster(points, heat[tuple(voxels[at_peak].T)], _SPLIT_MM)
        if len(centres) <= 1:
            candidates.append(spine_line.Candidate(voxels, float(heat[tuple(voxels.T)].max())))
            continue
        in_plane = voxels[:, 1:] * spacing[1:]
        nearest = np.argmin(np.linalg.norm(in_plane[:, None] - centres[None], axis=-1), axis=1)
        for k in range(len(centres)):
            part = voxels[nearest == k]
            if len(part):
                candidates.append(spine_line.Candidate(part, float(heat[tuple(part.T)].max())))
    for candidate in candidates:
        binary = np.zeros(disc.shape, bool)
        binary[tuple(candidate.voxels.T)] = True
        centre, candidate.axis, _ = localisation.disc_geometry(binary, spacing)
        candidate.centre_mm = centre[1:] * spacing[1:]
        candidate.normal_up = localisation.normal_up(candidate.axis)
    return candidates


def _components(binary, spacing, min_mm2):
    """Voxels (n, 3) of each connected region whose largest slice covers ``min_mm2``."""
    labelled, _ = ndimage.label(binary)
    pixel_mm2 = spacing[1] * spacing[2]
    out = []
    for i, where in enumerate(ndimage.find_objects(labelled), start=1):
        region = labelled[where] == i
        if region.sum(axis=(1, 2)).max() * pixel_mm2 >= min_mm2:
            out.append(np.argwhere(region) + np.array([s.start for s in where]))
    return out


def locate(probabilities, heat, spacing, thin=None):
    """Localisation (in the detector's grid) from the network's outputs.

    Slices of at most ``THIN_SLICE_MM`` (a 3D acquisition's reconstruction) go through
    ``_locate_thin``: the spine is found on the slab around the mid-sagittal plane, not
    in the whole volume.

    Args:
        probabilities: (slices, rows, cols, 4) class probabilities.
        heat: (slices, rows, cols) centre heatmap.
        spacing: (3,) mm of that grid.
        thin: read on the mid-sagittal slab (True) or the whole volume (False);
            None: by the slice thickness.

    Returns:
        Localisation whose ``notes`` say what was ignored or assumed.
    """
    spacing = np.asarray(spacing, np.float64)
    if thin is None:
        thin = spacing[0] <= THIN_SLICE_MM
    if len(probabilities) > 1 and thin:
        return _locate_thin(probabilities, heat, spacing)
    return _locate(probabilities, heat, spacing)


THIN_SLICE_MM = 2.0
SLAB_MM = 8.0
"""Thin slices: the discs are found on the mean of the network's outputs over the slices
within this distance of the mid-sagittal plane."""


def mid_sagittal_slice(classes, spacing):
    """The slice of the spine's mid-sagittal plane: the middle of the slices on which the
    vertebral bodies and discs cover at least half their largest area (they are widest
    around the midline, and lateral structures are smaller)."""
    area = ((classes == data.DISC) | (classes == data.BODY) | (classes == data.SACRUM)).sum(
        axis=(1, 2)).astype(np.float64)
    area = ndimage.uniform_filter1d(area, max(1, int(round(5.0 / spacing[0]))))
    if not area.max():
        return len(classes) // 2
    wide = np.flatnonzero(area >= 0.5 * area.max())
    return int(round(np.average(wide, weights=area[wide])))


def _run(classes, s, point, wanted):
    """(first, last) of the slices around ``s`` on which ``point`` (row, col) has a class
    in ``wanted``; (s, s) if it has not on ``s`` itself."""
    r, c = np.clip(np.round(point).astype(int), 0, np.array(classes.shape[1:]) - 1)
    inside = np.isin(classes[:, r, c], wanted)
    first = last = s
    if not inside[s]:
        return first, last
    while first > 0 and inside[first - 1]:
        first -= 1
    while last < len(inside) - 1 and inside[last + 1]:
        last += 1
    return first, last


def _locate_thin(probabilities, heat, spacing):
    """Thin slices: the discs of the mean outputs over the slab around the mid-sagittal
    slice (a disc the network misses on some of its slices is found on the others;
    structures lateral to the spine are not looked at), placed back in 3D: each disc on
    the middle of its own slices, each body over its own."""
    classes = np.argmax(probabilities, axis=-1)
    mid = mid_sagittal_slice(classes, spacing)
    half = int(round(SLAB_MM / spacing[0]))
    lo, hi = max(0, mid - half), min(len(classes), mid + half + 1)
    plane = _locate(probabilities[lo:hi].mean(axis=0, keepdims=True),
                    heat[lo:hi].mean(axis=0, keepdims=True), spacing)
    discs = []
    for disc in plane.discs:
        first, last = _run(classes, mid, disc.centre[1:], (data.DISC,))
        centre_slice = (first + last) / 2.0

        def spread(body):
            extent = _run(classes, mid, body.corners.mean(axis=0), (data.BODY, data.SACRUM))
            return dataclasses.replace(body, mid_slice=centre_slice, slice_range=extent)

        discs.append(dataclasses.replace(disc, centre=np.array([centre_slice,
                                                                *disc.centre[1:]]),
                                         upper=spread(disc.upper), lower=spread(disc.lower)))
    note = (f"thin slices: discs found on the mean of the {hi - lo} slices within "
            f"{SLAB_MM:g} mm of the mid-sagittal slice {mid}")
    return localisation.Localisation(discs, plane.skipped, [note] + plane.notes,
                                     source="detector")


def _locate(probabilities, heat, spacing):
    """``locate`` on every slice given."""
    classes = np.argmax(probabilities, axis=-1)
    found = _disc_candidates(classes == data.DISC, heat, spacing)
    for candidate in found:
        candidate.above, candidate.below = spine_line.bone_beside(candidate, classes, spacing)
    candidates = [c for c in found if c.above and c.below]
    lowest = [c for c in found if c.above == data.BODY and c.below in (None, data.SACRUM)]
    bodies = _components(classes == data.BODY, spacing, _MIN_BODY_MM2)
    sacra = _components(classes == data.SACRUM, spacing, _MIN_BODY_MM2)
    sacrum = max(sacra, key=len) if sacra else None
    line, numbers, anchored = spine_line.spine_line(candidates, sacrum, spacing, lowest)
    notes = []
    extended = bool(line) and not any(line[0] is c for c in candidates)
    if extended:
        notes.append("L5-S1: taken one step below the lowest disc between two bones, with a "
                     "vertebral body above it and none below (the sacrum missed?)")
    ignored = len(found) - len(candidates) - extended
    if ignored:
        notes.append(f"{ignored} disc-like detection(s) without a vertebral body above and "
                     "below ignored")
    if not candidates:
        reason = ("the detector found no disc between two vertebral bodies (no lumbar spine "
                  "in view?)")
        return localisation.Localisation([], [("scan", reason)], notes, source="detector")
    if len(candidates) > len(line) - extended:
        notes.append(f"{len(candidates) - len(line) + extended} disc-like detection(s) off "
                     "the spine's line (or above T12-L1) ignored")
    missed = sorted(set(range(numbers[-1] + 1)) - set(numbers)) if line else []
    if missed:
        names = ", ".join(tasks.LEVELS[len(tasks.LEVELS) - 1 - n] for n in missed)
        notes.append(f"{names}: not found, where a step along the spine is about twice "
                     "the others; the levels above are named past it")
    if not anchored:
        notes.append("no sacrum found: the lowest disc was named L5-S1 and every confidence "
                     f"multiplied by {NO_SACRUM_FACTOR}")
    mask = np.zeros(classes.shape, np.int16)
    for number, body in enumerate(bodies + sacra, start=1):
        mask[tuple(body.T)] = number
    if numbers[0] == 0 and not spine_line.body_below(line[0], mask, spacing):
        lower = spine_line.mirrored_body(line[0], mask, spacing)
        if lower is not None:
            free = mask[tuple(lower.T)] == 0
            mask[tuple(lower[free].T)] = len(bodies + sacra) + 1
            notes.append("L5-S1: no vertebral body found under it; its lower body was drawn "
                         "as the mirror image of the one above")
    confidence = {}
    for number, candidate in zip(numbers, line):
        level = tasks.LEVELS[len(tasks.LEVELS) - 1 - number]
        mask[tuple(candidate.voxels.T)] = tasks.disc_label_of_level(level)
        confidence[level] = candidate.peak * (1.0 if anchored else NO_SACRUM_FACTOR)
    located = localisation.from_mask(mask, spacing, localisation.SPIDER, cut_bodies=True)
    discs = [dataclasses.replace(d, confidence=float(confidence[d.level]))
             for d in located.discs]
    skipped = [(level, "not found by the detector" if "not in the mask" in reason else reason)
               for level, reason in located.skipped]
    return localisation.Localisation(discs, skipped, notes + located.notes, source="detector")


def _to_scan(location, factors):
    """A DiscLocation in detector pixels -> scan pixels (pixel centres kept aligned)."""
    f = np.asarray(factors, np.float64)

    def point(p):
        return (np.asarray(p) + 0.5) / f - 0.5

    def body(b):
        return dataclasses.replace(b, corners=point(b.corners))

    centre = np.array([location.centre[0], *point(location.centre[1:])])
    return dataclasses.replace(location, centre=centre, upper=body(location.upper),
                               lower=body(location.lower))


def from_outputs(probabilities, heat, factors, spacing_mm, thin=None):
    """Localisation in scan voxels from the network's outputs on a scan's slices.

    Args:
        probabilities, heat, factors: as returned by :func:`segment`.
        spacing_mm: the scan's (3,) spacing.
        thin: as for :func:`locate`.

    Returns:
        Localisation (with notes).
    """
    spacing_mm = np.asarray(spacing_mm, np.float64)
    spacing = np.array([spacing_mm[0], *(spacing_mm[1:] / np.asarray(factors))])
    located = locate(probabilities, heat, spacing, thin)
    return localisation.Localisation([_to_scan(d, factors) for d in located.discs],
                                     located.skipped, located.notes, source="detector")


PIXEL_SEARCH_MM = tuple(float(f"{s:.3g}") for s in np.geomspace(0.25, 2.0, 8))
"""In-plane pixel sizes tried on a picture that records none: 0.25 to 2 mm, each about 1.35x
the last, so the true size is within 16 % of one of them (the detector's training covers
about +-30 %)."""


def _located_at(scan, detector, size):
    spacing = np.array([scan.spacing_mm[0], size, size], np.float64)
    probabilities, heat, factors = segment(dataclasses.replace(scan, spacing_mm=spacing),
                                           detector)
    return from_outputs(probabilities, heat, factors, spacing)


def detect(scan, detector, pixel_sizes=None):
    """Localises and names the discs of ``scan`` (a ``spine_tf.io.scan.Scan``).

    Args:
        scan: the scan.
        detector: a loaded detector (``spine_tf.detection.load``).
        pixel_sizes: in-plane pixel sizes (mm) to try instead of the scan's
            own. Default: ``PIXEL_SEARCH_MM`` for a picture read without a
            pixel size (``scan.pixel_size_known`` False), else the scan's
            spacing alone: a pixel size that is given is used.

    With sizes to try, the detection with the largest total disc confidence
    wins; the pixel size at which its discs lie as far apart as in a typical
    spine (``anatomical_pixel_size``) is then tried as well and kept if it
    finds at least as many discs. The notes say what was tried and chosen.

    Returns:
        Localisation in the scan's voxel coordinates, each disc with the
        detector's confidence, and notes on what was ignored or assumed.
    """
    if pixel_sizes is None and not scan.pixel_size_known:
        pixel_sizes = PIXEL_SEARCH_MM
    if not pixel_sizes:
        probabilities, heat, factors = segment(scan, detector)
        return from_outputs(probabilities, heat, factors, scan.spacing_mm)
    tried = {size: _located_at(scan, detector, size) for size in pixel_sizes}
    best_size = max(tried, key=lambda s: sum(d.confidence for d in tried[s].discs))
    note = (f"pixel size unknown: tried {pixel_sizes[0]:g}-{pixel_sizes[-1]:g} mm "
            f"({len(pixel_sizes)} sizes), most confident at {best_size:g} mm")
    estimate = anatomical_pixel_size(tried[best_size])
    if estimate is not None:
        estimate = float(f"{estimate:.3g}")
        located = tried.get(estimate) or _located_at(scan, detector, estimate)
        keep = len(located.discs) >= len(tried[best_size].discs)
        note += (f"; {estimate:g} mm from the spacing of its discs"
                 + (", used" if keep else ", not used (fewer discs found there)"))
        if keep:
            tried[estimate], best_size = located, estimate
    best = tried[best_size]
    # back to the scan's own (assumed) millimetres; voxel coordinates need no change
    scale = float(scan.spacing_mm[1]) / best_size
    discs = [dataclasses.replace(d, height_mm=d.height_mm * scale) for d in best.discs]
    return localisation.Localisation(discs, best.skipped, best.notes + [note],
                                     pixel_size_mm=best_size, source="detector")
