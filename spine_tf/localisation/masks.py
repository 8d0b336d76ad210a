"""Discs and vertebral bodies from a label mask: the SPIDER convention (vertebrae 1-25,
discs 201-225 counted from the bottom, canal 100) or a plain one (disc 1, body 2)."""

import numpy as np
from scipy import ndimage

from spine_tf import tasks
from spine_tf.localisation.locations import (BodyLocation, DiscLocation, Localisation,
                                             body_height_mm, normal_up)

SPIDER = "spider"
BINARY = "binary"


def from_mask(mask, spacing_mm, convention=SPIDER, cut_bodies=False):
    """Localises discs from a label mask in the internal frame.

    A disc's centre is the middle of the disc space: half way along the disc
    (between its anterior and posterior tips) and, there, half way between
    the two endplates. For a wedge-shaped disc this is the same point that
    :func:`disc_between` finds from the vertebral corners, while the disc's
    area centroid lies towards its thicker (anterior) end. The height is the
    mean height (area over length) on the disc's mid-sagittal slice.

    Args:
        mask: int array (slices, rows, cols).
        spacing_mm: (3,) spacing of the mask.
        convention: ``"spider"`` (discs 201.., 201 = L5-S1, name the levels;
            every other label below 200 except the canal, 100, is a vertebra —
            SPIDER's 101.. mark vertebrae partly out of view) or ``"binary"``
            (1 disc, 2 body; discs are connected components, named upwards from
            L5-S1). Either way a disc takes the nearest body above and below
            it along its normal, so the vertebra numbering (which differs
            between data sets: S1 or L5 as 1) does not matter.
        cut_bodies: keep a disc one of whose bodies is cut off by the field of
            view (``extend_cut_body``; the top disc of many real slices), with
            a note, instead of skipping it. The detector does; masks (training
            data) do not.

    Returns:
        Localisation. A disc whose body above or below is missing, or which
        (or whose bodies) touch the edge of the field of view, is skipped with
        the reason; with the SPIDER convention, so is every lumbar level whose
        disc is not in the mask at all.
    """
    mask = np.asarray(mask)
    spacing_mm = np.asarray(spacing_mm, np.float64)
    if convention == SPIDER:
        values = set(int(v) for v in np.unique(mask))
        discs = [(level, mask == tasks.disc_label_of_level(level)) for level in tasks.LEVELS
                 if tasks.disc_label_of_level(level) in values]
        absent = [level for level in tasks.LEVELS
                  if tasks.disc_label_of_level(level) not in values]
        body_list = []
        for value in sorted(v for v in values if 0 < v < 200 and v != tasks.CANAL_LABEL):
            body = _Shape(mask == value, spacing_mm)
            # SPIDER marks vertebrae only partly in view as 100 + n
            body.touches_edge = body.touches_edge or value > tasks.CANAL_LABEL
            body_list.append(body)
    elif convention == BINARY:
        discs = _components(mask == 1, spacing_mm, min_area_mm2=20.0)
        body_list = [_Shape(b, spacing_mm)
                     for b in _components(mask == 2, spacing_mm, min_area_mm2=60.0)]
        discs = _name_from_bottom(discs, spacing_mm)
        absent = []
    else:
        raise ValueError(f"unknown mask convention {convention!r}; use 'spider' or 'binary'")

    found, skipped, notes = [], [], []
    for level, disc_mask in discs:
        disc = _Shape(disc_mask, spacing_mm)
        if disc.touches_edge:
            skipped.append((level, "disc touches the edge of the field of view"))
            continue
        upper, lower = _neighbours(disc, body_list)
        reason = None
        if upper is None or lower is None:
            reason = f"no vertebral body found {'above' if upper is None else 'below'} the disc"
        elif upper.touches_edge or lower.touches_edge:
            reason = "a neighbouring vertebral body is cut off by the field of view"
        bodies = None
        if reason and upper is not None and lower is not None and cut_bodies:
            bodies = extend_cut_body(disc, upper, lower, spacing_mm)
            if bodies is not None:
                side = "above" if upper.touches_edge else "below"
                notes.append(f"{level}: the vertebral body {side} is cut off by the field of "
                             "view; its far side was placed as far from the disc as the other "
                             "body is tall")
        if reason and bodies is None:
            skipped.append((level, reason))
            continue
        centre, height = disc.disc_centre_and_height()
        upper_body, lower_body = bodies or (upper.body(disc.axis), lower.body(disc.axis))
        found.append(DiscLocation(level=level, centre=centre, axis=disc.axis,
                                  height_mm=height, upper=upper_body, lower=lower_body))
    skipped.extend((level, "the disc is not in the mask (outside the field of view or not "
                           "labelled)") for level in absent)
    order = {level: i for i, level in enumerate(tasks.LEVELS)}
    found.sort(key=lambda d: order[d.level])
    skipped.sort(key=lambda item: order.get(item[0], -1))
    return Localisation(found, skipped, notes, source="mask")


