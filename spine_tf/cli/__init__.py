"""The ``spine-tf`` command line.

Sub-commands (each has ``--help``):
  demo        phantom cohort -> dataset -> montages -> train -> evaluate
  phantom     write a phantom cohort (NIfTI scans, masks, landmarks, labels)
  build-data  build the spine_discs TFDS dataset from a phantom, folder or SPIDER source
  train       train SpineNet with model.fit (resumable)
  evaluate    score a trained run (TTA, intra-rater, Lootus, confusion matrices)
  sweep       the paper's branch-point sweep (and multi- vs single-task)
  extract     cut the disc volumes out of one scan (mask, landmarks or the detector)
  train-detector  train the disc detector on randomised phantom slices
  hotspots    evidence hotspots of a scan's discs or of a dataset split; localisation IoU

Heavy modules (TensorFlow, TFDS) are imported inside the commands that need
them, so ``spine-tf --help`` and ``spine-tf phantom`` start quickly.
"""

import argparse
import collections
import os
import sys
import time

from spine_tf import __version__, tasks


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from spine_tf.io.scan import ScanError
    try:
        return args.run(args) or 0
    except ScanError as error:
        print(f"spine-tf {args.command}: error: {error}", file=sys.stderr)
        return 1


def _parser():
    parser = argparse.ArgumentParser(
        prog="spine-tf", description="Lumbar disc grading on T2 sagittal MRI (SpineNet).")
    parser.add_argument("--version", action="version", version=f"spine-tf {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser("demo", help="run the phantom demo end to end",
                               description="Generates a phantom cohort, builds the dataset "
                               "from its files, writes montages, trains a small model and "
                               "evaluates it with TTA.")
    demo.add_argument("--out", default="demo_output", help="output folder (default: %(default)s)")
    demo.add_argument("--patients", type=int, default=60,
                      help="cohort size (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    demo.add_argument("--epochs", type=int, default=40,
                      help="training epochs; 0 stops after the dataset (default: %(default)s)")
    demo.add_argument("--width", type=float, default=0.125,
                      help="model width (default: %(default)s)")
    demo.add_argument("--batch-size", type=int, default=32)
    demo.add_argument("--learning-rate", type=float, default=1e-2,
                      help="SGD learning rate (default: %(default)s; 10x the paper's, which "
                      "trains for ~1000 epochs)")
    demo.add_argument("--predict-scans", type=int, default=3,
                      help="held-out scans graded at the end (default: %(default)s)")
    demo.add_argument("--augmentations", type=int, default=50,
                      help="augmented copies per hotspot in the predictions (default: "
                      "%(default)s; 150 in the journal version)")
    demo.set_defaults(run=_demo)

    ph = commands.add_parser("phantom", help="write a phantom cohort",
                             description="Writes synthetic T2 sagittal lumbar scans with masks, "
                             "lesion masks, landmarks and labels (the folder layout).")
    ph.add_argument("--patients", type=int, required=True)
    ph.add_argument("--seed", type=int, default=0)
    ph.add_argument("--out", required=True, help="output folder")
    ph.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    ph.add_argument("--reader-noise", type=float, default=1.0,
                    help="reading noise of both label sets; 0 = readers agree (default: 1)")
    ph.add_argument("--missing-fraction", type=float, default=0.04)
    ph.add_argument("--cutoff-fraction", type=float, default=0.12)
    ph.set_defaults(run=_phantom)

    build = commands.add_parser("build-data", help="build the spine_discs TFDS dataset",
                                description="Builds spine_discs (TFDS). Configs: phantom_small, "
                                "phantom, phantom_large, folder, spider; --patients makes a "
                                "phantom cohort of any size.")
    build.add_argument("--config", default="phantom_small",
                       choices=["phantom_small", "phantom", "phantom_large", "folder", "spider"])
    build.add_argument("--patients", type=int, help="phantom cohort of this size instead")
    build.add_argument("--seed", type=int, default=0, help="phantom seed (with --patients)")
    build.add_argument("--manual-dir", help="source folder for the folder and spider configs")
    build.add_argument("--data-dir", default=None, help="TFDS data dir (default: TFDS's)")
    build.add_argument("--workers", type=int, default=None)
    build.add_argument("--strict", action="store_true",
                       help="stop at the first unusable scan instead of skipping it")
    build.set_defaults(run=_build_data)

    tr = commands.add_parser("train", help="train a model with model.fit",
                             description="Trains SpineNet on a spine_discs dataset. Settings: "
                             "a JSON ExperimentConfig (--config), then --set overrides, then "
                             "the shortcut flags. Re-running on an unfinished run directory "
                             "resumes it.")
    tr.add_argument("--run-dir", required=True, help="run directory (checkpoints, logs)")
    tr.add_argument("--config", help="ExperimentConfig JSON (e.g. a run's config.json)")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting, e.g. --set train.lr_patience=5 (repeatable)")
    for flag, key, kind in (("--data", "data.config", str), ("--patients", "data.patients", int),
                            ("--data-dir", "data.data_dir", str),
                            ("--manual-dir", "data.manual_dir", str),
                            ("--width", "model.width", float),
                            ("--branch-point", "model.branch_point", str),
                            ("--batch-size", "pipeline.batch_size", int),
                            ("--epochs", "train.epochs", int),
                            ("--strategy", "train.strategy", str)):
        tr.add_argument(flag, type=kind, dest=key, help=f"shortcut for --set {key}=...")
    tr.set_defaults(run=_train)

    ev = commands.add_parser("evaluate", help="evaluate a trained run with TTA",
                             description="Scores a run's best model on its test split: "
                             "balanced accuracy with and without the 54-view TTA, the "
                             "second reader's agreement, the Lootus protocol, confusion "
                             "matrices; writes JSON, Markdown, CSV and PNGs.")
    ev.add_argument("--run-dir", required=True, help="a spine-tf train run directory")
    ev.add_argument("--split", help="split to score: a TFDS split expression or 'all' "
                    "(default: the run's test split)")
    ev.add_argument("--model-file", default="best.keras",  # train.BEST_MODEL
                    help="model in the run dir (default: %(default)s)")
    ev.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                    help="override the run's data config to score another dataset, e.g. "
                    "--data patients=500 --data seed=1 --split all (a fresh phantom "
                    "cohort, every split)")
    ev.add_argument("--no-tta", action="store_true", help="single view only")
    ev.add_argument("--out", help="report folder (default: RUN_DIR/evaluation_<split>, "
                    "with the --data overrides in the name)")
    ev.set_defaults(run=_evaluate)

    exp = commands.add_parser("export", help="export a model for TF Serving",
                              description="Writes a SavedModel for TensorFlow Serving into "
                              "BASE/NAME/VERSION with the serving_default, predict_tta and "
                              "hotspots signatures and the model's metadata in "
                              "assets/spine_tf.json.")
    exp.add_argument("--model", required=True,
                     help="a .keras model, or a spine-tf train run directory (its best.keras "
                     "and config.json)")
    exp.add_argument("--name", default="spinenet", help="model name (default: %(default)s)")
    exp.add_argument("--base", default="saved_models",
                     help="model base folder (default: %(default)s)")
    exp.add_argument("--version", type=int, help="version (default: the next free one)")
    exp.add_argument("--hotspot-augmentations", type=int, default=150,
                     help="augmented copies per disc in the hotspots signature "
                     "(default: %(default)s)")
    exp.set_defaults(run=_export)

    pr = commands.add_parser("predict", help="grade scans: grades, hotspots, HTML report",
                             description="Grades the discs of scans (files or folders) with a "
                             "model (.keras, run directory or SavedModel) and writes per-disc "
                             "grades (JSON, CSV), hotspot NIfTI overlays in each scan's grid, "
                             "PNG montages and an HTML report per scan. Discs are found from "
                             "a label mask or landmarks file per scan.")
    _add_scan_inputs(pr)
    pr.add_argument("--model", required=True,
                    help="a .keras model, a run directory, a SavedModel or a model base folder "
                    "(its newest version)")
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument("--no-tta", action="store_true", help="single view instead of 54 views")
    pr.add_argument("--no-hotspots", action="store_true", help="grades only")
    pr.add_argument("--augmentations", type=int, default=150,
                    help="augmented copies per hotspot (default: %(default)s)")
    pr.add_argument("--seed", type=int, default=0, help="hotspot augmentation seed")
    _add_detector(pr)
    pr.set_defaults(run=_predict)

    cl = commands.add_parser("client", help="grade scans through a TF Serving server",
                             description="Reads scans, localises and extracts their discs (as "
                             "predict does) and sends one predict request per scan to a "
                             "TensorFlow Serving server (REST, or gRPC with "
                             "tensorflow-serving-api); prints the grades.")
    _add_scan_inputs(cl)
    cl.add_argument("--server", default="localhost",
                    help="host, or host:port (default ports: REST 8501, gRPC 8500)")
    cl.add_argument("--model-name", default="spinenet", help="served model name")
    cl.add_argument("--version", type=int, help="model version (default: the newest)")
    cl.add_argument("--grpc", action="store_true", help="gRPC instead of REST")
    cl.add_argument("--signature", default="predict_tta",
                    choices=["predict_tta", "serving_default"])
    cl.set_defaults(run=_client)

    sw = commands.add_parser("sweep", help="the paper's branch-point sweep",
                             description="Trains and evaluates one model per branch point, "
                             "twice with validation and test swapped, and writes the table "
                             "(mean +- std) in the form of the paper's Table 2; "
                             "--single-task adds six single-task models. Resumable.")
    sw.add_argument("--out", required=True, help="sweep folder")
    sw.add_argument("--config", help="base ExperimentConfig JSON")
    sw.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sw.add_argument("--branch-points", nargs="+", help="default: conv1 .. fc7 and none")
    sw.add_argument("--single-task", action="store_true",
                    help="also train single-task models (multi-task vs single-task)")
    sw.add_argument("--no-swap", dest="swap", action="store_false",
                    help="train each row once, without the swapped run (half the compute, "
                    "no spread)")
    sw.add_argument("--repeats", type=int, default=1,
                    help="train every row's runs this many times with other seeds (default 1: "
                    "the paper's two runs; more runs narrow the spread)")
    sw.add_argument("--also-data", action="append", default=[], metavar="KEY=VALUE",
                    help="also score every run single view on every split of this dataset, "
                    "e.g. --also-data patients=500 --also-data seed=1 (a fresh phantom cohort)")
    sw.set_defaults(run=_sweep)

    ex = commands.add_parser("extract", help="extract the disc volumes of one scan",
                             description="Reads a scan, localises its discs from a label mask "
                             "or a landmarks file (else with the disc detector), and writes the "
                             "disc volumes (npz) and a montage (PNG).")
    ex.add_argument("scan", help="NIfTI / .mha / DICOM folder / 2D image")
    source = ex.add_mutually_exclusive_group()
    source.add_argument("--mask", help="label mask (SPIDER convention, or 1 disc / 2 body)")
    source.add_argument("--landmarks", help="landmarks JSON (spine_tf.landmarks)")
    _add_detector(ex)
    ex.add_argument("--out", default=".", help="output folder (default: current)")
    ex.add_argument("--spacing", type=float, nargs=2, metavar=("ROW_MM", "COL_MM"),
                    help="pixel spacing of a 2D image (default: 1 mm)")
    ex.set_defaults(run=_extract)

    hs = commands.add_parser(
        "hotspots", help="evidence hotspots of a scan or a dataset split",
        description="Augmented saliency hotspots (spine_tf.hotspots). With a SCAN (and --mask, "
        "--landmarks or the disc detector): its discs' hotspots as arrays (npz), PNG montages "
        "and one 4D NIfTI in the scan's own grid. Without: the discs of a run's dataset split "
        "(--run-dir). "
        "--measure: the localisation table (IoU with the lesion boxes) of a run instead.")
    hs.add_argument("scan", nargs="?", help="NIfTI / .mha / DICOM folder / 2D image")
    source = hs.add_mutually_exclusive_group()
    source.add_argument("--mask", help="label mask of the scan")
    source.add_argument("--landmarks", help="landmarks JSON of the scan")
    _add_detector(hs)
    hs.add_argument("--run-dir", help="a spine-tf train run (its model, data and splits)")
    hs.add_argument("--model", help="a .keras model file (default: RUN_DIR/best.keras)")
    hs.add_argument("--split", help="dataset split (default: the run's test split)")
    hs.add_argument("--discs", type=int, default=8,
                    help="discs of the split to explain (default: %(default)s)")
    hs.add_argument("--tasks", nargs="+", default=list(tasks.TASK_NAMES), metavar="TASK",
                    help="tasks to explain (default: all)")
    hs.add_argument("--augmentations", type=int, default=150,  # hotspots.AUGMENTATIONS
                    help="augmented copies per hotspot (default: %(default)s)")
    hs.add_argument("--seed", type=int, default=0)
    hs.add_argument("--measure", action="store_true",
                    help="localisation IoU table of the run's split (all its lesion discs, or "
                    "--discs of them) instead of pictures")
    hs.add_argument("--out", help="output folder (default: current, or RUN_DIR/hotspots_SPLIT)")
    hs.add_argument("--spacing", type=float, nargs=2, metavar=("ROW_MM", "COL_MM"),
                    help="pixel spacing of a 2D image (default: 1 mm)")
    hs.set_defaults(run=_hotspots)

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
    td.set_defaults(run=_train_detector)
    return parser


