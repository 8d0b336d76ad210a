"""The disc detector fine-tuned on SPIDER's disc boxes, scored on patients it never saw.

1. Masks drawn from the disc boxes (``spider_slices.write_box_masks``) of the boxed images
   of the spider_slices train-split patients (``--split train``; every patient with
   ``--split all``), each image's boxes checked by the package's default detector (an image
   whose boxes hold none of its detected discs is left out), together with the annotated
   slices of ../shared/data/real-lumbar-slices;
2. ``spine-tf train-detector --init phantom --masks-dir`` on them and randomised phantom
   slices;
3. ``spine-tf evaluate-detector`` of the phantom-only and the fine-tuned detector on the
   boxed images of the validation-split patients (which chose the recipe) and of the
   test-split patients, the pixel size estimated from the anatomy (as for any picture) and
   as series.csv lists it.

With ``--split train`` it writes the "Disc detection on SPIDER slices, fine-tuned on SPIDER
boxes" section of docs/results/detection.md; with ``--without-real-slices`` as well, it scores
the real-lumbar slices instead, which that detector never saw (another source), in the "Disc
detection on the real-lumbar slices, fine-tuned on SPIDER boxes alone" section. ``--split
all`` makes the shipped detector (spine_tf/detection/weights/README.md) and scores nothing:
no patient is left to score it on.

Run: .venv/bin/python -m tools.studies.spider_detector [--split train|all]
    [--without-real-slices] [--keep DIR]
"""

import csv
import os
import shutil
import tempfile
import time

from spine_tf import detection
from spine_tf.data import sources, spider_slices
from spine_tf.detection import evaluate, train
from spine_tf.detection.config import DetectorConfig
from tools.bench import benchlib
from tools.studies import detector_accuracy as accuracy

SPIDER = os.path.join(os.path.dirname(accuracy.REAL), "spider-t2-slices")
SECTION = "Disc detection on SPIDER slices, fine-tuned on SPIDER boxes"
REAL_SECTION = "Disc detection on the real-lumbar slices, fine-tuned on SPIDER boxes alone"


