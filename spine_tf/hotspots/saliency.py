"""Augmented GradientTape saliency: the hotspot of a task for a batch of disc volumes.

For a disc volume x, a task and a class c (default: the class the model
predicts for x), the hotspot is the mean over N random training-style
augmentations a_1..a_N of ``invert(|d y_c / d x'|, a_i)`` with x' = a_i(x)
the augmented volume and y_c the class's logit: the gradient is taken with
respect to the augmented input (what the network actually saw), kept per
slice (9 channels, no maximum over them), and warped back onto x's grid by
the exact inverse of a_i's geometry (``spine_tf.augment.invert``; the
intensity offset has no geometry to undo). The mean is divided by its
maximum, so every disc's hotspot lies in [0, 1]. The augmentations are
``augment.draw`` with the training ranges (``config.AugmentConfig``), never
mirrored, and as the model's input mode allows (``hotspot_ranges``): the
copies of a 1-slice model never shift or flip slices, so its hotspots are
zero off the centre slice. All
augmented copies of a disc go through the network as one batch with one
backward pass, in chunks of ``chunk`` copies to bound memory, inside one
compiled function per model and set of tasks.

Baselines: ``plain_saliency`` (Simonyan et al.: one pass, maximum over the
slices) and ``smoothgrad``, both through tf-keras-vis ``Saliency`` with
``ReplaceToLinear``.
"""

import dataclasses
import warnings
import weakref

import numpy as np
import tensorflow as tf

from spine_tf import augment, tasks
from spine_tf.config import AugmentConfig
from spine_tf.errors import SpineTFError
from spine_tf.modeling.model import input_slices
from spine_tf.modeling.model import task_set as model_task_set
from spine_tf.tasks import VOLUME_SHAPE

ROWS, COLS, SLICES = VOLUME_SHAPE
AUGMENTATIONS = 150
"""Augmented copies averaged per hotspot (the journal version's number)."""
CHUNK = 50
"""Augmented copies per forward/backward batch (memory bound; tools.bench.hotspots measures it)."""

_VOLUMES = tf.TensorSpec((None,) + tuple(VOLUME_SHAPE), tf.float32)


def as_volumes(volumes):
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


class UnknownTaskError(SpineTFError, KeyError):
    """A task the model does not grade; the message names the ones it does."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


def _task_index(model, name):
    """(output index, Task) of task ``name`` of a model; UnknownTaskError naming its tasks."""
    task_set = model_task_set(model)
    try:
        task = task_set.task(name)
    except KeyError as error:
        raise UnknownTaskError(str(error.args[0])) from None
    return task_set.tasks.index(task), task


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


def hotspot_ranges(model, augment_config=AugmentConfig()):
    """The augmentation ranges of ``model``'s hotspots.

    ``augment_config`` as the model's input mode allows
    (``AugmentConfig.for_input_slices``: a 1-slice model's copies keep the
    slice window where it is), and never mirrored, since on a copy reflected
    across the disc plane an upper task's evidence belongs to the lower head.
    """
    allowed = augment_config.for_input_slices(input_slices(model))
    return dataclasses.replace(allowed, mirror_probability=0.0)


def graph_hotspots(model, task_index, volumes, classes, augmentations=AUGMENTATIONS, seed=0,
                   chunk=CHUNK, augment_config=AugmentConfig()):
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
                         hotspot_ranges(model, augment_config))

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
        augment_config: the augmentation ranges (default: training's), as
            ``hotspot_ranges`` adapts them to the model (no mirror; no slice
            shift or flip for a 1-slice model).
        chunk: augmented copies per forward/backward batch; 1 gives the
            per-augmentation loop (for comparison only: many times slower).

    Example:
        hotspots = Hotspots(model)
        maps = hotspots("marrow_lower", volumes)        # (n, 112, 224, 9)
        per_task = hotspots.explain(volumes)            # {task: TaskHotspots}
    """

    def __init__(self, model, augment_config=AugmentConfig(), chunk=CHUNK):
        self.task_set = model_task_set(model)  # ValueError: not SpineNet's
        if int(chunk) < 1:
            raise ValueError(f"chunk must be at least 1, not {chunk}")
        self.model = model
        self.augment_config = hotspot_ranges(model, augment_config)
        self.chunk = int(chunk)
        self._functions = {}
        ref = weakref.ref(model)
        self._forward = tf.function(lambda x: ref()(x, training=False),
                                    input_signature=[_VOLUMES])

    def logits(self, volumes):
        """Single-view logits per task (numpy list in task order) of (n, 112, 224, 9)."""
        volumes = as_volumes(volumes)
        chunks = [self._forward(tf.constant(volumes[s:s + 64]))
                  for s in range(0, len(volumes), 64)]
        return [np.concatenate([np.asarray(c[t]) for c in chunks])
                for t in range(len(self.task_set.tasks))]

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

    def explain(self, volumes, task_names=None, classes=None,
                augmentations=AUGMENTATIONS, seed=0):
        """Hotspots of several tasks from the same augmented copies (one forward pass each).

        Args:
            volumes: float (n, 112, 224, 9) or one (112, 224, 9) disc volume.
            task_names: tasks to explain, any of the model's (default: all of them).
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
        volumes = as_volumes(volumes)
        if task_names is None:
            task_names = self.task_set.names
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
            index, task = _task_index(self.model, name)
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
    index, task_ = _task_index(model, task)
    volumes = as_volumes(volumes)
    predicted = np.asarray(model(volumes, training=False)[index]).argmax(axis=1)
    classes = tf.constant(_classes_for(task_, class_index, predicted))

    def score(output):
        return tf.gather(output, classes, batch_dims=1)

    scores = [score if t == index else InactiveScore() for t in range(len(model.outputs))]
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