def _detector_defaults():
    import dataclasses
    from spine_tf.detection.config import DetectorConfig
    return {f.name: f.default for f in dataclasses.fields(DetectorConfig)}


def _train_detector(args):
    from spine_tf.detection import train
    from spine_tf.detection.config import DetectorConfig
    config = DetectorConfig(**{
        name: getattr(args, name) for name in _detector_defaults() if hasattr(args, name)})
    train.train_detector(args.out, config, verbose=2)
    print(f"detector -> {os.path.join(args.out, train.DETECTOR_FILE)}")
    return 0


def _train(args):
    from spine_tf.training import train
    shortcuts = [f"{key}={value!r}" for key, value in vars(args).items()
                 if "." in key and value is not None]
    config = train.resolved_config(args.config, args.set + shortcuts)
    start = time.perf_counter()
    try:
        _, history = train.train(config, args.run_dir)
    except train.RunConfigError as error:
        raise SystemExit(f"spine-tf train: {error}")
    epochs = len(history.get("loss", []))
    best = max(history.get(train.MONITOR, [float("nan")]))
    print(f"trained {epochs} epochs in {time.perf_counter() - start:.0f} s; best "
          f"{train.MONITOR} {best:.3f}; models in {args.run_dir}")
    return 0


def _evaluate(args):
    from spine_tf.evaluation import evaluate as evaluation
    from spine_tf.evaluation import runs
    result, out = runs.evaluate_run(args.run_dir, split=args.split, tta=not args.no_tta,
                                           out_dir=args.out, model_file=args.model_file,
                                           data=args.data)
    with open(os.path.join(out, evaluation.MARKDOWN_NAME), encoding="utf-8") as f:
        print(f.read().split("## Confusion matrices")[0].rstrip())
    print(f"\nreport (with confusion matrices and per-disc predictions): {out}")
    return 0


