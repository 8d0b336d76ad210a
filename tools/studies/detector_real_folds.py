"""Does training on real masks help the detector on real scans? Leave-one-out on the real slices.

For every annotated real slice in ../shared/data/real-lumbar-slices: fine-tune
the phantom-only detector (``spine-tf train-detector --init phantom
--masks-dir``) on the other slices' masks together with randomised phantom
slices, then score the held-out slice with the fine-tuned detector and with
the phantom-only one, the same way ``tools.studies.detector_accuracy`` scores them. The
held-out slice never enters its fold's training or validation. (The package's
default detector is fine-tuned on all of these slices, so it cannot be scored
on them; this is the estimate of what that fine-tuning gives on unseen slices.)

Writes the "Disc detection after training on real masks" section of
docs/results/detection.md.

Run: .venv/bin/python -m tools.studies.detector_real_folds [--epochs 6] [--steps 40]
"""

import dataclasses
import os
import tempfile
import time

from spine_tf import detection
from spine_tf.detection import evaluate, train
from spine_tf.detection.config import DetectorConfig
from tools.bench import benchlib
from tools.studies.detector_accuracy import (DOC, REAL, SUMMARY_COLUMNS, _real_cases,
                                             _summary_row)


def _fold_folder(root, held_out):
    """scans/ + masks/ of every real slice but ``held_out`` (links, nothing copied)."""
    for sub in ("scans", "masks"):
        os.makedirs(os.path.join(root, sub))
    for name in sorted(os.listdir(REAL)):
        stem, suffix = os.path.splitext(name)
        if suffix == ".npy" and stem != held_out:
            os.symlink(os.path.join(REAL, name), os.path.join(root, "masks", name))
            os.symlink(os.path.join(REAL, stem + ".png"),
                       os.path.join(root, "scans", stem + ".png"))
    return root


def parser():
    out = benchlib.argument_parser(__file__, __doc__)
    out.add_argument("--epochs", type=int, default=6)
    out.add_argument("--steps", type=int, default=40, help="batches per epoch")
    out.add_argument("--learning-rate", type=float, default=1e-3)
    out.add_argument("--patients", type=int, default=24, help="phantom patients per fold")
    return out


def main(argv=None):
    args = parser().parse_args(argv)
    config = DetectorConfig(init="phantom", patients=args.patients, val_patients=4,
                            epochs=args.epochs, steps_per_epoch=args.steps,
                            learning_rate=args.learning_rate)
    base = detection.load("phantom")
    cases = list(_real_cases())
    totals = {"phantom-only": ([], 0, 0), "fine-tuned": ([], 0, 0)}
    rows, seconds = [], []
    for case in cases:
        name = case[0]
        if not evaluate.match(detection.detect(case[1], base), *case[2:])[0]:
            continue  # no gradable disc to score (discs annotated without bodies)
        with tempfile.TemporaryDirectory() as tmp:
            folder = _fold_folder(os.path.join(tmp, "real"), os.path.splitext(name)[0])
            start = time.perf_counter()
            tuned = train.train_detector(
                os.path.join(tmp, "run"), dataclasses.replace(config, masks_dir=folder),
                verbose=0)
            seconds.append(time.perf_counter() - start)
        row = [name]
        for label, detector in (("phantom-only", base), ("fine-tuned", tuned)):
            located = detection.detect(case[1], detector)
            m, d, f = evaluate.match(located, *case[2:])
            matches, detections, false = totals[label]
            totals[label] = (matches + m, detections + d, false + f)
            hits = [x for x in m if x.found]
            row += [f"{len(hits)}/{len(m)}", f, sum(bool(x.level_correct) for x in hits)]
        rows.append(row)
        print(row, f"{seconds[-1]:.0f} s", flush=True)
    scores = {label: evaluate.summarise(*totals[label]) for label in totals}
    body = benchlib.table(
        ["detector"] + SUMMARY_COLUMNS,
        [_summary_row(f"{label}, {len(rows)} real slices", scores[label])
         for label in ("phantom-only", "fine-tuned")])
    body += "\n\nPer held-out slice (found / true discs, false detections, levels right):\n\n"
    body += benchlib.table(["slice", "phantom-only: found", "false", "levels right",
                            "fine-tuned: found", "false", "levels right"], rows)
    body += (f"\n\nEach fold fine-tunes the phantom-only detector (weights/"
             f"detector_phantom.keras) for {args.epochs} x {args.steps} "
             f"batches of {config.batch_size} (Adam {args.learning_rate:g}, cosine decay) on "
             f"the other slices' masks (half of the training slices) and {args.patients} "
             "randomised phantom patients, keeping the best validation disc Dice. Binary masks "
             "name the vertebra below the lowest disc the sacrum, as the level truth does. "
             f"Median fine-tuning time per fold: {sorted(seconds)[len(seconds) // 2]:.0f} s on "
             f"{benchlib.machine()}. {len(rows)} slices are a small test: one disc is "
             f"{100 / max(1, scores['phantom-only']['true_discs']):.1f} points of recall. A "
             "detection with no annotated disc within 3 mm counts as false, including discs the "
             "annotation leaves out: 4.png's mask stops above row 91 and leaves out the disc "
             "between its two lowest bodies (where the fine-tuned detector finds one, at row "
             "192), so its level truth is shifted as well. 1.png (discs only) has no gradable "
             "disc and is not a fold.")
    benchlib.write_section("Disc detection after training on real masks", body,
                           benchlib.reproduce_command(__file__, argv), doc=DOC)
    print(body)


if __name__ == "__main__":
    main()
