"""``spine-tf train-detector``: train the disc detector."""

import dataclasses
import os

from spine_tf.cli.options import add_keras_log, fit_verbosity


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