def _add_scan_inputs(parser):
    """The scans and their masks or landmarks (``predict.find_scans``'s arguments)."""
    parser.add_argument("inputs", nargs="+", metavar="SCAN_OR_FOLDER",
                        help="scan files (NIfTI; .mha/.nrrd with the mha extra) or folders of "
                        "them; a folder with scans/, masks/, landmarks/ (spine-tf phantom's "
                        "layout) finds its masks and landmarks itself")
    parser.add_argument("--masks",
                        help="folder of label masks named after the scans (or one file)")
    parser.add_argument("--landmarks",
                        help="folder of landmarks JSON named after the scans (or one file)")


def _add_detector(parser):
    parser.add_argument("--detector", help="disc detector (.keras, a train-detector folder, "
                        "or 'phantom': the package's phantom-only one) for scans without a "
                        "mask or landmarks (default: the one shipped with spine_tf)")


def _load_detector(command, args, needed=True):
    """The detector for scans without mask or landmarks (None when no scan needs one)."""
    if not needed:
        return None
    from spine_tf import detection
    try:
        return detection.load(args.detector)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"spine-tf {command}: cannot load the detector: {error}")


def _find_scans(command, args):
    from spine_tf.app import predict
    try:
        return predict.find_scans(args.inputs, masks=args.masks, landmarks=args.landmarks)
    except predict.PredictError as error:
        raise SystemExit(f"spine-tf {command}: {error}")


