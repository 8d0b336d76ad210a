"""Where the discs and their vertebral bodies are in a scan.

Extraction needs, per disc, its centre, its orientation in the sagittal plane
and the two vertebral bodies around it. This module produces that one
structure, ``DiscLocation``, from any source: a label mask (SPIDER
convention, or a plain disc = 1 / body = 2 mask as in 2D datasets), a
landmarks file, or the disc detector (passed in as a function). Extraction does
not care which. ``locations`` holds the structure, ``masks`` and ``landmarks``
make it from their sources, and ``localise`` picks the source for a scan.

All coordinates are in the scan's internal frame (see ``spine_tf.io.scan``):
voxel indices (slice, row, col); in-plane geometry is computed in millimetres
so anisotropic pixels are handled.
"""

from spine_tf.io import landmarks as landmarks_io
from spine_tf.io.scan import ScanError, read_mask
from spine_tf.localisation.boxes import box_mask, from_boxes, level_from_bottom
from spine_tf.localisation.landmarks import disc_between, from_landmarks
from spine_tf.localisation.locations import (SOURCES, BodyLocation, DiscLocation, Localisation,
                                             body_height_mm, normal_up)
from spine_tf.localisation.masks import (BINARY, SPIDER, disc_geometry, from_mask,
                                         guess_convention)


def localise(scan, mask_path=None, landmarks_path=None, detect=None):
    """Localisation of a scan's discs from a label mask file (either convention), else
    from a landmarks file, else with ``detect``.

    Args:
        scan: a ``spine_tf.io.scan.Scan``.
        mask_path: its label mask file, or None.
        landmarks_path: its landmarks JSON, or None.
        detect: a function scan -> Localisation for scans without either, e.g.
            ``functools.partial(spine_tf.detection.detect, detector=detection.load())``.

    Raises:
        ScanError: a file cannot be read, or nothing to localise the discs with.
    """
    if mask_path:
        mask = read_mask(mask_path, scan)
        return from_mask(mask, scan.spacing_mm, guess_convention(mask))
    if landmarks_path:
        return from_landmarks(landmarks_io.read_landmarks(landmarks_path, scan), scan)
    if detect is None:
        raise ScanError(f"{scan.path}: no mask, landmarks or detector to localise the discs")
    return detect(scan)


__all__ = ["BINARY", "SOURCES", "SPIDER", "BodyLocation", "DiscLocation", "Localisation",
           "body_height_mm", "box_mask", "disc_between", "disc_geometry", "from_boxes",
           "from_landmarks", "from_mask", "guess_convention", "level_from_bottom", "localise",
           "normal_up"]
