"""How well hotspots localise, as in the journal version, and how task-specific they are.

``hotspot_boxes`` thresholds a map at a percentile of its values and fits a
box per slice; ``volume_iou`` compares per-slice boxes with the ground
truth's (``lesion_boxes`` of a spine_discs example), ``WHOLE_VOLUME`` is the
baseline box; ``localisation`` tabulates both for a model
(``spine_tf.evaluation.runs.measure_hotspots`` for a trained run directory).
``upper_fraction`` measures task specificity (rows run from head to feet, so
the upper half is rows 0..55): ``task_specificity`` on phantom discs with a
lesion box above and below, ``label_specificity`` on any labelled discs (real
data has labels but no lesion boxes).
"""

import numpy as np

from spine_tf import tasks
from spine_tf.hotspots.saliency import (AUGMENTATIONS, CHUNK, COLS, ROWS, SLICES, Hotspots,
                                        plain_saliency)
from spine_tf.io.codec import from_stored
from spine_tf.modeling import metrics
from spine_tf.modeling.model import task_set as model_task_set
from spine_tf.tasks import VOLUME_SHAPE

PERCENTILE = 97.0
"""Default threshold percentile of the localisation metric (the journal version: 95..99)."""
PERCENTILES = (95.0, 97.0, 99.0)
WHOLE_VOLUME = np.tile(np.array([[0.0, 0.0, 1.0, 1.0]], np.float32), (SLICES, 1))
"""The whole-volume baseline: every slice's box is the whole slice."""
LOCALISATION_JSON, LOCALISATION_MARKDOWN = "localisation.json", "localisation.md"


def per_slice(hotspot):
    hotspot = np.asarray(hotspot, np.float64)
    if hotspot.shape == (ROWS, COLS):
        hotspot = np.repeat(hotspot[..., None], SLICES, axis=-1)
    if hotspot.shape != tuple(VOLUME_SHAPE):
        raise ValueError(f"a hotspot must have shape {VOLUME_SHAPE} (or {(ROWS, COLS)} for a "
                         f"map without slices), got {hotspot.shape}")
    return hotspot


def hotspot_boxes(hotspot, percentile=PERCENTILE):
    """Boxes per slice around the hotspot's voxels at or above a percentile of its values.

    The percentile is taken over the whole map (all slices); voxels of value
    0 never count, so a sparse map is not thresholded to everything.

    Args:
        hotspot: (112, 224, 9) map, or (112, 224) (the same on every slice).
        percentile: in (0, 100).

    Returns:
        float32 (9, 4) boxes (ymin, xmin, ymax, xmax) normalised to the
        volume's size as ``extraction.lesion_boxes`` makes them (pixel edges:
        ymax = (last row + 1) / 112), -1 on a slice with no voxel selected.
    """
    if not 0 < percentile < 100:
        raise ValueError(f"percentile must lie in (0, 100), got {percentile}")
    hotspot = per_slice(hotspot)
    threshold = np.percentile(hotspot, percentile)
    selected = (hotspot >= threshold) & (hotspot > 0)
    boxes = -np.ones((SLICES, 4), np.float32)
    for k in range(SLICES):
        rows, cols = np.nonzero(selected[..., k])
        if rows.size:
            boxes[k] = (rows.min() / ROWS, cols.min() / COLS, (rows.max() + 1) / ROWS,
                        (cols.max() + 1) / COLS)
    return boxes


def _check_boxes(boxes, what):
    boxes = np.asarray(boxes, np.float64)
    if boxes.shape != (SLICES, 4):
        raise ValueError(f"{what} must be ({SLICES}, 4) per-slice boxes, got {boxes.shape}")
    present = boxes[:, 0] >= 0
    inverted = (boxes[present, 2] < boxes[present, 0]) | (boxes[present, 3] < boxes[present, 1])
    if inverted.any():
        raise ValueError(f"{what}: a box has ymax < ymin or xmax < xmin")
    return boxes, present


def volume_iou(boxes, truth):
    """IoU of two sets of per-slice boxes over the disc volume.

    Each slice's box covers that slice's pixels inside it; the IoU is the
    summed intersection area over the summed union area across the 9
    slices (the IoU of the two voxel sets). A slice without a box (-1)
    contributes no area.

    Args:
        boxes: (9, 4) predicted boxes (``hotspot_boxes``, ``WHOLE_VOLUME``).
        truth: (9, 4) ground-truth boxes (one task's ``lesion_boxes``).

    Returns:
        float in [0, 1].

    Raises:
        ValueError: bad shapes, or ``truth`` has no box (nothing to find).
    """
    boxes, have = _check_boxes(boxes, "boxes")
    truth, true = _check_boxes(truth, "truth")
    if not true.any():
        raise ValueError("the ground truth has no box on any slice: IoU is undefined")

    def area(b):
        return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])

    a, t = np.where(have, area(boxes), 0.0), np.where(true, area(truth), 0.0)
    height = np.minimum(boxes[:, 2], truth[:, 2]) - np.maximum(boxes[:, 0], truth[:, 0])
    width = np.minimum(boxes[:, 3], truth[:, 3]) - np.maximum(boxes[:, 1], truth[:, 1])
    inter = np.where(have & true, np.clip(height, 0, None) * np.clip(width, 0, None), 0.0)
    return float(inter.sum() / (a.sum() + t.sum() - inter.sum()))


