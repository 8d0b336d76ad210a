"""Pictures and files people look at: disc-volume montages and confusion matrices (PNG),
volumes (npz)."""

import numpy as np
from PIL import Image, ImageDraw

from spine_tf.io.atomic import atomic_path

_TITLE_PX = 14
_GAP_PX = 2
CELL_PX = 44
_MARGIN_PX = 8


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


def _blend(fraction):
    """White (0) to dark blue (1), RGB."""
    low, high = np.array([255, 255, 255]), np.array([8, 48, 107])
    return tuple(int(round(v)) for v in low + (high - low) * float(fraction))


def confusion_matrix_picture(matrix, class_names, title=""):
    """Draws a confusion matrix: rows truth, columns predicted, counts in the cells.

    A cell's shade is its share of its row (of the discs of that true class).

    Args:
        matrix: (classes, classes) counts, rows = truth.
        class_names: a name per class, for both axes.
        title: text above the matrix.

    Returns:
        uint8 RGB array; the cells are ``CELL_PX`` squares.
    """
    matrix = np.asarray(matrix, np.int64)
    n = len(class_names)
    if matrix.shape != (n, n):
        raise ValueError(f"matrix of shape {matrix.shape} for {n} class names")
    names = [str(c) for c in class_names]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def size(text):
        left, top, right, bottom = measure.textbbox((0, 0), text)
        return right - left, bottom - top

    line_px = size("Ag")[1] + 4
    label_px = max(size(name)[0] for name in names) + 6
    left = _MARGIN_PX + line_px + label_px  # "truth" written down the side, then row names
    top = _MARGIN_PX + (line_px if title else 0) + 2 * line_px  # title, "predicted", col names
    width = max(left + n * CELL_PX, size(title)[0] + 2 * _MARGIN_PX) + _MARGIN_PX
    height = top + n * CELL_PX + _MARGIN_PX
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((_MARGIN_PX, _MARGIN_PX), title, fill="black")
    y = _MARGIN_PX + (line_px if title else 0)
    draw.text((left + (n * CELL_PX - size("predicted")[0]) // 2, y), "predicted", fill="black")
    truth = Image.new("RGB", (size("truth")[0] + 2, line_px), "white")
    ImageDraw.Draw(truth).text((1, 0), "truth", fill="black")
    truth = truth.rotate(90, expand=True)
    canvas.paste(truth, (_MARGIN_PX, top + (n * CELL_PX - truth.size[1]) // 2))
    totals = matrix.sum(axis=1)
    for i, name in enumerate(names):
        w, h = size(name)
        draw.text((left + i * CELL_PX + (CELL_PX - w) // 2, y + line_px), name, fill="black")
        draw.text((left - w - 4, top + i * CELL_PX + (CELL_PX - h) // 2), name, fill="black")
        for j in range(n):
            fraction = matrix[i, j] / totals[i] if totals[i] else 0.0
            x0, y0 = left + j * CELL_PX, top + i * CELL_PX
            draw.rectangle((x0, y0, x0 + CELL_PX - 1, y0 + CELL_PX - 1), fill=_blend(fraction),
                           outline=(200, 200, 200))
            text = str(matrix[i, j])
            tw, th = size(text)
            draw.text((x0 + (CELL_PX - tw) // 2, y0 + (CELL_PX - th) // 2), text,
                      fill="white" if fraction > 0.5 else "black")
    return np.asarray(canvas)


def heat_colours(values):
    """A map in [0, 1] as "hot" colours (black, red, yellow, white): float (..., 3)."""
    values = np.clip(np.asarray(values, np.float32), 0, 1)[..., None]
    return np.clip(3 * values - np.array([0, 1, 2], np.float32), 0, 1)


def heat_blend(grey, weight):
    """Grey values with a map blended over them in heat colours, the map value as the
    colour's weight (0: plain grey): float (..., 3) of two same-shape arrays in [0, 1]."""
    grey = np.clip(np.asarray(grey, np.float32), 0, 1)[..., None]
    weight = np.clip(np.asarray(weight, np.float32), 0, 1)
    return (1 - weight[..., None]) * grey + weight[..., None] * heat_colours(weight)


def overlay_montage(volumes, maps, titles=None, slices=None):
    """A montage (as ``montage``) of volumes with maps (hotspots) overlaid in heat colours.

    Each voxel is the grey volume blended with the heat colour of its map
    value, with the map value as the colour's weight (0: plain grey).

    Args:
        volumes: sequence of (rows, cols, slices) arrays in [0, 1].
        maps: the same shapes, values in [0, 1].
        titles: optional text per row.
        slices: which slices to show (default: all).

    Returns:
        uint8 RGB array (height, width, 3).
    """
    volumes = [np.asarray(v, np.float32) for v in volumes]
    maps = [np.clip(np.asarray(m, np.float32), 0, 1) for m in maps]
    if len(maps) != len(volumes) or any(m.shape != v.shape for m, v in zip(maps, volumes)):
        raise ValueError(f"overlay_montage needs one map per volume of the same shape, got "
                         f"{[m.shape for m in maps]} for {[v.shape for v in volumes]}")
    blended = [heat_blend(v, m) for v, m in zip(volumes, maps)]  # (rows, cols, slices, 3)
    return np.stack([montage([b[..., c] for b in blended], titles, slices) for c in range(3)],
                    axis=-1)