def _export(args):
    from spine_tf.serving import export
    try:
        path = export.export_run(args.model, args.base, args.name, version=args.version,
                                 augmentations=args.hotspot_augmentations)
    except FileNotFoundError as error:
        raise SystemExit(f"spine-tf export: {error}")
    print(f"exported {args.model} -> {path} (signatures: {', '.join(export.SIGNATURES)})")
    print(f"inspect: saved_model_cli show --dir {path} --all")
    return 0


def _predict(args):
    if args.augmentations < 1:
        raise SystemExit("spine-tf predict: --augmentations must be at least 1")
    from spine_tf.app import predict
    jobs = _find_scans("predict", args)
    try:
        predictor = predict.load_predictor(args.model)
    except predict.PredictError as error:
        raise SystemExit(f"spine-tf predict: {error}")
    detector = _load_detector("predict", args,
                              needed=any(not (j.mask or j.landmarks) for j in jobs))
    print(f"{len(jobs)} scan(s); model: {predictor.description}"
          + (f"; detector: {detector.source}" if detector is not None else ""))
    summary = predict.run(jobs, predictor, args.out, tta=not args.no_tta,
                          hotspots=not args.no_hotspots, augmentations=args.augmentations,
                          seed=args.seed, progress=True, detector=detector)
    failed = [s for s in summary["scans"] if s["status"] != "done"]
    for scan in failed:
        print(f"  failed: {scan['name']}: {scan['reason']}")
    discs = sum(s.get("discs", 0) for s in summary["scans"])
    print(f"{len(jobs) - len(failed)} of {len(jobs)} scans graded ({discs} discs); report: "
          f"{os.path.join(args.out, predict.INDEX_NAME)}")
    return 1 if failed and len(failed) == len(jobs) else 0


