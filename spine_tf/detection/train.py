"""Training the disc detector on randomised phantom slices (``spine-tf train-detector``)."""

import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from spine_tf import config as config_lib
from spine_tf import detection
from spine_tf.detection import data, model, synth
from spine_tf.detection.config import DetectorConfig
from spine_tf.io.atomic import atomic_path, write_json
from spine_tf.training.callbacks import BestModel, EpochLine

DETECTOR_FILE = detection.DETECTOR_FILE
MONITOR = "val_segmentation_disc_dice"


@keras.saving.register_keras_serializable(package="spine_tf")
class DiscDice(keras.metrics.Metric):
    """Dice overlap of the predicted and true disc pixels, accumulated over the epoch."""

    def __init__(self, name="disc_dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.overlap = self.add_weight(name="overlap", initializer="zeros")
        self.total = self.add_weight(name="total", initializer="zeros")

    def update_state(self, y_true, y_pred, sample_weight=None):
        true = tf.cast(tf.equal(tf.cast(y_true, tf.int32), data.DISC), tf.float32)
        predicted = tf.cast(tf.equal(tf.argmax(y_pred, axis=-1, output_type=tf.int32),
                                     data.DISC), tf.float32)
        self.overlap.assign_add(2.0 * tf.reduce_sum(true * predicted))
        self.total.assign_add(tf.reduce_sum(true) + tf.reduce_sum(predicted))

    def result(self):
        return self.overlap / tf.maximum(self.total, 1.0)

    def reset_state(self):
        self.overlap.assign(0.0)
        self.total.assign(0.0)


def datasets(config, train_examples, val_examples):
    """(train, validation) tf.data pipelines of randomised batches.

    Training batches are randomised afresh every step (the seed follows the
    step number across epochs); validation batches are randomised once, with
    their own seed, and cached, so every epoch is scored on the same images.
    """
    def batches(examples, shuffle):
        ds = tf.data.Dataset.from_tensor_slices(examples)
        if shuffle:
            ds = ds.shuffle(len(examples["regions"]), seed=config.seed).repeat()
        return ds.batch(config.batch_size, drop_remainder=shuffle).enumerate()

    def randomised(stream):
        return lambda step, batch: synth.randomise(
            batch, tf.stack([tf.constant(stream, tf.int64), step]), config.randomisation)

    train = batches(train_examples, True).map(randomised(config.seed),
                                              num_parallel_calls=tf.data.AUTOTUNE)
    val = batches(val_examples, False).map(randomised(config.seed + 1)).cache()
    return train.prefetch(tf.data.AUTOTUNE), val.prefetch(tf.data.AUTOTUNE)


def compile_detector(detector, config, steps):
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, steps, alpha=0.05)
    detector.compile(optimizer=keras.optimizers.Adam(schedule),
                     loss=[model.SegmentationLoss(), model.HeatmapLoss()],
                     metrics=[[DiscDice()], []])


def train_detector(out_dir, config=DetectorConfig(), verbose="line", workers=None):
    """Trains a detector into ``out_dir`` (``detector.keras``, config, history, timing).

    ``detector.keras`` ends as the best model by validation disc Dice, saved
    without optimizer state (what ``detection.load`` and the package need).

    Returns:
        That keras.Model.
    """
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "detector_config.json"), config_lib.to_dict(config))
    keras.utils.set_random_seed(config.seed)
    start = time.perf_counter()
    train_examples = data.phantom_examples(config.seed, range(config.patients),
                                           config.slices, workers=workers)
    val_examples = data.phantom_examples(
        config.seed, range(config.patients, config.patients + config.val_patients),
        config.slices, workers=workers)
    counts = {"phantom_training_slices": _count(train_examples)}
    if config.masks_dir:
        real_train, real_val = annotated_examples(config.masks_dir, config.slices)
        counts.update(annotated_training_slices=_count(real_train),
                      annotated_validation_slices=_count(real_val))
        train_examples = _mix(train_examples, real_train, config.mask_share)
        val_examples = _mix(val_examples, real_val, None)
    if not _count(train_examples) or not _count(val_examples):
        raise ValueError("no training or no validation slices: give phantom patients "
                         "(--patients, --val-patients) or more annotated scans")
    prepared = time.perf_counter() - start
    train, val = datasets(config, train_examples, val_examples)
    detector = model.build_detector(config.filters) if not config.init else \
        detection.load(config.init)
    compile_detector(detector, config, config.epochs * config.steps_per_epoch)
    path = os.path.join(out_dir, DETECTOR_FILE)
    line = [EpochLine(config.epochs, MONITOR[len("val_"):], "disc Dice")] \
        if verbose == "line" else []
    detector.fit(train, validation_data=val, epochs=config.epochs,
                 steps_per_epoch=config.steps_per_epoch,
                 verbose=0 if verbose == "line" else verbose, shuffle=False,
                 callbacks=[BestModel(path, MONITOR),
                            keras.callbacks.CSVLogger(os.path.join(out_dir, "history.csv"))]
                 + line)
    write_json(os.path.join(out_dir, "training_time.json"),
               {"seconds": time.perf_counter() - start, "data_seconds": prepared,
                "training_slices": _count(train_examples), **counts})
    # the best model without its optimizer state: what inference (and the package) needs
    best = keras.saving.load_model(path, compile=False)
    with atomic_path(path) as tmp:
        best.save(tmp)
    return best


def annotated_examples(masks_dir, slices):
    """(train, validation) example dicts from a folder of real scans with masks.

    Raises:
        ScanError: a scan or mask cannot be read (naming the file), or the folder
            holds no scan with discs and vertebrae annotated.
    """
    from spine_tf.data import sources
    from spine_tf.io.scan import ScanError, read_mask, read_scan
    split = {"train": [], "validation": []}
    for patient_id, scan_path, mask_path in sources.annotated_scans(masks_dir):
        scan = read_scan(scan_path)
        examples = data.annotated_examples(scan, read_mask(mask_path, scan), slices)
        part = "train" if sources.split_of(patient_id) == "train" else "validation"
        split[part].extend(examples)
    if not split["train"] and not split["validation"]:
        raise ScanError(f"{masks_dir}: no scan with both discs and vertebrae in its mask")
    if not split["train"]:  # too few patients for a split: train on them all
        split = {"train": split["validation"], "validation": []}
    return tuple(data.stack(split[part]) for part in ("train", "validation"))


def _count(examples):
    return 0 if examples is None else int(len(examples["regions"]))


def _mix(phantom, real, share):
    """Phantom and real examples together; ``share``: repeat the real ones to be
    about that share of the whole (None: as they are)."""
    if not _count(real):
        return phantom
    if not _count(phantom):
        return real
    repeats = 1
    if share:
        repeats = max(1, int(round(share * _count(phantom) / ((1 - share) * _count(real)))))
    return {key: np.concatenate([phantom[key]] + [real[key]] * repeats) for key in phantom}


def read_config(out_dir):
    with open(os.path.join(out_dir, "detector_config.json"), encoding="utf-8") as f:
        return config_lib.from_dict(DetectorConfig, json.load(f))
