"""The masked, class-balanced multi-task loss (docs/design.md, "Loss").

Per task, softmax cross-entropy over the labelled discs only: a label of -1
contributes nothing. Class balance comes in as Keras' per-output
``sample_weight`` (``input_pipeline.class_weights`` gives alpha_c = 1 / freq(c),
normalised to mean 1 over the labelled training discs), so plain ``model.fit`` trains it;
task weights w_t are Keras ``loss_weights``.
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


def losses(task_set=tasks.PAPER):
    """The per-output loss dict for ``model.compile`` (a ``tasks.TaskSet``'s heads)."""
    return {name: MaskedSparseCategoricalCrossentropy() for name in task_set.names}


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
