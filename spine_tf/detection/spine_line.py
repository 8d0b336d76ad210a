"""Which disc candidates lie on the spine, and their levels, counted up from the sacrum.

``detection.inference`` finds disc candidates (connected regions of disc pixels) in the
network's outputs; this module follows the spine through them:

- ``bone_beside``: a candidate counts as a disc where bone (a vertebral body or the
  sacrum) lies just above and just below it; a disc-coloured blob in the bowel or the
  muscles has none;
- ``spine_line``: starting at the disc just above the sacrum, each next disc is the
  nearest candidate above the last one along its normal (``STEP_MM`` up, not far
  sideways); levels are named upwards from L5-S1, and a step about twice the line's median
  counts the disc missed in it (``level_numbers``);
- L5-S1 below the line's start: on real slices the network often misses the sacrum under
  L5-S1, or most of it, or takes part of L5 for sacrum, so that the line would start at
  L4-L5 and name every level one too low. A candidate one step below the line's lowest
  disc, with a vertebral body above it and either no bone or the sacrum below it, that the
  network is as sure of as of a disc (its centre heatmap peak at least ``PEAK_THRESHOLD``)
  and about as large as the line's discs, becomes L5-S1: where the sacrum is below it,
  where no sacrum anchors the line, or where it lies nearer the sacrum than the line's
  lowest disc. A missing lower body is drawn as the mirror image of the body above
  (``mirrored_body``), so that the disc is localised and extracted as any other. A disc
  inside the sacrum (an S1-S2 remnant) has the sacrum above it where the network finds
  the sacrum, and is too faint or small where it does not.
"""

import dataclasses

import numpy as np

from spine_tf import tasks
from spine_tf.detection import data

STEP_MM = (15.0, 95.0)
"""How far up the next disc on the spine's line may lie (mm along the last one's normal): up to
two levels, so that a disc the network misses is stepped over (``GAP_RATIO``)."""
SACRUM_GAP_MM = 15.0
GAP_RATIO = 1.6
"""A step along the spine's line this many times its median step (or more) holds a disc
the network missed: the levels above it are counted on past it."""
PEAK_THRESHOLD = 0.3
"""Centre heatmap value that marks a disc's centre."""
LOWEST_MIN_AREA = 0.5
"""An L5-S1 without bone below must cover at least this share of the line's median disc
area."""


@dataclasses.dataclass(eq=False)
class Candidate:
    """A disc candidate: its voxels (n, 3: slice, row, col), centre heatmap peak, centre
    (row, col mm on its mid slice), unit normal (pointing up) and axis (posterior), and the
    bone class found just above and below it (``bone_beside``)."""

    voxels: np.ndarray
    peak: float
    centre_mm: np.ndarray = None
    normal_up: np.ndarray = None
    axis: np.ndarray = None
    above: int = None
    below: int = None


def _mid_slice(candidate):
    return int(round(float(np.mean(candidate.voxels[:, 0]))))


def _probe(candidate, spacing, sign):
    """(row, col) pixels 2 to 19 mm from a candidate's centre along ``sign`` times its
    normal (1: up), nearest first."""
    points = candidate.centre_mm + sign * np.arange(2.0, 20.0)[:, None] * candidate.normal_up
    return np.round(points / spacing[1:]).astype(int)


def _first(plane, pixels, wanted):
    """The first value of ``plane`` at ``pixels`` that ``wanted(value)`` accepts, or None."""
    for r, c in pixels:
        if 0 <= r < plane.shape[0] and 0 <= c < plane.shape[1] and wanted(plane[r, c]):
            return int(plane[r, c])
    return None


def bone_beside(candidate, classes, spacing):
    """The bone class (``data.BODY`` or ``data.SACRUM``) found just above and just below a
    candidate, or None on a side without: (above, below). Looks along the disc's normal, 2
    to 19 mm from its centre, on its mid slice."""
    plane = classes[_mid_slice(candidate)]
    return tuple(_first(plane, _probe(candidate, spacing, sign),
                        lambda v: v in (data.BODY, data.SACRUM)) for sign in (1.0, -1.0))


def level_numbers(steps):
    """Level numbers (0: L5-S1) of a line's discs from its steps (mm, bottom first): a step
    of ``GAP_RATIO`` times the median or more spans round(step / median) levels. Needs
    three steps or more to know the median."""
    numbers = [0]
    median = float(np.median(steps)) if len(steps) >= 3 else None
    for step in steps:
        span = 1
        if median and step >= GAP_RATIO * median:
            span = int(round(step / median))
        numbers.append(numbers[-1] + span)
    return numbers


def step(lower, upper):
    """How far ``upper`` lies above ``lower`` along ``lower``'s normal (mm), or None where it
    is not the next disc up the spine from it (``STEP_MM``, not far sideways)."""
    offset = upper.centre_mm - lower.centre_mm
    up = offset @ lower.normal_up
    if STEP_MM[0] <= up <= STEP_MM[1] and abs(offset @ lower.axis) <= 0.6 * up:
        return float(up)
    return None


def _sacrum_gap(candidate, sacrum_mm):
    return float(np.min(np.linalg.norm(sacrum_mm - candidate.centre_mm, axis=1)))


