"""The one structure every source of disc positions produces: ``Localisation``, a list
of ``DiscLocation`` (centre, orientation, the two vertebral bodies) in a scan's internal
frame (voxel indices (slice, row, col); in-plane geometry in millimetres)."""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class BodyLocation:
    """A vertebral body: corners on its mid-sagittal slice and its slice extent.

    Attributes:
        corners: (4, 2) (row, col) voxel coordinates: anterior-superior,
            posterior-superior, posterior-inferior, anterior-inferior.
        mid_slice: slice coordinate of the corners.
        slice_range: (first, last) slices the body is present on.
    """

    corners: np.ndarray
    mid_slice: float
    slice_range: tuple


@dataclasses.dataclass(frozen=True)
class DiscLocation:
    """One disc, ready for extraction.

    Attributes:
        level: e.g. "L4-L5".
        centre: (3,) (slice, row, col) voxel coordinates of the disc centre:
            the middle of the disc space, half way between the midpoints of
            the two endplates (not the area centroid, which a wedge-shaped
            disc shifts towards its thick end).
        axis: (2,) unit (row, col) vector in millimetres along the disc,
            pointing posterior.
        height_mm: disc height.
        upper, lower: BodyLocation of the vertebral bodies above and below.
        confidence: 1 for masks and landmarks; the detector's score otherwise.
    """

    level: str
    centre: np.ndarray
    axis: np.ndarray
    height_mm: float
    upper: BodyLocation
    lower: BodyLocation
    confidence: float = 1.0


SOURCES = ("mask", "landmarks", "boxes", "detector")
"""What a Localisation's positions can come from, surest first."""


@dataclasses.dataclass
class Localisation:
    """The discs found in a scan (top to bottom) and those that were not usable.

    ``notes``: sentences about what a detector ignored or assumed.
    ``pixel_size_mm``: the in-plane pixel size the detector chose for a
    picture that recorded none (None: the scan's own was used).
    ``source``: where the positions and level names came from: ``"mask"``,
    ``"landmarks"``, ``"boxes"`` or ``"detector"`` (SOURCES).
    """

    discs: list
    skipped: list  # (level or description, reason)
    notes: list = dataclasses.field(default_factory=list)
    pixel_size_mm: float = None
    source: str = ""

    def by_level(self):
        return {disc.level: disc for disc in self.discs}


def body_height_mm(body, spacing_mm):
    """Mean of the anterior and posterior heights of a body."""
    c = body.corners * np.asarray(spacing_mm[1:])
    return float((np.linalg.norm(c[0] - c[3]) + np.linalg.norm(c[1] - c[2])) / 2)


def normal_up(axis):
    """Unit (row, col) normal to a disc's axis, pointing superior (to row 0)."""
    normal = np.array([-axis[1], axis[0]])
    return normal if normal[0] <= 0 else -normal
