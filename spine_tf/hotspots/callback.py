"""A Keras callback that shows the hotspots of a fixed validation batch in TensorBoard."""

import keras
import tensorflow as tf

from spine_tf.hotspots.outputs import overlay_pictures
from spine_tf.hotspots.saliency import Hotspots, as_volumes


class HotspotImages(keras.callbacks.Callback):
    """Writes hotspot montages of a fixed validation batch to TensorBoard every epoch.

    One image per task (``hotspots/<task>``): the discs as rows, each slice
    with its hotspot overlaid, under
    ``log_dir`` (a ``tf.summary`` file writer of its own).

    Args:
        log_dir: e.g. ``RUN_DIR/tensorboard/hotspots``.
        volumes: (n, 112, 224, 9) the fixed batch (a few discs).
        task_names: tasks to show (default: all of the model's).
        augmentations: copies per hotspot (fewer than 150: this runs every epoch).
        every: write every ``every`` epochs.
        seed: augmentation seed (the same copies every epoch).
    """

    def __init__(self, log_dir, volumes, task_names=None, augmentations=16,
                 every=1, seed=0):
        super().__init__()
        self.log_dir = log_dir
        self.volumes = as_volumes(volumes)
        self.task_names = None if task_names is None else tuple(task_names)
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
