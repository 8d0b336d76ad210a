"""Discs and vertebral bodies from disc boxes: one axis-aligned box around each disc on a
sagittal slice, with its number counted from the bottom (1 = L5-S1), as the SPIDER slices
layout gives them (``spine_tf.data.spider_slices``).

A box says where a disc is and how far it reaches, not how it is tilted, and nothing of the
vertebral bodies that extraction needs for the region's size and the intensity scale. Both
come from the row of boxes: a disc lies across the spine, so its axis is perpendicular to the
line through its neighbours' centres; its length and height are what fills its box at that
tilt; a body spans the gap between two discs' endplates, as deep as the discs are long, and
the bodies at either end of the row are as high as their neighbour inside the row.
"""

import numpy as np

from spine_tf import tasks
from spine_tf.localisation.locations import BodyLocation, DiscLocation, Localisation, normal_up

MIN_HEIGHT_MM = 2.0
"""Smallest disc height a box is read as."""
MAX_HEIGHT_FRACTION = 0.6
"""Largest disc height, as a share of the distance to the nearest disc."""


def level_from_bottom(number):
    """Lumbar level of the ``number``-th disc from the bottom (1 = L5-S1), or None above
    T12-L1 and below L5-S1."""
    return tasks.level_of_disc_label(tasks.FIRST_DISC_LABEL - 1 + int(number))


def _fill(box_mm, axis):
    """(length, height) of a disc at ``axis`` that fills a (rows, cols) mm box."""
    height_box, width_box = box_mm
    cos, sin = abs(axis[1]), abs(axis[0])
    det = cos * cos - sin * sin
    if det < 0.2:  # tilted near 45 degrees: the box says little; take it as is
        return width_box, height_box
    return (width_box * cos - height_box * sin) / det, (height_box * cos - width_box * sin) / det


def _tangent(centres, k):
    """Direction of the spine line at disc ``k``: the derivative of the parabola through
    the disc and its two nearest neighbours (a central difference inside the row; at an
    end, where the lordosis turns fastest, it follows the curve instead of the chord)."""
    count = len(centres)
    if count == 2:
        return centres[1] - centres[0]
    if k == 0:
        return (-3 * centres[0] + 4 * centres[1] - centres[2]) / 2
    if k == count - 1:
        return (3 * centres[-1] - 4 * centres[-2] + centres[-3]) / 2
    return (centres[k + 1] - centres[k - 1]) / 2


def _row(boxes, spacing_mm, mid_slice):
    """Each box's disc and bodies, top to bottom: (from_bottom, centre (slice, row, col)
    voxels, axis, height mm, length mm, upper BodyLocation, lower BodyLocation); at least
    two boxes."""
    ordered = sorted(boxes, key=lambda item: -int(item[0]))  # top to bottom
    scale = np.asarray(spacing_mm, np.float64)[1:]
    edges = np.array([box for _, box in ordered], np.float64)
    centres = (edges[:, :2] + edges[:, 2:]) / 2 * scale  # (row, col) mm
    extents = np.abs(edges[:, 2:] - edges[:, :2]) * scale
    count = len(ordered)
    axes, normals, heights, lengths = [], [], [], []
    for k in range(count):
        along = _tangent(centres, k)  # towards inferior
        axis = np.array([-along[1], along[0]]) / np.linalg.norm(along)
        axis = axis if axis[1] >= 0 else -axis  # pointing posterior
        gap = min(np.linalg.norm(centres[k] - centres[j]) for j in (k - 1, k + 1)
                  if 0 <= j < count)
        length, height = _fill(extents[k], axis)
        height = float(np.clip(height, MIN_HEIGHT_MM, MAX_HEIGHT_FRACTION * gap))
        axes.append(axis)
        normals.append(normal_up(axis))
        heights.append(height)
        lengths.append(max(float(length), 2 * height))
    upper_ends = [centres[k] + normals[k] * heights[k] / 2 for k in range(count)]
    lower_ends = [centres[k] - normals[k] * heights[k] / 2 for k in range(count)]

    def body(top, top_axis, bottom, bottom_axis, depth):
        corners = np.array([top - top_axis * depth / 2, top + top_axis * depth / 2,
                            bottom + bottom_axis * depth / 2, bottom - bottom_axis * depth / 2])
        return BodyLocation(corners=corners / scale, mid_slice=float(mid_slice),
                            slice_range=(int(round(mid_slice)),) * 2)

    bodies = [body(lower_ends[k - 1], axes[k - 1], upper_ends[k], axes[k],
                   (lengths[k - 1] + lengths[k]) / 2) for k in range(1, count)]
    first_height = np.linalg.norm(upper_ends[1] - lower_ends[0])
    last_height = np.linalg.norm(upper_ends[-1] - lower_ends[-2])
    bodies.insert(0, body(upper_ends[0] + normals[0] * first_height, axes[0],
                          upper_ends[0], axes[0], lengths[0]))
    bodies.append(body(lower_ends[-1], axes[-1], lower_ends[-1] - normals[-1] * last_height,
                       axes[-1], lengths[-1]))
    return [(int(number), np.array([float(mid_slice), *(centres[k] / scale)]), axes[k],
             heights[k], lengths[k], bodies[k], bodies[k + 1])
            for k, (number, _) in enumerate(ordered)]


