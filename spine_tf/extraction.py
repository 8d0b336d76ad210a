"""Disc volumes: the model's input, cut from a scan around each disc.

For every disc (a ``DiscLocation``) the volume is:
- in-plane: the disc rotated to lie horizontal, centred, in a region of
  height:width 1:2 whose height is the disc's plus ``BODY_FRACTION`` (40 %) of
  each neighbouring vertebral body's, resampled (bilinear) to 112 x 224;
- through-plane: 9 consecutive scan slices centred on the disc's
  mid-sagittal slice, in the scan's own slice spacing, zero-padded where the
  scan has no slice;
- intensity: each slice scaled so the median of the two bodies' pixels in it
  is 0.5, then clipped to [0, 1]. A slice on which the bodies are absent, or
  whose body median is below a quarter of the mid slice's, takes the mid
  slice's scale.

Each volume keeps ``voxel_to_scan``, the 4x4 affine from volume indices
(row, col, slice) to scan voxel indices (slice, row, col) in the internal
frame; ``volume_to_scan`` uses its inverse to put a volume-shaped map (a
hotspot) back onto the scan grid.
"""

import dataclasses

import numpy as np
from scipy import ndimage

from spine_tf.localisation import body_height_mm
from spine_tf.tasks import VOLUME_SHAPE
from spine_tf.errors import SpineTFError

ROWS, COLS, SLICES = VOLUME_SHAPE
BODY_FRACTION = 0.4
BODY_MEDIAN = 0.5
_MIN_BODY_PIXELS = 20


class ExtractionError(SpineTFError, ValueError):
    """A disc volume cannot be made; the message names the scan and level."""


@dataclasses.dataclass(frozen=True)
class DiscVolume:
    """One extracted disc volume.

    Attributes:
        level: e.g. "L4-L5".
        volume: float32 (112, 224, 9) in [0, 1].
        voxel_to_scan: (4, 4) affine, volume (row, col, slice) -> scan
            (slice, row, col) voxel indices.
        confidence: of the localisation it came from.
    """

    level: str
    volume: np.ndarray
    voxel_to_scan: np.ndarray
    confidence: float = 1.0


def region_height_mm(disc, spacing_mm):
    """Height of the extracted region: the disc plus 40 % of each body."""
    bodies = body_height_mm(disc.upper, spacing_mm) + body_height_mm(disc.lower, spacing_mm)
    return disc.height_mm + BODY_FRACTION * bodies


def voxel_to_scan_transform(disc, spacing_mm):
    """The 4x4 affine from volume (row, col, slice) to scan (slice, row, col) indices."""
    spacing_mm = np.asarray(spacing_mm, np.float64)
    pixel_mm = region_height_mm(disc, spacing_mm) / ROWS
    axis = np.asarray(disc.axis, np.float64)  # posterior, (row, col) in mm
    down = np.array([axis[1], -axis[0]])  # towards the feet
    if down[0] < 0:
        down = -down
    centre_mm = np.asarray(disc.centre[1:], np.float64) * spacing_mm[1:]
    centre_index = np.array([(ROWS - 1) / 2, (COLS - 1) / 2])
    transform = np.zeros((4, 4))
    for out, along_mm in ((1, spacing_mm[1]), (2, spacing_mm[2])):
        d = out - 1
        transform[out, 0] = pixel_mm * down[d] / along_mm
        transform[out, 1] = pixel_mm * axis[d] / along_mm
        transform[out, 3] = (centre_mm[d] - pixel_mm * (centre_index[0] * down[d]
                                                        + centre_index[1] * axis[d])) / along_mm
    transform[0, 2] = 1.0
    transform[0, 3] = round(float(disc.centre[0])) - (SLICES - 1) // 2
    transform[3, 3] = 1.0
    return transform


def volume_grid():
    """(4, rows*cols*slices) homogeneous volume indices, C order of VOLUME_SHAPE."""
    i, j, k = np.meshgrid(np.arange(ROWS), np.arange(COLS), np.arange(SLICES), indexing="ij")
    return np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)]).astype(np.float64)


_GRID = None