def _client(args):
    import numpy as np
    from spine_tf.serving import client
    from spine_tf.app import predict
    host, _, port = args.server.partition(":")
    port = int(port) if port else (client.GRPC_PORT if args.grpc else client.REST_PORT)
    jobs = _find_scans("client", args)
    failed = 0
    for job in jobs:
        try:
            _, _, volumes, _ = predict.extract_scan(job)
            stacked = np.stack([v.volume for v in volumes])
            if args.grpc:
                _, grades = client.grpc_predict(f"{host}:{port}", args.model_name, stacked,
                                                args.signature, args.version)
            else:
                url = client.rest_url(host, args.model_name, args.version, port)
                _, grades = client.rest_predict(url, stacked, args.signature)
        except (predict.PredictError, client.ClientError, ValueError, OSError) as error:
            print(f"{job.name}: failed: {error}")
            failed += 1
            continue
        print(f"{job.name}:")
        print("  " + "level".ljust(8) + "".join(t.name.ljust(16) for t in tasks.TASKS))
        for n, volume in enumerate(volumes):
            print("  " + volume.level.ljust(8) + "".join(
                t.class_names[g[n]].ljust(16) for t, g in zip(tasks.TASKS, grades)))
    return 1 if failed == len(jobs) else 0


def _sweep(args):
    from spine_tf.evaluation import sweep
    from spine_tf.training import train
    if args.repeats < 1:
        raise SystemExit("spine-tf sweep: --repeats must be at least 1")
    try:
        table = sweep.sweep(train.resolved_config(args.config, args.set), args.out,
                                  branch_points=args.branch_points, single_task=args.single_task,
                                  swap=args.swap, also_data=args.also_data,
                                  repeats=args.repeats)
    except train.RunConfigError as error:
        raise SystemExit(f"spine-tf sweep: {error}")
    print(sweep.markdown(table))
    return 0


def _phantom(args):
    from spine_tf.phantom import PhantomConfig, write_cohort
    config = PhantomConfig(reader_noise=args.reader_noise, missing_fraction=args.missing_fraction,
                           cutoff_fraction=args.cutoff_fraction)
    start = time.perf_counter()
    labels = write_cohort(args.out, args.patients, seed=args.seed, config=config,
                          workers=args.workers, progress=True)
    seconds = time.perf_counter() - start
    print(f"wrote {args.patients} patients to {args.out} in {seconds:.1f} s; labels: {labels}")


