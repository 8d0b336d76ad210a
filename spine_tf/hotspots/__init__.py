"""Evidence hotspots: augmented GradientTape saliency, mapped back and measured (SPEC
"Evidence hotspots").

For a disc volume x, a task and a class c (default: the class the model
predicts for x), the hotspot is the mean over N random training-style
augmentations a_1..a_N of ``invert(|d y_c / d x'|, a_i)`` with x' = a_i(x)
the augmented volume and y_c the class's logit: the gradient is taken with
respect to the augmented input (what the network actually saw), kept per
slice (9 channels, no maximum over them), and warped back onto x's grid by
the exact inverse of a_i's geometry (``spine_tf.augment.invert``; the
intensity offset has no geometry to undo). The mean is divided by its
maximum, so every disc's hotspot lies in [0, 1]. The augmentations are
``augment.draw`` with the training ranges (``augment.AugmentConfig``). All
augmented copies of a disc go through the network as one batch with one
backward pass, in chunks of ``chunk`` copies to bound memory, inside one
compiled function per model and set of tasks.

Baselines: ``plain_saliency`` (Simonyan et al.: one pass, maximum over the
slices) and ``smoothgrad``, both through tf-keras-vis ``Saliency`` with
``ReplaceToLinear``.

Localisation as in the journal version: ``hotspot_boxes`` thresholds a map
at a percentile of its values and fits a box per slice; ``volume_iou``
compares per-slice boxes with the ground truth's (``lesion_boxes`` of a
spine_discs example), ``WHOLE_VOLUME`` is the baseline box;
``localisation`` tabulates both for a model (``spine_tf.evaluation.runs.measure_hotspots``
for a trained run directory). ``upper_fraction`` measures task specificity (rows
run from head to feet, so the upper half is rows 0..55).

Outputs: ``overlay_pictures`` (PNG montages), ``to_scan`` / ``save_scan_hotspots``
(NIfTI in the scan's own grid and affine) and ``HotspotImages`` (a Keras
callback writing TensorBoard images of a fixed validation batch).

Example:
    model = build_model(width=0.125)
    hotspots = Hotspots(model)
    maps = hotspots("endplate_upper", volumes, augmentations=150, seed=0)
    maps.shape                                 # (n, 112, 224, 9), values in [0, 1]
"""

import dataclasses
import os
import warnings
import weakref

import keras
import numpy as np
import tensorflow as tf

from spine_tf import augment, extraction, tasks
from spine_tf.tasks import VOLUME_SHAPE

ROWS, COLS, SLICES = VOLUME_SHAPE
AUGMENTATIONS = 150
"""Augmented copies averaged per hotspot (the journal version's number)."""
CHUNK = 50
"""Augmented copies per forward/backward batch (memory bound; see tools/bench_hotspots.py)."""
PERCENTILE = 97.0
"""Default threshold percentile of the localisation metric (the journal version: 95..99)."""
PERCENTILES = (95.0, 97.0, 99.0)
WHOLE_VOLUME = np.tile(np.array([[0.0, 0.0, 1.0, 1.0]], np.float32), (SLICES, 1))
"""The whole-volume baseline: every slice's box is the whole slice."""
LOCALISATION_JSON, LOCALISATION_MARKDOWN = "localisation.json", "localisation.md"

_VOLUMES = tf.TensorSpec((None,) + tuple(VOLUME_SHAPE), tf.float32)


def _as_volumes(volumes):
    """float32 (n, 112, 224, 9) numpy from one volume or a batch; raises ValueError."""
    array = np.asarray(volumes, np.float32)
    if array.shape == tuple(VOLUME_SHAPE):
        array = array[None]
    if array.ndim != 4 or array.shape[1:] != tuple(VOLUME_SHAPE):
        raise ValueError(f"disc volumes must have shape (n, {ROWS}, {COLS}, {SLICES}) or "
                         f"({ROWS}, {COLS}, {SLICES}), got {np.shape(volumes)}")
    if not np.isfinite(array).all():
        raise ValueError("disc volumes contain NaN or infinite values")
    return array


