"""tf.data pipelines from the spine_discs dataset to ``model.fit``.

Training: read -> decode -> cache -> shuffle -> batch -> augment (batched,
seeded, TF ops) -> per-task labels and class-balancing sample weights ->
prefetch. Evaluation: the same without shuffle and augmentation.

Elements are ``(disc_volume, labels, sample_weights)``: ``labels`` and
``sample_weights`` are tuples in the order of the model's task set (a
``tasks.TaskSet``, default the paper's), matching its list outputs (Keras 3
matches targets to list outputs by position). A task the dataset does not
label (a ``spider`` model on phantom data) reads as missing (-1) throughout.
"""


import numpy as np
import tensorflow as tf

from spine_tf import augment, tasks
from spine_tf.config import PipelineConfig
from spine_tf.io.codec import from_stored

AUTOTUNE = tf.data.AUTOTUNE


def decode(example, task_set=tasks.PAPER):
    """A stored example -> (disc_volume float32, labels tuple in the task set's order)."""
    volume = from_stored(example["disc_volume"])
    missing = tf.constant(tasks.MISSING_LABEL, tf.int32)
    labels = tuple(tf.cast(example["labels"][name], tf.int32) if name in example["labels"]
                   else missing for name in task_set.names)
    return volume, labels


def class_weights(labels, num_classes):
    """alpha_c = 1 / freq(c) over the labelled discs, normalised to mean 1 over them.

    Args:
        labels: int array of one task's training labels (-1 = missing).
        num_classes: the task's class count.

    Returns:
        float32 (num_classes,) weights; a class absent from ``labels`` gets 0
        (it has no discs to weight).
    """
    labels = np.asarray(labels)
    labels = labels[labels >= 0]
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    if counts.sum() == 0:
        return np.zeros(num_classes, np.float32)
    alpha = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    # mean over labelled discs of alpha[label] = sum_c counts_c * alpha_c / n = classes / n
    mean = (counts * alpha).sum() / counts.sum()
    return (alpha / mean).astype(np.float32)


def task_class_weights(labels_by_task, task_set=tasks.PAPER):
    """``class_weights`` for every task of a set: {task: (classes,) weights}."""
    return {t.name: class_weights(labels_by_task[t.name], t.num_classes) for t in task_set.tasks}


def weigh(volumes, labels, class_weights):
    """Adds per-task sample weights alpha[label] (0 for a missing label); ``labels`` are
    in the order of ``class_weights``' tasks."""
    weights = []
    for name, label in zip(class_weights, labels):
        table = tf.constant(np.append(class_weights[name], 0.0), tf.float32)  # index -1 -> 0
        weights.append(tf.gather(table, tf.where(label >= 0, label, len(class_weights[name]))))
    return volumes, labels, tuple(weights)


def training_statistics(dataset, task_set=tasks.PAPER):
    """Class weights per task and the per-slice mean of the volumes of a split.

    Args:
        dataset: the raw (undecoded) training split.
        task_set: the model's tasks.

    Returns:
        (class_weights {task: (classes,)} in the set's order, channel_mean (9,)).
    """
    labels = {name: [] for name in task_set.names}
    total, count = np.zeros(9, np.float64), 0
    decoded = dataset.map(lambda e: decode(e, task_set), num_parallel_calls=AUTOTUNE)
    for volumes, batch_labels in decoded.batch(256):
        total += tf.reduce_sum(volumes, axis=(0, 1, 2)).numpy()
        count += int(volumes.shape[0]) * volumes.shape[1] * volumes.shape[2]
        for name, values in zip(task_set.names, batch_labels):
            labels[name].append(values.numpy())
    if count == 0:
        raise ValueError("the training split is empty")
    weights = task_class_weights({k: np.concatenate(v) for k, v in labels.items()}, task_set)
    return weights, (total / count).astype(np.float32)


def steps_per_epoch(dataset, batch_size):
    """Batches in one epoch of a split (the last one may be smaller)."""
    size = int(dataset.cardinality())
    if size < 0:
        size = sum(1 for _ in dataset)
    return max(1, -(-size // batch_size))


def training_dataset(dataset, class_weights, config=PipelineConfig(), initial_epoch=0,
                     task_set=tasks.PAPER):
    """The augmented, shuffled, weighted training stream of a raw split.

    ``class_weights``: {task: weights} of ``task_set``'s tasks, in its order.

    The stream runs epoch after epoch from ``initial_epoch`` (use
    ``steps_per_epoch`` batches an epoch with ``model.fit``). Every epoch's
    shuffle order and augmentation are seeded by ``(config.seed, epoch)``, so
    a run resumed at epoch e sees exactly the batches an uninterrupted run
    sees at epoch e.
    """
    decoded = dataset.map(lambda e: decode(e, task_set), num_parallel_calls=AUTOTUNE)
    if config.cache:
        decoded = decoded.cache()
    buffer = config.shuffle_buffer
    if not buffer:  # the whole split when its size is known
        buffer = int(dataset.cardinality()) if dataset.cardinality() > 0 else 10_000
    augment_config = config.augmentation

    def one_epoch(epoch):
        # The seeds here are explicit tensors. TF would combine them with a global
        # seed set by the user (keras.utils.set_random_seed), and fails outright
        # for a global seed of 0, so this traced function ignores it.
        tf.compat.v1.get_default_graph().seed = None
        epoch_seed = tf.cast(config.seed, tf.int64) * 1_000_003 + epoch
        batches = decoded.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=False)
        batches = batches.batch(config.batch_size).enumerate()

        def augmented(index, batch):
            volumes, labels = batch
            draws = augment.draw(tf.shape(volumes)[0], tf.stack([epoch_seed, index]),
                                 augment_config)
            # a volume reflected across the disc plane swaps upper and lower lesions
            labels = tuple(tf.where(draws["mirror"], labels[j], labels[i])
                           for i, j in enumerate(task_set.mirrored))
            return augment.apply(volumes, draws), labels

        return batches.map(augmented, num_parallel_calls=AUTOTUNE)

    epochs = tf.data.Dataset.range(initial_epoch, 2**31 - 1)
    data = epochs.flat_map(one_epoch)
    data = data.map(lambda v, y: weigh(v, y, class_weights), num_parallel_calls=AUTOTUNE)
    return data.prefetch(AUTOTUNE)


def evaluation_dataset(dataset, class_weights, batch_size=64, cache=True, task_set=tasks.PAPER):
    """The plain, ordered, weighted pipeline of a raw split (validation, test)."""
    data = dataset.map(lambda e: decode(e, task_set), num_parallel_calls=AUTOTUNE)
    if cache:
        data = data.cache()
    data = data.batch(batch_size)
    data = data.map(lambda v, y: weigh(v, y, class_weights), num_parallel_calls=AUTOTUNE)
    return data.prefetch(AUTOTUNE)
