"""Which phantom lesions a trained model finds: recall of the lesion tasks by kind of lesion.

The phantom knows what no label says: every lesion's strength and, for marrow
changes, whether it is brighter or darker than marrow. This reads the per-disc
predictions of an evaluated run (``spine-tf evaluate`` writes
``RUN/evaluation_<split>/predictions.csv``), redraws each patient's anatomy
(``phantom.patient_anatomy``, no rendering) and reports per lesion task:

- among discs labelled positive, the share predicted positive, by lesion
  brightness (marrow) and strength band;
- among discs labelled negative, the share predicted positive, with and
  without a sub-threshold lesion;
- by the lesion's strength, the share the readers called positive beside the share the
  model did: where the model's threshold sits against the readers'.

Intervals are Wilson 95 % intervals over discs (a patient's discs are counted
as independent, so they are somewhat too narrow). Writes a section of
docs/results/grading.md.

Example:
    .venv/bin/python -m tools.studies.phantom_subgroups --run-dir /work/runs/acc_w025 \\
        --split train --section "Lesion subgroups, training split"
"""

import csv
import math
import os
import sys

from spine_tf import phantom, tasks
from spine_tf.evaluation import evaluate as evaluation
from spine_tf.evaluation import runs
from spine_tf.training.rundir import RunDir
from spine_tf.training import train
from spine_tf.phantom.anatomy import CLEAR_LESION_STRENGTH, SUBTLE_LESION_STRENGTH
from tools.bench import benchlib

DOC = "grading"  # the results document written (benchlib.DOCS)

_CLEAR = CLEAR_LESION_STRENGTH[0]
STRENGTH_BANDS = ((0.0, _CLEAR, f"strength < {_CLEAR} (read positive by noise)"),
                  (_CLEAR, 0.7, f"strength {_CLEAR}-0.7"), (0.7, 1.01, "strength 0.7-1.0"))
"""Strength bands of positive discs, split where the phantom's clear lesions start."""


def wilson(hits, total, z=1.96):
    """Wilson score interval (low, high) of a proportion; None for no trials."""
    if total == 0:
        return None
    p = hits / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def shade(lesion):
    """'bright' or 'dark': a marrow lesion's signal against normal marrow."""
    return "bright" if lesion.brightness > 1 else "dark"


def lesion_groups(lesion, truth):
    """The subgroups a labelled disc counts in, given its lesion (None: no lesion)."""
    if truth == 0:
        if lesion is None:
            return ["negative, no lesion"]
        groups = ["negative, sub-threshold lesion"]
    else:
        groups = ["positive, all"]
        if lesion is None:
            return groups
        groups += [f"positive, {name}" for low, high, name in STRENGTH_BANDS
                   if low <= lesion.strength < high]
    if lesion.task.startswith("marrow"):
        groups.append(f"{groups[0]}, {shade(lesion)}" if truth == 0
                      else f"positive, {shade(lesion)} lesion")
    return groups


def labelled(rows, anatomy_of):
    """(task name, label, predicted positive, the phantom's lesion or None) per labelled
    disc and lesion task of ``rows``."""
    for row in rows:
        anatomy = anatomy_of(row["patient_id"])
        for task in tasks.LESION_TASKS:
            truth = int(row[f"{task.name}_truth"])
            if truth < 0:
                continue
            found = [les for les in anatomy.lesions
                     if les.task == task.name and les.level == row["level"]]
            yield (task.name, truth, int(row[f"{task.name}_grade"]) > 0,
                   found[0] if found else None)


def count(rows, anatomy_of):
    """{(task, group): [predicted positive, discs]} over the labelled discs of ``rows``."""
    counts = {}
    for name, truth, hit, lesion in labelled(rows, anatomy_of):
        for group in lesion_groups(lesion, truth):
            cell = counts.setdefault((name, group), [0, 0])
            cell[0] += hit
            cell[1] += 1
    return counts


CURVE_EDGES = (SUBTLE_LESION_STRENGTH[0], 0.22, 0.32, _CLEAR, 0.5, 0.6, 0.8, 1.01)
"""Strength bands of the reader-and-model curve, from the phantom's weakest lesion."""


