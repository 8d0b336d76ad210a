"""What ``spine-tf evaluate`` computes and writes (docs/design.md, "Metrics").

``evaluate`` runs a model over a spine_discs split once, with and without the
54-view test-time augmentation, and measures per task the balanced accuracy
of both, the intra-rater agreement of the labels' second reading (the ceiling
to set the model beside), the confusion matrix and the support per class,
plus the Lootus et al. protocol. ``write_report`` writes it as JSON, Markdown,
a per-disc CSV and one confusion-matrix PNG per task. The tasks are the
model's task set (``spine_tf.tasks.TASK_SETS``); a task the dataset does not
label counts as unlabelled.

Example:
    split = tfds.load("spine_discs/phantom_small", split="test")
    result = evaluate(model, split)
    write_report(result, "runs/eval", model_name="spinenet")
"""

import math
import os
import re

import numpy as np

from spine_tf import tasks, tta
from spine_tf.tta import views_for
from spine_tf.modeling import metrics
from spine_tf.modeling.model import task_set as model_task_set
from spine_tf.io import pictures as report
from spine_tf.io.codec import from_stored
from spine_tf.io.atomic import write_csv, write_json, write_text

LOOTUS_TASKS = ("pfirrmann", "narrowing")
"""The tasks of the Lootus et al. protocol (Pfirrmann grade, narrowing); a task set with a
binary ``narrowed`` instead scores that as the protocol's normal vs abnormal."""

PAPER_BALANCED_ACCURACY = {
    "pfirrmann": (71.2, 70.4),
    "narrowing": (73.9, 72.0),
    "endplate_upper": (85.7, 80.7),
    "endplate_lower": (86.4, 83.3),
    "marrow_upper": (89.2, 92.5),
    "marrow_lower": (88.2, 91.4),
}
"""The paper's balanced accuracy % (SpineNet, intra-rater) on the Genodisc test set."""

PAPER_LOOTUS = {"pfirrmann_within_1": 96.1, "narrowing_binary": 87.8}
"""The paper's Lootus-protocol figures % on Genodisc."""

_LOOTUS_NAMES = {
    "pfirrmann_within_1": "Pfirrmann within +-1 grade",
    "pfirrmann_within_1_balanced": "Pfirrmann within +-1 grade, averaged per true grade",
    "narrowing_binary": "narrowing normal vs abnormal (balanced accuracy)",
}
JSON_NAME, MARKDOWN_NAME, CSV_NAME = "evaluation.json", "evaluation.md", "predictions.csv"


def confusion_png_name(task_name):
    return f"confusion_{task_name}.png"


def _number(value):
    """float, or None for a missing (nan) value."""
    return None if value is None or math.isnan(value) else float(value)


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _level(value):
    if isinstance(value, (bytes, str)):
        return _text(value)
    return tasks.LEVELS[int(value)]


def _lootus_tasks(task_set):
    """(grade task, narrowing task) of the Lootus protocol in a task set, or None."""
    grade, narrowing = LOOTUS_TASKS
    narrowing = next((n for n in (narrowing, "narrowed") if n in task_set.names), None)
    return (grade, narrowing) if grade in task_set.names and narrowing else None


