"""Hotspots as files: PNG montages over the disc volumes, arrays (npz), and NIfTI
volumes in the scan's own grid and affine."""

import os

import numpy as np

from spine_tf import extraction
from spine_tf.hotspots.measure import per_slice
from spine_tf.hotspots.saliency import as_volumes


def overlay_pictures(volumes, task_hotspots, levels=None, slices=None):
    """A PNG-ready montage of one task's hotspots over their volumes (one row per disc).

    Args:
        volumes: (n, 112, 224, 9) disc volumes in [0, 1].
        task_hotspots: the task's ``TaskHotspots``.
        levels: optional level name per disc, for the titles.
        slices: slices to show (default all 9).

    Returns:
        uint8 RGB array; titles give level, task, class and probability.
    """
    from spine_tf.io import pictures as report
    return report.overlay_montage(as_volumes(volumes), task_hotspots.maps,
                                  task_hotspots.titles(levels), slices=slices)


def save_outputs(out_dir, name, volumes, per_task, levels=None, voxel_to_scans=None):
    """Writes a batch of discs' hotspots as arrays and PNG montages (atomically).

    Files: ``<name>_hotspots.npz`` (``maps`` float32 (discs, tasks, 112, 224,
    9), ``tasks``, ``classes`` and ``probabilities`` (discs, tasks),
    ``levels``, ``voxel_to_scan`` when given) and ``<name>_hotspots_<task>.png``
    per task (slices 1..9 of every disc, hotspot over volume).

    Returns:
        list of the paths written.
    """
    from spine_tf.io import pictures as report
    from spine_tf.io.atomic import atomic_path
    volumes = as_volumes(volumes)
    names = list(per_task)
    arrays = {"maps": np.stack([per_task[t].maps for t in names], axis=1),
              "tasks": np.array(names),
              "classes": np.stack([per_task[t].classes for t in names], axis=1),
              "probabilities": np.stack([per_task[t].probabilities for t in names], axis=1)}
    if levels is not None:
        arrays["levels"] = np.array(levels)
    if voxel_to_scans is not None:
        arrays["voxel_to_scan"] = np.asarray(voxel_to_scans)
    paths = [os.path.join(out_dir, f"{name}_hotspots.npz")]
    with atomic_path(paths[0]) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    for task_name in names:
        paths.append(os.path.join(out_dir, f"{name}_hotspots_{task_name}.png"))
        report.save_png(overlay_pictures(volumes, per_task[task_name], levels), paths[-1])
    return paths


def to_scan(hotspot, voxel_to_scan, scan_shape):
    """A disc's hotspot on the scan's internal grid (``extraction.volume_to_scan``)."""
    return extraction.volume_to_scan(per_slice(hotspot), np.asarray(voxel_to_scan), scan_shape)


def scan_hotspots(maps, voxel_to_scans, scan_shape):
    """The hotspots of a scan's discs on its grid, the maximum where disc volumes overlap.

    Args:
        maps: (discs, 112, 224, 9) one task's hotspots.
        voxel_to_scans: (discs, 4, 4) the discs' transforms.
        scan_shape: (slices, rows, cols) of the scan (internal frame).

    Returns:
        float32 array of ``scan_shape`` in [0, 1].
    """
    out = np.zeros(scan_shape, np.float32)
    for hotspot, transform in zip(maps, voxel_to_scans):
        np.maximum(out, to_scan(hotspot, transform, scan_shape), out=out)
    return out


def save_scan_hotspots(path, scan, per_task, voxel_to_scans):
    """Writes one 4D NIfTI (one volume per task, in ``per_task``'s order) in the scan's grid.

    The file overlays the scan file voxel for voxel in any viewer (its own
    voxel order and affine, ``spine_tf.io.scan.save_nifti``; atomic).

    Args:
        path: ``.nii.gz`` target.
        scan: the ``spine_tf.io.Scan`` the discs were extracted from.
        per_task: {task: TaskHotspots} of the scan's discs (``explain``).
        voxel_to_scans: (discs, 4, 4) their transforms.

    Returns:
        float32 (slices, rows, cols, tasks) internal-frame array written.
    """
    from spine_tf.io.scan import save_nifti
    stacked = np.stack([scan_hotspots(h.maps, voxel_to_scans, scan.shape)
                        for h in per_task.values()], axis=-1)
    save_nifti(stacked, path, scan, dtype=np.float32)
    return stacked