CUT_BODY_MIN_FRACTION = 0.3
"""``extend_cut_body``: the least share of the whole body's height that must be in view."""


def extend_cut_body(disc, upper, lower, spacing_mm):
    """(upper, lower) BodyLocations of a disc exactly one of whose bodies is cut off by the
    field of view. The cut body's rectangle is aligned with the disc (a cut body's own axes
    are unreliable): across the disc, the extent of its pixels; along the disc's normal, from
    its side that faces the disc to as far as the whole body is tall. None when both are cut,
    or less than ``CUT_BODY_MIN_FRACTION`` of that height is in view."""
    if upper.touches_edge == lower.touches_edge:
        return None
    cut = upper if upper.touches_edge else lower
    whole = lower.body(disc.axis) if cut is upper else upper.body(disc.axis)
    height = body_height_mm(whole, spacing_mm)
    centred = cut.points_mm - cut.centre_mm
    lo_u, hi_u = np.percentile(centred @ disc.axis, [0.5, 99.5])
    lo_v, hi_v = np.percentile(centred @ disc.normal_up, [0.5, 99.5])
    if hi_v - lo_v < CUT_BODY_MIN_FRACTION * height:
        return None
    # along the normal (superior +): the upper body from its lower side up, the lower down
    top, bottom = (lo_v + height, lo_v) if cut is upper else (hi_v, hi_v - height)
    a, n = disc.axis, disc.normal_up
    corners_mm = cut.centre_mm + np.array([lo_u * a + top * n, hi_u * a + top * n,
                                           hi_u * a + bottom * n, lo_u * a + bottom * n])
    body = BodyLocation(corners=corners_mm / np.asarray(spacing_mm[1:]),
                        mid_slice=cut.mid_slice, slice_range=cut.slice_range)
    return (body, whole) if cut is upper else (whole, body)


def disc_geometry(binary, spacing_mm):
    """(centre (slice, row, col), axis (row, col), height mm) of one disc's binary mask.

    The same geometry :func:`from_mask` gives a disc: centre of the disc
    space on its mid-sagittal slice, unit axis pointing posterior.
    """
    shape = _Shape(np.asarray(binary, bool), np.asarray(spacing_mm, np.float64))
    centre, height = shape.disc_centre_and_height()
    return centre, shape.axis, height


def guess_convention(mask):
    """``"binary"`` for a mask with labels 0..2 only (1 disc, 2 body), else ``"spider"``."""
    return BINARY if int(np.max(mask)) <= 2 else SPIDER


def _components(binary, spacing_mm, min_area_mm2):
    labelled, count = ndimage.label(binary)
    voxel_mm2 = spacing_mm[1] * spacing_mm[2]
    out = []
    for i in range(1, count + 1):
        component = labelled == i
        # area on its largest slice, so a 3D mask is judged like a 2D one
        if component.sum(axis=(1, 2)).max() * voxel_mm2 >= min_area_mm2:
            out.append(component)
    return out


def _name_from_bottom(discs, spacing_mm):
    """Names unlabelled disc components upwards from L5-S1 (lowest = L5-S1)."""
    rows = [np.argwhere(d)[:, 1].mean() * spacing_mm[1] for d in discs]
    ordered = [discs[i] for i in np.argsort(rows)[::-1]]  # bottom first
    named = []
    for i, disc in enumerate(ordered):
        index = len(tasks.LEVELS) - 1 - i
        if index < 0:
            break
        named.append((tasks.LEVELS[index], disc))
    return named


