"""Pictures and files people look at: disc-volume montages (PNG), volumes (npz)."""

import numpy as np
from PIL import Image, ImageDraw

from spine_tf.io.atomic import atomic_path

_TITLE_PX = 14
_GAP_PX = 2


def montage(volumes, titles=None, slices=None):
    """Tiles disc volumes into one greyscale picture: one row per volume.

    Args:
        volumes: sequence of (rows, cols, slices) arrays in [0, 1].
        titles: optional text per row, drawn above it.
        slices: which slices to show (default: all).

    Returns:
        uint8 array (height, width).
    """
    volumes = [np.asarray(v, np.float32) for v in volumes]
    if not volumes:
        raise ValueError("montage needs at least one volume")
    rows, cols, depth = volumes[0].shape
    slices = list(range(depth)) if slices is None else list(slices)
    title_px = _TITLE_PX if titles else 0
    width = len(slices) * (cols + _GAP_PX) - _GAP_PX
    height = len(volumes) * (rows + title_px + _GAP_PX) - _GAP_PX
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for n, volume in enumerate(volumes):
        top = n * (rows + title_px + _GAP_PX)
        if titles:
            draw.text((2, top + 1), str(titles[n]), fill=255)
        for m, k in enumerate(slices):
            tile = Image.fromarray((np.clip(volume[..., k], 0, 1) * 255).astype(np.uint8))
            canvas.paste(tile, (m * (cols + _GAP_PX), top + title_px))
    return np.asarray(canvas)


def save_png(picture, path):
    """Writes a uint8 picture (greyscale or RGB) atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(picture)).save(tmp, format="PNG")


def save_volumes(path, volumes):
    """Writes DiscVolumes to one ``.npz``: ``volumes``, ``levels``, ``voxel_to_scan``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(
                f, volumes=np.stack([v.volume for v in volumes]),
                levels=np.array([v.level for v in volumes]),
                voxel_to_scan=np.stack([v.voxel_to_scan for v in volumes]),
                confidence=np.array([v.confidence for v in volumes], np.float32))
