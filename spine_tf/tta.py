"""The 54-view test-time augmentation (docs/design.md, "Test-time augmentation").

Every disc is seen in 54 views and the softmax probabilities of the views are
averaged: 9 in-plane positions (the centre and the 8 shifts of +-16 px along
columns and/or rows) x 2 slice orders (as is, reversed) x 3 slice-window
shifts (0, -1, +1). The views are ``spine_tf.augment.apply`` with fixed draws
(no rotation, unit scale, no intensity offset, zero fill at the borders;
``view_draws``), so the geometry is the training augmentation's, defined
once; ``views`` makes them faster by gathering the voxels that ``augment``
says each view reads.

A 1-slice model (``ModelConfig.input_slices``) sees the centre slice only,
so it gets the 9 in-plane positions of the unmoved slice window
(``CENTRE_VIEWS``; ``views_for``): a slice shift would put a zero-padded
neighbour in the centre, and a reversed window has the same centre slice.

``views`` and ``tta_probabilities`` are pure TF (they run inside a
``tf.function`` or a SavedModel signature); ``predict`` runs a Keras model
over arrays or a ``tf.data.Dataset`` through compiled functions and returns
numpy probabilities.

Example:
    model = build_model(width=0.125)
    probabilities = predict(model, volumes)          # volumes: (n, 112, 224, 9)
    [p.shape for p in probabilities]                 # [(n, 5), (n, 4), (n, 2), ...]
"""

import functools
import itertools
import weakref

import numpy as np
import tensorflow as tf

from spine_tf import augment, tasks
from spine_tf.modeling.model import input_slices
from spine_tf.modeling.model import task_set as model_task_set
from spine_tf.tasks import VOLUME_SHAPE

SHIFT_PX = 16
"""In-plane shift of the off-centre positions, pixels."""

POSITIONS = ((0, 0),) + tuple(
    (cols, rows) for rows, cols in itertools.product((-SHIFT_PX, 0, SHIFT_PX), repeat=2)
    if (cols, rows) != (0, 0))
"""The 9 in-plane positions (shift_cols, shift_rows): the centre first, then the 8 shifts
row-major (rows -16 first, columns -16 first within a row)."""

SLICE_ORDERS = ((False, 0), (False, -1), (False, 1), (True, 0), (True, -1), (True, 1))
"""The 6 slice arrangements (flip, shift_slices): as is, then reversed; within each the
unshifted window first, then shifted by -1 and +1."""

VIEWS = tuple((cols, rows, flip, slices) for flip, slices in SLICE_ORDERS
              for cols, rows in POSITIONS)
"""The 54 views as (shift_cols, shift_rows, flip, shift_slices): slice arrangement-major,
in-plane position-minor; ``VIEWS[0]`` is the identity view."""

NUM_VIEWS = len(VIEWS)
CENTRE_VIEWS = tuple(view for view in VIEWS if view[2:] == (False, 0))
"""The 9 views of a 1-slice model: the in-plane positions of the unflipped, unshifted
window (``VIEWS[:9]``)."""
PLAIN_BATCH = 64
"""Discs per forward batch without TTA."""

_VOLUMES = tf.TensorSpec((None,) + tuple(VOLUME_SHAPE), tf.float32)


def _draws(view_list):
    """``augment`` draws of a list of views (shift_cols, shift_rows, flip, shift_slices).

    No rotation, unit scale, no intensity offset, no mirror.
    """
    cols, rows, flip, slices = zip(*view_list)
    zeros = tf.zeros((len(view_list),), tf.float32)
    return {"shift_cols": tf.constant(cols, tf.float32),
            "shift_rows": tf.constant(rows, tf.float32),
            "flip": tf.constant(flip, tf.bool),
            "shift_slices": tf.constant(slices, tf.int32),
            "angle": zeros, "scale": zeros + 1.0, "intensity": zeros,
            "mirror": tf.zeros((len(view_list),), tf.bool)}


def view_draws(batch, view_list=VIEWS):
    """``augment`` draws for ``batch`` discs x the views of ``view_list``, disc-major.

    ``augment.apply(tf.repeat(volumes, 54, axis=0), view_draws(batch))`` are
    the 54 views; ``views`` makes the same, exactly, faster.

    Args:
        batch: number of discs (int or scalar int tensor).
        view_list: (shift_cols, shift_rows, flip, shift_slices) per view
            (default: the 54 ``VIEWS``).

    Returns:
        dict of (batch * V,) tensors as ``augment.draw`` returns them, V views
        a disc: rows ``V * d .. V * d + V - 1`` are disc ``d``'s views in
        ``view_list`` order.
    """
    multiples = tf.reshape(tf.cast(batch, tf.int32), (1,))
    return {k: tf.tile(v, multiples) for k, v in _draws(view_list).items()}