def strength_curve(rows, anatomy_of):
    """Markdown: share read positive and share predicted positive, by lesion strength.

    Every labelled disc of the lesion tasks counts once per task, grouped by lesion kind
    (endplate; marrow bright or dark) and the phantom's hidden strength (0: no lesion).
    """
    bands = [(0.0, CURVE_EDGES[0])] + list(zip(CURVE_EDGES[:-1], CURVE_EDGES[1:]))
    cells = {}
    for name, truth, hit, lesion in labelled(rows, anatomy_of):
        strength = lesion.strength if lesion else 0.0
        kinds = ["endplate"] if name.startswith("endplate") else (
            ["marrow, bright", "marrow, dark"] if lesion is None else
            [f"marrow, {shade(lesion)}"])
        band = next(i for i, (low, high) in enumerate(bands) if strength < high)
        for kind in kinds:  # discs without a lesion are the first column of both
            cell = cells.setdefault((kind, band), [0, 0, 0])
            cell[0] += truth
            cell[1] += hit
            cell[2] += 1
    header = ["lesion", "said by"] + ["none"] + [f"{low:.2f}-{min(high, 1.0):.2f}"
                                                 for low, high in bands[1:]]
    table = []
    for kind in ("endplate", "marrow, bright", "marrow, dark"):
        for index, who in ((0, "readers"), (1, "model")):
            table.append([kind, who] + [
                f"{100 * cells[(kind, b)][index] / cells[(kind, b)][2]:.1f}"
                if (kind, b) in cells else "-" for b in range(len(bands))])
        table.append([kind, "discs"] + [cells.get((kind, b), [0, 0, 0])[2]
                                        for b in range(len(bands))])
    return ("Share of labelled discs called positive (%), by the lesion's hidden strength "
            "(none: no lesion of that task at the disc):\n\n" + benchlib.table(header, table))


def section_body(counts, run_dir, split, discs):
    rows = []
    for task in tasks.LESION_TASKS:
        for (name, group), (hits, total) in sorted(
                (k, v) for k, v in counts.items() if k[0] == task.name):
            interval = wilson(hits, total)
            rows.append([name, group, total, hits, f"{100 * hits / total:.1f}",
                         f"{100 * interval[0]:.1f}-{100 * interval[1]:.1f}"])
    text = benchlib.table(["task", "group", "discs", "predicted positive", "share (%)",
                           "95 % interval"], rows)
    return text + (
        f"\n\nRun `{run_dir}`, split `{split}` ({discs} discs), the predictions of its "
        "evaluation report (TTA when it ran). Positive rows: recall within the group; "
        "negative rows: false-positive rate. Brightness and strength are the phantom's own "
        "(hidden from the model and from the labels); a disc labelled positive whose lesion "
        f"is weaker than {_CLEAR} was read positive through the reader's noise. Wilson intervals "
        "over discs.")


def parser():
    out = benchlib.argument_parser(__file__, __doc__)
    out.add_argument("--run-dir", required=True)
    out.add_argument("--split", help="evaluated split (default: the run's test split)")
    out.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                     help="the evaluation's data overrides (spine-tf evaluate --data)")
    out.add_argument("--section", default="Lesion subgroups",
                     help=f"section name in {benchlib.DOCS[DOC][0]}")
    return out


def main(argv=None):
    args = parser().parse_args(argv)
    data_config = runs.run_data_config(args.run_dir, args.data)
    builder_config = train.prepare_dataset(data_config).builder_config
    if builder_config.source != "phantom":
        sys.exit(f"{args.run_dir}: scored on a {builder_config.source!r} source; lesion "
                 "subgroups exist only for phantom cohorts")
    split = args.split or data_config.test_split
    path = os.path.join(RunDir(args.run_dir).evaluation(split, args.data),
                        evaluation.CSV_NAME)
    if not os.path.exists(path):
        sys.exit(f"{path}: missing; run `spine-tf evaluate --run-dir {args.run_dir} "
                 + "".join(f"--data {a} " for a in args.data) + f"--split {split}` first")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    cache = {}

    def anatomy_of(pid):
        if pid not in cache:
            seed, index = phantom.parse_patient_id(pid)
            cache[pid] = phantom.patient_anatomy(seed, index, builder_config.phantom)
        return cache[pid]

    where = f"{split} of {builder_config.name}" if args.data else split
    body = (section_body(count(rows, anatomy_of), args.run_dir, where, len(rows))
            + "\n\n" + strength_curve(rows, anatomy_of))
    command = benchlib.reproduce_command(__file__, argv)
    benchlib.write_section(args.section, body, command, doc=DOC)
    return 0


if __name__ == "__main__":
    sys.exit(main())