def _build_data(args):
    from spine_tf.data import spine_discs
    if args.patients and not args.config.startswith("phantom"):
        raise SystemExit(f"spine-tf build-data: --patients makes a phantom cohort; it does "
                         f"not apply to --config {args.config}")
    config = spine_discs.phantom_config(args.patients, args.seed) if args.patients \
        else args.config
    source = config.source if args.patients else args.config
    if source in ("folder", "spider") and not args.manual_dir:
        raise SystemExit(f"spine-tf build-data: --manual-dir is needed for {source}")
    builder = spine_discs.builder(config, data_dir=args.data_dir, workers=args.workers,
                                  strict=args.strict)
    builder.download_and_prepare(download_config=_download_config(args.manual_dir))
    _print_build(builder)
    return 0


def _download_config(manual_dir):
    import tensorflow_datasets as tfds
    return tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None


def _print_build(builder):
    from spine_tf.data.spine_discs import REPORT_NAME
    print(f"dataset: {builder.data_dir}")
    for split, info in builder.info.splits.items():
        print(f"  {split:<11} {info.num_examples:>6} discs")
    try:
        content = builder.build_report()
    except FileNotFoundError:
        return
    for item in content.get("skipped_scans", []):
        print(f"  skipped scan {item.get('patient')}: {item.get('reason')}")
    skipped = content.get("skipped_discs", [])
    if skipped:
        print(f"  {len(skipped)} labelled discs skipped (see {builder.data_dir}/{REPORT_NAME})")


def _scan_discs(args):
    """(scan, DiscVolumes) of ``args.scan`` localised by ``args.mask`` / ``args.landmarks``;
    prints the skipped discs; (scan, []) when none could be extracted (said on stderr)."""
    import functools
    from spine_tf import detection, extraction, localisation
    from spine_tf.io.scan import read_scan
    spacing = (1.0, *args.spacing) if args.spacing else None
    scan = read_scan(args.scan, spacing_mm=spacing)
    detector = _load_detector(args.command, args, needed=not (args.mask or args.landmarks))
    located = localisation.localise(
        scan, mask_path=args.mask, landmarks_path=args.landmarks,
        detect=None if detector is None else functools.partial(detection.detect,
                                                               detector=detector))
    volumes, skipped = extraction.extract(scan, located)
    for level, reason in skipped:
        print(f"  {level}: skipped: {reason}")
    for note in located.notes:
        print(f"  detector: {note}")
    for volume in volumes:
        if volume.confidence < 1.0:
            print(f"  {volume.level}: detector confidence {volume.confidence:.2f}")
    if not volumes:
        print(f"{args.scan}: no disc could be extracted", file=sys.stderr)
    return scan, volumes


def _extract(args):
    from spine_tf.io import pictures as report
    from spine_tf.io.scan import scan_name
    _, volumes = _scan_discs(args)
    if not volumes:
        return 1
    name = scan_name(args.scan)
    npz = os.path.join(args.out, f"{name}_discs.npz")
    png = os.path.join(args.out, f"{name}_discs.png")
    report.save_volumes(npz, volumes)
    report.save_png(report.montage([v.volume for v in volumes], [v.level for v in volumes]), png)
    print(f"{len(volumes)} discs ({', '.join(v.level for v in volumes)}) -> {npz}, {png}")
    return 0