def _collect(model, task_set, dataset_split, tta_on, discs_per_batch, batch_size):
    """One pass over the split: labels, ids, and both predictions, batch by batch."""
    has_reread = "labels_reread" in dataset_split.element_spec
    has_series = "series" in dataset_split.element_spec
    keys = ["disc_volume", "labels", "patient_id", "level"] + (
        ["labels_reread"] if has_reread else []) + (["series"] if has_series else [])
    data = dataset_split.map(lambda e: {k: e[k] for k in keys}).batch(batch_size).prefetch(1)
    names = task_set.names
    probabilities = getattr(model, "probabilities", None) or (
        lambda volumes, tta_on: tta.predict(model, volumes, tta=tta_on,
                                            discs_per_batch=discs_per_batch))
    out = {"labels": {n: [] for n in names}, "reread": {n: [] for n in names},
           "single": [[] for _ in names], "tta": [[] for _ in names],
           "patient_id": [], "level": [], "series": []}
    for batch in data:
        volumes = from_stored(batch["disc_volume"])
        for chunk, p in zip(out["single"], probabilities(volumes, False)):
            chunk.append(np.asarray(p))
        if tta_on:
            for chunk, p in zip(out["tta"], probabilities(volumes, True)):
                chunk.append(np.asarray(p))
        count = int(volumes.shape[0])
        for name in names:
            labelled = name in batch["labels"]
            out["labels"][name].append(batch["labels"][name].numpy().astype(np.int64)
                                       if labelled else np.full(count, tasks.MISSING_LABEL))
            reread = (batch["labels_reread"][name].numpy() if has_reread and labelled
                      else np.full(count, tasks.MISSING_LABEL))
            out["reread"][name].append(reread.astype(np.int64))
        out["patient_id"] += [_text(p) for p in batch["patient_id"].numpy()]
        out["series"] += [_text(s) for s in (batch["series"] if has_series
                                             else batch["patient_id"]).numpy()]
        out["level"] += [_level(v) for v in batch["level"].numpy()]

    def joined(chunks, width):
        return np.concatenate(chunks) if chunks else np.zeros((0, width), np.float32)

    for key in ("single", "tta"):
        out[key] = [joined(c, t.num_classes) for c, t in zip(out[key], task_set.tasks)]
    for key in ("labels", "reread"):
        out[key] = {n: np.concatenate(v) if v else np.zeros(0, np.int64)
                    for n, v in out[key].items()}
    return out


def _intervals(samples, truth, reread, final, single, num_classes, tta_on):
    """Patient-bootstrap percentile intervals of a task's figures and of their differences.

    ``final`` is the reported prediction (TTA when on), ``single`` the single
    view's. The same resamples serve every figure, so a difference's interval
    is that of the paired difference, not of two independent ones.
    """
    has_reread = bool((reread >= 0).any())
    values = {name: [] for name in (
        "balanced_accuracy_tta", "balanced_accuracy_single_view", "intra_rater",
        "model_minus_intra_rater", "tta_minus_single_view")}
    for idx in samples:
        t = truth[idx]
        model = metrics.balanced_accuracy(t, final[idx], num_classes)
        one = metrics.balanced_accuracy(t, single[idx], num_classes)
        values["balanced_accuracy_single_view"].append(one)
        if tta_on:
            values["balanced_accuracy_tta"].append(model)
            values["tta_minus_single_view"].append(model - one)
        if has_reread:
            intra = metrics.agreement(t, reread[idx], num_classes)
            values["intra_rater"].append(intra)
            values["model_minus_intra_rater"].append(model - intra)
    return {name: metrics.percentile_interval(v) for name, v in values.items()}


