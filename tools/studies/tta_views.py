"""Balanced accuracy per task under other TTA view sets than the standard 54, on a run's discs.

Runs a grid of views of every scored disc through a trained model once: in-plane
positions with column and row shifts in {0, +-s for each ``--shifts`` s}, each in the 6
slice arrangements of ``spine_tf.tta.SLICE_ORDERS`` (``--shifts 8,16``: 25 positions, 150
views). From those probabilities it scores, per task, the single view, the standard 54 views
(``spine_tf.tta.VIEWS``, +-16 px) and the other view sets of ``VIEW_SETS``, each set's
difference from the standard set with a 95 % patient-bootstrap interval (paired: the same
resampled patients for both), and the mean per-view balanced accuracy by row shift: which
views help or hurt a task. ``--save`` keeps the per-view probabilities (npz);
``--load`` scores a saved file again without the model.

Example (the figures in docs/results/grading.md, "TTA view sets"):
    .venv/bin/python -m tools.studies.tta_views --run-dir /work/runs/acc_w025 \\
        --data patients=500 --data seed=1 --split all --shifts 8,16 \\
        --save /work/runs/acc_w025/tta_views.npz --section "TTA view sets, width 0.25"
"""

import itertools
import os
import sys

import numpy as np
import tensorflow as tf

from spine_tf import augment, tasks, tta
from spine_tf.evaluation import evaluate as evaluation
from spine_tf.evaluation import runs
from spine_tf.modeling import metrics
from spine_tf.io.codec import from_stored
from tools.bench import benchlib

DOC = "grading"  # the results document written (benchlib.DOCS)


STANDARD = "standard: +-16 px, columns and rows"
"""The name of ``tta.VIEWS`` (the 54 views ``tta.predict`` takes) among the view sets."""


def _grid(cols, rows):
    return [(c, r) for r, c in itertools.product(rows, cols)]


VIEW_SETS = {
    STANDARD: tta.POSITIONS,
    "+-8 px, columns and rows": _grid((-8, 0, 8), (-8, 0, 8)),
    "columns +-16, rows +-8": _grid((-16, 0, 16), (-8, 0, 8)),
    "columns +-16, rows 0": _grid((-16, 0, 16), (0,)),
    "no in-plane shift (slice views only)": [(0, 0)],
}
"""Named view sets as in-plane positions (shift_cols, shift_rows); each is taken in all 6
slice arrangements, so it has 6 x len(positions) views."""


def grid_views(shifts):
    """Every (shift_cols, shift_rows, flip, shift_slices) of the grid, the standard views first."""
    values = sorted({0} | {s for shift in shifts for s in (-shift, shift)})
    extra = [v for v in ((c, r, f, s) for f, s in tta.SLICE_ORDERS
                         for c, r in _grid(values, values)) if v not in tta.VIEWS]
    return list(tta.VIEWS) + extra


def view_probabilities(model, dataset, views, discs_per_batch=2):
    """(labels (discs, tasks), patient ids, [per task (discs, views, classes)])."""
    labels, patients, chunks = [], [], [[] for _ in tasks.TASKS]
    n_views = len(views)
    for batch in dataset.batch(discs_per_batch):
        n = int(batch["disc_volume"].shape[0])
        x = tf.repeat(from_stored(batch["disc_volume"]), n_views, axis=0)
        out = model.predict_on_batch(augment.apply(x, tta.view_draws(n, views),
                                                   intensity=False))
        for chunk, logits, task in zip(chunks, out, tasks.TASKS):
            p = tf.nn.softmax(tf.cast(logits, tf.float32)).numpy()
            chunk.append(p.reshape(n, n_views, task.num_classes))
        labels.append(np.stack([batch["labels"][t.name].numpy() for t in tasks.TASKS], 1))
        patients += [p.decode() for p in batch["patient_id"].numpy()]
        if len(patients) % 200 < n:  # an hour's work at 2874 discs x 150 views on 2 cores
            print(f"{len(patients)} discs done", file=sys.stderr, flush=True)
    return np.concatenate(labels), np.array(patients), [np.concatenate(c) for c in chunks]