def views_for(model):
    """The views the TTA of ``model`` averages: ``VIEWS`` (54) for a 9-slice model,
    ``CENTRE_VIEWS`` (9) for a 1-slice model (``modeling.model.input_slices``)."""
    return CENTRE_VIEWS if input_slices(model) == 1 else VIEWS


def _arrangements(view_list):
    """The ``SLICE_ORDERS`` indices of a view list made of whole slice arrangements x the 9
    positions, in ``VIEWS`` order (as ``VIEWS`` and ``CENTRE_VIEWS`` are); ValueError if not."""
    orders = tuple(dict.fromkeys(tuple(view[2:]) for view in view_list))
    whole = tuple((cols, rows) + order for order in orders for cols, rows in POSITIONS)
    if tuple(map(tuple, view_list)) != whole or not set(orders) <= set(SLICE_ORDERS):
        raise ValueError("a view list must be whole slice arrangements of SLICE_ORDERS, each "
                         "with the 9 POSITIONS, in VIEWS order")
    return [SLICE_ORDERS.index(order) for order in orders]


@functools.lru_cache(maxsize=None)
def _source_indices():
    """Where each view reads, found by ``augment.apply`` on volumes of voxel numbers.

    Returns:
        (pixels, slices): int32 numpy (9, rows * cols), the flat in-plane
        source pixel of every output pixel per position (rows * cols where
        none: zero fill), and (6, slices), the source slice of every output
        slice per arrangement (``slices`` where none).
    """
    rows, cols, depth = VOLUME_SHAPE
    with tf.init_scope():  # computed once, eagerly, even when first asked inside a tf.function
        numbers = tf.reshape(tf.range(1, rows * cols + 1, dtype=tf.float32), (1, rows, cols, 1))
        moved = augment.apply(tf.repeat(numbers, len(POSITIONS), axis=0),
                              _draws([(c, r, False, 0) for c, r in POSITIONS]),
                              interpolation="NEAREST", intensity=False)
        pixels = tf.reshape(tf.cast(moved, tf.int32), (len(POSITIONS), rows * cols)) - 1
        numbers = tf.broadcast_to(tf.range(1, depth + 1, dtype=tf.float32), (1, 1, 1, depth))
        moved = augment.apply(tf.repeat(numbers, len(SLICE_ORDERS), axis=0),
                              _draws([(0, 0, f, s) for f, s in SLICE_ORDERS]),
                              interpolation="NEAREST", intensity=False)
        slices = tf.reshape(tf.cast(moved, tf.int32), (len(SLICE_ORDERS), depth)) - 1
        return (np.where(pixels.numpy() < 0, rows * cols, pixels.numpy()).astype(np.int32),
                np.where(slices.numpy() < 0, depth, slices.numpy()).astype(np.int32))


def views(volumes, view_list=VIEWS):
    """The views of every disc volume (the 54 ``VIEWS`` by default).

    Equal to ``augment.apply`` with ``view_draws`` (the tests check it voxel
    for voxel), made as two gathers: the slice arrangements of each disc,
    then the 9 in-plane positions of each arrangement, with the source
    indices ``augment`` gives (in-plane shifts and slice moves commute).
    That is 5x faster than warping 54 copies.

    Args:
        volumes: float (batch, 112, 224, 9).
        view_list: ``VIEWS``, ``CENTRE_VIEWS``, or any whole slice
            arrangements x the 9 positions in ``VIEWS`` order.

    Returns:
        float32 (batch * V, 112, 224, 9), disc-major in ``view_list`` order.
    """
    rows, cols, depth = VOLUME_SHAPE
    pixels, slices = _source_indices()
    slices = slices[_arrangements(view_list)]
    volumes = tf.convert_to_tensor(volumes, tf.float32)
    flat = tf.reshape(volumes, (-1, rows * cols, depth))
    flat = tf.pad(flat, [[0, 0], [0, 1], [0, 1]])  # a zero pixel and a zero slice to read
    # a = the arrangements asked for (6 for VIEWS)
    arranged = tf.gather(flat, tf.constant(slices), axis=2)  # (b, pixels + 1, a, depth)
    arranged = tf.transpose(arranged, (0, 2, 1, 3))  # (b, a, pixels + 1, depth)
    moved = tf.gather(arranged, tf.constant(pixels), axis=2)  # (b, a, 9, pixels, depth)
    return tf.reshape(moved, (-1, rows, cols, depth))