def _task_index(name):
    task = tasks.task(name)  # KeyError naming the valid tasks
    return tasks.TASKS.index(task), task


def _classes_for(task, class_index, predicted):
    """(n,) int32 classes: ``predicted`` when ``class_index`` is None, else checked."""
    n = len(predicted)
    if class_index is None:
        return np.asarray(predicted, np.int32)
    classes = np.broadcast_to(np.asarray(class_index), (n,)) if np.ndim(class_index) == 0 \
        else np.asarray(class_index)
    if classes.shape != (n,):
        raise ValueError(f"{task.name}: {len(classes)} classes given for {n} discs")
    if not np.issubdtype(classes.dtype, np.integer) or classes.min(initial=0) < 0 \
            or classes.max(initial=0) >= task.num_classes:
        raise ValueError(f"{task.name}: class must be an integer 0..{task.num_classes - 1} "
                         f"({', '.join(task.class_names)}), got {class_index!r}")
    return classes.astype(np.int32)


def _seed_pair(seed):
    pair = np.asarray(seed, np.int64).reshape(-1)
    if pair.size == 1:
        pair = np.array([0, pair[0]], np.int64)
    if pair.size != 2:
        raise ValueError(f"seed must be an int or a pair of ints, got {seed!r}")
    return pair


def _normalised(total):
    """Divides each map (axis 0 = disc) by its maximum; all-zero maps stay zero."""
    peak = total.reshape(len(total), -1).max(axis=1).reshape((-1,) + (1,) * (total.ndim - 1))
    return np.divide(total, peak, out=np.zeros_like(total), where=peak > 0)


@dataclasses.dataclass
class TaskHotspots:
    """The hotspots of one task for a batch of discs.

    Attributes:
        task: task name.
        maps: float32 (n, 112, 224, 9) in [0, 1].
        classes: int (n,) the class explained per disc.
        probabilities: float32 (n,) the model's probability (single view,
            no augmentation) of that class.
        predicted: int (n,) the model's predicted class.
    """

    task: str
    maps: np.ndarray
    classes: np.ndarray
    probabilities: np.ndarray
    predicted: np.ndarray

    def titles(self, levels=None):
        """One line per disc: level, task, explained class and its probability."""
        names = tasks.task(self.task).class_names
        out = []
        for n, (c, p) in enumerate(zip(self.classes, self.probabilities)):
            head = f"{levels[n]} " if levels is not None else ""
            out.append(f"{head}{self.task}: {names[c]} p={p:.2f}")
        return out


def summed_maps(model, task_indices, volumes, disc, draws, classes, discs):
    """Pure TF: the per-disc sums of ``invert(|d logit_c / d copy|)`` over a batch of copies.

    Args:
        model: the SpineNet Keras model.
        task_indices: tuple of task indices (positions in the task table).
        volumes: (discs, 112, 224, 9) the original disc volumes.
        disc: (copies,) int32, the disc each copy is made from.
        draws: ``augment.draw`` dict of (copies,) tensors.
        classes: (copies, len(task_indices)) int32, the class explained per copy and task.
        discs: int32 scalar, the number of discs.

    Returns:
        float32 (len(task_indices), discs, 112, 224, 9).
    """
    copies = tf.ensure_shape(augment.apply(tf.gather(volumes, disc), draws),
                             (None,) + tuple(VOLUME_SHAPE))
    with tf.GradientTape(persistent=len(task_indices) > 1,
                         watch_accessed_variables=False) as tape:
        tape.watch(copies)
        outputs = model(copies, training=False)
        # rows are independent (no batch statistics), so the gradient of the
        # sum is each copy's own d logit / d copy
        scores = [tf.reduce_sum(tf.gather(tf.cast(outputs[t], tf.float32), classes[:, i],
                                          batch_dims=1))
                  for i, t in enumerate(task_indices)]
    maps = []
    for score in scores:
        gradient = tf.ensure_shape(tape.gradient(score, copies), copies.shape)
        back = augment.invert(tf.abs(gradient), draws)
        maps.append(tf.math.unsorted_segment_sum(back, disc, discs))
    return tf.stack(maps)


