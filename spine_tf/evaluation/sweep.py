"""The paper's experiments: the branch-point sweep and multi- against single-task.

``sweep`` reproduces the paper's Table 2: one model per branch point
(conv1..fc7, none), each trained twice with the validation and test splits
swapped (and other seeds), scored with TTA balanced accuracy on the test split
of each run; the table is mean +- std over the two runs per task, with the intra-rater
agreement as the last row. ``single_task`` adds the multi-task vs
single-task comparison (six single-task models at the same branch point).
``also_data`` scores every run once more, single view, on every split of
another dataset (a fresh phantom cohort: thousands of discs where a test
split has a few hundred), in a second table.
"""

import dataclasses
import json
import os

import numpy as np

from spine_tf import config as config_lib
from spine_tf import tasks
from spine_tf.evaluation import evaluate as evaluation
from spine_tf.modeling import metrics
from spine_tf.training import train
from spine_tf.evaluation.runs import evaluate_run
from spine_tf.io.atomic import write_json, write_text
from spine_tf.training.rundir import RunDir

SWEEP_JSON, SWEEP_MARKDOWN = "sweep.json", "sweep.md"


def _run_config(base, swap, seeds, branch_point=None, task=None):
    """``base`` for one run (at ``branch_point``; single-task on ``task``).

    ``seeds`` is added to the training and pipeline seeds; ``_runs`` gives
    every run of a row its own. Training is seeded (weights, dropout,
    shuffling, augmentation) and reproducible bit for bit, so a swapped run
    with the plain run's seeds would repeat its weights step for step, and the
    spread of the pair would hold the test split's noise but not the
    training's. The paper's two runs were two trainings.
    """
    return dataclasses.replace(
        base, model=dataclasses.replace(base.model, branch_point=branch_point or
                                        base.model.branch_point),
        train=dataclasses.replace(base.train, seed=base.train.seed + seeds, task_weights=(
            {task: 1.0} if task else base.train.task_weights)),
        pipeline=dataclasses.replace(base.pipeline, seed=base.pipeline.seed + seeds),
        data=dataclasses.replace(base.data, swap_validation_test=swap))


def _runs(base, branch_points, single_task, swaps=(False, True), repeats=1):
    """(name, row label, task or None, config) of every run of a sweep.

    Repeat ``k`` (from 0) of a row trains its runs again with the seeds
    ``k * len(swaps)`` on, in folders named ``<row>_plain_<k + 1>`` and
    ``<row>_swapped_<k + 1>``; the first repeat keeps the names without a
    number, so a sweep extended with more repeats reuses its runs.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    rows = [(point, point, None, {"branch_point": point}) for point in branch_points]
    if single_task:
        rows += [(f"single_{task.name}", f"single-task ({base.model.branch_point})",
                  task.name, {"task": task.name}) for task in tasks.TASKS]
    runs = []
    for prefix, row, task, where in rows:
        for repeat in range(repeats):
            for index, swap in enumerate(swaps):
                name = f"{prefix}_{'swapped' if swap else 'plain'}" + (
                    f"_{repeat + 1}" if repeat else "")
                config = _run_config(base, swap, repeat * len(swaps) + index, **where)
                runs.append((name, row, task, config))
    return runs


def sweep(base, out_dir, branch_points=None, single_task=False, swap=True, also_data=(),
          repeats=1, verbose=0):
    """Trains and evaluates every run of the sweep in ``out_dir`` (resumable).

    A run already evaluated (its ``evaluation_<split>/evaluation.json``
    exists) is not trained again, so an interrupted sweep continues; a run
    folder holding a run with other settings (another sweep's, e.g. with
    other ``swap`` or ``repeats``) is refused, not reused.

    Args:
        base: the ExperimentConfig every run starts from.
        out_dir: sweep folder; one run directory per run in it.
        branch_points: rows of the table (default: ``model.BRANCH_POINTS``).
        single_task: also train one single-task model per task at
            ``base``'s branch point.
        swap: train each row twice, the second time with validation and
            test swapped and the training and pipeline seeds + 1 (the
            paper's protocol); False: the plain run only (half the compute,
            no spread).
        also_data: ``key=value`` data overrides (``evaluate_run``): also score
            every run single view on every split of that dataset.
        repeats: train every row's run (or pair of runs) this many times,
            each time with other seeds (more runs per row: a narrower spread
            and a permutation test that can see smaller differences).
        verbose: Keras verbosity of training.

    Returns:
        The table dict written to ``sweep.json``: ``rows`` {row label:
        {task: [scores of the runs]}}, ``intra_rater`` {task: [values]},
        ``runs`` {run directory name: row label}, and with ``also_data`` the
        same two for that dataset under ``also``.
    """
    from spine_tf.modeling.model import BRANCH_POINTS
    branch_points = list(branch_points or BRANCH_POINTS)
    swaps = (False, True) if swap else (False,)
    tables = {"test": _empty_table()}
    if also_data:
        tables["also"] = _empty_table()
    runs = _runs(base, branch_points, single_task, swaps, repeats)
    readings = set()  # (table, split) whose second reader is counted: each reading once
    for name, row, only_task, config in runs:
        run_dir = os.path.join(out_dir, name)
        train.check_run_config(config, run_dir)  # a finished run is reused only if it matches
        report = os.path.join(RunDir(run_dir).evaluation(config.data.test_split),
                              evaluation.JSON_NAME)
        if not os.path.exists(report):
            if not os.path.exists(RunDir(run_dir).final_model):  # trained already?
                train.train(config, run_dir, verbose=verbose)
            evaluate_run(run_dir)
        reports = {"test": report}
        if also_data:
            reports["also"] = os.path.join(RunDir(run_dir).evaluation("all", also_data),
                                           evaluation.JSON_NAME)
            if not os.path.exists(reports["also"]):
                evaluate_run(run_dir, split="all", tta=False, data=also_data)
        for key, path in reports.items():
            reading = (key, config.data.test_split if key == "test" else "all")
            with open(path, encoding="utf-8") as f:
                _add_scores(tables[key], json.load(f), row, only_task,
                            with_intra=only_task is None and reading not in readings)
            readings.add(reading)
    table = dict(tables["test"], config=config_lib.to_dict(base), branch_points=branch_points,
                 runs_per_row=len(swaps) * repeats, swap=len(swaps) == 2,
                 runs={name: row for name, row, *_ in runs})
    if also_data:
        table["also"] = dict(tables["also"], data=list(also_data))
    write_json(os.path.join(out_dir, SWEEP_JSON), table)
    write_text(os.path.join(out_dir, SWEEP_MARKDOWN), markdown(table))
    return table


def _empty_table():
    return {"rows": {}, "intra_rater": {t.name: [] for t in tasks.TASKS}}


def _add_scores(table, result, row, only_task, with_intra):
    """Adds one run's evaluation result to a table (TTA score, else single view)."""
    scores = table["rows"].setdefault(row, {t.name: [] for t in tasks.TASKS})
    for task in tasks.TASKS:
        if only_task not in (None, task.name):
            continue
        figures = result["tasks"][task.name]
        score = figures["balanced_accuracy_tta"]
        if score is None:
            score = figures["balanced_accuracy_single_view"]
        scores[task.name].append(score)
        if with_intra and figures["intra_rater"] is not None:
            table["intra_rater"][task.name].append(figures["intra_rater"])


