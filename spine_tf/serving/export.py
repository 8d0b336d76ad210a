"""SavedModel export for TensorFlow Serving, and loading an export back.

``export`` writes ``<base>/<name>/<version>/`` (TF Serving's layout; the next
free integer version unless one is given) with the signatures of
docs/design.md, "Serving signatures":

- ``serving_default``: ``disc_volume`` float32 [batch, 112, 224, 9] -> per
  task ``<task>_probabilities`` float32 [batch, classes] and ``<task>_grade``
  int32 [batch] (single view);
- ``predict_tta``: the same, with the test-time augmentation inside the
  graph (one disc's views are one forward batch): the 54 views, or the 9 of a
  1-slice model (``tta.views_for``);
- ``hotspots``: ``disc_volume``, ``task`` (a task name, string scalar) and
  ``class_index`` int32 [batch] (-1: the predicted class) -> ``hotspots``
  float32 [batch, 112, 224, 9], the evidence hotspots of ``spine_tf.hotspots``
  from a fixed number of augmented copies (export time; seed 0);

and ``assets/spine_tf.json`` with what a client needs to read the outputs:
the task table and class names, the input and the model's input mode
(``input_slices``: 9, or 1 for a model that reads the centre slice only), the
number of TTA views (``tta_views``), the training config, the
mean-subtraction statistics and the package version.

The graph checks its input: a ``disc_volume`` of another rank or shape fails
with a message naming the expected shape (TF Serving returns it as the
error of the request); another dtype is refused by the signature itself.

The export is a ``tf.Module`` saved with ``tf.saved_model.save``
(``model.export`` and ``ExportArchive`` store every weight twice). The version
folder is written under a temporary name and renamed, so TF Serving, which polls the
base path for integer folders, never sees a half-written version.

Example:
    path = export(load_model("run/best.keras"), "saved_models", "spinenet")
    served = load(path)
    outputs = served.signatures["serving_default"](disc_volume=volumes)
"""

import datetime
import json
import os
import re

import numpy as np
import tensorflow as tf

import spine_tf
from spine_tf import hotspots as hotspots_lib
from spine_tf import tasks, tta
from spine_tf.errors import SpineTFError
from spine_tf.io.atomic import atomic_folder
from spine_tf.modeling.model import channel_means, input_slices
from spine_tf.modeling.model import task_set as model_task_set
from spine_tf.tasks import VOLUME_SHAPE

METADATA_NAME = "spine_tf.json"
INPUT_NAME = tasks.INPUT_NAME
SIGNATURES = ("serving_default", "predict_tta", "hotspots")
_ANY = tf.TensorSpec(None, tf.float32, name=INPUT_NAME)
_SHAPE_TEXT = f"[batch, {', '.join(str(n) for n in VOLUME_SHAPE)}]"


class ModelFileError(SpineTFError, FileNotFoundError):
    """The model file to export does not exist."""


def checked_volumes(volumes):
    """``volumes`` with its shape checked in the graph: [batch, 112, 224, 9]."""
    message = (f"{INPUT_NAME} must be float32 {_SHAPE_TEXT} (disc volumes made by "
               "spine_tf.extraction)")
    shape = tf.shape(volumes)
    expected = tf.constant(VOLUME_SHAPE)
    ok = tf.cond(tf.equal(tf.size(shape), 4),
                 lambda: tf.reduce_all(tf.equal(shape[1:], expected)), lambda: False)
    check = tf.debugging.Assert(ok, [message + "; got shape", shape], summarize=8)
    with tf.control_dependencies([check]):
        return tf.ensure_shape(tf.identity(volumes), (None,) + tuple(VOLUME_SHAPE))


def _outputs(task_set, probabilities):
    out = {}
    for task, p in zip(task_set.tasks, probabilities):
        name_p, name_grade = task.output_names
        out[name_p] = p
        out[name_grade] = tf.argmax(p, axis=-1, output_type=tf.int32)
    return out


