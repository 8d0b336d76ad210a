"""``spine-tf train-detector`` and ``evaluate-detector``: train the disc detector, and
measure it on annotated real images."""

import dataclasses
import os
import sys

from spine_tf import tasks
from spine_tf.cli.options import add_detector, add_keras_log, fit_verbosity, load_detector

EVALUATION_JSON = "detector_evaluation.json"


def add_parsers(commands):
    td = commands.add_parser(
        "train-detector", help="train the disc detector",
        description="Trains the disc detector (spine_tf.detection) on slices of phantom "
        "patients painted with random contrast, blur, bias field and noise, at random scale, "
        "rotation and field of view, and on real scans with label masks if --masks-dir is "
        "given (fine-tune the shipped detector on them with --init shipped). Writes "
        "DIR/detector.keras (best by validation disc Dice), its config, history.csv and "
        "training_time.json.")
    td.add_argument("--out", required=True, help="output folder")
    defaults = _detector_defaults()
    for name, kind, helptext in (
            ("seed", int, "phantom cohort seed of the training patients"),
            ("patients", int, "training patients"),
            ("val_patients", int, "validation patients"),
            ("slices", int, "slices per patient"),
            ("filters", int, "U-Net width"),
            ("epochs", int, "epochs"),
            ("steps_per_epoch", int, "batches per epoch"),
            ("batch_size", int, "slices per batch"),
            ("learning_rate", float, "Adam learning rate (cosine decay)"),
            ("masks_dir", str, "real scans with label masks to train on as well: a folder with "
             "scans/ + masks/ (2D images with .npy/.png masks allowed) or SPIDER's images/ + "
             "masks/"),
            ("mask_share", float, "share of training slices from --masks-dir"),
            ("init", str, "start from this detector (.keras, a train-detector folder, "
             "'shipped' or 'phantom': the package's default or phantom-only one) instead of "
             "random weights")):
        td.add_argument("--" + name.replace("_", "-"), type=kind, default=defaults[name],
                        help=f"{helptext} (default: %(default)s)")
    add_keras_log(td)
    td.set_defaults(run=_train_detector)

    ev = commands.add_parser(
        "evaluate-detector", help="measure the disc detector on annotated images",
        description="Runs the disc detector over a folder in the SPIDER slices layout (images/, "
        "series.csv and boxes.csv: a disc is found when a detected centre lies in the central "
        "half of its box) or a folder of scans with label masks (scans/ + masks/), and "
        "prints and writes OUT/detector_evaluation.json: recall, precision, levels named "
        "right and centre error, overall and per image.")
    ev.add_argument("--manual-dir", required=True, help="the annotated folder")
    add_detector(ev)
    ev.add_argument("--pixel-size", choices=("listed", "estimate"), default="estimate",
                    help="SPIDER slices: read the images without a pixel size so the "
                    "detector estimates it from the anatomy, as the spider_slices dataset "
                    "places its discs (series.csv's spacing is wrong for some images), or use "
                    "series.csv's spacing (default: %(default)s)")
    ev.add_argument("--out", required=True, help="output folder")
    ev.set_defaults(run=_evaluate_detector)


def _detector_defaults():
    from spine_tf.detection.config import DetectorConfig
    return {f.name: f.default for f in dataclasses.fields(DetectorConfig)}


def _train_detector(args):
    from spine_tf.detection import train
    from spine_tf.detection.config import DetectorConfig
    config = DetectorConfig(**{
        name: getattr(args, name) for name in _detector_defaults() if hasattr(args, name)})
    train.train_detector(args.out, config, verbose=fit_verbosity(args))
    print(f"detector -> {os.path.join(args.out, train.DETECTOR_FILE)}")
    return 0


def _evaluate_detector(args):
    from spine_tf.detection import evaluate
    from spine_tf.io.atomic import write_json
    detector = load_detector(args.detector)
    result = evaluate.evaluate_folder(args.manual_dir, detector, args.pixel_size)
    result["detector"] = detector.source
    path = os.path.join(args.out, EVALUATION_JSON)
    write_json(path, result)
    print(f"{len(result['images'])} images; detector: {detector.source}; pixel size: "
          f"{args.pixel_size}")
    for part in ("overall", "lumbar"):
        figures = result[part]
        print(f"  {part:<8} {figures['true_discs']:>5} discs  "
              + "  ".join(f"{label} {_percent(figures, key)}" for key, label in (
                  ("recall", "recall"), ("precision", "precision"),
                  ("level_accuracy", "levels named right")))
              + f"  centre error {figures['distance_mm_median']:.1f} mm (median)")
    missed = [i for i in result["images"] if set(i["missed"]) & set(tasks.LEVELS)]
    print(f"  {len(missed)} images with a lumbar disc missed; per image: {path}")
    for image in result["images"]:
        if image["boxes_contradicted"]:
            print(f"  {image['image']}: {image['boxes_contradicted']}; counted as it is")
    for reason in result["skipped"]:
        print(f"spine-tf evaluate-detector: {reason}; left out", file=sys.stderr)
    return 0


def _percent(figures, key):
    """'81.2 % (74.3-87.1)': a figure with its interval, in percent."""
    interval = figures.get(f"{key}_interval")
    return f"{100 * figures[key]:.1f} %" + (
        f" ({100 * interval[0]:.1f}-{100 * interval[1]:.1f})" if interval else "")