def evaluate(model, dataset_split, tta=True, discs_per_batch=1, batch_size=64,
             resamples=metrics.BOOTSTRAP_RESAMPLES):
    """Measures a model on a spine_discs split, with and without test-time augmentation.

    Args:
        model: a SpineNet Keras model (list outputs in task order), or a grader
            with ``probabilities(volumes, tta)`` giving one (n, classes) array
            per task (``spine_tf.app.predictors``: a SavedModel).
        dataset_split: a raw spine_discs split, unbatched: dicts with
            ``disc_volume`` (uint16 as stored), ``labels`` and
            ``labels_reread`` ({task: int}, -1 missing; ``labels_reread`` may
            be absent), ``patient_id``, ``level`` (index or name) and
            optionally ``series`` (the scan; default the patient id).
        tta: also run the 54-view TTA (else its figures are None and the
            confusion matrices, Lootus figures and predictions are single-view).
        discs_per_batch: discs per TTA forward batch (54 views each).
        batch_size: discs read (and run without TTA) at a time.
        resamples: patient-bootstrap resamples behind the intervals (0: none).

    Returns:
        dict: ``discs`` (count), ``tta`` (bool), ``tta_views`` (views averaged,
        None without TTA), ``task_set`` (the model's), ``tasks`` {task, in the
        set's order:
        {``class_names``, ``balanced_accuracy_tta``,
        ``balanced_accuracy_single_view``, ``intra_rater`` (labels vs
        labels_reread; None without a second reading), ``confusion_matrix``
        (list of lists, rows truth), ``support`` (labelled discs per true
        class), ``labelled_discs``, ``intervals`` {name: (low, high) or
        None} for ``balanced_accuracy_tta``, ``balanced_accuracy_single_view``,
        ``intra_rater``, ``model_minus_intra_rater`` (the reported prediction,
        TTA when on, minus the second reader) and ``tta_minus_single_view``}},
        ``interval`` (how the intervals were made: ``method``, ``resamples``,
        ``level``, ``patients``), ``lootus`` (``metrics.lootus`` keys;
        None when the task table lacks its tasks), ``predictions`` (per disc:
        ``patient_id``, ``series``, ``level``, ``labels`` {task: int}, ``probabilities``
        {task: list}). Rates are fractions in [0, 1]; None where no disc is
        labelled.
    """
    task_set = getattr(model, "task_set", None) or model_task_set(model)
    views = getattr(model, "tta_views", None) or len(views_for(model))
    seen = _collect(model, task_set, dataset_split, tta, discs_per_batch, batch_size)
    final = seen["tta"] if tta else seen["single"]
    predicted = {t.name: p.argmax(axis=1) for t, p in zip(task_set.tasks, final)}
    samples = metrics.patient_bootstrap(seen["patient_id"], resamples)
    per_task = {}
    for n, task in enumerate(task_set.tasks):
        truth, reread = seen["labels"][task.name], seen["reread"][task.name]
        single = seen["single"][n].argmax(axis=1)
        intervals = _intervals(samples, truth, reread, predicted[task.name], single,
                               task.num_classes, tta)
        matrix = metrics.confusion_matrix(truth, predicted[task.name], task.num_classes)
        per_task[task.name] = {
            "class_names": list(task.class_names),
            "balanced_accuracy_tta": _number(metrics.balanced_accuracy(
                truth, predicted[task.name], task.num_classes)) if tta else None,
            "balanced_accuracy_single_view": _number(
                metrics.balanced_accuracy(truth, single, task.num_classes)),
            "intra_rater": (_number(metrics.agreement(truth, reread, task.num_classes))
                            if (reread >= 0).any() else None),
            "confusion_matrix": matrix.tolist(),
            "support": matrix.sum(axis=1).tolist(),
            "labelled_discs": int((truth >= 0).sum()),
            "intervals": intervals,
        }
    lootus = None
    if _lootus_tasks(task_set):
        grade, narrowing = _lootus_tasks(task_set)
        lootus = {k: _number(v) for k, v in metrics.lootus(
            seen["labels"][grade], predicted[grade],
            seen["labels"][narrowing], predicted[narrowing]).items()}
    predictions = [
        {"patient_id": seen["patient_id"][d], "series": seen["series"][d],
         "level": seen["level"][d],
         "labels": {t.name: int(seen["labels"][t.name][d]) for t in task_set.tasks},
         "probabilities": {t.name: final[n][d].tolist() for n, t in enumerate(task_set.tasks)}}
        for d in range(len(seen["patient_id"]))]
    interval = {"method": "percentile, patients resampled with replacement",
                "resamples": len(samples), "level": metrics.INTERVAL_LEVEL,
                "patients": len(set(seen["patient_id"]))}
    return {"discs": len(predictions), "tta": bool(tta), "tta_views": views if tta else None,
            "task_set": task_set.name, "tasks": per_task,
            "interval": interval, "lootus": lootus, "predictions": predictions}