def view_set_index(views, positions):
    """Indices into ``views`` of ``positions`` in all 6 slice arrangements (None if absent)."""
    wanted = [(c, r, f, s) for f, s in tta.SLICE_ORDERS for c, r in positions]
    return [views.index(v) for v in wanted] if all(v in views for v in wanted) else None


def report(labels, patients, probabilities, views, resamples):
    """Markdown: per task, BA of each view set and its difference from the standard set."""
    sets = {"single view": [0]}
    sets.update({name: index for name, positions in VIEW_SETS.items()
                 if (index := view_set_index(views, positions)) is not None})
    samples = metrics.patient_bootstrap(patients, resamples)
    spec = sets[STANDARD]
    shifts = sorted({v[1] for v in views})
    rows, shift_rows = [], []
    for k, task in enumerate(tasks.TASKS):
        truth = labels[:, k]

        def predicted(index):
            return probabilities[k][:, index].mean(1).argmax(-1)

        def ba(prediction, keep=slice(None)):
            return metrics.balanced_accuracy(truth[keep], prediction[keep], task.num_classes)

        reference = predicted(spec)
        for name, index in sets.items():
            prediction = predicted(index)
            if index is spec:
                difference = "(reference)"
            else:
                gaps = [ba(prediction, s) - ba(reference, s) for s in samples]
                difference = (f"{100 * (ba(prediction) - ba(reference)):+.1f} "
                              f"({evaluation.signed_interval(metrics.percentile_interval(gaps))})")
            rows.append([task.name, name, len(index), f"{100 * ba(prediction):.1f}",
                         difference])
        by_row = []
        for shift in shifts:
            chosen = [i for i, v in enumerate(views) if v[1] == shift]
            by_row.append(f"{100 * np.mean([ba(predicted([i])) for i in chosen]):.1f}")
        shift_rows.append([task.name] + by_row)
    return (f"{len(labels)} discs of {len(set(patients))} patients; differences from the "
            f"standard 54 views with 95 % intervals from {resamples} patient-bootstrap "
            "resamples (the same resampled patients for both sets).\n\n"
            + benchlib.table(["task", "view set", "views", "BA %", "minus standard, points"],
                             rows)
            + "\n\nMean balanced accuracy of one view, by its row shift (px; + moves the "
              "content down):\n\n"
            + benchlib.table(["task"] + [f"rows {s:+d}" for s in shifts], shift_rows))


def parser():
    out = benchlib.argument_parser(__file__, __doc__)
    out.add_argument("--run-dir")
    out.add_argument("--split", help="split (default: the run's test split)")
    out.add_argument("--data", action="append", default=[], metavar="KEY=VALUE")
    out.add_argument("--model-file", default="best.keras")
    out.add_argument("--shifts", default="8,16", help="in-plane shift sizes, px")
    out.add_argument("--resamples", type=int, default=metrics.BOOTSTRAP_RESAMPLES)
    out.add_argument("--limit", type=int, help="score only the first N discs")
    out.add_argument("--save", help="write the per-view probabilities to this .npz")
    out.add_argument("--load", help="score a file written by --save (no model run)")
    benchlib.add_section_option(out, DOC)
    return out


def main(argv=None):
    options = parser()
    args = options.parse_args(argv)
    if args.load:
        saved = np.load(args.load)
        views = [tuple(int(x) for x in v) for v in saved["views"]]
        views = [(c, r, bool(f), s) for c, r, f, s in views]
        labels, patients = saved["labels"], saved["patients"]
        probabilities = [saved[t.name] for t in tasks.TASKS]
    else:
        if not args.run_dir:
            options.error("--run-dir is needed unless --load is given")
        model, dataset, _ = runs.run_model_and_split(args.run_dir, args.split,
                                                     args.model_file, args.data)
        views = grid_views([int(s) for s in args.shifts.split(",")])
        if args.limit:
            dataset = dataset.take(args.limit)
        labels, patients, probabilities = view_probabilities(model, dataset, views)
        if args.save:
            tmp = args.save + ".tmp.npz"
            np.savez_compressed(tmp, views=np.array(views, np.int32), labels=labels,
                                patients=patients,
                                **{t.name: p for t, p in zip(tasks.TASKS, probabilities)})
            os.replace(tmp, args.save)
    body = report(labels, patients, probabilities, views, args.resamples)
    benchlib.publish(body, args.section, __file__, argv, DOC)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