def subset(manual_dir, out_dir, patients):
    """A folder in the SPIDER slices layout holding ``patients`` only (images linked)."""
    os.makedirs(os.path.join(out_dir, spider_slices.IMAGES))
    kept = set()
    for name, key in ((spider_slices.SERIES_CSV, "patient"),
                      (spider_slices.GRADINGS_CSV, "Patient"), (spider_slices.BOXES_CSV, None)):
        with open(os.path.join(manual_dir, name), newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = [r for r in reader if (r[key].strip() in patients if key
                                          else r["series"] in kept)]
        if name == spider_slices.SERIES_CSV:
            kept = {r["series"] for r in rows}
        with open(os.path.join(out_dir, name), "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, reader.fieldnames)
            writer.writeheader()
            writer.writerows(rows)
    for series in kept:
        os.symlink(os.path.abspath(os.path.join(manual_dir, spider_slices.IMAGES,
                                                f"{series}.png")),
                   os.path.join(out_dir, spider_slices.IMAGES, f"{series}.png"))
    return out_dir


def training_masks(manual_dir, out_dir, patients, real_slices=True):
    """Box masks of ``patients``' images (checked by the default detector) and, with
    ``real_slices``, the real-lumbar slices' masks in one folder: the ``--masks-dir`` of the
    fine-tuning. Returns the series written and the boxed images left out by the check."""
    default = detection.load()
    written, left_out = spider_slices.write_box_masks(
        manual_dir, out_dir, patients, detect=lambda scan: detection.detect(scan, default))
    for name in sorted(os.listdir(accuracy.REAL)) if real_slices else ():
        stem, suffix = os.path.splitext(name)
        if suffix == ".npy":
            os.symlink(os.path.abspath(os.path.join(accuracy.REAL, name)),
                       os.path.join(out_dir, "masks", name))
            os.symlink(os.path.abspath(os.path.join(accuracy.REAL, stem + ".png")),
                       os.path.join(out_dir, "scans", stem + ".png"))
    return written, left_out


def parser():
    out = benchlib.argument_parser(__file__, __doc__)
    out.add_argument("--split", choices=("train", "all"), default="train",
                     help="the patients whose boxes train it (default: %(default)s)")
    out.add_argument("--keep", help="keep the fine-tuned detector's training folder here")
    out.add_argument("--without-real-slices", action="store_true",
                     help="SPIDER boxes only: leave ../shared/data/real-lumbar-slices out of "
                     "the training and score the detector on them instead")
    out.add_argument("--epochs", type=int, default=40)
    out.add_argument("--steps", type=int, default=60, help="batches per epoch")
    out.add_argument("--learning-rate", type=float, default=1e-3)
    out.add_argument("--mask-share", type=float, default=0.6)
    out.add_argument("--patients", type=int, default=24, help="phantom patients")
    return out


def _row(name, split, pixel_size, result):
    lumbar, overall = result["lumbar"], result["overall"]

    def cell(scores, key):
        return benchlib.percent(scores[key], scores[f"{key}_interval"])

    return [name, split, pixel_size, f"{lumbar['true_discs']}", cell(lumbar, "recall"),
            cell(overall, "recall"), cell(lumbar, "precision"), cell(lumbar, "level_accuracy"),
            f"{lumbar['distance_mm_median']:.1f}"]


def _score_real_slices(detector, written, minutes, argv):
    """The real-lumbar slices scored by a detector that never saw them (another source)."""
    scores, _, rows = accuracy._run(detector, accuracy._real_cases())
    body = benchlib.table(
        ["test set"] + accuracy.SUMMARY_COLUMNS,
        [accuracy._summary_row(f"real-lumbar slices ({len(rows)} annotated)", scores)])
    body += "\n\n" + benchlib.table(accuracy.SLICE_COLUMNS, rows)
    body += (f"\n\nThe recipe of the shipped detector with the real-lumbar slices left out of "
             f"its training: {len(written)} box-masked SPIDER images of the train-split "
             f"patients and phantom slices ({minutes:.0f} min). These slices are another "
             "source (one site, 256 x 256, no pixel size) that it never saw; scored as in "
             "\"Disc detection\".")
    benchlib.write_section(REAL_SECTION, body, benchlib.reproduce_command(__file__, argv),
                           doc=accuracy.DOC)


def main(argv=None):
    args = parser().parse_args(argv)
    images = spider_slices.read_slices(SPIDER)
    split_of = {i.patient: sources.split_of(i.patient, spider_slices.SPLIT_PERCENT)
                for i in images}
    train_patients = {p for p, s in split_of.items() if args.split == "all" or s == "train"}
    with tempfile.TemporaryDirectory() as tmp:
        masks = os.path.join(tmp, "masks")
        written, left_out = training_masks(SPIDER, masks, train_patients,
                                           real_slices=not args.without_real_slices)
        print(f"{len(written)} box-masked images; left out by the box check: {left_out}")
        config = DetectorConfig(init="phantom", masks_dir=masks, patients=args.patients,
                                val_patients=4, epochs=args.epochs,
                                steps_per_epoch=args.steps, learning_rate=args.learning_rate,
                                mask_share=args.mask_share)
        run = args.keep or os.path.join(tmp, "run")
        start = time.perf_counter()
        tuned = train.train_detector(run, config, verbose="line")
        minutes = (time.perf_counter() - start) / 60
        if args.split == "all":
            print(f"fine-tuned in {minutes:.0f} min: {run}")
            return
        if args.without_real_slices:
            _score_real_slices(tuned, written, minutes, argv)
            return
        rows = []
        phantom = detection.load("phantom")
        for split in ("validation", "test"):
            folder = subset(SPIDER, os.path.join(tmp, split),
                            {p for p, s in split_of.items() if s == split})
            for name, detector in (("phantom-only", phantom),
                                   ("fine-tuned on SPIDER boxes", tuned)):
                for pixel_size in ("estimate", "listed"):
                    result = evaluate.evaluate_folder(folder, detector, pixel_size)
                    rows.append(_row(name, split, pixel_size, result))
                    print(rows[-1], flush=True)
            shutil.rmtree(folder)
    body = benchlib.table(
        ["detector", "patients", "pixel size", "lumbar discs", "recall lumbar (%)",
         "recall all (%)", "precision (%)", "level named right (%)",
         "median centre error (mm)"], rows)
    body += (
        f"\n\nFine-tuning: the phantom-only detector, {args.epochs} epochs of {args.steps} "
        f"batches of {config.batch_size} (Adam {args.learning_rate:g}, cosine decay), "
        f"{args.mask_share:.0%} of the slices from {len(written)} box-masked SPIDER images of "
        f"{len({i.patient for i in images if i.series in written})} train-split patients and "
        "the annotated real-lumbar slices, the rest randomised phantom slices of "
        f"{args.patients} patients; {minutes:.0f} min on 2 cores. Left out by the box check "
        f"(the default detector finds none of its discs in its boxes): "
        f"{', '.join(left_out) or 'none'}. Scored with `spine-tf evaluate-detector` on the "
        "boxed images of the other patients: validation chose the recipe (40 epochs rather "
        "than 20; starting from the phantom-only detector scored the same as from the one "
        "fine-tuned on the real-lumbar slices alone), test is reported. In brackets: 95 % "
        "patient-bootstrap intervals. 'All' counts the thoracic discs boxed above T12-L1, "
        "which the detector does not name.")
    benchlib.write_section(SECTION, body, benchlib.reproduce_command(__file__, argv),
                           doc=accuracy.DOC)


if __name__ == "__main__":
    main()