# ------------------------------------------------------------------ writing

def _result_tasks(result):
    """The tasks of an ``evaluate`` result, in its order."""
    return [tasks.task(name) for name in result["tasks"]]


def _number_text(value):
    return "n/a" if value is None else f"{value:.3f}"


def _percent(value):
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _with_interval(value, interval):
    """'76.3 % (70.2-82.1)': a rate and its interval, in percent."""
    if value is None or interval is None:
        return _percent(value)
    return f"{_percent(value)} ({100 * interval[0]:.1f}-{100 * interval[1]:.1f})"


def signed_interval(interval):
    """'-4.1 to +6.0': an interval of a difference, in points ('n/a' for None)."""
    return "n/a" if interval is None else \
        f"{100 * interval[0]:+.1f} to {100 * interval[1]:+.1f}"


def _column(name):
    return re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_")


def summary_markdown(result, model_name="model"):
    """The report's Markdown without its confusion matrices: the balanced accuracies (with
    intervals), the Lootus protocol and the paper's figures; what ``spine-tf evaluate``
    prints. ``result``: from ``evaluate``."""
    views = f"{result.get('tta_views') or 54} views" if result["tta"] else "off"
    lines = [f"# Evaluation of {model_name}", "",
             f"{result['discs']} discs; test-time augmentation: {views}.", "",
             "| task | balanced acc. TTA | single view | intra-rater | model - intra-rater "
             "| discs |", "|---|---|---|---|---|---|"]
    for task in _result_tasks(result):
        r = result["tasks"][task.name]
        ci = r["intervals"]
        cells = [_with_interval(r[k], ci[k]) for k in (
            "balanced_accuracy_tta", "balanced_accuracy_single_view", "intra_rater")]
        cells += [signed_interval(ci["model_minus_intra_rater"]), str(r["labelled_discs"])]
        lines.append(f"| {task.name} | " + " | ".join(cells) + " |")
    interval = result["interval"]
    lines += ["", "Balanced accuracy: the mean over the true classes present of the share of "
              "that class's discs predicted as it. Intra-rater: the same metric between the "
              "labels and their second reading (n/a without one), the ceiling to set the model "
              "beside. Discs: labelled discs of the task.", "",
              f"In brackets: {100 * interval['level']:.0f} % intervals from "
              f"{interval['resamples']} bootstrap resamples of the {interval['patients']} "
              "patients (whole patients drawn with replacement, since a patient's discs are "
              "not independent). Model - intra-rater: the interval of the paired difference "
              "(the reported prediction, TTA when on, minus the second reader) on the same "
              "resamples; where it contains 0 this split cannot tell the model from the "
              "second reader."]
    if result.get("calibration"):
        fitted = result["calibration"]
        lines += ["", f"## Calibration (a temperature per task, fitted on "
                  f"{fitted['fitted_on']})", "",
                  "| task | temperature | ECE before | ECE after | NLL before | NLL after |",
                  "|---|---|---|---|---|---|"]
        for name, c in fitted["tasks"].items():
            lines.append(f"| {name} | {c['temperature']:.2f} | {_percent(c['ece_before'])} | "
                         f"{_percent(c['ece_after'])} | {_number_text(c['nll_before'])} | "
                         f"{_number_text(c['nll_after'])} |")
        lines += ["", "ECE: expected calibration error of the top class (15 equal bins), on "
                  "the discs scored here; NLL: mean negative log-likelihood of the true class. "
                  "Reliability diagrams: reliability_<task>.svg."]
    if result["lootus"] is not None:
        which = "with TTA" if result["tta"] else "single view"
        lines += ["", f"## Lootus et al. protocol ({which})", "", "| measure | value |",
                  "|---|---|"]
        lines += [f"| {_LOOTUS_NAMES.get(k, k)} | {_percent(v)} |"
                  for k, v in result["lootus"].items()]
    lines += ["", "## For context: the paper's numbers (not ours)", "",
              "Jamaludin et al., SpineNet, balanced accuracy on the Genodisc test set, a "
              "different data set from the one above:", "",
              "| task | SpineNet (paper) | intra-rater (paper) |", "|---|---|---|"]
    for task in tasks.PAPER.tasks:
        paper = PAPER_BALANCED_ACCURACY.get(task.name)
        lines.append(f"| {task.name} | {f'{paper[0]:.1f} %' if paper else 'n/a'} | "
                     f"{f'{paper[1]:.1f} %' if paper else 'n/a'} |")
    lines += ["", "Lootus comparison in the paper (Genodisc): "
              + ", ".join(f"{_LOOTUS_NAMES[k]} {v:.1f} %" for k, v in PAPER_LOOTUS.items())
              + "."]
    return "\n".join(lines)


