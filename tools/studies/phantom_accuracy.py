"""Accuracy of a trained model on a phantom cohort, beside the phantom's second reader.

Trains one model (``spine-tf train`` settings; skipped when the run directory
already holds a finished run), evaluates it on the test split with and without
the 54-view TTA, and writes a section of docs/results/grading.md: per task the
balanced accuracy with TTA and single view, the intra-rater agreement of the
phantom's two readings on the same scored discs and on the whole cohort, and
the gap to it; the training time and the command that reproduces it.

Example (the runs in docs/results/grading.md):
    .venv/bin/python -m tools.studies.phantom_accuracy --run-dir runs/accuracy \\
        --data-dir ~/tensorflow_datasets --set data.config=phantom_large \\
        --set model.width=0.25 --set train.epochs=60
"""

import csv
import os
import sys

import numpy as np

from spine_tf import config as config_lib
from spine_tf import tasks
from spine_tf.evaluation import evaluate as evaluation
from spine_tf.evaluation import runs
from spine_tf.modeling import metrics
from spine_tf.training import callbacks, train
from spine_tf.training.rundir import RunDir
from tools.bench import benchlib

DOC = "grading"  # the results document written (benchlib.DOCS)
TARGET_GAP = 0.05  # the target: within 5 points of the second reader


def cohort_intra_rater(builder):
    """{task: agreement of labels and labels_reread} over every split of a dataset."""
    labels = {key: {t.name: [] for t in tasks.TASKS} for key in ("labels", "labels_reread")}
    for split in builder.info.splits:
        for example in builder.as_dataset(split=split).as_numpy_iterator():
            for key in labels:
                for name in tasks.TASK_NAMES:
                    labels[key][name].append(int(example[key][name]))
    out = {}
    for task in tasks.TASKS:
        truth = np.array(labels["labels"][task.name])
        reread = np.array(labels["labels_reread"][task.name])
        out[task.name] = float(metrics.agreement(truth, reread, task.num_classes)) \
            if (reread >= 0).any() else None
    return out


def train_timed(config, run_dir):
    """Trains unless finished; returns the wall seconds of all training calls of the run."""
    if not os.path.exists(RunDir(run_dir).final_model):
        train.train(config, run_dir, verbose=2)
    return train.training_seconds(run_dir)


def history_summary(run_dir):
    """(epochs run, best epoch (1-based), its validation mean balanced accuracy)."""
    with open(os.path.join(run_dir, "history.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    scores = [float(r[callbacks.MONITOR]) for r in rows]
    best = int(np.argmax(scores))
    return len(rows), best + 1, scores[best]


def _pct(value):
    return "n/a" if value is None else f"{100 * value:.1f}"


def _span(interval):
    """'(-4.1 to +6.0)': a bootstrap interval of a difference, in points."""
    return "" if interval is None else f"({evaluation.signed_interval(interval)})"


def section_body(config, result, cohort_intra, seconds, history, command_dir, scored_name):
    rows = []
    for task in tasks.TASKS:
        r = result["tasks"][task.name]
        tta, single, intra = (r["balanced_accuracy_tta"], r["balanced_accuracy_single_view"],
                              r["intra_rater"])
        ci = r["intervals"]
        gap = None if intra is None else tta - intra
        met = "n/a" if gap is None else ("yes" if gap >= -TARGET_GAP else "no")
        gap_text = "n/a" if gap is None else \
            f"{100 * gap:+.1f} {_span(ci['model_minus_intra_rater'])}"
        rows.append([task.name, _pct(tta), _pct(single), _pct(intra),
                     _pct(cohort_intra[task.name]), gap_text,
                     f"{'yes' if tta >= single else 'no'} {_span(ci['tta_minus_single_view'])}",
                     met, r["labelled_discs"]])
    epochs, best_epoch, best_score = history
    lootus = result["lootus"] or {}
    text = benchlib.table(
        ["task", "BA, TTA (%)", "BA, single view (%)", "intra-rater, scored discs (%)",
         "intra-rater, whole cohort (%)", "TTA - intra", "TTA >= single",
         "within 5 points", "discs scored"], rows)
    data = config.data
    cohort = f"{data.patients} patients (seed {data.seed})" if data.patients else data.config
    scored = (f"test split `{data.test_split}`" if not result["data"] else
              f"split `{result['split']}` of spine_discs `{scored_name}`, a cohort the model "
              "never saw")
    text += (
        f"\n\nTrained on spine_discs `{cohort}`; scored on {scored} "
        f"({result['discs']} discs, {result['interval']['patients']} patients). "
        f"Model: width {config.model.width}, branch point "
        f"{config.model.branch_point}; batch {config.pipeline.batch_size}, SGD lr "
        f"{config.train.learning_rate} (x{config.train.lr_factor} after "
        f"{config.train.lr_patience} epochs without validation-loss improvement), "
        f"{epochs} epochs run, best epoch {best_epoch} (validation mean balanced accuracy "
        f"{_pct(best_score)} %), whose model (best.keras) is the one evaluated. "
        f"Training time: {seconds / 60:.0f} min on this machine (the whole run, including "
        f"validation each epoch).\n\n"
        "Balanced accuracy (BA): mean per-class recall over the true classes present. "
        "Intra-rater: the same metric between the phantom's labels and its independent "
        "second reading -- the ceiling a perfect model of the readers would be measured "
        "against; the whole-cohort figure is the steadier one (more discs). In brackets: "
        f"{100 * result['interval']['level']:.0f} % intervals of the paired differences "
        f"(TTA - intra-rater, TTA - single view), {result['interval']['resamples']} bootstrap "
        f"resamples of the {result['interval']['patients']} scored patients; an interval that "
        "reaches below -5 (or below 0 for TTA - single) means this test split cannot show "
        "the target met, one that reaches above it that it cannot show it missed.")
    if lootus:
        text += ("\n\nLootus protocol (TTA): " + ", ".join(
            f"{k.replace('_', ' ')} {_pct(v)} %" for k, v in lootus.items()) + ".")
    text += f"\n\nRun directory when measured: `{command_dir}`."
    return text


def parser():
    out = benchlib.argument_parser(__file__, __doc__)
    out.add_argument("--run-dir", required=True)
    out.add_argument("--config", help="ExperimentConfig JSON")
    out.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    out.add_argument("--data-dir", help="TFDS data dir")
    out.add_argument("--section", default="Phantom accuracy",
                     help=f"section name in {benchlib.DOCS[DOC][0]}")
    out.add_argument("--eval-data", action="append", default=[], metavar="KEY=VALUE",
                     help="score on another dataset (spine-tf evaluate --data), e.g. "
                     "patients=500 and seed=1 with --eval-split all: a fresh cohort")
    out.add_argument("--eval-split", help="split scored (default: the run's test split)")
    return out


def main(argv=None):
    args = parser().parse_args(argv)
    assignments = list(args.set) + ([f"data.data_dir={args.data_dir!r}"] if args.data_dir
                                    else [])
    config = config_lib.preset(config_path=args.config, assignments=assignments)
    seconds = train_timed(config, args.run_dir)
    result, out = runs.evaluate_run(args.run_dir, split=args.eval_split,
                                    data=args.eval_data)
    scored = train.prepare_dataset(runs.run_data_config(args.run_dir, args.eval_data))
    body = section_body(config, result, cohort_intra_rater(scored), seconds,
                        history_summary(args.run_dir), args.run_dir, scored.builder_config.name)
    command = benchlib.reproduce_command(__file__, argv)
    benchlib.write_section(args.section, body, command, doc=DOC)
    print(f"evaluation report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
