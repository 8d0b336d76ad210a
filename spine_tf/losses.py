"""The masked, class-balanced multi-task loss (SPEC "Loss").

Per task, softmax cross-entropy over the labelled discs only: a label of -1
contributes nothing. Class balance comes in as Keras' per-output
``sample_weight`` (``class_weights`` gives alpha_c = 1 / freq(c), normalised
to mean 1 over the labelled training discs), so plain ``model.fit`` trains it;
task weights w_t are Keras ``loss_weights``.
"""

import keras
import numpy as np

from spine_tf import tasks


@keras.saving.register_keras_serializable(package="spine_tf")
class MaskedSparseCategoricalCrossentropy(keras.losses.Loss):
    """Sparse softmax cross-entropy from logits that ignores labels of -1.

    The per-disc loss of a missing label is 0 whatever the sample weight;
    the mean is over the batch as Keras reduces it (sum_over_batch_size).
    """

    def __init__(self, name="masked_sparse_categorical_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_true = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,))
        labelled = keras.ops.cast(y_true >= 0, y_pred.dtype)
        safe = keras.ops.maximum(y_true, 0)
        per_disc = keras.losses.sparse_categorical_crossentropy(safe, y_pred, from_logits=True)
        return per_disc * labelled


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


def task_class_weights(labels_by_task):
    """``class_weights`` for every task: {task: (classes,) weights}."""
    return {t.name: class_weights(labels_by_task[t.name], t.num_classes) for t in tasks.TASKS}


def losses():
    """The per-output loss dict for ``model.compile``."""
    return {name: MaskedSparseCategoricalCrossentropy() for name in tasks.TASK_NAMES}


def loss_weights(task_weights=None):
    """Per-output loss weights w_t: 1 each, or as given ({task: w}, others 0).

    ``loss_weights({"pfirrmann": 1.0})`` is single-task training.
    """
    if task_weights is None:
        return {name: 1.0 for name in tasks.TASK_NAMES}
    unknown = set(task_weights) - set(tasks.TASK_NAMES)
    if unknown:
        raise KeyError(f"unknown task(s) {sorted(unknown)}; tasks are {', '.join(tasks.TASK_NAMES)}")
    return {name: float(task_weights.get(name, 0.0)) for name in tasks.TASK_NAMES}