def _markdown(result, model_name):
    lines = [summary_markdown(result, model_name), "", "## Confusion matrices", "",
             f"Rows: truth; columns: predicted ({'TTA' if result['tta'] else 'single view'})."]
    for task in _result_tasks(result):
        r = result["tasks"][task.name]
        lines += ["", f"### {task.name}", "",
                  f"![{task.name}]({confusion_png_name(task.name)})", "",
                  "| truth \\ predicted | " + " | ".join(r["class_names"]) + " |",
                  "|---|" + "---|" * len(r["class_names"])]
        lines += [f"| {name} | " + " | ".join(str(c) for c in row) + " |"
                  for name, row in zip(r["class_names"], r["confusion_matrix"])]
    return "\n".join(lines) + "\n"


def _csv_rows(result):
    header = ["patient_id", "series", "level"]
    for task in _result_tasks(result):
        header += [f"{task.name}_grade", f"{task.name}_class", f"{task.name}_truth"]
        header += [f"{task.name}_p_{_column(c)}" for c in task.class_names]
    rows = [header]
    for disc in result["predictions"]:
        row = [disc["patient_id"], disc["series"], disc["level"]]
        for task in _result_tasks(result):
            p = disc["probabilities"][task.name]
            grade = int(np.argmax(p))
            row += [grade, task.class_names[grade], disc["labels"][task.name]]
            row += [f"{v:.6f}" for v in p]
        rows.append(row)
    return rows


def write_report(result, out_dir, model_name="model"):
    """Writes an ``evaluate`` result into ``out_dir``, each file atomically.

    Files: ``evaluation.json`` (the result without per-disc predictions, plus
    ``model``), ``evaluation.md`` (tables, with the paper's figures labelled
    as such), ``predictions.csv`` (per disc: patient_id, series, level, and per task
    the predicted grade and class name, the true label (-1 missing) and the
    probability of every class), ``confusion_<task>.png`` per task.

    Returns:
        dict of the written paths: ``json``, ``markdown``, ``csv``, and
        ``confusion`` {task: path}.
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, JSON_NAME),
             "markdown": os.path.join(out_dir, MARKDOWN_NAME),
             "csv": os.path.join(out_dir, CSV_NAME),
             "confusion": {t.name: os.path.join(out_dir, confusion_png_name(t.name))
                           for t in _result_tasks(result)}}
    summary = {"model": model_name}
    summary.update({k: v for k, v in result.items() if k != "predictions"})
    write_json(paths["json"], summary, indent=2, allow_nan=False)
    write_text(paths["markdown"], _markdown(result, model_name))
    write_csv(paths["csv"], _csv_rows(result))
    which = "TTA" if result["tta"] else "single view"
    for task in _result_tasks(result):
        r = result["tasks"][task.name]
        picture = report.confusion_matrix_picture(
            r["confusion_matrix"], r["class_names"], f"{task.name} ({which})")
        report.save_png(picture, paths["confusion"][task.name])
    return paths
