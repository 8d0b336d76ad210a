"""The scan as a reader checks it: its mid-sagittal slice with every disc boxed, named and
coloured by grade (``overview.png``), and the hotspots of each task on the scan itself
(``hotspots_scan_<task>.png``).

A disc's box lies on its own slice, in voxel (row, col) coordinates of the scan's internal
frame: a rectangle centred on the disc centre, its long sides along the disc axis spanning the
four endplate corners of the two vertebral bodies (the disc's anterior-posterior extent), its
short sides the disc height (``disc_box``). The overview slice is the median of the graded
discs' centre slices (a 2D scan's one slice). Each box is coloured by the grade of the primary
task (``primary_task``: Pfirrmann's grade where the model grades it) on a green (normal) to red
(worst) scale, ``grade_colour``; a disc with low localisation confidence gets a dashed magenta
outline and a "?" (``FLAG_COLOUR``, a colour neither the grade scale nor the hotspot colours
use); a disc localised but not graded (its volume could not be cut) a thin grey box.

Example:
    marks = disc_marks(record)
    picture, frame = draw_overview(window(scan.image[record_slice]), scan.spacing_mm[1:], marks,
                                   legend=legend_items(record))
"""

import dataclasses

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from spine_tf import tasks
from spine_tf.extraction import COLS, ROWS
from spine_tf.io.pictures import heat_blend, save_png
from spine_tf.localisation import normal_up

PRIMARY_TASK = "pfirrmann"
GRADE_STOPS = ((26, 152, 80), (145, 207, 96), (254, 224, 139), (252, 141, 89), (215, 48, 39))
"""The grade scale, best to worst: green, light green, yellow, orange, red."""
FLAG_COLOUR = (230, 0, 230)
"""Low localisation confidence: magenta, in no grade colour and no hotspot colour."""
UNGRADED_COLOUR = (150, 150, 150)
IMAGE_HEIGHT_PX = 768
MAX_IMAGE_WIDTH_PX = 1024
_FONT_PX = 15
_LINE_PX = 3


def disc_box(disc, spacing_mm):
    """A disc's box on its own slice: (4, 2) (row, col) voxel corners.

    Corners in order anterior-superior, posterior-superior, posterior-inferior,
    anterior-inferior, as the vertebral bodies' corners are.

    Args:
        disc: a ``DiscLocation``.
        spacing_mm: the scan's (slices, rows, cols) spacing.

    Returns:
        float64 (4, 2) array.
    """
    in_plane_mm = np.asarray(spacing_mm, np.float64)[-2:]
    centre_mm = np.asarray(disc.centre, np.float64)[1:] * in_plane_mm
    axis = np.asarray(disc.axis, np.float64)
    axis = axis / np.linalg.norm(axis)
    up = normal_up(axis)
    endplates = np.concatenate([np.asarray(disc.upper.corners)[[2, 3]],
                                np.asarray(disc.lower.corners)[[0, 1]]]) * in_plane_mm
    along = (endplates - centre_mm) @ axis
    anterior, posterior = float(along.min()), float(along.max())
    half = float(disc.height_mm) / 2
    corners_mm = centre_mm + np.array([anterior * axis + half * up, posterior * axis + half * up,
                                       posterior * axis - half * up, anterior * axis - half * up])
    return corners_mm / in_plane_mm


def overview_slice(centre_slices, num_slices):
    """The slice the overview shows: the median of the discs' centre slices, in the scan."""
    if not len(centre_slices):
        return num_slices // 2
    return int(np.clip(np.round(np.median(centre_slices)), 0, num_slices - 1))


def window(image):
    """A slice contrast-windowed to [0, 1] between its 0.5th and 99.5th percentiles."""
    image = np.asarray(image, np.float32)
    low, high = np.percentile(image, [0.5, 99.5])
    if high <= low:
        return np.zeros_like(image)
    return np.clip((image - low) / (high - low), 0, 1)


def primary_task(task_names):
    """The task whose grade colours the boxes: Pfirrmann's grade, else the first task."""
    return PRIMARY_TASK if PRIMARY_TASK in task_names else task_names[0]