class ServingModule(tf.Module):
    """The exported object: a Keras SpineNet model and its signatures."""

    def __init__(self, model, augmentations=hotspots_lib.AUGMENTATIONS):
        super().__init__(name="spine_tf")
        self.model = model
        self.task_set = model_task_set(model)
        self.augmentations = int(augmentations)

    def _logits(self, volumes):
        return [tf.cast(x, tf.float32) for x in self.model(volumes, training=False)]

    @tf.function(input_signature=[_ANY])
    def serving_default(self, disc_volume):
        volumes = checked_volumes(disc_volume)
        return _outputs(self.task_set, [tf.nn.softmax(x, axis=-1) for x in self._logits(volumes)])

    @tf.function(input_signature=[_ANY])
    def predict_tta(self, disc_volume):
        volumes = checked_volumes(disc_volume)
        signature = [tf.TensorSpec((t.num_classes,), tf.float32) for t in self.task_set.tasks]
        view_list = tta.views_for(self.model)
        per_disc = tf.map_fn(  # one disc's views per forward batch bounds the memory
            lambda volume: [p[0] for p in tta.tta_probabilities(self._logits, volume[None],
                                                                view_list)],
            volumes, fn_output_signature=signature, parallel_iterations=1)
        return _outputs(self.task_set, per_disc)

    @tf.function(input_signature=[_ANY, tf.TensorSpec((), tf.string, name="task"),
                                  tf.TensorSpec((None,), tf.int32, name="class_index")])
    def hotspots(self, disc_volume, task, class_index):
        volumes = checked_volumes(disc_volume)
        names = tf.constant(self.task_set.names)
        known = tf.debugging.Assert(tf.reduce_any(tf.equal(names, task)), [
            "task must be one of " + ", ".join(self.task_set.names) + "; got", task])
        same = tf.debugging.assert_equal(
            tf.size(class_index), tf.shape(volumes)[0],
            message="class_index needs one class per disc volume (-1: the predicted class)")
        with tf.control_dependencies([known, same]):
            index = tf.argmax(tf.cast(tf.equal(names, task), tf.int32), output_type=tf.int32)
        logits = self._logits(volumes)

        def branch(n, task_row):
            def explain():
                predicted = tf.argmax(logits[n], axis=-1, output_type=tf.int32)
                classes = tf.where(class_index < 0, predicted, class_index)
                check = tf.debugging.assert_less(
                    classes, task_row.num_classes,
                    message=f"{task_row.name} has classes 0..{task_row.num_classes - 1}")
                with tf.control_dependencies([check]):
                    return hotspots_lib.graph_hotspots(self.model, n, volumes, classes,
                                                       self.augmentations)
            return explain

        maps = tf.switch_case(index, [branch(n, t) for n, t in enumerate(self.task_set.tasks)])
        return {"hotspots": tf.ensure_shape(maps, (None,) + tuple(VOLUME_SHAPE))}


def metadata(model, config=None, augmentations=hotspots_lib.AUGMENTATIONS):
    """The JSON-ready description of an export (``assets/spine_tf.json``)."""
    views = len(tta.views_for(model))
    task_set = model_task_set(model)
    return {
        "package": "spine_tf", "package_version": spine_tf.__version__,
        "tensorflow_version": tf.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model_name": model.name, "parameters": int(model.count_params()),
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [None, *VOLUME_SHAPE],
                  "meaning": "disc volumes from spine_tf.extraction: rows x columns x "
                             "sagittal slices, intensities normalised per disc"},
        "input_slices": input_slices(model),
        "tta_views": views,
        "task_set": task_set.name,
        "tasks": [{"name": t.name, "description": t.description,
                   "class_names": list(t.class_names),
                   "outputs": list(t.output_names)}
                  for t in task_set.tasks],
        "signatures": {
            "serving_default": "single view",
            "predict_tta": f"{views}-view test-time augmentation",
            "hotspots": f"evidence hotspots of one task from {augmentations} augmented copies "
                        "per disc (seed 0); inputs disc_volume, task (name), class_index (one "
                        "per disc, -1 = the predicted class); output hotspots"},
        "hotspot_augmentations": int(augmentations),
        "training_config": config,
        **_means(model),
    }


def _means(model):
    """The input mean a model subtracts (``channel_mean``), or each member's
    (``channel_means``) with their count (``members``) for an ensemble."""
    means = [[float(v) for v in mean] for mean in channel_means(model)]
    if len(means) == 1:
        return {"channel_mean": means[0]}
    return {"members": len(means), "channel_means": means}