def _unmirrored(augment_config):
    """The ranges hotspots use: never mirrored, since on a copy reflected across
    the disc plane an upper task's evidence belongs to the lower head."""
    return dataclasses.replace(augment_config, mirror_probability=0.0)


def graph_hotspots(model, task_index, volumes, classes, augmentations=AUGMENTATIONS, seed=0,
                   chunk=CHUNK, augment_config=augment.AugmentConfig()):
    """Pure TF (for a SavedModel signature): one task's hotspots, as ``Hotspots.explain``.

    The same copies (draws from ``(0, seed)``), chunks and normalisation as
    ``Hotspots(model, augment_config, chunk)(task, volumes, classes,
    augmentations, seed)``, so the two agree to float rounding.

    Args:
        model: the SpineNet Keras model.
        task_index: Python int, the task's position in the task table.
        volumes: float32 (n, 112, 224, 9) tensor.
        classes: int32 (n,) the class explained per disc.
        augmentations: Python int, copies per disc.
        seed: int32 scalar tensor or int.
        chunk: copies per forward/backward batch.

    Returns:
        float32 (n, 112, 224, 9) in [0, 1].
    """
    n = tf.shape(volumes)[0]
    total = n * augmentations
    disc = tf.repeat(tf.range(n, dtype=tf.int32), augmentations)
    rows = tf.repeat(tf.cast(classes, tf.int32), augmentations)[:, None]
    draws = augment.draw(total, tf.stack([tf.constant(0, tf.int64), tf.cast(seed, tf.int64)]),
                         _unmirrored(augment_config))

    def body(start, summed):
        stop = tf.minimum(start + chunk, total)
        part = {k: v[start:stop] for k, v in draws.items()}
        return stop, summed + summed_maps(model, (task_index,), volumes, disc[start:stop], part,
                                          rows[start:stop], n)[0]

    _, summed = tf.while_loop(lambda start, _: start < total, body,
                              (tf.constant(0), tf.zeros_like(volumes)))
    mean = summed / float(augmentations)
    peak = tf.reduce_max(tf.reshape(mean, (n, -1)), axis=1)[:, None, None, None]
    return tf.math.divide_no_nan(mean, peak)