def spine_line(candidates, sacrum, spacing, lowest=()):
    """The discs on the spine's line, bottom first, their level numbers (0: L5-S1; only
    those below ``len(tasks.LEVELS)``), and whether a sacrum anchored it.

    Args:
        candidates: Candidates with bone above and below.
        sacrum: (n, 3) voxels of the sacrum, or None.
        spacing: (3,) mm.
        lowest: Candidates with a vertebral body above and no bone or the sacrum below, of
            which one may be L5-S1 below the line's lowest disc (see the module docstring).
    """
    if not candidates:
        return [], [], False
    remaining = list(range(len(candidates)))
    start = None
    sacrum_mm = None if sacrum is None else sacrum[:, 1:] * spacing[1:]
    if sacrum is not None:
        top = sacrum_mm[:, 0].min()
        best = np.inf
        for i in remaining:
            gap = _sacrum_gap(candidates[i], sacrum_mm)
            if candidates[i].centre_mm[0] < top + 10.0 and gap <= SACRUM_GAP_MM and gap < best:
                start, best = i, gap
    anchored = start is not None
    if start is None:
        start = max(remaining, key=lambda i: candidates[i].centre_mm[0])
    line, steps = [candidates[start]], []
    remaining.remove(start)
    while remaining:
        best, best_up = None, np.inf
        for i in remaining:
            up = step(line[-1], candidates[i])
            if up is not None and up < best_up:
                best, best_up = i, up
        if best is None:
            break
        line.append(candidates[best])
        steps.append(best_up)
        remaining.remove(best)
    below = _lowest_below(line, steps, lowest)
    if below is not None and (not anchored or below.below == data.SACRUM
                              or _sacrum_gap(below, sacrum_mm) < _sacrum_gap(line[0], sacrum_mm)):
        steps.insert(0, step(below, line[0]))
        line.insert(0, below)
    numbers = level_numbers(steps)
    kept = [k for k, number in enumerate(numbers) if number < len(tasks.LEVELS)]
    return [line[k] for k in kept], [numbers[k] for k in kept], anchored


def _lowest_below(line, steps, lowest):
    """The candidate of ``lowest`` nearest below the line's lowest disc by one step (under
    ``GAP_RATIO`` times the line's median step), with a centre peak of
    at least ``PEAK_THRESHOLD`` and ``LOWEST_MIN_AREA`` of the line's median disc area, or
    None; None too below a line of fewer than three discs."""
    if len(line) < 3:  # too short a line to tell a step down from it
        return None
    limit = GAP_RATIO * float(np.median(steps))
    area = LOWEST_MIN_AREA * float(np.median([_area(c) for c in line]))
    below = [(step(c, line[0]), c) for c in lowest
             if c.peak >= PEAK_THRESHOLD and _area(c) >= area]
    below = [(up, c) for up, c in below if up is not None and up < limit]
    return min(below, key=lambda item: item[0])[1] if below else None


def _area(candidate):
    """Voxels on the candidate's largest slice."""
    return int(np.bincount(candidate.voxels[:, 0]).max())


def _is_body(label):
    """Whether a value of a detector label map (bodies numbered from 1, discs from 201)
    is a body's."""
    return 0 < label < 200


def body_below(disc, labels, spacing):
    """Whether ``labels`` (a label map: bodies numbered from 1, discs 200 and up) has a body
    just below ``disc`` along its normal, on its mid slice."""
    return _first(labels[_mid_slice(disc)], _probe(disc, spacing, -1.0), _is_body) is not None


def _mirror(points_mm, disc):
    """(n, 2) points (mm) reflected through the middle plane of ``disc``; its own inverse."""
    return points_mm - 2.0 * ((points_mm - disc.centre_mm) @ disc.normal_up)[:, None] \
        * disc.normal_up


def mirrored_body(disc, labels, spacing):
    """Voxels (n, 3) of the mirror image, through the middle plane of ``disc``, of the body
    of ``labels`` (a label map: bodies numbered from 1, discs 200 and up) just above it on
    its mid slice: the stand-in for a lower body the network did not find. None where no
    body lies above it. Each pixel of the image is reflected back into the body (the
    reflection is its own inverse), so the image has no holes at any tilt."""
    label = _first(labels[_mid_slice(disc)], _probe(disc, spacing, 1.0), _is_body)
    if label is None:
        return None
    body = labels == label
    out = []
    for s in np.flatnonzero(body.any(axis=(1, 2))):
        image = _mirror(np.argwhere(body[s]) * spacing[1:], disc)
        low = np.maximum(np.floor(image.min(axis=0) / spacing[1:]).astype(int) - 1, 0)
        high = np.minimum(np.ceil(image.max(axis=0) / spacing[1:]).astype(int) + 2,
                          body.shape[1:])
        if np.any(high <= low):
            continue
        grid = np.stack(np.meshgrid(np.arange(low[0], high[0]), np.arange(low[1], high[1]),
                                    indexing="ij"), axis=-1).reshape(-1, 2)
        index = np.round(_mirror(grid * spacing[1:], disc) / spacing[1:]).astype(int)
        valid = ((index >= 0) & (index < body.shape[1:])).all(axis=1)
        keep = np.zeros(len(grid), bool)
        keep[valid] = body[s][index[valid, 0], index[valid, 1]]
        out.append(np.concatenate([np.full((keep.sum(), 1), s), grid[keep]], axis=1))
    return np.concatenate(out) if out else None
