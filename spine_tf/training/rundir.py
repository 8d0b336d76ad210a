"""The run folder of ``spine-tf train``: the one place that names its files.

A run folder holds::

    config.json         the resolved ExperimentConfig
    statistics.json     class weights and channel mean of the training split
    backup/             BackupAndRestore state while a run is unfinished
    best.keras          best model by mean validation balanced accuracy
    final.keras         the model at the end of training
    history.csv         per-epoch losses, balanced accuracies, learning rate
    training_time.json  seconds spent training, over every resumption
    init.json           where the starting weights came from (train.init_from)
    tensorboard/        TensorBoard logs (hotspots/: hotspot images of validation discs)
    evaluation_<split>/ reports of ``spine-tf evaluate``
    hotspots_<split>/   pictures and tables of ``spine-tf hotspots``

It imports no TensorFlow, so commands can name these files before loading it.

Example:
    run = RunDir("runs/demo")
    run.best_model                             # 'runs/demo/best.keras'
"""

import os
import re

CONFIG = "config.json"
STATISTICS = "statistics.json"
BACKUP = "backup"
BEST_MODEL = "best.keras"
FINAL_MODEL = "final.keras"
HISTORY = "history.csv"
TRAINING_TIME = "training_time.json"
INIT = "init.json"
TENSORBOARD = "tensorboard"
HOTSPOT_IMAGES = "hotspots"  # inside tensorboard/


class _File:
    """A ``RunDir`` attribute: the path of one named file in the run folder."""

    def __init__(self, name):
        self.name = name

    def __get__(self, run, owner=None):
        return self if run is None else run.file(self.name)


class RunDir:
    """Paths of the files in one run folder (which need not exist yet)."""

    def __init__(self, path):
        self.path = os.fspath(path)

    def __fspath__(self):
        return self.path

    def __repr__(self):
        return f"RunDir({self.path!r})"

    def file(self, name):
        """``name`` inside the run folder (e.g. a model file given by name)."""
        return os.path.join(self.path, name)

    config = _File(CONFIG)
    statistics = _File(STATISTICS)
    backup = _File(BACKUP)
    best_model = _File(BEST_MODEL)
    final_model = _File(FINAL_MODEL)
    history = _File(HISTORY)
    training_time = _File(TRAINING_TIME)
    init = _File(INIT)
    tensorboard = _File(TENSORBOARD)

    @property
    def hotspot_images(self):
        return os.path.join(self.tensorboard, HOTSPOT_IMAGES)

    def evaluation(self, split, data=()):
        """The report folder of ``split``: ``evaluation_<split>``, with the ``key=value``
        data overrides it was scored with in the name (``evaluation_patients500_seed1_all``)."""
        return self.file("evaluation_" + re.sub(r"[^0-9A-Za-z]+", "_", "_".join(
            [a.replace("=", "") for a in data] + [split])).strip("_"))

    def hotspots(self, split):
        """The picture folder ``hotspots_<split>``."""
        return self.file(f"hotspots_{split}")