def sample_into_volume(array, voxel_to_scan, order=1):
    """Resamples a scan-frame array (slices, rows, cols) into a disc volume.

    Slices are never interpolated (the transform maps volume slices onto scan
    slices); in-plane sampling is bilinear (``order=1``) or nearest
    (``order=0``, for masks). Outside the scan the volume is 0.
    """
    global _GRID
    if _GRID is None:
        _GRID = volume_grid()
    coordinates = (voxel_to_scan @ _GRID)[:3]
    values = ndimage.map_coordinates(array, coordinates, order=order, mode="constant", cval=0,
                                     prefilter=False)
    return values.reshape(VOLUME_SHAPE)


def extract_disc(image, spacing_mm, disc, source=""):
    """Extracts and normalises the volume of one disc.

    Args:
        image: float scan (slices, rows, cols), internal frame.
        spacing_mm: (3,) scan spacing.
        disc: DiscLocation.
        source: scan name for error messages.

    Returns:
        DiscVolume.

    Raises:
        ExtractionError: when the vertebral bodies have no signal on the
            disc's mid slice (nothing to normalise by).
    """
    transform = voxel_to_scan_transform(disc, spacing_mm)
    raw = sample_into_volume(np.asarray(image, np.float32), transform, order=1)
    masks = body_masks(disc, transform)  # (2, rows, cols), upper and lower
    first_slice = transform[0, 3]
    scales = np.zeros(SLICES, np.float64)
    medians = np.full(SLICES, np.nan)
    for k in range(SLICES):
        s = first_slice + k
        present = [m for m, body in zip(masks, (disc.upper, disc.lower))
                   if body.slice_range[0] <= s <= body.slice_range[1]]
        if present and 0 <= s < image.shape[0]:
            values = raw[..., k][np.logical_or.reduce(present)]
            if values.size >= _MIN_BODY_PIXELS:
                medians[k] = np.median(values)
    mid = (SLICES - 1) // 2
    if not medians[mid] > 0:
        raise ExtractionError(f"{source}: {disc.level}: the vertebral bodies around the disc "
                              "have no signal on its mid slice; cannot normalise")
    for k in range(SLICES):
        usable = medians[k] >= 0.25 * medians[mid]
        scales[k] = BODY_MEDIAN / (medians[k] if usable else medians[mid])
    volume = np.clip(raw * scales.astype(np.float32), 0.0, 1.0)
    return DiscVolume(level=disc.level, volume=volume.astype(np.float32),
                      voxel_to_scan=transform, confidence=disc.confidence)


def body_masks(disc, voxel_to_scan):
    """Masks (2, rows, cols) of the upper and lower bodies' corner polygons in the volume."""
    to_volume = np.linalg.inv(voxel_to_scan)
    i, j = np.meshgrid(np.arange(ROWS) + 0.0, np.arange(COLS) + 0.0, indexing="ij")
    masks = []
    for body in (disc.upper, disc.lower):
        scan_points = np.column_stack([np.full(4, body.mid_slice), body.corners, np.ones(4)])
        polygon = (to_volume @ scan_points.T).T[:, :2]  # (row, col) in the volume
        masks.append(_inside_convex(polygon, i, j))
    return np.stack(masks)


def _inside_convex(polygon, i, j):
    """Pixels (i, j) inside a convex polygon of (row, col) vertices, either winding.

    The winding comes from the polygon's signed area, not from the pixels, so
    a polygon that only partly overlaps the grid is handled correctly.
    """
    p, q = polygon, np.roll(polygon, -1, axis=0)
    signed_area = np.sum(p[:, 0] * q[:, 1] - q[:, 0] * p[:, 1])
    if signed_area == 0:
        return np.zeros(i.shape, bool)
    sign = np.sign(signed_area)
    inside = np.ones(i.shape, bool)
    for a, b in zip(p, q):
        cross = (b[0] - a[0]) * (j - a[1]) - (b[1] - a[1]) * (i - a[0])
        inside &= cross * sign >= 0
    return inside


def extract(scan, localisation):
    """Extracts every localised disc of a scan.

    Returns:
        (volumes, skipped): the DiscVolumes top to bottom, and (level, reason)
        for discs that could not be localised or extracted.
    """
    volumes, skipped = [], list(localisation.skipped)
    for disc in localisation.discs:
        try:
            volumes.append(extract_disc(scan.image, scan.spacing_mm, disc, scan.path))
        except ExtractionError as error:
            skipped.append((disc.level, str(error)))
    return volumes, skipped