def _hotspots(args):
    unknown = [t for t in args.tasks if t not in tasks.TASK_NAMES]
    if unknown:
        raise SystemExit(f"spine-tf hotspots: unknown task(s) {', '.join(unknown)}; tasks are "
                         f"{', '.join(tasks.TASK_NAMES)}")
    if args.augmentations < 1:
        raise SystemExit("spine-tf hotspots: --augmentations must be at least 1")
    if not args.scan and not args.run_dir:
        raise SystemExit("spine-tf hotspots: give a SCAN (and --mask or --landmarks, else the "
                         "detector finds its discs) or "
                         "--run-dir for a dataset split")
    if not args.model and not args.run_dir:
        raise SystemExit("spine-tf hotspots: --model or --run-dir is needed")
    from spine_tf import hotspots
    from spine_tf.evaluation import runs
    if args.measure:
        if args.scan or not args.run_dir:
            raise SystemExit("spine-tf hotspots: --measure works on a run's split (--run-dir), "
                             "not on a scan")
        result, out = runs.measure_hotspots(
            args.run_dir, split=args.split, augmentations=args.augmentations, seed=args.seed,
            limit=args.discs, out_dir=args.out,
            model_file=os.path.abspath(args.model) if args.model else "best.keras")
        print(hotspots.localisation_markdown(result))
        print(f"table: {out}")
        return 0
    import numpy as np
    from spine_tf.modeling.model import load_model
    model = load_model(args.model or os.path.join(args.run_dir, "best.keras"))
    explainer = hotspots.Hotspots(model)
    if args.scan:
        return _scan_hotspots(args, explainer, hotspots)
    from spine_tf import config as config_lib
    from spine_tf.training import train
    from spine_tf.io.codec import from_stored
    config = config_lib.load(os.path.join(args.run_dir, "config.json"))
    split = args.split or config.data.test_split
    examples = list(train.prepare_dataset(config.data).as_dataset(split=split)
                    .take(args.discs).as_numpy_iterator())
    if not examples:
        print(f"split {split} of {args.run_dir} has no discs", file=sys.stderr)
        return 1
    volumes = np.stack([from_stored(e["disc_volume"]).numpy() for e in examples])
    levels = [f"{e['patient_id'].decode()} {tasks.LEVELS[e['level']]}" for e in examples]
    per_task = explainer.explain(volumes, args.tasks, augmentations=args.augmentations,
                                 seed=args.seed)
    out = args.out or os.path.join(args.run_dir, f"hotspots_{split}")
    paths = hotspots.save_outputs(out, split, volumes, per_task, levels,
                                  np.stack([e["voxel_to_scan"] for e in examples]))
    print(f"{len(examples)} discs of {split}: {', '.join(paths)}")
    return 0


def _scan_hotspots(args, explainer, hotspots):
    import numpy as np
    from spine_tf.io.scan import scan_name
    scan, volumes = _scan_discs(args)
    if not volumes:
        return 1
    stacked = np.stack([v.volume for v in volumes])
    transforms = np.stack([v.voxel_to_scan for v in volumes])
    levels = [v.level for v in volumes]
    per_task = explainer.explain(stacked, args.tasks, augmentations=args.augmentations,
                                 seed=args.seed)
    name = scan_name(args.scan)
    out = args.out or "."
    paths = hotspots.save_outputs(out, name, stacked, per_task, levels, transforms)
    nifti = os.path.join(out, f"{name}_hotspots.nii.gz")
    hotspots.save_scan_hotspots(nifti, scan, per_task, transforms)
    print(f"{len(volumes)} discs ({', '.join(levels)}); tasks {', '.join(per_task)} -> "
          f"{', '.join(paths + [nifti])}")
    return 0