def grade_colour(grade, num_classes):
    """The colour of a grade on the green (class 0) to red (last class) scale, RGB."""
    fraction = grade / max(num_classes - 1, 1) * (len(GRADE_STOPS) - 1)
    low = min(int(np.floor(fraction)), len(GRADE_STOPS) - 2)
    t = fraction - low
    return tuple(int(round((1 - t) * a + t * b))
                 for a, b in zip(GRADE_STOPS[low], GRADE_STOPS[low + 1]))


def hex_colour(rgb):
    """``#rrggbb`` of an RGB triple."""
    return "#" + "".join(f"{int(v):02x}" for v in rgb)


@dataclasses.dataclass(frozen=True)
class DiscMark:
    """What the overview draws for one disc.

    Attributes:
        level: e.g. "L4-L5".
        box: (4, 2) (row, col) voxel corners (``disc_box``).
        colour: RGB of its primary grade (grey when not graded).
        label: the text beside it, e.g. "L4-L5 Pfirrmann 3".
        flagged: low localisation confidence.
        graded: False for a disc localised but not graded.
    """

    level: str
    box: np.ndarray
    colour: tuple
    label: str
    flagged: bool = False
    graded: bool = True


def disc_marks(record):
    """The marks of a scan's record: its graded discs, then the localised ones not graded.

    Args:
        record: a scan's ``grades.json`` content with ``box_voxel`` per disc.

    Returns:
        list of ``DiscMark``.
    """
    task = tasks.task_set(record.get("task_set", tasks.DEFAULT_TASK_SET))
    name = primary_task(task.names)
    primary = task.tasks[task.names.index(name)]
    marks = []
    for disc in record["discs"]:
        result = disc["tasks"][name]
        marks.append(DiscMark(
            disc["level"], np.asarray(disc["box_voxel"], np.float64),
            grade_colour(result["grade"], primary.num_classes),
            f"{disc['level']} {short_name(name)} {result['class_name']}", bool(disc["flagged"])))
    for disc in record["not_graded"]:
        if "box_voxel" in disc:
            marks.append(DiscMark(disc["level"], np.asarray(disc["box_voxel"], np.float64),
                                  UNGRADED_COLOUR, f"{disc['level']} not graded", graded=False))
    return marks


def short_name(task_name):
    """A task's name as a label says it: "Pfirrmann", "endplate upper"."""
    text = task_name.replace("_", " ")
    return text[:1].upper() + text[1:]


def legend_items(record):
    """(colour, text) of the primary task's classes, best first, for a legend."""
    task = tasks.task_set(record.get("task_set", tasks.DEFAULT_TASK_SET))
    primary = task.tasks[task.names.index(primary_task(task.names))]
    return [(grade_colour(g, primary.num_classes), f"{short_name(primary.name)} {c}")
            for g, c in enumerate(primary.class_names)]


@dataclasses.dataclass(frozen=True)
class Frame:
    """Where scan voxels land in an overview picture.

    Attributes:
        pixels_per_voxel: (rows, cols) picture pixels per scan voxel.
        image_px: (width, height) of the scan part (the legend is below it).
        size_px: (width, height) of the whole picture.
    """

    pixels_per_voxel: tuple
    image_px: tuple
    size_px: tuple

    def to_pixels(self, rows_cols):
        """(x, y) picture pixels of (..., 2) (row, col) voxel coordinates (voxel centres at
        integers)."""
        rows_cols = np.asarray(rows_cols, np.float64)
        return np.stack([(rows_cols[..., 1] + 0.5) * self.pixels_per_voxel[1],
                         (rows_cols[..., 0] + 0.5) * self.pixels_per_voxel[0]], axis=-1)


def _font(size=_FONT_PX):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # no FreeType: the small bitmap font
        return ImageFont.load_default()


def _frame(shape, spacing_rc, legend_px):
    rows, cols = shape
    row_mm, col_mm = (float(v) for v in spacing_rc)
    per_mm = min(IMAGE_HEIGHT_PX / (rows * row_mm), MAX_IMAGE_WIDTH_PX / (cols * col_mm))
    width, height = int(round(cols * col_mm * per_mm)), int(round(rows * row_mm * per_mm))
    return Frame((height / rows, width / cols), (width, height), (width, height + legend_px))


