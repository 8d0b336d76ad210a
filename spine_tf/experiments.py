"""Experiments on top of training and evaluation: evaluating a run, the paper's sweeps.

``sweep`` reproduces the paper's Table 2: one model per branch point
(conv1..fc7, none), each trained twice with the validation and test splits
swapped, scored with TTA balanced accuracy on the test split of each run;
the table is mean +- std over the two runs per task, with the intra-rater
agreement as the last row. ``single_task`` adds the multi-task vs
single-task comparison (six single-task models at the same branch point).
"""

import dataclasses
import json
import os
import re

import numpy as np

from spine_tf import config as config_lib
from spine_tf import evaluation, hotspots, tasks, train
from spine_tf import model as model_lib
from spine_tf.io.atomic import write_json, write_text

SWEEP_JSON, SWEEP_MARKDOWN = "sweep.json", "sweep.md"


def run_data_config(run_dir, data=()):
    """The DataConfig a run was trained on, with ``key=value`` overrides applied."""
    config = config_lib.load(os.path.join(run_dir, "config.json"))
    return config_lib.override(config, [f"data.{a}" for a in data]).data


def run_model_and_split(run_dir, split, model_file, data=()):
    """(model, dataset split, split name) of a run (default: the run's test split).

    ``data``: ``key=value`` overrides of the run's data config, to score the
    model on another dataset (e.g. ``patients=500``, ``seed=1``: a fresh
    phantom cohort, whose every split is unseen: ``split="all"``). ``split``
    is a TFDS split expression or ``all`` (every split the dataset has).
    """
    data_config = run_data_config(run_dir, data)
    builder = train.prepare_dataset(data_config)
    split = split or data_config.test_split
    expression = "+".join(builder.info.splits) if split == "all" else split
    model = model_lib.load_model(os.path.join(run_dir, model_file))
    return model, builder.as_dataset(split=expression), split


def evaluation_dir_name(split, data=()):
    """Default report folder name: ``evaluation_<split>``, with the data overrides in it."""
    return "evaluation_" + re.sub(r"[^0-9A-Za-z]+", "_", "_".join(
        [a.replace("=", "") for a in data] + [split])).strip("_")


def evaluate_run(run_dir, split=None, tta=True, out_dir=None, model_file=train.BEST_MODEL,
                 data=()):
    """Evaluates a run's model on its test split (or ``split``) and writes the report.

    ``data``: overrides of the run's data config (``run_model_and_split``); the
    result records them as ``data``.

    Returns:
        (result of ``evaluation.evaluate``, the report folder).
    """
    model, dataset, split = run_model_and_split(run_dir, split, model_file, data)
    result = evaluation.evaluate(model, dataset, tta=tta)
    result["split"] = split
    result["data"] = list(data)
    out_dir = out_dir or os.path.join(run_dir, evaluation_dir_name(split, data))
    evaluation.write_report(result, out_dir, model_name=os.path.join(run_dir, model_file))
    return result, out_dir


def measure_hotspots(run_dir, split=None, model_file=train.BEST_MODEL,
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
    out_dir = out_dir or os.path.join(run_dir, f"hotspots_{split}")
    write_json(os.path.join(out_dir, hotspots.LOCALISATION_JSON), result)
    write_text(os.path.join(out_dir, hotspots.LOCALISATION_MARKDOWN),
               f"# Hotspot localisation: {result['model']}, split {split}\n\n"
               + hotspots.localisation_markdown(result))
    return result, out_dir


def _runs(base, branch_points, single_task):
    """(name, row label, task or None, config) of every run of a sweep."""
    runs = []
    for point in branch_points:
        for swap in (False, True):
            config = dataclasses.replace(
                base, model=dataclasses.replace(base.model, branch_point=point),
                data=dataclasses.replace(base.data, swap_validation_test=swap))
            runs.append((f"{point}_{'swapped' if swap else 'plain'}", point, None, config))
    if single_task:
        for task in tasks.TASKS:
            for swap in (False, True):
                config = dataclasses.replace(
                    base, train=dataclasses.replace(base.train, task_weights={task.name: 1.0}),
                    data=dataclasses.replace(base.data, swap_validation_test=swap))
                runs.append((f"single_{task.name}_{'swapped' if swap else 'plain'}",
                             f"single-task ({base.model.branch_point})", task.name, config))
    return runs


def sweep(base, out_dir, branch_points=None, single_task=False, verbose=0):
    """Trains and evaluates every run of the sweep in ``out_dir`` (resumable).

    A run already evaluated (its ``evaluation_<split>/evaluation.json``
    exists) is not trained again, so an interrupted sweep continues.

    Returns:
        The table dict written to ``sweep.json``: ``rows`` {row label:
        {task: [scores of the runs]}}, and ``intra_rater`` {task: [values]}.
    """
    from spine_tf.model import BRANCH_POINTS
    branch_points = list(branch_points or BRANCH_POINTS)
    rows, intra = {}, {t.name: [] for t in tasks.TASKS}
    for name, row, only_task, config in _runs(base, branch_points, single_task):
        run_dir = os.path.join(out_dir, name)
        report = os.path.join(run_dir, evaluation_dir_name(config.data.test_split),
                              evaluation.JSON_NAME)
        if not os.path.exists(report):
            if not os.path.exists(os.path.join(run_dir, train.FINAL_MODEL)):  # trained already?
                train.train(config, run_dir, verbose=verbose)
            evaluate_run(run_dir)
        with open(report, encoding="utf-8") as f:
            result = json.load(f)
        scores = rows.setdefault(row, {t.name: [] for t in tasks.TASKS})
        for task in tasks.TASKS:
            if only_task not in (None, task.name):
                continue
            figures = result["tasks"][task.name]
            score = figures["balanced_accuracy_tta"]
            if score is None:
                score = figures["balanced_accuracy_single_view"]
            scores[task.name].append(score)
            if only_task is None and row == branch_points[0] and figures["intra_rater"] is not None:
                intra[task.name].append(figures["intra_rater"])
    table = {"rows": rows, "intra_rater": intra,
             "config": config_lib.to_dict(base), "branch_points": branch_points}
    write_json(os.path.join(out_dir, SWEEP_JSON), table)
    write_text(os.path.join(out_dir, SWEEP_MARKDOWN), markdown(table))
    return table


def _cell(values):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"


def markdown(table):
    """The sweep table in the form of the paper's Table 2 (balanced accuracy %, mean ± std)."""
    names = [t.name for t in tasks.TASKS]
    lines = ["| branch point | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row, scores in table["rows"].items():
        lines.append(f"| {row} | " + " | ".join(_cell(scores[n]) for n in names) + " |")
    lines.append("| intra-rater | " + " | ".join(_cell(table["intra_rater"][n]) for n in names)
                 + " |")
    return ("Balanced accuracy (%) with TTA on the test split, mean ± std over two runs with "
            "validation and test swapped.\n\n" + "\n".join(lines) + "\n")
