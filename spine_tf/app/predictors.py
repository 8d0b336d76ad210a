"""The models that grade disc volumes: a Keras model or a SavedModel export.

Both predictors give per-task probabilities (TTA or single view) and
evidence hotspots of chosen classes, and say the model's input mode
(``input_slices``: 9, or 1 for a centre-slice model) and TTA views
(``tta_views``: 54, or 9), so ``predict`` treats them alike;
``load_predictor`` picks one for a path.

Example:
    predictor = load_predictor("saved_models/spinenet")   # its newest version
    probabilities = predictor.probabilities(volumes, tta=True)
"""

import os

import numpy as np

from spine_tf import tasks
from spine_tf.app.scans import PredictError
from spine_tf.modeling.shipped import SHIPPED, SHIPPED_MODEL, shipped_card
from spine_tf.training.rundir import RunDir

HOTSPOT_AUGMENTATIONS = 150
"""Augmented copies per disc of a Keras model's hotspots (an export fixes its own)."""


class KerasPredictor:
    """Grades and hotspots from a Keras SpineNet model."""

    def __init__(self, model, source):
        from spine_tf import hotspots, tta
        from spine_tf.modeling.model import input_slices, task_set
        self.model, self.source = model, source
        self._hotspots = hotspots.Hotspots(model)
        self.input_slices = input_slices(model)
        self.task_set = task_set(model)
        self.tta_views = len(tta.views_for(model))
        self.description = f"{source} (Keras, {model.count_params():,} parameters)"

    def probabilities(self, volumes, tta=True):
        from spine_tf import tta as tta_lib
        # one disc's views per forward batch: measured faster on CPU than a scan's
        # discs together (docs/benchmarks.md), and what the SavedModel's predict_tta does
        return tta_lib.predict(self.model, volumes, tta=tta, discs_per_batch=1)

    def hotspot_settings(self, augmentations, seed):
        """(copies per disc, seed) the hotspots will use."""
        return int(augmentations), seed

    def hotspots(self, volumes, classes, augmentations=HOTSPOT_AUGMENTATIONS, seed=0):
        """{task: TaskHotspots} for the given class of every task (``classes``: {task: (n,)})."""
        return self._hotspots.explain(volumes, self.task_set.names, classes=classes,
                                      augmentations=augmentations, seed=seed)


class SavedModelPredictor:
    """Grades (and hotspots, when the export has the signature) from an export."""

    def __init__(self, export_dir):
        from spine_tf.serving import export
        self.loaded = export.load(export_dir)
        self.metadata = export.read_metadata(export_dir)
        self.source = export_dir
        # exports written before the input modes are 9-slice models with 54 views
        self.input_slices = int(self.metadata.get("input_slices", 9))
        self.tta_views = int(self.metadata.get("tta_views", 54))
        self.task_set = tasks.task_set(self.metadata.get("task_set", tasks.DEFAULT_TASK_SET))
        self.description = (f"{export_dir} (SavedModel, spine_tf "
                            f"{self.metadata.get('package_version')}, "
                            f"{self.metadata.get('parameters', 0):,} parameters)")

    def probabilities(self, volumes, tta=True):
        import tensorflow as tf
        from spine_tf.serving import export
        signature = self.loaded.signatures["predict_tta" if tta else "serving_default"]
        return export.signature_probabilities(signature(disc_volume=tf.constant(volumes)))

    def hotspot_settings(self, augmentations, seed):
        """The export fixes the copies per disc and the seed (its metadata says which)."""
        return int(self.metadata.get("hotspot_augmentations", 0)), 0

    def hotspots(self, volumes, classes, augmentations=None, seed=None):
        """{task: TaskHotspots} through the export's ``hotspots`` signature (its settings)."""
        if "hotspots" not in self.loaded.signatures:
            raise PredictError(f"{self.source}: this export has no hotspots signature; use "
                               "--no-hotspots, or a .keras model")
        import tensorflow as tf
        from spine_tf.serving import export
        from spine_tf.hotspots import TaskHotspots
        single = export.signature_probabilities(
            self.loaded.signatures["serving_default"](disc_volume=tf.constant(volumes)))
        out = {}
        for task, p in zip(self.task_set.tasks, single):
            chosen = np.asarray(classes[task.name], np.int32)
            maps = self.loaded.signatures["hotspots"](
                disc_volume=tf.constant(volumes), task=tf.constant(task.name),
                class_index=tf.constant(chosen))["hotspots"].numpy()
            out[task.name] = TaskHotspots(task.name, maps, chosen,
                                          p[np.arange(len(p)), chosen], p.argmax(axis=1))
        return out


def load_predictor(path=SHIPPED):
    """A predictor for a ``.keras`` file, a run directory, a SavedModel, a model base folder
    or ``"shipped"`` (the package's grading model, the default).

    A model base folder (``saved_models/<name>``) gives its highest version.

    Raises:
        PredictError: nothing usable at ``path``.
    """
    path = os.fspath(path)
    if path == SHIPPED:
        from spine_tf.modeling.model import load_model
        if not os.path.isfile(SHIPPED_MODEL):
            raise PredictError(f"{SHIPPED_MODEL}: the shipped model is missing from this "
                               "installation")
        card = shipped_card()
        return KerasPredictor(load_model(SHIPPED), f"{card['model']}, shipped with spine_tf "
                                                   f"(trained on {card['trained_on']})")
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "saved_model.pb")):
            return SavedModelPredictor(path)
        best = RunDir(path).best_model
        if os.path.exists(best):
            path = best
        else:
            from spine_tf.serving.export import versions
            complete = [v for v in versions(path)
                        if os.path.exists(os.path.join(path, str(v), "saved_model.pb"))]
            if complete:
                return SavedModelPredictor(os.path.join(path, str(complete[-1])))
            raise PredictError(f"{path}: not a SavedModel (no saved_model.pb), a model base "
                               "folder (no numbered versions) or a run directory (no best.keras)")
    if not os.path.isfile(path):
        raise PredictError(f"{path}: no such model")
    if not path.endswith(".keras"):
        raise PredictError(f"{path}: a model is a .keras file, a run directory or a SavedModel")
    from spine_tf.modeling.model import load_model
    try:
        model = load_model(path)
    except Exception as error:  # Keras raises many kinds on a broken file
        raise PredictError(f"{path}: cannot load the model: {error}") from error
    return KerasPredictor(model, path)


__all__ = ["HOTSPOT_AUGMENTATIONS", "KerasPredictor", "SavedModelPredictor", "load_predictor"]