def _dashed(draw, points, colour, width, dash_px=9):
    """A closed polygon outline drawn in dashes."""
    for a, b in zip(points, np.roll(points, -1, axis=0)):
        length = float(np.hypot(*(b - a)))
        steps = max(int(length // dash_px), 1)
        for n in range(0, steps, 2):
            start = a + (b - a) * n / steps
            end = a + (b - a) * min(n + 1, steps) / steps
            draw.line([tuple(start), tuple(end)], fill=colour, width=width)


def _outward(points, px):
    """A polygon pushed ``px`` pixels away from its centre."""
    centre = points.mean(axis=0)
    away = points - centre
    return centre + away * (1 + px / np.maximum(np.linalg.norm(away, axis=1, keepdims=True), 1))


def _draw_mark(draw, mark, frame, font, outline_px):
    points = frame.to_pixels(mark.box)
    if not mark.graded:
        draw.polygon([tuple(p) for p in points], outline=mark.colour, width=1)
    elif mark.flagged:
        _dashed(draw, points, mark.colour, outline_px)
        _dashed(draw, _outward(points, outline_px + 3), FLAG_COLOUR, outline_px)
    else:
        draw.polygon([tuple(p) for p in points], outline=mark.colour, width=outline_px)
    text = mark.label + (" ?" if mark.flagged else "")
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=2)
    x = points[:, 0].min() - 12 - (right - left)
    if x < 2:  # no room on the anterior side: write it posterior of the box
        x = points[:, 0].max() + 12
    y = points[:, 1].mean() - (bottom - top) / 2
    colour = FLAG_COLOUR if mark.flagged else mark.colour
    draw.text((x, y), text, fill=colour, font=font, stroke_width=2, stroke_fill=(0, 0, 0))


def _legend_rows(items, width, font, draw):
    """Legend entries (swatch style, colour, text) wrapped into rows that fit ``width``."""
    rows, row, x = [], [], 8
    for item in items:
        w = 26 + draw.textlength(item[2], font=font) + 16
        if row and x + w > width:
            rows.append(row)
            row, x = [], 8
        row.append((x, item))
        x += w
    return rows + ([row] if row else [])


def _legend(items):
    """The entries of the picture's legend: the grade scale, flagged, not graded."""
    return ([("box", colour, text) for colour, text in items]
            + [("flag", FLAG_COLOUR, "? low localisation confidence"),
               ("thin", UNGRADED_COLOUR, "not graded")])


def draw_overview(image, spacing_rc, marks, legend=(), hotspot=None):
    """Draws a scan slice (optionally with a hotspot) with the discs' boxes and a legend.

    Args:
        image: (rows, cols) slice in [0, 1] (``window``).
        spacing_rc: its (rows, cols) spacing in mm: the picture keeps the
            scan's proportions.
        marks: ``DiscMark`` per disc.
        legend: (colour, text) of the grade scale (``legend_items``); none:
            no legend strip.
        hotspot: optional (rows, cols) map in [0, 1], blended over the slice
            in heat colours (the map value as the colour's weight).

    Returns:
        (uint8 RGB picture, ``Frame``).
    """
    image = np.clip(np.asarray(image, np.float32), 0, 1)
    font = _font()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    entries = _legend(legend) if legend else []
    probe = _frame(image.shape, spacing_rc, 0)
    legend_rows = _legend_rows(entries, probe.image_px[0], font, measure)
    frame = _frame(image.shape, spacing_rc, 24 * len(legend_rows) + (8 if legend_rows else 0))
    size = frame.image_px

    def upsample(array):
        return np.asarray(Image.fromarray(array, mode="F").resize(size, Image.BILINEAR))
    grey = np.clip(upsample(image), 0, 1)
    grey = (grey[..., None] * np.ones(3, np.float32) if hotspot is None
            else heat_blend(grey, upsample(np.asarray(hotspot, np.float32))))
    canvas = Image.new("RGB", frame.size_px, (0, 0, 0))
    canvas.paste(Image.fromarray((grey * 255 + 0.5).astype(np.uint8)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for mark in marks:
        _draw_mark(draw, mark, frame, font, 2 if hotspot is not None else _LINE_PX)
    for n, row in enumerate(legend_rows):
        y = size[1] + 8 + 24 * n
        for x, (style, colour, text) in row:
            swatch = np.array([[x, y + 3], [x + 18, y + 3], [x + 18, y + 15], [x, y + 15]],
                              np.float64)
            if style == "flag":
                _dashed(draw, swatch, colour, 2, dash_px=4)
            else:
                draw.polygon([tuple(p) for p in swatch], outline=colour,
                             fill=colour if style == "box" else None,
                             width=1 if style == "thin" else 2)
            draw.text((x + 26, y + 1), text, fill=(235, 235, 235), font=font)
    return np.asarray(canvas), frame


def disc_footprint(voxel_to_scan, shape):
    """Which (rows, cols) scan voxels a disc volume covers in-plane: bool (rows, cols)."""
    in_plane = np.asarray(voxel_to_scan, np.float64)[1:3][:, [0, 1, 3]]
    to_volume = np.linalg.inv(np.vstack([in_plane, [0, 0, 1]]))
    r, c = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    i, j, _ = to_volume @ np.stack([r.ravel(), c.ravel(), np.ones(r.size)])
    inside = (i >= -0.5) & (i <= ROWS - 0.5) & (j >= -0.5) & (j <= COLS - 0.5)
    return inside.reshape(shape)


def hotspot_on_own_slices(scan_map, voxel_to_scans, centre_slices):
    """One (rows, cols) map of every disc's hotspot, each taken on the disc's own centre
    slice within the disc's footprint (the maximum where footprints overlap).

    Args:
        scan_map: (slices, rows, cols) one task's hotspots in the scan's grid
            (``spine_tf.hotspots.save_scan_hotspots``).
        voxel_to_scans: the graded discs' transforms.
        centre_slices: their centre slices.

    Returns:
        float32 (rows, cols) in [0, 1].
    """
    scan_map = np.asarray(scan_map, np.float32)
    out = np.zeros(scan_map.shape[1:], np.float32)
    for transform, centre in zip(voxel_to_scans, centre_slices):
        s = int(np.clip(np.round(centre), 0, scan_map.shape[0] - 1))
        np.maximum(out, np.where(disc_footprint(transform, out.shape), scan_map[s], 0), out=out)
    return out


def save_overview(path, scan, record):
    """Writes a scan's ``overview.png`` and says where it lies and how it was drawn.

    Args:
        path: the PNG to write (atomically).
        scan: the ``spine_tf.io.Scan`` graded.
        record: its record, discs with ``box_voxel`` and ``centre_voxel``.

    Returns:
        The record's ``overview`` entry: ``slice`` (internal frame),
        ``task`` (the colours' task), ``pixels_per_voxel`` (rows, cols),
        ``image_px`` and ``size_px`` (width, height).
    """
    s = overview_slice([d["centre_voxel"][0] for d in record["discs"]], scan.num_slices)
    picture, frame = draw_overview(window(scan.image[s]), scan.spacing_mm[1:],
                                   disc_marks(record), legend_items(record))
    save_png(picture, path)
    names = tasks.task_set(record.get("task_set", tasks.DEFAULT_TASK_SET)).names
    return {"slice": s, "task": primary_task(names),
            "pixels_per_voxel": [round(float(v), 6) for v in frame.pixels_per_voxel],
            "image_px": list(frame.image_px), "size_px": list(frame.size_px)}


def save_scan_hotspot(path, scan, record, scan_map, voxel_to_scans):
    """Writes one task's hotspots on the overview slice (``hotspots_scan_<task>.png``).

    Args:
        path: the PNG to write (atomically).
        scan: the scan graded.
        record: its record, with its ``overview`` entry.
        scan_map: (slices, rows, cols) the task's hotspots in the scan's grid.
        voxel_to_scans: the graded discs' transforms, in record order.
    """
    s = record["overview"]["slice"]
    hotspot = hotspot_on_own_slices(scan_map, voxel_to_scans,
                                    [d["centre_voxel"][0] for d in record["discs"]])
    picture, _ = draw_overview(window(scan.image[s]), scan.spacing_mm[1:], disc_marks(record),
                               hotspot=hotspot)
    save_png(picture, path)


__all__ = ["DiscMark", "FLAG_COLOUR", "Frame", "GRADE_STOPS", "PRIMARY_TASK", "UNGRADED_COLOUR",
           "disc_box", "disc_footprint", "disc_marks", "draw_overview", "grade_colour",
           "hex_colour", "hotspot_on_own_slices", "legend_items", "overview_slice",
           "primary_task", "save_overview", "save_scan_hotspot", "short_name", "window"]