class Hotspots:
    """Augmented saliency of a SpineNet model, one compiled function per set of tasks.

    Args:
        model: a SpineNet Keras model (list of logits in task-table order).
        augment_config: the augmentation ranges (default: training's; its
            ``mirror_probability`` is ignored).
        chunk: augmented copies per forward/backward batch; 1 gives the
            per-augmentation loop (for comparison only: many times slower).

    Example:
        hotspots = Hotspots(model)
        maps = hotspots("marrow_lower", volumes)        # (n, 112, 224, 9)
        per_task = hotspots.explain(volumes)            # {task: TaskHotspots}
    """

    def __init__(self, model, augment_config=augment.AugmentConfig(), chunk=CHUNK):
        outputs = model.outputs if isinstance(model.outputs, (list, tuple)) else [model.outputs]
        if len(outputs) != len(tasks.TASKS):
            raise ValueError(f"the model has {len(outputs)} outputs; a SpineNet model has one "
                             f"per task ({len(tasks.TASKS)}: {', '.join(tasks.TASK_NAMES)})")
        if int(chunk) < 1:
            raise ValueError(f"chunk must be at least 1, not {chunk}")
        self.model = model
        self.augment_config = _unmirrored(augment_config)
        self.chunk = int(chunk)
        self._functions = {}
        ref = weakref.ref(model)
        self._forward = tf.function(lambda x: ref()(x, training=False),
                                    input_signature=[_VOLUMES])

    def logits(self, volumes):
        """Single-view logits per task (numpy list in task order) of (n, 112, 224, 9)."""
        volumes = _as_volumes(volumes)
        chunks = [self._forward(tf.constant(volumes[s:s + 64]))
                  for s in range(0, len(volumes), 64)]
        return [np.concatenate([np.asarray(c[t]) for c in chunks]) for t in range(len(tasks.TASKS))]

    def _function(self, task_indices):
        """``summed_maps`` of the model for ``task_indices``, compiled once per set of tasks."""
        function = self._functions.get(task_indices)
        if function is not None:
            return function
        ref = weakref.ref(self.model)
        draw_spec = {k: tf.TensorSpec((None,), dtype) for k, dtype in augment.DRAW_DTYPES.items()}

        @tf.function(input_signature=[_VOLUMES, tf.TensorSpec((None,), tf.int32), draw_spec,
                                      tf.TensorSpec((None, len(task_indices)), tf.int32),
                                      tf.TensorSpec((), tf.int32)])
        def function(volumes, disc, draws, classes, discs):
            return summed_maps(ref(), task_indices, volumes, disc, draws, classes, discs)

        self._functions[task_indices] = function
        return function

    def explain(self, volumes, task_names=tasks.TASK_NAMES, classes=None,
                augmentations=AUGMENTATIONS, seed=0):
        """Hotspots of several tasks from the same augmented copies (one forward pass each).

        Args:
            volumes: float (n, 112, 224, 9) or one (112, 224, 9) disc volume.
            task_names: tasks to explain, any subset of ``tasks.TASK_NAMES``.
            classes: None (the predicted class of each disc), or {task: class
                or (n,) classes}; a task left out gets its predicted class.
            augmentations: augmented copies per disc (1 or more).
            seed: int or pair of ints; the same seed gives the same copies.

        Returns:
            {task: TaskHotspots}, in the order of ``task_names``.

        Raises:
            ValueError: bad volumes, classes, augmentations or seed.
            KeyError: an unknown task name.
        """
        volumes = _as_volumes(volumes)
        if isinstance(task_names, str):
            task_names = (task_names,)
        if not task_names:
            raise ValueError("no task to explain")
        if int(augmentations) != augmentations or augmentations < 1:
            raise ValueError(f"augmentations must be a whole number >= 1, not {augmentations}")
        augmentations = int(augmentations)
        classes = classes or {}
        unknown = set(classes) - set(task_names)
        if unknown:
            raise ValueError(f"classes given for tasks not explained: {sorted(unknown)}")
        indices, chosen = [], []
        logits = self.logits(volumes)
        for name in task_names:
            index, task = _task_index(name)
            indices.append(index)
            chosen.append(_classes_for(task, classes.get(name), logits[index].argmax(axis=1)))
        n = len(volumes)
        total = augmentations * n
        disc = np.repeat(np.arange(n, dtype=np.int32), augmentations)
        row_classes = np.repeat(np.stack(chosen, axis=1), augmentations, axis=0)
        draws = augment.draw(total, _seed_pair(seed), self.augment_config)
        function = self._function(tuple(indices))
        resident = tf.constant(volumes)
        summed = np.zeros((len(indices),) + volumes.shape, np.float32)
        for start in range(0, total, self.chunk):
            part = slice(start, min(start + self.chunk, total))
            summed += function(resident, tf.constant(disc[part]),
                               {k: v[part] for k, v in draws.items()},
                               tf.constant(row_classes[part]), tf.constant(n, tf.int32)).numpy()
        out = {}
        for i, (name, index) in enumerate(zip(task_names, indices)):
            probabilities = tf.nn.softmax(logits[index].astype(np.float32), axis=-1).numpy()
            out[name] = TaskHotspots(
                task=name, maps=_normalised(summed[i] / augmentations), classes=chosen[i],
                probabilities=probabilities[np.arange(n), chosen[i]],
                predicted=logits[index].argmax(axis=1))
        return out

    def __call__(self, task, volumes, class_index=None, augmentations=AUGMENTATIONS, seed=0):
        """The hotspots of one task: float32 (n, 112, 224, 9) in [0, 1].

        Args:
            task: task name.
            volumes: float (n, 112, 224, 9) or (112, 224, 9).
            class_index: None (predicted class), a class, or (n,) classes.
            augmentations: augmented copies per disc.
            seed: int or pair of ints.
        """
        classes = None if class_index is None else {task: class_index}
        return self.explain(volumes, (task,), classes, augmentations, seed)[task].maps


# ----------------------------------------------------------------- baselines

