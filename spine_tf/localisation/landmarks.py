"""Discs and vertebral bodies from landmarks: the corners of each vertebral body
(``spine_tf.io.landmarks``)."""

import numpy as np

from spine_tf import tasks
from spine_tf.localisation.locations import BodyLocation, DiscLocation, Localisation


def from_landmarks(vertebrae, scan):
    """Localises discs from vertebral corners (``spine_tf.io.landmarks``).

    Args:
        vertebrae: ``{name: Vertebra}`` with world-coordinate corners.
        scan: the Scan they belong to.

    Returns:
        Localisation of every lumbar level whose two bodies are both given and
        lie in the scan's field of view (their corners inside the image and
        their mid-sagittal plane within its slices); the other levels are
        skipped with the reason.
    """
    to_voxel = np.linalg.inv(scan.affine)
    spacing = np.asarray(scan.spacing_mm, np.float64)
    shape = np.asarray(scan.shape, np.float64)
    bodies, outside = {}, {}
    for name, vertebra in vertebrae.items():
        homogeneous = np.column_stack([vertebra.corners, np.ones(4)])
        voxels = (to_voxel @ homogeneous.T).T[:, :3]
        mid = float(voxels[:, 0].mean())
        half_slices = vertebra.half_width_mm / spacing[0]
        beyond = (voxels < -0.5) | (voxels > shape - 0.5)
        if beyond.any():
            outside[name] = ("its mid-sagittal plane is outside the scan's slices"
                             if beyond[:, 0].any() else
                             "its corners lie outside the field of view")
            continue
        bodies[name] = BodyLocation(
            corners=voxels[:, 1:], mid_slice=mid,
            slice_range=(int(np.floor(mid - half_slices)), int(np.ceil(mid + half_slices))))
    found, skipped = [], []
    for level in tasks.LEVELS:
        names = level.split("-")
        missing = [n for n in names if n not in bodies and n not in outside]
        if missing:
            skipped.append((level, f"no landmarks for {' and '.join(missing)}"))
        elif any(n in outside for n in names):
            skipped.append((level, "; ".join(f"landmarks of {n}: {outside[n]}"
                                             for n in names if n in outside)))
        else:
            found.append(disc_between(level, bodies[names[0]], bodies[names[1]], spacing))
    return Localisation(found, skipped, source="landmarks")


def disc_between(level, upper, lower, spacing_mm):
    """The disc between two bodies: centre, axis and height from their endplates."""
    scale = np.asarray(spacing_mm[1:], np.float64)
    up_mm, low_mm = upper.corners * scale, lower.corners * scale
    # inferior endplate of the upper body (corners 3 -> 2), superior of the lower (0 -> 1)
    endplate_above = (up_mm[3], up_mm[2])
    endplate_below = (low_mm[0], low_mm[1])
    axis = (endplate_above[1] - endplate_above[0]) + (endplate_below[1] - endplate_below[0])
    axis = axis / np.linalg.norm(axis)
    mid_above = (endplate_above[0] + endplate_above[1]) / 2
    mid_below = (endplate_below[0] + endplate_below[1]) / 2
    normal = np.array([-axis[1], axis[0]])
    height = abs((mid_below - mid_above) @ normal)
    centre_mm = (mid_above + mid_below) / 2
    centre = np.array([(upper.mid_slice + lower.mid_slice) / 2, *(centre_mm / scale)])
    return DiscLocation(level=level, centre=centre, axis=axis, height_mm=float(height),
                        upper=upper, lower=lower)