def from_boxes(boxes, spacing_mm, mid_slice=0.0):
    """Localisation of the discs in a row of boxes on one sagittal slice.

    Args:
        boxes: sequence of ``(from_bottom, (row0, col0, row1, col1))``, one per disc, box
            edges in pixels of the slice; thoracic discs (from_bottom 7 and up) are used for
            their neighbours' geometry but not returned.
        spacing_mm: (3,) voxel spacing of the scan; only the ratio of rows to columns
            matters to the volumes extracted (the region is sized from the disc and bodies).
        mid_slice: slice index of the boxes' slice.

    Returns:
        Localisation of the lumbar discs, top to bottom; with fewer than two boxes there is
        no spine line to orient a disc by, and every disc is skipped with the reason.
    """
    if len(boxes) < 2:
        return Localisation([], [(level_from_bottom(n) or f"disc {n} from the bottom",
                                  "a single disc box gives no spine line to orient it by")
                                 for n, _ in boxes], source="boxes")
    found = [DiscLocation(level=level_from_bottom(number), centre=centre, axis=axis,
                          height_mm=height, upper=upper, lower=lower)
             for number, centre, axis, height, _, upper, lower
             in _row(boxes, spacing_mm, mid_slice) if level_from_bottom(number) is not None]
    return Localisation(found, [], source="boxes")


def _convex(corners, rows, cols):
    """Pixels inside a convex quadrilateral of (row, col) corners, either winding."""
    inside_all = np.ones(rows.shape, bool)
    p, q = corners, np.roll(corners, -1, axis=0)
    sign = np.sign(np.sum(p[:, 0] * q[:, 1] - q[:, 0] * p[:, 1])) or 1.0
    for a, b in zip(p, q):
        inside_all &= ((b[0] - a[0]) * (cols - a[1]) - (b[1] - a[1]) * (rows - a[0])) * sign >= 0
    return inside_all


def box_mask(boxes, spacing_mm, shape):
    """A label mask of one slice drawn from its disc boxes, in the SPIDER convention: every
    boxed disc (thoracic ones too) as the ellipse ``from_boxes`` reads in its box, label
    200 + from_bottom; every vertebral body as its quadrilateral between the discs, label
    from_bottom of the disc below it (1 = S1, the sacrum, when the lowest box is L5-S1).
    For training the disc detector where a data set has boxes and no masks.

    Args:
        boxes: as ``from_boxes`` (at least two).
        spacing_mm: (3,) or (rows, cols) pixel spacing.
        shape: (rows, cols) of the slice.

    Returns:
        int16 (rows, cols) mask.
    """
    spacing = np.asarray(spacing_mm, np.float64)[-2:]
    rows, cols = np.indices(shape, dtype=np.float64)
    mask = np.zeros(shape, np.int16)
    row = _row(boxes, (1.0, *spacing), 0.0)
    for number, _, _, _, _, upper, lower in row:  # bodies first, discs over them
        mask[_convex(upper.corners, rows, cols)] = number + 1
        mask[_convex(lower.corners, rows, cols)] = number
    for number, centre, axis, height, length, _, _ in row:
        d_row, d_col = (rows - centre[1]) * spacing[0], (cols - centre[2]) * spacing[1]
        along = d_row * axis[0] + d_col * axis[1]
        across = d_row * -axis[1] + d_col * axis[0]
        inside = (along / (length / 2)) ** 2 + (across / (height / 2)) ** 2 <= 1
        mask[inside] = tasks.FIRST_DISC_LABEL - 1 + number
    return mask