def _as_list(logits):
    """Per-task outputs as a list in task-set order (a dict's are put in its set's order)."""
    if isinstance(logits, dict):
        return [logits[name] for name in tasks.task_set_of(logits, ordered=False).names]
    return list(logits)


def tta_probabilities(logits_fn, volumes, view_list=VIEWS):
    """Softmax probabilities averaged over the views of each disc.

    Args:
        logits_fn: callable from a (n, 112, 224, 9) batch to the logits per
            task (a list in task order, or a dict by task name): a Keras
            model, or a function wrapping one.
        volumes: float (batch, 112, 224, 9).
        view_list: the views to average (``views_for(model)``; default the 54).

    Returns:
        list in task order of float32 (batch, classes) tensors.
    """
    volumes = tf.convert_to_tensor(volumes, tf.float32)
    batch = tf.shape(volumes)[0]
    outputs = []
    for logits in _as_list(logits_fn(views(volumes, view_list))):
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        per_view = tf.reshape(probabilities, (batch, len(view_list), logits.shape[-1]))
        outputs.append(tf.reduce_mean(per_view, axis=1))
    return outputs


# One compiled TTA function per model, traced once (any batch size); the function
# holds the model weakly, so the cache does not keep a model alive.
_COMPILED = weakref.WeakKeyDictionary()


def _compiled_tta(model):
    function = _COMPILED.get(model)
    if function is None:
        ref = weakref.ref(model)
        view_list = views_for(model)

        @tf.function(input_signature=[_VOLUMES])
        def function(volumes):
            return tta_probabilities(lambda x: ref()(x, training=False), volumes, view_list)

        _COMPILED[model] = function
    return function


def _batches(volumes_or_dataset, size):
    """Float32 volume batches of at most ``size`` discs from an array or a dataset.

    A dataset's elements are volumes, tuples whose first item is one, or dicts
    with a ``disc_volume`` (uint16 as stored, or float); batched or not.
    """
    if isinstance(volumes_or_dataset, tf.data.Dataset):
        data = volumes_or_dataset
        spec = data.element_spec
        if isinstance(spec, dict):
            data = data.map(lambda e: e["disc_volume"])
        elif isinstance(spec, tuple):
            data = data.map(lambda *e: e[0])
        if data.element_spec.dtype == tf.uint16:
            # imported here: it pulls in tensorflow_datasets, which serving does not need
            from spine_tf.io.codec import from_stored
            data = data.map(from_stored)
        if data.element_spec.shape.rank == 4:
            data = data.unbatch()
        for batch in data.batch(size).prefetch(2):
            yield tf.cast(batch, tf.float32)
        return
    volumes = np.asarray(volumes_or_dataset, np.float32)
    if volumes.ndim == 3:
        volumes = volumes[None]
    for start in range(0, len(volumes), size):
        yield volumes[start:start + size]


def predict(model, volumes_or_dataset, tta=True, discs_per_batch=1):
    """Probabilities per task for disc volumes, with or without the TTA (``views_for``).

    Args:
        model: a SpineNet Keras model (list outputs in its task set's order).
        volumes_or_dataset: float (n, 112, 224, 9) array (one disc may be
            (112, 224, 9)), or a ``tf.data.Dataset``, batched or not, of
            volumes, of tuples whose first item is a volume, or of
            spine_discs examples (dicts with a uint16 ``disc_volume``).
        tta: average the model's views (54, or 9 for a 1-slice model; one
            compiled function: views, forward pass and averaging in one
            graph) or run each disc once (batches of 64 through
            ``predict_on_batch``).
        discs_per_batch: with TTA, discs per forward batch (all its views).

    Returns:
        list in task order of numpy float32 (n, classes) probabilities.
    """
    if discs_per_batch < 1:
        raise ValueError(f"discs_per_batch must be at least 1, not {discs_per_batch}")
    task_set = model_task_set(model)
    chunks = [[] for _ in task_set.tasks]
    if tta:
        function = _compiled_tta(model)
        for batch in _batches(volumes_or_dataset, discs_per_batch):
            for chunk, p in zip(chunks, function(tf.convert_to_tensor(batch, tf.float32))):
                chunk.append(p.numpy())
    else:
        for batch in _batches(volumes_or_dataset, PLAIN_BATCH):
            logits = _as_list(model.predict_on_batch(batch))
            for chunk, values in zip(chunks, logits):
                chunk.append(tf.nn.softmax(tf.cast(values, tf.float32), axis=-1).numpy())
    return [np.concatenate(chunk) if chunk else np.zeros((0, task.num_classes), np.float32)
            for chunk, task in zip(chunks, task_set.tasks)]
