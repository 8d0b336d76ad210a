"""Balanced accuracy of the marrow tasks per TTA view group, on a run's scored discs.

Runs every one of the 54 TTA views (``spine_tf.tta.VIEWS``) of each disc through a
trained model and prints, for marrow_upper and marrow_lower, the single view's and the
full TTA's balanced accuracy and the mean per-view balanced accuracy by row shift,
column shift and slice reversal: which views help or hurt a task. Discs: every disc
with a positive marrow label plus a seeded 20 % of the others (balanced accuracy does
not depend on the share of positives).

Example (the figures in docs/accuracy.md, "Current state"):
    .venv/bin/python tools/tta_views.py --run-dir /work/runs/acc_w025 \\
        --data patients=500 --data seed=1 --split all
"""

import argparse
import os

import numpy as np
import tensorflow as tf

from spine_tf import augment, experiments, metrics, tasks, tta
from spine_tf.data.spine_discs import from_stored

TASKS = ("marrow_upper", "marrow_lower")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--split", help="split (default: the run's test split)")
    parser.add_argument("--data", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--model-file", default="best.keras")
    args = parser.parse_args(argv)
    model, dataset, _ = experiments.run_model_and_split(args.run_dir, args.split,
                                                        args.model_file, args.data)
    rng = np.random.default_rng(0)
    volumes, labels = [], []
    for e in dataset.as_numpy_iterator():
        label = [int(e["labels"][name]) for name in TASKS]
        if max(label) == 1 or rng.random() < 0.2:
            volumes.append(e["disc_volume"])
            labels.append(label)
    labels = np.array(labels)
    x = from_stored(np.stack(volumes))
    index = [tasks.TASK_NAMES.index(name) for name in TASKS]
    probabilities = np.zeros((len(TASKS), len(volumes), tta.NUM_VIEWS))
    for start in range(0, len(volumes), 8):
        batch = x[start:start + 8]
        n = int(batch.shape[0])
        views = augment.apply(tf.repeat(batch, tta.NUM_VIEWS, axis=0), tta.view_draws(n),
                              intensity=False)
        out = model.predict_on_batch(views)
        for k, i in enumerate(index):
            p = tf.nn.softmax(out[i]).numpy()[:, 1].reshape(n, tta.NUM_VIEWS)
            probabilities[k, start:start + n] = p

    def ba(truth, p):
        return metrics.balanced_accuracy(truth, (p > 0.5).astype(int), 2)

    print(f"{len(volumes)} discs ({os.path.join(args.run_dir, args.model_file)})")
    for k, name in enumerate(TASKS):
        truth, p = labels[:, k], probabilities[k]
        print(f"{name}: single view {100 * ba(truth, p[:, 0]):.1f} %, "
              f"TTA {100 * ba(truth, p.mean(1)):.1f} %")
        for what, position in (("row shift", 1), ("column shift", 0), ("slice reversal", 2)):
            for value in sorted({v[position] for v in tta.VIEWS}):
                chosen = [i for i, v in enumerate(tta.VIEWS) if v[position] == value]
                per_view = np.mean([ba(truth, p[:, i]) for i in chosen])
                print(f"  {what} {value}: mean per-view {100 * per_view:.1f} %, "
                      f"TTA over these {100 * ba(truth, p[:, chosen].mean(1)):.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