def upper_fraction(hotspot):
    """Share of a hotspot's mass in the volume's upper half (rows 0..55, towards the head).

    Disc volumes run from head (row 0) to feet (``extraction``: rows point
    to the feet), so the upper vertebra is in the upper half.
    """
    hotspot = per_slice(hotspot)
    total = hotspot.sum()
    if total <= 0:
        raise ValueError("the hotspot is all zero: no mass to divide")
    return float(hotspot[: ROWS // 2].sum() / total)


def _lesion_rows(examples):
    """(volumes, boxes (n, lesion tasks, 9, 4)) of examples with a lesion box of any task."""
    volumes, boxes = [], []
    for example in examples:
        lesion = np.asarray(example["lesion_boxes"], np.float32)
        if not (lesion[..., 0] >= 0).any():
            continue
        volume = np.asarray(example["disc_volume"])
        if volume.dtype == np.uint16:
            from spine_tf.io.codec import VOLUME_MAX
            volume = volume.astype(np.float32) / VOLUME_MAX
        volumes.append(volume.astype(np.float32))
        boxes.append(lesion)
    return volumes, boxes


def localisation(model, examples, augmentations=AUGMENTATIONS, percentiles=PERCENTILES,
                 seed=0, chunk=CHUNK):
    """The localisation table: IoU of hotspot, plain-map and whole-volume boxes per lesion task.

    For every lesion task, over the discs whose ``lesion_boxes`` hold a box
    of that task, the mean volume IoU with the ground truth of (a) the
    augmented hotspot, (b) the plain Simonyan map, each thresholded at each
    percentile, and (c) the whole volume. The class explained is the lesion
    class (1: defect / change), the evidence the boxes mark.

    Args:
        model: SpineNet model.
        examples: iterable of spine_discs examples (dicts with
            ``disc_volume`` uint16 or float, and ``lesion_boxes`` (4, 9, 4)).
        augmentations, seed, chunk: of the hotspots.
        percentiles: thresholds to report.

    Returns:
        dict: ``tasks`` {task: {``discs``, ``whole_volume``, ``hotspot``
        {percentile: mean IoU}, ``plain`` {percentile: mean IoU}}},
        ``augmentations``, ``percentiles``.
    """
    volumes, boxes = _lesion_rows(examples)
    explainer = Hotspots(model, chunk=chunk)
    result = {"augmentations": augmentations, "percentiles": list(percentiles), "tasks": {}}
    for j, task in enumerate(tasks.LESION_TASKS):
        rows = [n for n, b in enumerate(boxes) if (b[j, :, 0] >= 0).any()]
        entry = {"discs": len(rows), "whole_volume": None,
                 "hotspot": {str(p): None for p in percentiles},
                 "plain": {str(p): None for p in percentiles}}
        result["tasks"][task.name] = entry
        if not rows:
            continue
        lesion_class = 1
        truth = [boxes[n][j] for n in rows]
        entry["whole_volume"] = float(np.mean([volume_iou(WHOLE_VOLUME, t) for t in truth]))
        maps, plain = [], []
        for start in range(0, len(rows), 16):
            batch = np.stack([volumes[n] for n in rows[start:start + 16]])
            maps.append(explainer(task.name, batch, lesion_class, augmentations, seed))
            plain.append(plain_saliency(model, task.name, batch, lesion_class))
        maps, plain = np.concatenate(maps), np.concatenate(plain)
        for p in percentiles:
            entry["hotspot"][str(p)] = float(np.mean(
                [volume_iou(hotspot_boxes(m, p), t) for m, t in zip(maps, truth)]))
            entry["plain"][str(p)] = float(np.mean(
                [volume_iou(hotspot_boxes(m, p), t) for m, t in zip(plain, truth)]))
    return result


def task_specificity(model, examples, augmentations=AUGMENTATIONS, seed=0):
    """Where the upper and lower tasks look, on discs with a lesion on both sides.

    For each lesion kind (endplate, marrow) and every disc whose
    ``lesion_boxes`` hold a box of both its ``<kind>_upper`` and
    ``<kind>_lower`` task, the lesion-class hotspot of each of the two tasks
    and its ``upper_fraction``. A task-specific model puts most of the
    upper task's mass in the upper half and most of the lower task's in the
    lower half.

    Returns:
        {kind: {``discs``, ``upper_task`` and ``lower_task`` (lists of
        upper fractions per disc), ``specific`` (share of discs with upper
        task > 0.5 > lower task; None without discs)}}.
    """
    volumes, boxes = _lesion_rows(examples)
    names = [t.name for t in tasks.LESION_TASKS]
    explainer = Hotspots(model)
    out = {}
    for kind in sorted({t.lesion[0] for t in tasks.LESION_TASKS}):
        upper, lower = f"{kind}_upper", f"{kind}_lower"
        rows = [n for n, b in enumerate(boxes)
                if (b[names.index(upper), :, 0] >= 0).any()
                and (b[names.index(lower), :, 0] >= 0).any()]
        entry = {"discs": len(rows), "upper_task": [], "lower_task": [], "specific": None}
        out[kind] = entry
        for start in range(0, len(rows), 16):
            batch = np.stack([volumes[n] for n in rows[start:start + 16]])
            result = explainer.explain(batch, (upper, lower), {upper: 1, lower: 1},
                                       augmentations, seed)
            entry["upper_task"] += [upper_fraction(m) for m in result[upper].maps]
            entry["lower_task"] += [upper_fraction(m) for m in result[lower].maps]
        if rows:
            entry["specific"] = float(np.mean([u > 0.5 > low for u, low in
                                               zip(entry["upper_task"], entry["lower_task"])]))
    return out


LABEL_GROUPS = {"upper_only": (1, 0), "lower_only": (0, 1), "both": (1, 1)}
"""The disc groups of ``label_specificity``: (upper task's label, lower task's label)."""


def sided_pairs(task_set):
    """{kind: (upper task, lower task)} of the sided lesion tasks of a ``tasks.TaskSet``
    (paper: endplate and marrow; spider: endplate; its ``modic`` has no side)."""
    sides = {t.lesion: t.name for t in task_set.lesion_tasks}
    return {kind: (sides[(kind, "upper")], sides[(kind, "lower")])
            for kind in sorted({kind for kind, _ in sides})
            if (kind, "upper") in sides and (kind, "lower") in sides}


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def _volume(stored):
    """float32 (112, 224, 9) in [0, 1] of a stored (uint16) or float disc volume."""
    stored = np.asarray(stored)
    return np.asarray(from_stored(stored)) if stored.dtype == np.uint16 \
        else stored.astype(np.float32)


def _bootstrapped(values, patients, statistic, resamples, seed):
    """{``value``, ``interval`` [low, high]} of ``statistic`` over per-disc ``values``
    (nan: no value), the interval from a patient bootstrap; None where nothing is finite."""
    values = np.asarray(values, np.float64)
    if not np.isfinite(values).any():
        return {"value": None, "interval": None}
    interval = metrics.percentile_interval(
        [statistic(values[rows]) for rows in metrics.patient_bootstrap(patients, resamples, seed)
         if np.isfinite(values[rows]).any()]) if resamples else None
    return {"value": float(statistic(values)), "interval": None if interval is None
            else list(interval)}


def _fraction(hotspot):
    """``upper_fraction``, nan for an all-zero hotspot (a dead class: no evidence anywhere)."""
    return upper_fraction(hotspot) if np.asarray(hotspot).max() > 0 else float("nan")


def label_specificity(model, examples, augmentations=AUGMENTATIONS, seed=0,
                      resamples=metrics.BOOTSTRAP_RESAMPLES, chunk=CHUNK):
    """Where the upper and lower tasks look on discs labelled on one side only (no boxes).

    For each sided pair of the model's task set (``sided_pairs``: tasks whose
    ``Task.lesion`` is (kind, ``upper``) and (kind, ``lower``)), the discs of
    each of ``LABEL_GROUPS`` by their two labels: ``upper_only`` (upper 1,
    lower 0), ``lower_only`` (0, 1) and ``both`` (1, 1); discs with a missing
    label (-1) or neither are left out. For every such disc the hotspots of
    both tasks' positive class (1: defect / change), from the same augmented
    copies, and their ``upper_fraction``. A task-specific model's upper task
    looks up and its lower task down on every disc, whichever side the lesion
    is on; a model that finds "a lesion somewhere" has both tasks look at the
    lesion (on ``upper_only`` discs, the lower task looks up too).

    Args:
        model: SpineNet model (any task set; a set without a sided pair gives {}).
        examples: iterable of spine_discs examples (dicts with ``disc_volume``
            uint16 as stored or float, ``labels`` {task: int}, ``patient_id``).
        augmentations, seed, chunk: of the hotspots (``Hotspots.explain``).
        resamples: patient-bootstrap resamples of the 95 % intervals (0: none);
            the bootstrap is drawn with ``seed``.

    Returns:
        JSON-ready {kind: {``upper_task``, ``lower_task`` (names), ``augmentations``,
        and per group {``discs``, ``patients``, ``upper_task`` and ``lower_task``
        {``upper_fraction`` (mean over discs) and ``own_half`` (share of discs
        whose hotspot puts > 0.5 of its mass in the task's own half: the upper
        half for the upper task, the lower half for the lower task), each
        {``value``, ``interval`` [low, high]}, ``fractions`` (per disc)},
        ``difference`` (mean per disc of the upper task's upper fraction minus
        the lower task's: > 0 where the tasks look apart, {``value``,
        ``interval``}), ``ids`` (patient/level/series per disc)}}}. Figures
        over no disc are None, as is the fraction of an all-zero hotspot.
    """
    task_set = model_task_set(model)
    pairs = sided_pairs(task_set)
    wanted = set(LABEL_GROUPS.values())
    volumes, rows = [], []  # rows: (labels, patient, id) of the discs kept
    for example in examples:
        labels = {name: int(example["labels"][name]) for pair in pairs.values() for name in pair}
        if not any((labels[u], labels[low]) in wanted for u, low in pairs.values()):
            continue
        volumes.append(_volume(example["disc_volume"]))
        ident = {"patient_id": _text(example["patient_id"])}
        if "level" in example:
            level = example["level"]
            ident["level"] = tasks.LEVELS[int(level)] if np.ndim(level) == 0 and \
                np.issubdtype(np.asarray(level).dtype, np.integer) else _text(level)
        if "series" in example:
            ident["series"] = _text(example["series"])
        rows.append((labels, ident))
    explainer = Hotspots(model, chunk=chunk)
    out = {}
    for kind, (upper, lower) in pairs.items():
        entry = {"upper_task": upper, "lower_task": lower, "augmentations": augmentations}
        out[kind] = entry
        for group, wanted_labels in LABEL_GROUPS.items():
            discs = [n for n, (labels, _) in enumerate(rows)
                     if (labels[upper], labels[lower]) == wanted_labels]
            fractions = {upper: [], lower: []}
            for start in range(0, len(discs), 16):
                batch = np.stack([volumes[n] for n in discs[start:start + 16]])
                result = explainer.explain(batch, (upper, lower), {upper: 1, lower: 1},
                                           augmentations, seed)
                for name in (upper, lower):
                    fractions[name] += [_fraction(m) for m in result[name].maps]
            patients = [rows[n][1]["patient_id"] for n in discs]
            figures = {"discs": len(discs), "patients": len(set(patients)),
                       "ids": [rows[n][1] for n in discs]}
            for name, key, own in ((upper, "upper_task", np.greater),
                                   (lower, "lower_task", np.less)):
                values = np.asarray(fractions[name], np.float64)
                # nan stays nan in the share (nan > 0.5 is False, so mask it back)
                looks = np.where(np.isfinite(values), own(values, 0.5), np.nan)
                figures[key] = {
                    "upper_fraction": _bootstrapped(values, patients, np.nanmean, resamples,
                                                    seed),
                    "own_half": _bootstrapped(looks, patients, np.nanmean, resamples, seed),
                    "fractions": [None if np.isnan(v) else float(v) for v in values]}
            figures["difference"] = _bootstrapped(
                np.subtract(fractions[upper], fractions[lower]), patients, np.nanmean,
                resamples, seed)
            entry[group] = figures
    return out


def localisation_markdown(result):
    """The localisation table as Markdown: IoU per task, hotspot vs plain vs whole volume."""
    percentiles = result["percentiles"]
    header = ["task", "discs"] + [f"hotspot p{p:g}" for p in percentiles] + \
        [f"plain p{p:g}" for p in percentiles] + ["whole volume", "best hotspot / whole"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cell(value):
        return "n/a" if value is None else f"{value:.3f}"

    for name, entry in result["tasks"].items():
        hot = [entry["hotspot"][str(p)] for p in percentiles]
        plain = [entry["plain"][str(p)] for p in percentiles]
        whole = entry["whole_volume"]
        ratio = "n/a" if not whole or None in hot else f"{max(hot) / whole:.1f}x"
        lines.append("| " + " | ".join([name, str(entry["discs"])] + [cell(v) for v in hot]
                                       + [cell(v) for v in plain] + [cell(whole), ratio]) + " |")
    return "\n".join(lines) + (f"\n\nMean volume IoU with the ground-truth lesion boxes; "
                               f"{result['augmentations']} augmentations per hotspot.\n")