def volume_to_scan(volume_map, voxel_to_scan, scan_shape):
    """Puts a volume-shaped map back onto the scan grid (0 outside the volume).

    Each scan voxel gets the mean of the (bilinearly interpolated) map over
    its own in-plane footprint, sampled on a sub-grid of about one point per
    volume pixel. A disc volume's pixels are usually several times finer
    than the scan's, so sampling the map only at scan voxel centres would
    drop any detail narrower than a scan voxel (a one-pixel hotspot could
    vanish); averaging keeps it, in the scan voxel that contains it. Where
    the volume is coarser than the scan this is plain bilinear sampling.

    Args:
        volume_map: (112, 224, 9) array, e.g. a hotspot.
        voxel_to_scan: the volume's transform.
        scan_shape: (slices, rows, cols) of the scan.

    Returns:
        float32 array of ``scan_shape``.
    """
    out = np.zeros(scan_shape, np.float32)
    in_plane = voxel_to_scan[1:3][:, [0, 1, 3]]  # (r, c) = A @ (i, j, 1)
    to_volume = np.linalg.inv(np.vstack([in_plane, [0, 0, 1]]))
    corners = np.array([[-0.5, -0.5, 1], [-0.5, COLS - 0.5, 1], [ROWS - 0.5, -0.5, 1],
                        [ROWS - 0.5, COLS - 0.5, 1]]).T
    r_lo, c_lo = np.floor((in_plane @ corners).min(axis=1)).astype(int)
    r_hi, c_hi = np.ceil((in_plane @ corners).max(axis=1)).astype(int)
    r_lo, c_lo = max(r_lo, 0), max(c_lo, 0)
    r_hi, c_hi = min(r_hi, scan_shape[1] - 1), min(c_hi, scan_shape[2] - 1)
    if r_lo > r_hi or c_lo > c_hi:
        return out
    # Sub-grid per scan voxel: n x n points, at most one volume pixel apart.
    pixels_per_voxel = np.linalg.norm(to_volume[:2, :2], axis=0)  # per scan row / col step
    n_r, n_c = (max(1, int(np.ceil(f - 1e-9))) for f in pixels_per_voxel)
    offsets_r = (np.arange(n_r) + 0.5) / n_r - 0.5
    offsets_c = (np.arange(n_c) + 0.5) / n_c - 0.5
    r, c = np.meshgrid(np.arange(r_lo, r_hi + 1), np.arange(c_lo, c_hi + 1), indexing="ij")
    sub_r = r[..., None, None] + offsets_r[:, None]
    sub_c = c[..., None, None] + offsets_c[None, :]
    sub_r, sub_c = np.broadcast_arrays(sub_r, sub_c)
    ij = to_volume @ np.stack([sub_r.ravel(), sub_c.ravel(), np.ones(sub_r.size)])
    first = int(round(voxel_to_scan[0, 3]))
    for k in range(SLICES):
        s = first + k
        if not 0 <= s < scan_shape[0]:
            continue
        values = ndimage.map_coordinates(np.asarray(volume_map[..., k], np.float32), ij[:2],
                                         order=1, mode="constant", cval=0.0, prefilter=False)
        out[s, r_lo:r_hi + 1, c_lo:c_hi + 1] = values.reshape(sub_r.shape).mean(axis=(2, 3))
    return out


def lesion_boxes(lesion_masks, voxel_to_scan, disc_number):
    """Per-slice boxes of a disc's lesions inside its volume.

    Args:
        lesion_masks: (slices, rows, cols, tasks) scan-frame lesion masks whose
            values are disc numbers (disc label - 200).
        voxel_to_scan: the volume's transform.
        disc_number: this disc's number.

    Returns:
        float32 (tasks, 9, 4) boxes (ymin, xmin, ymax, xmax) normalised to the
        volume's size, -1 where a slice has no lesion of that task.
    """
    boxes = -np.ones((lesion_masks.shape[-1], SLICES, 4), np.float32)
    for t in range(lesion_masks.shape[-1]):
        channel = (lesion_masks[..., t] == disc_number).astype(np.float32)
        if not channel.any():
            continue
        inside = sample_into_volume(channel, voxel_to_scan, order=0) > 0.5
        for k in range(SLICES):
            rows, cols = np.nonzero(inside[..., k])
            if rows.size:
                boxes[t, k] = (rows.min() / ROWS, cols.min() / COLS, (rows.max() + 1) / ROWS,
                               (cols.max() + 1) / COLS)
    return boxes
