"""The callbacks of a training run (beside Keras' own), shared with the detector's training."""

import sys
import time

import keras
import numpy as np

from spine_tf.io.atomic import atomic_path

MONITOR = "val_mean_balanced_accuracy"
"""What ``BestModel`` maximises by default: the mean over the trained tasks (``EpochSummary``)."""


class EpochSummary(keras.callbacks.Callback):
    """Adds the mean balanced accuracy over the trained tasks and the learning rate to the logs.

    Placed first, so checkpointing, early stopping, CSV and TensorBoard see
    ``mean_balanced_accuracy``, ``val_mean_balanced_accuracy`` and
    ``learning_rate``.
    """

    def __init__(self, trained_tasks):
        super().__init__()
        self.trained_tasks = tuple(trained_tasks)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for prefix in ("", "val_"):
            values = [logs.get(f"{prefix}{name}_balanced_accuracy") for name in self.trained_tasks]
            values = [v for v in values if v is not None]
            if values:
                logs[f"{prefix}mean_balanced_accuracy"] = float(np.mean(values))
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(
            self.model.optimizer.learning_rate))


class BestModel(keras.callbacks.Callback):
    """Saves the model whenever ``monitor`` beats its best so far, atomically.

    Like ``keras.callbacks.ModelCheckpoint(save_best_only=True, mode="max")``,
    but the file is written beside the target and renamed, so a run killed
    while saving leaves the previous best model intact.

    Args:
        path: the ``.keras`` file.
        monitor: the log key to maximise.
        best: the best value of earlier epochs (a resumed run), or None.
    """

    def __init__(self, path, monitor=MONITOR, best=None):
        super().__init__()
        self.path, self.monitor, self.best = path, monitor, best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or (self.best is not None and not value > self.best):
            return
        with atomic_path(self.path) as tmp:
            self.model.save(tmp)
        self.best = float(value)


class EpochSeeds(keras.callbacks.Callback):
    """Reseeds every random layer (dropout) at the start of each epoch from (seed, epoch).

    BackupAndRestore restores weights and optimizer but not the dropout
    generators' state; seeding them per epoch makes a resumed run draw the
    same dropout masks as an uninterrupted one.
    """

    def __init__(self, seed):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        for index, layer in enumerate(self.model.layers):
            generator = getattr(layer, "seed_generator", None)
            if generator is not None:
                generator.state.assign(np.array([self.seed * 1000 + index, epoch], np.int64))


class ResumedCallbackState(keras.callbacks.Callback):
    """Restores what BackupAndRestore does not: the plateau and early-stopping state.

    On a resumed run, ``ReduceLROnPlateau`` and ``EarlyStopping`` start from
    scratch; this callback, placed after them, replays their rules over the
    completed epochs in ``history.csv`` so their best value, wait and cooldown
    counters are what an uninterrupted run would have. (BestModel's best value
    is passed to it from the same rows.)

    Args:
        rows: history.csv rows (dicts) of the completed epochs, in order.
        plateau: the run's ReduceLROnPlateau (or None).
        early_stopping: the run's EarlyStopping (or None).
    """

    def __init__(self, rows, plateau=None, early_stopping=None):
        super().__init__()
        self.rows, self.plateau, self.early_stopping = rows, plateau, early_stopping

    def _values(self, callback):
        if callback.monitor_op is None:
            callback._set_monitor_op()  # Keras sets it lazily; the rules need it now
        return [(int(r["epoch"]), float(r[callback.monitor]), float(r.get("learning_rate", 1)))
                for r in self.rows if r.get(callback.monitor) not in (None, "")]

    def on_train_begin(self, logs=None):
        if not self.rows:
            return
        plateau = self.plateau
        if plateau is not None:
            for _, current, lr in self._values(plateau):
                if plateau.cooldown_counter > 0:
                    plateau.cooldown_counter -= 1
                    plateau.wait = 0
                if plateau._is_improvement(current, plateau.best):
                    plateau.best, plateau.wait = current, 0
                elif plateau.cooldown_counter <= 0:
                    plateau.wait += 1
                    if plateau.wait >= plateau.patience and lr > plateau.min_lr:
                        plateau.cooldown_counter, plateau.wait = plateau.cooldown, 0
        stopper = self.early_stopping
        if stopper is not None:
            for epoch, current, _ in self._values(stopper):
                stopper.wait += 1
                if stopper._is_improvement(current, stopper.best):
                    stopper.best, stopper.best_epoch, stopper.wait = current, epoch, 0


class EpochLine(keras.callbacks.Callback):
    """Prints one short line per epoch: loss and ``metric`` (default the mean balanced
    accuracy), each training / validation, the learning rate and the epoch's seconds.

    The per-task figures stay in ``history.csv`` and TensorBoard. Placed after
    ``EpochSummary``, whose mean and learning rate it prints.

    Example output::

        epoch  3/40  loss 4.213 / 4.380  balanced accuracy 0.412 / 0.388  lr 1.0e-02  12 s
    """

    def __init__(self, epochs, metric="mean_balanced_accuracy", label="balanced accuracy",
                 stream=None):
        super().__init__()
        self.epochs, self.metric, self.label, self.stream = epochs, metric, label, stream
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}

        def pair(key):
            values = [logs.get(key), logs.get(f"val_{key}")]
            return " / ".join("-" if v is None else f"{float(v):.3f}" for v in values)

        width = len(str(self.epochs))
        seconds = time.perf_counter() - (self._start or time.perf_counter())
        rate = logs.get("learning_rate")
        print(f"epoch {epoch + 1:>{width}}/{self.epochs}  loss {pair('loss')}  "
              f"{self.label} {pair(self.metric)}  "
              + (f"lr {float(rate):.1e}  " if rate is not None else "")
              + f"{seconds:.0f} s", file=self.stream or sys.stdout, flush=True)
