"""Training with plain ``model.fit``: data, model, loss, callbacks, resumption.

The run directory's files are named in ``spine_tf.training.rundir``.

Running ``train`` again on an unfinished run directory resumes it from its
last completed epoch, with the same batches an uninterrupted run would have
seen (the input pipeline seeds every epoch).

Several GPUs or machines: ``train.strategy = "mirrored"`` (all local GPUs) or
``"multiworker"`` (``MultiWorkerMirroredStrategy``; every worker runs the same
command with its own ``TF_CONFIG``, e.g.
``{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type":
"worker", "index": 0}}``). The batch size is the global one.
"""

import csv
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from spine_tf import config as config_lib
from spine_tf import tasks
from spine_tf.training import input_pipeline
from spine_tf.modeling import losses
from spine_tf.modeling import metrics
from spine_tf.modeling import model as model_lib
from spine_tf.io.atomic import atomic_path, write_json
from spine_tf.training.callbacks import (MONITOR, BestModel, EpochLine, EpochSeeds,
                                         EpochSummary, ResumedCallbackState)
from spine_tf.training.rundir import RunDir
from spine_tf.errors import SpineTFError


def make_strategy(name):
    """The tf.distribute strategy called ``name`` (see the module docstring)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; use one of {', '.join(config_lib.STRATEGIES)}")


def data_dir_of(data_config):
    """The TFDS data dir of a DataConfig: its own, else, for a source folder
    (``manual_dir``), one named after that folder inside TFDS's default, else TFDS's default
    (None).

    TFDS names a build by config and version only, so two folders built into one data dir
    would read as one, and a folder whose files changed would keep its old build. The name
    therefore holds a fingerprint of the folder's absolute path and of the name, size and
    modification time of every file in it and in its sub-folders (``folder_fingerprint``).
    """
    if data_config.data_dir or not data_config.manual_dir:
        return data_config.data_dir
    import tensorflow_datasets as tfds
    folder = os.path.abspath(data_config.manual_dir)
    name = f"{os.path.basename(folder.rstrip(os.sep)) or 'folder'}-{folder_fingerprint(folder)}"
    return os.path.join(tfds.core.constants.DATA_DIR, "spine_tf_sources", name)


def folder_fingerprint(folder):
    """12 hex digits that change with a folder's absolute path or any of its files (name,
    size, modification time), sub-folders included."""
    import hashlib
    digest = hashlib.sha256(os.path.abspath(folder).encode())
    for root, dirs, files in sorted(os.walk(folder)):
        dirs.sort()
        for name in sorted(files):
            try:
                stat = os.stat(os.path.join(root, name))
            except OSError:  # a broken link: its name still counts
                stat = None
            entry = (os.path.relpath(os.path.join(root, name), folder),
                     stat and stat.st_size, stat and stat.st_mtime_ns)
            digest.update(repr(entry).encode())
    return digest.hexdigest()[:12]


def prepare_dataset(data_config, detect=None):
    """Builds (if needed) and returns the spine_discs builder of a DataConfig.

    ``detect``: the disc detector for a build that needs one (``SpineDiscs``).
    """
    from spine_tf.data import spine_discs
    import tensorflow_datasets as tfds
    name = spine_discs.phantom_config(data_config.patients, data_config.seed) \
        if data_config.patients else data_config.config
    builder = spine_discs.builder(name, data_dir=data_dir_of(data_config),
                                  workers=data_config.workers, detect=detect)
    download = tfds.download.DownloadConfig(manual_dir=data_config.manual_dir) \
        if data_config.manual_dir else None
    builder.download_and_prepare(download_config=download)
    return builder


def load_statistics(run_dir, train_split, task_set=tasks.PAPER):
    """Class weights (of ``task_set``'s tasks) and channel mean of the training split,
    cached in the run dir."""
    path = RunDir(run_dir).statistics
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        return ({k: np.asarray(v, np.float32) for k, v in saved["class_weights"].items()},
                np.asarray(saved["channel_mean"], np.float32))
    weights, mean = input_pipeline.training_statistics(train_split, task_set)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"class_weights": {k: v.tolist() for k, v in weights.items()},
                       "channel_mean": mean.tolist()}, f, indent=1)
    return weights, mean


def read_history(run_dir, before_epoch):
    """history.csv rows of the epochs before ``before_epoch`` (the last row per epoch)."""
    path = RunDir(run_dir).history
    if not os.path.exists(path) or before_epoch <= 0:
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = {int(r["epoch"]): r for r in csv.DictReader(f) if int(r["epoch"]) < before_epoch}
    return [rows[e] for e in sorted(rows)]


def _restored_epoch(backup_dir):
    """Epochs completed by an interrupted run (BackupAndRestore's metadata), else 0."""
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as f:
        return int(json.load(f).get("epoch", 0))


def make_optimizer(train_config):
    """The Keras optimizer of a TrainConfig: ``optimizer`` (checked by the config),
    learning rate, momentum, decay."""
    if train_config.optimizer == "sgd":
        return keras.optimizers.SGD(train_config.learning_rate, momentum=train_config.momentum,
                                    weight_decay=train_config.weight_decay)
    return keras.optimizers.AdamW(train_config.learning_rate,
                                  weight_decay=train_config.weight_decay)


def build_compiled_model(config, channel_mean):
    """The model of ``config.model``, mean subtraction set, compiled for training."""
    model = model_lib.build_model(config.model)
    model_lib.mean_subtraction(model).set_mean(channel_mean)
    task_set = tasks.task_set(config.model.task_set)
    model.compile(
        optimizer=make_optimizer(config.train),
        loss=losses.losses(task_set, config.train.ordinal_tasks),
        loss_weights=losses.loss_weights(config.train.task_weights, task_set),
        metrics=metrics.keras_metrics(task_set), jit_compile=config.train.jit_compile)
    return model


def initialise_from(model, source):
    """Copies into ``model`` the weights of every layer of the model at ``source`` (a
    ``.keras`` file or a run directory) with the same name and weight shapes, except the
    mean subtraction.

    Returns:
        {"from": the file, "copied": layer names, "left": {layer: why}}.

    Raises:
        RunConfigError: no model at ``source``.
    """
    path = RunDir(source).best_model if os.path.isdir(source) else source
    if not os.path.isfile(path):
        raise RunConfigError(f"train.init_from: {path}: no model file to start from")
    other = {layer.name: layer for layer in model_lib.load_model(path).layers}
    copied, left = [], {}
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if layer.name == model_lib.mean_subtraction(model).name:
            left[layer.name] = "this data's mean is kept"
        elif layer.name not in other:
            left[layer.name] = "no such layer there"
        elif [w.shape for w in other[layer.name].get_weights()] != [w.shape for w in weights]:
            left[layer.name] = "other weight shapes there"
        else:
            layer.set_weights(other[layer.name].get_weights())
            copied.append(layer.name)
    return {"from": os.path.abspath(path), "copied": copied, "left": left}


def callbacks(config, run_dir, trained_tasks, history=()):
    """The run's callbacks; ``history``: completed epochs' rows when resuming."""
    best = [float(r[MONITOR]) for r in history if r.get(MONITOR) not in (None, "")]
    plateau = keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss", mode="min", factor=config.train.lr_factor,
        patience=config.train.lr_patience, min_lr=config.train.min_learning_rate)
    stopper = keras.callbacks.EarlyStopping(
        monitor="val_loss", mode="min", patience=config.train.early_stopping_patience) \
        if config.train.early_stopping_patience else None
    out = [
        EpochSummary(trained_tasks),
        EpochSeeds(config.train.seed),
        keras.callbacks.BackupAndRestore(RunDir(run_dir).backup),
        BestModel(RunDir(run_dir).best_model, best=max(best) if best else None),
        plateau,
        keras.callbacks.CSVLogger(RunDir(run_dir).history, append=True),
        keras.callbacks.TensorBoard(RunDir(run_dir).tensorboard, write_graph=False),
    ]
    if stopper is not None:
        out.append(stopper)
    out.append(ResumedCallbackState(list(history), plateau, stopper))
    return out


def hotspot_images(config, run_dir, validation_split, trained_tasks):
    """[HotspotImages] of the first validation discs in ``tensorboard/hotspots``, or []."""
    count = config.train.hotspot_images
    if not count:
        return []
    from spine_tf import hotspots
    volumes = [volume for volume, _ in validation_split.take(count).map(input_pipeline.decode)
               .as_numpy_iterator()]
    if not volumes:
        return []
    return [hotspots.HotspotImages(
        RunDir(run_dir).hotspot_images, np.stack(volumes), trained_tasks,
        augmentations=config.train.hotspot_image_augmentations,
        every=config.train.hotspot_images_every)]


class RunConfigError(SpineTFError, ValueError):
    """A run directory holds a run with other settings than the ones asked for."""


def check_run_config(config, run_dir):
    """Refuses to resume (or reuse) a run directory that holds a run with other settings.

    Raises:
        RunConfigError: naming the directory and every setting that differs.
    """
    path = RunDir(run_dir).config
    if not os.path.exists(path):
        return
    saved = config_lib.load(path)
    if saved != config:
        old, new = config_lib.to_dict(saved), config_lib.to_dict(config)
        changed = [f"{section}.{key}: {old[section][key]!r} -> {new[section][key]!r}"
                   for section in new for key in new[section]
                   if old[section].get(key) != new[section][key]]
        raise RunConfigError(f"{run_dir} holds a run with other settings "
                             f"({'; '.join(changed)}); use a new run directory, or the same "
                             "settings to resume it")


def train(config, run_dir, extra_callbacks=(), verbose="line", detect=None):
    """Trains a model as ``config`` says, in ``run_dir`` (resuming an unfinished run).

    Args:
        config: ExperimentConfig.
        run_dir: the run directory (created).
        extra_callbacks: more Keras callbacks (after the built-in ones).
        verbose: ``"line"``: one short line per epoch (``callbacks.EpochLine``); else
            ``model.fit``'s verbosity (0 silent, 1 progress bar, 2 Keras' full line).
        detect: the disc detector, for a dataset whose build needs one
            (``prepare_dataset``).

    Returns:
        (model, history dict of per-epoch logs of this call).
    """
    os.makedirs(run_dir, exist_ok=True)
    check_run_config(config, run_dir)
    config_lib.save(config, RunDir(run_dir).config)
    builder = prepare_dataset(config.data, detect=detect)
    train_split = builder.as_dataset(split=config.data.train_split)
    validation_split = builder.as_dataset(split=config.data.validation_split)
    task_set = tasks.task_set(config.model.task_set)
    class_weights, channel_mean = load_statistics(run_dir, train_split, task_set)
    trained = [name for name, w in
               losses.loss_weights(config.train.task_weights, task_set).items() if w]

    keras.utils.set_random_seed(config.train.seed)
    strategy = make_strategy(config.train.strategy)
    with strategy.scope():
        model = build_compiled_model(config, channel_mean)
    initial_epoch = _restored_epoch(RunDir(run_dir).backup)
    if config.train.init_from and not initial_epoch:  # a resumed run restores its own
        write_json(RunDir(run_dir).init, initialise_from(model, config.train.init_from))
    train_data = input_pipeline.training_dataset(train_split, class_weights, config.pipeline,
                                                 initial_epoch=initial_epoch, task_set=task_set)
    validation_data = input_pipeline.evaluation_dataset(
        validation_split, class_weights, batch_size=config.pipeline.batch_size,
        task_set=task_set)
    start = time.perf_counter()
    history = model.fit(
        train_data, validation_data=validation_data, epochs=config.train.epochs,
        steps_per_epoch=input_pipeline.steps_per_epoch(train_split, config.pipeline.batch_size),
        callbacks=callbacks(config, run_dir, trained, read_history(run_dir, initial_epoch))
        + hotspot_images(config, run_dir, validation_split, trained) + list(extra_callbacks)
        + ([EpochLine(config.train.epochs)] if verbose == "line" else []),
        verbose=0 if verbose == "line" else verbose)
    with atomic_path(RunDir(run_dir).final_model) as tmp:
        model.save(tmp)
    write_json(RunDir(run_dir).training_time,
               {"seconds": training_seconds(run_dir) + time.perf_counter() - start})
    return model, history.history


def training_seconds(run_dir):
    """Wall seconds of ``model.fit`` over the run's completed ``train`` calls (0: none yet).

    A resumed run adds its calls; the part of a killed call is not counted.
    """
    path = RunDir(run_dir).training_time
    if not os.path.exists(path):
        return 0.0
    with open(path, encoding="utf-8") as f:
        return float(json.load(f)["seconds"])


__all__ = ["MONITOR", "RunConfigError", "build_compiled_model", "callbacks", "hotspot_images",
           "make_strategy",
           "prepare_dataset", "read_history", "train", "training_seconds"]