def _saliency(model, task, volumes, class_index, keepdims, smooth_samples, smooth_noise):
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import InactiveScore
    index, task_ = _task_index(task)
    volumes = _as_volumes(volumes)
    predicted = np.asarray(model(volumes, training=False)[index]).argmax(axis=1)
    classes = tf.constant(_classes_for(task_, class_index, predicted))

    def score(output):
        return tf.gather(output, classes, batch_dims=1)

    scores = [score if t == index else InactiveScore() for t in range(len(tasks.TASKS))]
    # the heads are already linear (logits), so modifying the model in place is harmless
    saliency = Saliency(model, model_modifier=ReplaceToLinear(), clone=False)
    with warnings.catch_warnings():  # tf-keras-vis passes the one input as a list
        warnings.filterwarnings("ignore", "The structure of `inputs`", UserWarning)
        maps = saliency(scores, tf.constant(volumes), keepdims=keepdims,
                        smooth_samples=smooth_samples, smooth_noise=smooth_noise)
    return np.asarray(maps, np.float32)


def plain_saliency(model, task, volumes, class_index=None, keepdims=False):
    """Simonyan et al.'s single-pass map via tf-keras-vis (the baseline).

    Args:
        model: SpineNet model; task: task name; volumes: (n, 112, 224, 9).
        class_index: None (predicted), a class, or (n,) classes.
        keepdims: keep the 9 slices instead of their maximum.

    Returns:
        float32 (n, 112, 224) (or (n, 112, 224, 9)), min-max normalised per
        disc to [0, 1] as tf-keras-vis does.
    """
    return _saliency(model, task, volumes, class_index, keepdims, 0, 0.0)


def smoothgrad(model, task, volumes, class_index=None, samples=20, noise=0.2, keepdims=False):
    """SmoothGrad via tf-keras-vis (``smooth_samples``): the mean map over noisy copies.

    The noise is Gaussian with sigma ``noise`` times each volume's value
    range, drawn by tf-keras-vis from numpy's global generator (seed it with
    ``np.random.seed`` for repeatable maps). Arguments and result as
    ``plain_saliency``.
    """
    return _saliency(model, task, volumes, class_index, keepdims, samples, noise)


# ---------------------------------------------------------------- measuring

def _per_slice(hotspot):
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
    hotspot = _per_slice(hotspot)
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
    hotspot = _per_slice(hotspot)
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


# ------------------------------------------------------------------ outputs

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
    return report.overlay_montage(_as_volumes(volumes), task_hotspots.maps,
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
    volumes = _as_volumes(volumes)
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
    return extraction.volume_to_scan(_per_slice(hotspot), np.asarray(voxel_to_scan), scan_shape)


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


class HotspotImages(keras.callbacks.Callback):
    """Writes hotspot montages of a fixed validation batch to TensorBoard every epoch.

    One image per task (``hotspots/<task>``): the discs as rows, each slice
    with its hotspot overlaid, under
    ``log_dir`` (a ``tf.summary`` file writer of its own).

    Args:
        log_dir: e.g. ``RUN_DIR/tensorboard/hotspots``.
        volumes: (n, 112, 224, 9) the fixed batch (a few discs).
        task_names: tasks to show (default all).
        augmentations: copies per hotspot (fewer than 150: this runs every epoch).
        every: write every ``every`` epochs.
        seed: augmentation seed (the same copies every epoch).
    """

    def __init__(self, log_dir, volumes, task_names=tasks.TASK_NAMES, augmentations=16,
                 every=1, seed=0):
        super().__init__()
        self.log_dir = log_dir
        self.volumes = _as_volumes(volumes)
        self.task_names = tuple(task_names)
        self.augmentations = augmentations
        self.every = every
        self.seed = seed
        self._writer = None
        self._explainer = None

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        if self._explainer is None or self._explainer.model is not self.model:
            self._explainer = Hotspots(self.model)
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        per_task = self._explainer.explain(self.volumes, self.task_names,
                                           augmentations=self.augmentations, seed=self.seed)
        with self._writer.as_default():
            for name, hotspots in per_task.items():
                picture = overlay_pictures(self.volumes, hotspots)
                tf.summary.image(f"hotspots/{name}", picture[None], step=epoch)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