def versions(model_dir):
    """The integer version folders of a TF Serving model folder, ascending ([] if none)."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(n) for n in os.listdir(model_dir) if re.fullmatch(r"\d+", n))


def next_version(model_dir):
    """The next free integer version in a TF Serving model folder (1 if none)."""
    return max(versions(model_dir), default=0) + 1


def export(model, base_dir, name, version=None, config=None,
           augmentations=hotspots_lib.AUGMENTATIONS):
    """Exports a Keras SpineNet model for TF Serving.

    Args:
        model: the Keras model (list outputs in task order).
        base_dir: the model base folder (e.g. ``saved_models``).
        name: the model's name (a folder under ``base_dir``).
        version: integer version; None = the next free one.
        config: the training config (a dict, e.g. a run's config.json) to
            record in the metadata.
        augmentations: augmented copies per disc in the hotspots signature.

    Returns:
        The version folder written.

    Raises:
        FileExistsError: if ``version`` exists already.
        ValueError: on a name that is not a plain folder name.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in (".", ".."):
        raise ValueError(f"model name {name!r}: use letters, digits, '_', '-' and '.'")
    model_dir = os.path.join(base_dir, name)
    version = next_version(model_dir) if version is None else int(version)
    target = os.path.join(model_dir, str(version))
    if os.path.exists(target):
        raise FileExistsError(f"{target} exists already; pick another --version")
    with atomic_folder(target, replace=False) as tmp:  # a version is never rewritten
        module = ServingModule(model, augmentations)
        tf.saved_model.save(module, tmp, signatures={
            name: getattr(module, name).get_concrete_function() for name in SIGNATURES})
        os.makedirs(os.path.join(tmp, "assets"), exist_ok=True)
        with open(os.path.join(tmp, "assets", METADATA_NAME), "w", encoding="utf-8") as f:
            json.dump(metadata(model, config, augmentations), f, indent=1)
    return target


def export_run(source, base_dir, name, version=None, augmentations=hotspots_lib.AUGMENTATIONS):
    """``export`` of a ``.keras`` file, of ``"shipped"`` (the package's grading model, its
    card as the config), or of a run directory's best model with its config.

    Raises:
        ModelFileError: no such model file (or run directory without its config).
    """
    from spine_tf.modeling.model import load_model
    from spine_tf.modeling.shipped import SHIPPED, model_file as file_of, shipped_card
    from spine_tf.training.rundir import RunDir
    model_file, config = file_of(source), None
    if source == SHIPPED and os.path.isfile(model_file):
        config = {"shipped": shipped_card()}
    if os.path.isdir(source):
        model_file = RunDir(source).best_model
        try:
            with open(RunDir(source).config, encoding="utf-8") as f:
                config = json.load(f)
        except FileNotFoundError as error:
            raise ModelFileError(str(error)) from error
    if not os.path.isfile(model_file):
        raise ModelFileError(f"{model_file}: no such model file")
    return export(load_model(model_file), base_dir, name, version, config, augmentations)


def read_metadata(export_dir):
    """The ``assets/spine_tf.json`` of an export."""
    path = os.path.join(export_dir, "assets", METADATA_NAME)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{export_dir} is not a spine_tf export: {path} is missing")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load(export_dir):
    """Loads an export with ``tf.saved_model.load`` (signatures in ``.signatures``)."""
    read_metadata(export_dir)
    return tf.saved_model.load(export_dir)


def signature_task_set(outputs):
    """The ``tasks.TaskSet`` of a signature's output dict (from its probability outputs)."""
    suffix = "_probabilities"
    return tasks.task_set_of([k[:-len(suffix)] for k in outputs if k.endswith(suffix)],
                             ordered=False)


def signature_probabilities(outputs):
    """A signature's output dict -> list in task-set order of numpy probabilities."""
    return [np.asarray(outputs[t.output_names[0]]) for t in signature_task_set(outputs).tasks]


__all__ = ["INPUT_NAME", "METADATA_NAME", "ModelFileError", "SIGNATURES", "ServingModule",
           "checked_volumes", "export", "export_run", "load", "metadata", "next_version",
           "read_metadata", "signature_probabilities", "signature_task_set", "versions"]
