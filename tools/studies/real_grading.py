"""The grading table on real discs: trained runs beside the trivial baseline, on one split.

Each ``--run LABEL=RUN_DIR`` is a ``spine-tf train`` run already scored with ``spine-tf
evaluate --run-dir RUN_DIR [--calibrate-on validation]`` (its ``evaluation_<split>/
evaluation.json``); each ``--ensemble LABEL=RUN+RUN`` is the mean of those runs' models
(``spine-tf ensemble``), made and scored here; ``--baseline`` is the JSON of
``tools.studies.grading_baseline``. The table puts every task's balanced accuracy and 95 %
patient-bootstrap interval side by side, with Pfirrmann within one grade, the training time
and the model's size, and, for the rows scored with calibration, each task's temperature and
ECE before and after.

Example:
    python -m tools.studies.real_grading --run scratch=runs/a --run phantom-pretrained=runs/b \\
        --baseline baseline.json --section "Real discs: SPIDER slices, held-out patients"
"""

import json
import os

from spine_tf.io.atomic import write_json
from spine_tf.training.rundir import RunDir
from tools.bench import benchlib

DOC = "grading"  # the results document written with --section (benchlib.DOCS)
BASELINE = "baseline: PCA + logistic regression"


def _training_seconds(run):
    if not os.path.exists(run.training_time):
        return None
    with open(run.training_time, encoding="utf-8") as f:
        return json.load(f).get("seconds")


def _row(label, runs, result, parameters, split):
    """A table row from an evaluation result of the model of ``runs`` (RunDirs: one run, or
    an ensemble's members, whose recipe is the first's)."""
    with open(runs[0].config, encoding="utf-8") as f:
        config = json.load(f)
    seconds = [_training_seconds(run) for run in runs]
    key = "balanced_accuracy_tta" if result["tta"] else "balanced_accuracy_single_view"
    model = {k: config["model"][k] for k in ("width", "branch_point", "input_slices",
                                             "task_set")}
    if len(runs) > 1:
        model["members"] = len(runs)
    return {"label": label, "run": [os.path.abspath(run) for run in runs] if len(runs) > 1
            else os.path.abspath(runs[0]), "split": split,
            "discs": result["discs"], "patients": result["interval"]["patients"],
            "model": model, "init_from": config["train"].get("init_from"),
            "parameters": parameters, "megabytes": round(parameters * 4 / 2**20, 1),
            "training_seconds": None if None in seconds else sum(seconds),
            "tasks": {name: {"value": r[key], "interval": r["intervals"][key]}
                      for name, r in result["tasks"].items()},
            "within_one": (result.get("lootus") or {}).get("pfirrmann_within_1"),
            "calibration": result.get("calibration")}


def run_row(label, run_dir, split):
    """One run's figures on ``split`` from its evaluation.json, config and timing."""
    run = RunDir(run_dir)
    with open(os.path.join(run.evaluation(split), "evaluation.json"), encoding="utf-8") as f:
        result = json.load(f)
    from spine_tf.modeling.model import load_model
    return _row(label, [run], result, load_model(run.best_model).count_params(), split)


def ensemble_row(label, run_dirs, split, out_dir, calibrate_on=None):
    """The ensemble of the runs' best models (``spine-tf ensemble``), saved as
    ``out_dir/ensemble.keras`` and scored on ``split`` of the first run's data (TTA; report
    in ``out_dir/evaluation_<split>``); its row, with the members' training time summed."""
    from spine_tf.evaluation import runs as runs_lib
    from spine_tf.modeling import model as model_lib
    runs = [RunDir(r) for r in run_dirs]
    path = os.path.join(out_dir, "ensemble.keras")
    model = model_lib.save_ensemble([model_lib.load_model(run.best_model) for run in runs],
                                    path)
    data = runs_lib.run_data_config(run_dirs[0])
    result, _ = runs_lib.evaluate_model(
        model, data, split, os.path.join(out_dir, f"evaluation_{split}"),
        f"{path} (the mean of {len(runs)} runs)", calibrate_on=calibrate_on)
    return _row(label, runs, result, model.count_params(), split)