def _cell(values):
    """Mean ± std in %; one value alone, without a spread it does not have."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"


def _markdown_table(table):
    names = [t.name for t in tasks.TASKS]
    lines = ["| branch point | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row, scores in table["rows"].items():
        lines.append(f"| {row} | " + " | ".join(_cell(scores[n]) for n in names) + " |")
    lines.append("| intra-rater | " + " | ".join(_cell(table["intra_rater"][n]) for n in names)
                 + " |")
    return "\n".join(lines) + "\n"


def row_differences(part, branch_points):
    """Permutation p-values: do the branch-point rows differ by more than their runs do?

    Args:
        part: a table (``rows``, as ``sweep`` returns it, or its ``also``).
        branch_points: the rows to compare (single-task rows are left out).

    Returns:
        {task: p, ..., "mean": p of the runs' mean over the tasks}
        (``metrics.group_difference_p``), or None without at least two rows of
        at least two runs each.
    """
    names = [t.name for t in tasks.TASKS]
    rows = [part["rows"][b] for b in branch_points if b in part["rows"]]
    runs = {len(scores[n]) for scores in rows for n in names}
    if len(rows) < 2 or len(runs) != 1 or runs.pop() < 2:
        return None
    values = {n: np.array([scores[n] for scores in rows], np.float64) for n in names}
    values["mean"] = np.mean([values[n] for n in names], axis=0)
    return {n: metrics.group_difference_p(v) for n, v in values.items()}


def _row_differences_line(part, branch_points):
    p_values = row_differences(part, branch_points)
    if p_values is None:
        return ""
    return ("\nDo the branch points differ more than one branch point's runs do? Permutation "
            f"p-values ({metrics.PERMUTATIONS} random deals of the runs to the rows; a small "
            "p says they do): " + ", ".join(f"{n} {_p_text(p)}" for n, p in p_values.items()
                                            if n != "mean")
            + f"; mean over the tasks {_p_text(p_values['mean'])}.\n")


def _p_text(p):
    """A p-value to two significant places at most, ``< 0.001`` below that."""
    return "< 0.001" if p < 0.001 else f"{p:.3f}" if p < 0.01 else f"{p:.2f}"


def markdown(table):
    """The sweep table in the form of the paper's Table 2 (balanced accuracy %, mean ± std).

    With ``also`` (``sweep(also_data=...)``), the single-view table on that
    dataset follows.
    """
    runs = table.get("runs_per_row", 2)
    branch_points = table.get("branch_points", list(table["rows"]))
    if runs == 1:
        spread = "one run per row."
    elif not table.get("swap", True):
        spread = f"mean ± std over {runs} runs with other seeds."
    elif runs == 2:
        spread = "mean ± std over two runs with validation and test swapped."
    else:
        spread = (f"mean ± std over {runs} runs, every second one with validation and test "
                  "swapped.")
    text = ("Balanced accuracy (%) with TTA on the test split, " + spread + "\n\n"
            + _markdown_table(table)
            + _row_differences_line(table, branch_points))
    if "also" in table:
        text += (f"\nBalanced accuracy (%) single view on every split of "
                 f"`{' '.join(table['also']['data'])}`"
                 + (", mean ± std over the same runs" if runs > 1 else "") + ".\n\n"
                 + _markdown_table(table["also"])
                 + _row_differences_line(table["also"], branch_points))
    return text
