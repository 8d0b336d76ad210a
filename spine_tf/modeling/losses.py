"""The masked, class-balanced multi-task loss (docs/design.md, "Loss").

Per task, softmax cross-entropy over the labelled discs only: a label of -1
contributes nothing. Class balance comes in as Keras' per-output
``sample_weight`` (``input_pipeline.class_weights`` gives alpha_c = 1 / freq(c),
normalised to mean 1 over the labelled training discs), so plain ``model.fit`` trains it;
task weights w_t are Keras ``loss_weights``.

An ordinal task (a grade, such as Pfirrmann's) may train on soft ordinal labels instead
(``MaskedSoftOrdinalCrossentropy``, ``train.ordinal_tasks``): a grade one off costs less
than a grade three off, where plain cross-entropy charges them alike.
"""

import keras

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


ORDINAL_SHARPNESS = 2.0
"""Soft ordinal labels: class j gets weight exp(-ORDINAL_SHARPNESS (j - grade)^2) before
normalising, so the true grade keeps about 78 % of the target and each neighbour 11 %."""


@keras.saving.register_keras_serializable(package="spine_tf")
class MaskedSoftOrdinalCrossentropy(keras.losses.Loss):
    """Cross-entropy from logits against soft ordinal labels (SORD: Diaz and Marathe, CVPR
    2019): the target of grade y puts weight exp(-sharpness (j - y)^2) on class j. Labels of
    -1 contribute nothing, as in ``MaskedSparseCategoricalCrossentropy``."""

    def __init__(self, classes, sharpness=ORDINAL_SHARPNESS,
                 name="masked_soft_ordinal_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.classes, self.sharpness = int(classes), float(sharpness)

    def call(self, y_true, y_pred):
        y_true = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,))
        labelled = keras.ops.cast(y_true >= 0, y_pred.dtype)
        grade = keras.ops.cast(keras.ops.maximum(y_true, 0), y_pred.dtype)
        offset = keras.ops.arange(self.classes, dtype=y_pred.dtype)[None, :] - grade[:, None]
        target = keras.ops.softmax(-self.sharpness * offset ** 2, axis=-1)
        per_disc = keras.losses.categorical_crossentropy(target, y_pred, from_logits=True)
        return per_disc * labelled

    def get_config(self):
        return {**super().get_config(), "classes": self.classes, "sharpness": self.sharpness}


def losses(task_set=tasks.PAPER, ordinal_tasks=()):
    """The per-output loss dict for ``model.compile`` (a ``tasks.TaskSet``'s heads); the
    tasks named in ``ordinal_tasks`` train on soft ordinal labels.

    Raises:
        KeyError: an ordinal task that is not in the task set.
    """
    unknown = set(ordinal_tasks) - set(task_set.names)
    if unknown:
        raise KeyError(f"unknown ordinal task(s) {sorted(unknown)}; tasks are "
                       f"{', '.join(task_set.names)}")
    return {task.name: (MaskedSoftOrdinalCrossentropy(task.num_classes)
                        if task.name in ordinal_tasks else MaskedSparseCategoricalCrossentropy())
            for task in task_set.tasks}


def loss_weights(task_weights=None, task_set=tasks.PAPER):
    """Per-output loss weights w_t: 1 each, or as given ({task: w}, others 0).

    ``loss_weights({"pfirrmann": 1.0})`` is single-task training.
    """
    names = task_set.names
    if task_weights is None:
        return {name: 1.0 for name in names}
    unknown = set(task_weights) - set(names)
    if unknown:
        raise KeyError(f"unknown task(s) {sorted(unknown)}; tasks are {', '.join(names)}")
    return {name: float(task_weights.get(name, 0.0)) for name in names}