def _demo(args):
    from spine_tf.evaluation import runs
    from spine_tf.training import train
    from spine_tf.data import spine_discs
    from spine_tf.phantom import write_cohort
    cohort = os.path.join(args.out, "cohort")
    data_dir = os.path.join(args.out, "tfds")
    start = time.perf_counter()
    print(f"1/6 phantom cohort: {args.patients} patients -> {cohort}")
    write_cohort(cohort, args.patients, seed=args.seed, workers=args.workers, progress=True)
    print(f"2/6 dataset from the cohort's files (folder config) -> {data_dir}")
    builder = spine_discs.builder("folder", data_dir=data_dir, workers=args.workers)
    builder.download_and_prepare(download_config=_download_config(cohort))
    _print_build(builder)
    examples = [example for split in builder.info.splits
                for example in builder.as_dataset(split=split).as_numpy_iterator()]
    _print_label_summary(examples)
    _write_montages(examples, os.path.join(args.out, "montages"))
    if args.epochs == 0:
        print(f"demo finished in {time.perf_counter() - start:.0f} s")
        return 0
    run_dir = os.path.join(args.out, "run")
    print(f"3/6 training a width-{args.width} model for {args.epochs} epochs -> {run_dir}")
    config = train.resolved_config(None, [
        "data.config='folder'", f"data.data_dir={data_dir!r}", f"data.manual_dir={cohort!r}",
        f"data.workers={args.workers!r}", f"model.width={args.width}",
        f"pipeline.batch_size={args.batch_size}", f"train.epochs={args.epochs}",
        f"train.learning_rate={args.learning_rate}", "train.lr_patience=10",
        "train.early_stopping_patience=0"])
    train.train(config, run_dir, verbose=2)
    print("4/6 evaluation on the test split (54-view TTA)")
    result, out = runs.evaluate_run(run_dir)
    _print_scores(result)
    print(f"report: {out}")
    import dataclasses
    from spine_tf import detection
    from spine_tf.serving import export
    from spine_tf.app import predict
    from spine_tf.data.sources import split_of
    print("5/6 export for TF Serving")
    exported = export.export_run(run_dir, os.path.join(args.out, "saved_models"), "spinenet",
                                 augmentations=args.augmentations)
    print(f"SavedModel: {exported}")
    jobs = [j for j in predict.find_scans([cohort]) if split_of(j.name) == "test"]
    jobs = jobs[:args.predict_scans]
    detector = None
    if jobs and os.path.exists(detection.WEIGHTS):
        # the last scan as a user has it: no mask, no landmarks; the detector finds its discs
        jobs[-1] = dataclasses.replace(jobs[-1], mask=None, landmarks=None)
        detector = detection.load()
    print(f"6/6 predict: {len(jobs)} held-out scans with the SavedModel, TTA and hotspots "
          f"({args.augmentations} augmentations)"
          + (f"; {jobs[-1].name} without its mask, through the disc detector" if detector
             else ""))
    predictions = os.path.join(args.out, "predictions")
    summary = predict.run(jobs, predict.load_predictor(exported), predictions,
                          augmentations=args.augmentations, progress=True, detector=detector)
    done = sum(s["status"] == "done" for s in summary["scans"])
    for scan in summary["scans"]:
        if scan["status"] != "done":
            print(f"  failed: {scan['name']}: {scan['reason']}")
    print(f"{done} of {len(jobs)} scans graded; open "
          f"{os.path.join(predictions, predict.INDEX_NAME)}")
    print(f"demo finished in {time.perf_counter() - start:.0f} s")
    return 0


def _write_montages(examples, folder):
    from spine_tf.io import pictures as report
    from spine_tf.io.codec import from_stored
    by_level = collections.defaultdict(list)
    for example in examples:
        by_level[tasks.LEVELS[example["level"]]].append(example)
    for level, group in by_level.items():
        shown = group[:4]
        picture = report.montage(
            [from_stored(e["disc_volume"]).numpy() for e in shown],
            [f"{e['patient_id'].decode()} {level} pfirrmann "
             f"{_grade_text(e['labels']['pfirrmann'])}" for e in shown], slices=range(1, 8))
        report.save_png(picture, os.path.join(folder, f"{level}.png"))
    print(f"  montages: {folder}/<level>.png")


def _grade_text(label):
    """A stored Pfirrmann label as the grade people read (1..5), '-' when missing."""
    return "-" if label < 0 else tasks.task("pfirrmann").class_names[label]


def _print_scores(result):
    print(f"  {result['discs']} test discs    balanced accuracy (%)")
    print(f"  {'task':<15} {'TTA':>6} {'single':>7} {'intra-rater':>12}")
    for name, figures in result["tasks"].items():
        cells = [figures["balanced_accuracy_tta"], figures["balanced_accuracy_single_view"],
                 figures["intra_rater"]]
        text = ["   n/a" if c is None else f"{100 * c:6.1f}" for c in cells]
        print(f"  {name:<15} {text[0]:>6} {text[1]:>7} {text[2]:>12}")


def _print_label_summary(examples):
    """Class counts per task (missing labels as '-')."""
    print(f"  {len(examples)} discs; class counts per task (- = missing):")
    for task in tasks.TASKS:
        counts = collections.Counter(int(e["labels"][task.name]) for e in examples)
        cells = [f"{name}:{counts.get(i, 0)}" for i, name in enumerate(task.class_names)]
        cells.append(f"-:{counts.get(tasks.MISSING_LABEL, 0)}")
        print(f"    {task.name:<15} {'  '.join(cells)}")


if __name__ == "__main__":
    sys.exit(main())