def baseline_row(path):
    """The baseline's held-out figures from its JSON."""
    with open(path, encoding="utf-8") as f:
        held = json.load(f)["protocols"]["held_out"]
    return {"label": BASELINE, "split": held["scored_on"], "discs": held["discs"],
            "patients": held["patients"],
            "tasks": {name: {"value": e["balanced_accuracy"], "interval": e["interval"]}
                      for name, e in held["tasks"].items()},
            "within_one": held["tasks"].get("pfirrmann", {}).get("within_one"),
            "within_one_interval": held["tasks"].get("pfirrmann", {}).get("within_one_interval")}


def markdown(rows):
    names = list(rows[-1]["tasks"])
    header = ["model"] + names + ["Pfirrmann within one", "discs (patients)", "weights MB",
                                  "training s"]
    table = []
    for row in rows:
        cells = [row["label"]] + [
            benchlib.percent(row["tasks"][n]["value"], row["tasks"][n]["interval"])
            if n in row["tasks"] else "n/a" for n in names]
        cells += [benchlib.percent(row["within_one"]), f"{row['discs']} ({row['patients']})",
                  str(row.get("megabytes", "-")),
                  "-" if row.get("training_seconds") is None else f"{row['training_seconds']:.0f}"]
        table.append(cells)
    text = [benchlib.table(header, table), "",
            "Balanced accuracy % (TTA where the run was scored with it) with 95 % intervals from "
            "2000 bootstrap resamples of the scored patients; Pfirrmann within one grade: the "
            "share of discs. Every row is scored on the same split of the same patients. "
            "Weights MB: float32 weights (a .keras file saved without its optimizer)."]
    for row in rows:
        if row.get("calibration"):
            text += ["", f"Calibration of `{row['label']}` (a temperature per task fitted on "
                     f"{row['calibration']['fitted_on']}, ECE and NLL on {row['split']}):", "",
                     benchlib.table(["task", "temperature", "ECE before", "ECE after",
                                     "NLL before", "NLL after"],
                                    [[n, f"{c['temperature']:.2f}",
                                      benchlib.percent(c["ece_before"]),
                                      benchlib.percent(c["ece_after"]),
                                      f"{c['nll_before']:.3f}", f"{c['nll_after']:.3f}"]
                                     for n, c in row["calibration"]["tasks"].items()])]
    return "\n".join(text)


def parser():
    out = benchlib.argument_parser(__file__, __doc__)
    out.add_argument("--run", action="append", default=[], metavar="LABEL=RUN_DIR",
                     help="a scored run (repeatable), in table order")
    out.add_argument("--ensemble", action="append", default=[], metavar="LABEL=RUN+RUN[+...]",
                     help="the ensemble of these runs, made and scored here (repeatable; its "
                     "model and report go to --ensemble-dir/LABEL)")
    out.add_argument("--ensemble-dir", default="ensembles",
                     help="where the ensembles are written (default: %(default)s)")
    out.add_argument("--calibrate-on", metavar="SPLIT",
                     help="the split an ensemble's temperatures are fitted on (as spine-tf "
                     "evaluate --calibrate-on)")
    out.add_argument("--baseline", help="tools.studies.grading_baseline's --json")
    out.add_argument("--split", default="test", help="the split scored (default %(default)s)")
    out.add_argument("--json", help="also write the rows to this JSON file")
    benchlib.add_section_option(out, DOC)
    return out


def main(argv=None):
    options = parser()
    args = options.parse_args(argv)
    rows = []
    for item in args.run:
        label, _, run_dir = item.partition("=")
        if not run_dir:
            options.error(f"--run {item!r} is not LABEL=RUN_DIR")
        try:
            rows.append(run_row(label, run_dir, args.split))
        except FileNotFoundError as error:
            options.error(f"{run_dir}: not scored on {args.split} ({error.filename})")
    for item in args.ensemble:
        label, _, members = item.partition("=")
        if len(members.split("+")) < 2:
            options.error(f"--ensemble {item!r} is not LABEL=RUN+RUN[+...]")
        rows.append(ensemble_row(label, members.split("+"), args.split,
                                 os.path.join(args.ensemble_dir, label), args.calibrate_on))
    if args.baseline:
        rows.append(baseline_row(args.baseline))
    if not rows:
        options.error("give at least one --run, --ensemble or --baseline")
    if args.json:
        write_json(args.json, rows, indent=2)
    body = markdown(rows)
    benchlib.publish(body, args.section, __file__, argv, DOC)


if __name__ == "__main__":
    main()