class _Shape:
    """Geometry of one structure of a mask, on its own mid-sagittal slice."""

    def __init__(self, binary, spacing_mm):
        self.spacing = spacing_mm
        voxels = np.argwhere(binary)
        per_slice = np.bincount(voxels[:, 0], minlength=binary.shape[0])
        self.slice_range = (int(voxels[:, 0].min()), int(voxels[:, 0].max()))
        # mid-sagittal slice: area-weighted mean slice
        self.mid_slice = float(voxels[:, 0].mean())
        mid = int(round(self.mid_slice))
        if per_slice[mid] == 0:
            mid = int(np.argmax(per_slice))
        plane = voxels[voxels[:, 0] == mid][:, 1:]
        self.points_mm = plane * spacing_mm[1:]
        self.centre_mm = self.points_mm.mean(axis=0)  # area centroid
        self.centre = np.array([self.mid_slice, *(self.centre_mm / spacing_mm[1:])])
        _, rows, cols = binary.shape
        self.touches_edge = bool(
            plane[:, 0].min() == 0 or plane[:, 1].min() == 0
            or plane[:, 0].max() == rows - 1 or plane[:, 1].max() == cols - 1)
        # principal axis (long axis of a disc), oriented posterior (+col)
        centred = self.points_mm - self.centre_mm
        if len(plane) > 1:
            _, vectors = np.linalg.eigh(centred.T @ centred)
            axis = vectors[:, -1]
        else:
            axis = np.array([0.0, 1.0])
        self.axis = axis if axis[1] >= 0 else -axis

    @property
    def normal_up(self):
        """Unit (row, col) normal to the axis, pointing superior (to row 0)."""
        return normal_up(self.axis)

    def disc_centre_and_height(self):
        """Centre (slice, row, col) of the disc space and the disc's mean height (mm).

        Along the axis: half way between the disc's two tips. Across: the
        mean position of the disc's pixels in the middle fifth of its length,
        which is half way between the endplates there.
        """
        pixel_mm = np.asarray(self.spacing[1:])
        centred = self.points_mm - self.centre_mm
        along = centred @ self.axis
        across = centred @ self.normal_up
        middle = (along.min() + along.max()) / 2
        # pixel centres span the length less about one pixel
        length = along.max() - along.min() + float(np.abs(self.axis) @ pixel_mm)
        off = np.abs(along - middle)
        # a region with a gap at its middle (two blobs joined at the tips): the pixels
        # nearest the middle instead
        band = off <= max(0.1 * length, float(pixel_mm.max()), off.min())
        centre_mm = self.centre_mm + middle * self.axis + across[band].mean() * self.normal_up
        height = len(along) * pixel_mm[0] * pixel_mm[1] / max(length, 1e-6)
        centre = np.array([self.mid_slice, *(centre_mm / pixel_mm)])
        return centre, float(height)

    def body(self, disc_axis):
        """BodyLocation: the body's bounding rectangle along its own principal axes.

        The body's axes are the principal axes of its mid-sagittal section
        (the one nearer the disc's axis runs antero-posterior); its corners
        are the 0.5 and 99.5 percentiles of its pixels along them. When the
        principal axes are ill-defined (a section about as high as deep) or
        more than 25 degrees off the disc's, the minimum-area rectangle
        within 25 degrees of the disc's orientation is used instead.
        """
        centred = self.points_mm - self.centre_mm
        along = None
        if len(centred) > 2:
            values, vectors = np.linalg.eigh(centred.T @ centred)
            candidate = vectors[:, int(np.argmax(np.abs(vectors.T @ disc_axis)))]
            candidate = candidate if candidate[1] >= 0 else -candidate
            distinct = values[1] > 1.2 * values[0]
            if distinct and candidate @ disc_axis > np.cos(np.radians(25.0)):
                along = candidate
        if along is None:
            along = self._min_area_direction(centred, disc_axis)
        up = np.array([-along[1], along[0]])  # superior: rotate by -90 deg
        if up[0] > 0:
            up = -up
        lo_u, hi_u = np.percentile(centred @ along, [0.5, 99.5])
        lo_v, hi_v = np.percentile(centred @ up, [0.5, 99.5])
        corners_mm = self.centre_mm + np.array([
            lo_u * along + hi_v * up, hi_u * along + hi_v * up,
            hi_u * along + lo_v * up, lo_u * along + lo_v * up])
        return BodyLocation(corners=corners_mm / self.spacing[1:], mid_slice=self.mid_slice,
                            slice_range=self.slice_range)

    @staticmethod
    def _min_area_direction(centred, disc_axis):
        """Posterior direction of the smallest rectangle within 25 deg of the disc's."""
        reference = np.arctan2(disc_axis[0], disc_axis[1])
        best = None
        for angle in reference + np.radians(np.arange(-25.0, 25.5, 1.0)):
            along = np.array([np.sin(angle), np.cos(angle)])  # posterior, (row, col)
            up = np.array([-along[1], along[0]])
            u, v = centred @ along, centred @ up
            area = np.ptp(u) * np.ptp(v)
            if best is None or area < best[0]:
                best = (area, along)
        return best[1]


_MAX_BODY_GAP_MM = 10.0


def _neighbours(disc, bodies):
    """The bodies directly above and below a disc, along the disc's normal.

    A body counts when its centre lies within 25 mm of the disc's centre
    along the disc and across slices, and its near edge within
    ``_MAX_BODY_GAP_MM`` of the disc's edge (so a missing body is not
    replaced by the next one beyond another disc).
    """
    normal_up = disc.normal_up
    centre, height_mm = disc.disc_centre_and_height()
    centre_mm = centre[1:] * disc.spacing[1:]
    upper = lower = None
    best_up = best_down = np.inf
    for body in bodies:
        offset = body.centre_mm - centre_mm
        height = offset @ normal_up
        sideways = abs(offset @ disc.axis)
        lateral = abs(body.mid_slice - disc.mid_slice) * disc.spacing[0]
        if sideways > 25.0 or lateral > 25.0:
            continue
        across = (body.points_mm - centre_mm) @ normal_up
        gap = across.min() if height > 0 else -across.max()
        if gap > height_mm / 2 + _MAX_BODY_GAP_MM:
            continue
        if 0 < height < best_up:
            upper, best_up = body, height
        elif -best_down < height < 0:
            lower, best_down = body, -height
    return upper, lower
