"""Scoring a training run's folder: its model on a dataset split (``evaluate_run``), its
hotspots' localisation (``measure_hotspots``)."""

import os

import numpy as np

from spine_tf import config as config_lib
from spine_tf import hotspots, tasks
from spine_tf.errors import SpineTFError
from spine_tf.evaluation import calibration
from spine_tf.evaluation import evaluate as evaluation
from spine_tf.io.atomic import write_json, write_text
from spine_tf.io.codec import from_stored
from spine_tf.modeling import model as model_lib
from spine_tf.training import rundir, train
from spine_tf.training.rundir import RunDir


def run_data_config(run_dir, data=()):
    """The DataConfig a run was trained on, with ``key=value`` overrides applied."""
    config = config_lib.load(RunDir(run_dir).config)
    return config_lib.override(config, [f"data.{a}" for a in data]).data


def dataset_split(data_config, split=None):
    """(dataset split, split name) of a DataConfig, built if needed (default: its test
    split). ``split`` is a TFDS split expression or ``all`` (every split the dataset has).
    A build that needs the disc detector gets the dataset's (``detection.dataset_detector``):
    without it a ``spider_slices`` build would leave out, and cache without, every image
    that has no boxes."""
    from spine_tf import detection
    builder = train.prepare_dataset(data_config,
                                    detect=detection.dataset_detector(data_config.config))
    split = split or data_config.test_split
    expression = "+".join(builder.info.splits) if split == "all" else split
    return builder.as_dataset(split=expression), split


def run_model_and_split(run_dir, split, model_file, data=()):
    """(model, dataset split, split name) of a run (default: the run's test split).

    ``data``: ``key=value`` overrides of the run's data config, to score the
    model on another dataset (e.g. ``patients=500``, ``seed=1``: a fresh
    phantom cohort, whose every split is unseen: ``split="all"``). ``split``
    is a TFDS split expression or ``all`` (every split the dataset has).
    """
    dataset, split = dataset_split(run_data_config(run_dir, data), split)
    model = model_lib.load_model(RunDir(run_dir).file(model_file))
    return model, dataset, split


def _by_task(result):
    """{task: (probabilities (n, classes), labels (n,))} of an ``evaluate`` result."""
    return {name: (np.array([d["probabilities"][name] for d in result["predictions"]]),
                   np.array([d["labels"][name] for d in result["predictions"]]))
            for name in result["tasks"]}


def evaluate_model(model, data_config, split, out_dir, model_name, tta=True, data=(),
                   calibrate_on=None):
    """Evaluates ``model`` (a Keras model, or a grader with ``probabilities(volumes, tta)``)
    on a DataConfig's split (``dataset_split``) and writes the report into ``out_dir``.

    ``calibrate_on``: another split (e.g. ``validation``) to fit a temperature per task
    on (``calibration.calibrate``); the result's ``calibration`` then holds each task's
    temperature and its calibration on ``split`` before and after, and ``out_dir`` a
    reliability diagram per task (``reliability_<task>.svg``).

    Returns:
        (result of ``evaluation.evaluate`` with ``split``, ``data`` and ``model``, out_dir).
    """
    dataset, split = dataset_split(data_config, split)
    result = evaluation.evaluate(model, dataset, tta=tta)
    result.update(split=split, data=list(data), model=model_name)
    if calibrate_on:
        fitted = evaluation.evaluate(model, dataset_split(data_config, calibrate_on)[0],
                                     tta=tta, resamples=0)
        result["calibration"] = {"fitted_on": calibrate_on, "tasks": calibration.calibrate(
            _by_task(fitted), _by_task(result))}
    evaluation.write_report(result, out_dir, model_name=model_name)
    for name, task in result.get("calibration", {}).get("tasks", {}).items():
        write_text(os.path.join(out_dir, calibration.reliability_name(name)),
                   calibration.reliability_svg(
                       task["reliability_before"], task["reliability_after"],
                       f"{name}: {split}, temperature {task['temperature']:.2f} "
                       f"(fitted on {calibrate_on})"))
    return result, out_dir


def evaluate_run(run_dir, split=None, tta=True, out_dir=None, model_file=rundir.BEST_MODEL,
                 data=(), calibrate_on=None):
    """Evaluates a run's model on its test split (or ``split``) and writes the report.

    ``data``: overrides of the run's data config (``run_model_and_split``); the
    result records them as ``data``.

    Returns:
        (result of ``evaluation.evaluate``, the report folder).
    """
    data_config = run_data_config(run_dir, data)
    split = split or data_config.test_split
    model = model_lib.load_model(RunDir(run_dir).file(model_file))
    return evaluate_model(model, data_config, split,
                          out_dir or RunDir(run_dir).evaluation(split, data),
                          os.path.join(run_dir, model_file), tta=tta, data=data,
                          calibrate_on=calibrate_on)


def measure_hotspots(run_dir, split=None, model_file=rundir.BEST_MODEL,
                     augmentations=hotspots.AUGMENTATIONS, percentiles=hotspots.PERCENTILES,
                     seed=0, limit=None, out_dir=None):
    """``hotspots.localisation`` of a trained run's model on its test split (or ``split``).

    Loads the run as ``evaluate_run`` does and writes
    ``localisation.json`` and ``localisation.md`` into ``out_dir`` (default
    ``RUN_DIR/hotspots_<split>``).

    Args:
        run_dir: a ``spine-tf train`` run directory.
        split: dataset split (default: the run's test split).
        model_file: model file in the run directory.
        limit: use at most this many discs of the split (None: all).

    Returns:
        (result of ``localisation`` with ``split`` and ``model`` added, out_dir).
    """
    model, data, split = run_model_and_split(run_dir, split, model_file)
    if limit is not None:
        data = data.take(limit)
    result = hotspots.localisation(model, data.as_numpy_iterator(), augmentations, percentiles,
                                   seed)
    result.update(split=split, model=os.path.join(run_dir, model_file))
    out_dir = out_dir or RunDir(run_dir).hotspots(split)
    write_json(os.path.join(out_dir, hotspots.LOCALISATION_JSON), result)
    write_text(os.path.join(out_dir, hotspots.LOCALISATION_MARKDOWN),
               f"# Hotspot localisation: {result['model']}, split {split}\n\n"
               + hotspots.localisation_markdown(result))
    return result, out_dir


def explain_split(run_dir, task_names, split=None, discs=8, augmentations=hotspots.AUGMENTATIONS,
                  seed=0, out_dir=None, model_file=rundir.BEST_MODEL):
    """Hotspots of the first ``discs`` discs of a run's split (default: its test split),
    written with ``hotspots.save_outputs`` into ``out_dir`` (default
    ``RUN_DIR/hotspots_<split>``).

    Returns:
        (paths written, number of discs, split name).

    Raises:
        SpineTFError: the split has no discs.
    """
    model, data, split = run_model_and_split(run_dir, split, model_file)
    examples = list(data.take(discs).as_numpy_iterator())
    if not examples:
        raise SpineTFError(f"split {split} of {run_dir} has no discs")
    volumes = np.stack([from_stored(e["disc_volume"]).numpy() for e in examples])
    levels = [f"{e['patient_id'].decode()} {tasks.LEVELS[e['level']]}" for e in examples]
    per_task = hotspots.Hotspots(model).explain(volumes, task_names,
                                                augmentations=augmentations, seed=seed)
    paths = hotspots.save_outputs(out_dir or RunDir(run_dir).hotspots(split), split, volumes,
                                  per_task, levels,
                                  np.stack([e["voxel_to_scan"] for e in examples]))
    return paths, len(examples), split
