"""``spine-tf demo``: the phantom demo end to end (cohort, dataset, montages, training with
the ``demo`` preset, evaluation, export, prediction)."""

import collections
import os
import time

from spine_tf import config as config_lib
from spine_tf import tasks
from spine_tf.cli.data import download_config, print_build
from spine_tf.cli.options import add_keras_log, fit_verbosity

_PRESET = config_lib.preset("demo")


def add_parsers(commands):
    demo = commands.add_parser("demo", help="run the phantom demo end to end",
                               description="Generates a phantom cohort, builds the dataset "
                               "from its files, writes montages, trains a small model (the "
                               "demo preset) and evaluates it with TTA, exports it and grades "
                               "held-out scans.")
    demo.add_argument("--out", default="demo_output", help="output folder (default: %(default)s)")
    demo.add_argument("--patients", type=int, default=60,
                      help="cohort size (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    demo.add_argument("--epochs", type=int, default=_PRESET.train.epochs,
                      help="training epochs; 0 stops after the dataset (default: %(default)s)")
    demo.add_argument("--width", type=float, default=_PRESET.model.width,
                      help="model width (default: %(default)s)")
    demo.add_argument("--batch-size", type=int, default=_PRESET.pipeline.batch_size)
    demo.add_argument("--learning-rate", type=float, default=_PRESET.train.learning_rate,
                      help="SGD learning rate (default: %(default)s; 10x the paper's, which "
                      "trains for ~1000 epochs)")
    demo.add_argument("--predict-scans", type=int, default=3,
                      help="held-out scans graded at the end (default: %(default)s)")
    demo.add_argument("--augmentations", type=int, default=50,
                      help="augmented copies per hotspot in the predictions (default: "
                      "%(default)s; 150 in the journal version)")
    add_keras_log(demo)
    demo.set_defaults(run=_demo)


def demo_config(args, data_dir, cohort):
    """The ``demo`` preset on the demo's dataset, with its flags applied."""
    return config_lib.preset("demo", assignments=[
        "data.config='folder'", f"data.data_dir={data_dir!r}", f"data.manual_dir={cohort!r}",
        f"data.workers={args.workers!r}", f"model.width={args.width!r}",
        f"pipeline.batch_size={args.batch_size!r}", f"train.epochs={args.epochs!r}",
        f"train.learning_rate={args.learning_rate!r}"])


def _demo(args):
    from spine_tf.data import spine_discs
    from spine_tf.evaluation import runs
    from spine_tf.phantom import write_cohort
    from spine_tf.training import train
    cohort = os.path.join(args.out, "cohort")
    data_dir = os.path.join(args.out, "tfds")
    start = time.perf_counter()
    print(f"1/6 phantom cohort: {args.patients} patients -> {cohort}")
    write_cohort(cohort, args.patients, seed=args.seed, workers=args.workers, progress=True)
    print(f"2/6 dataset from the cohort's files (folder config) -> {data_dir}")
    builder = spine_discs.builder("folder", data_dir=data_dir, workers=args.workers)
    builder.download_and_prepare(download_config=download_config(cohort))
    print_build(builder)
    examples = [example for split in builder.info.splits
                for example in builder.as_dataset(split=split).as_numpy_iterator()]
    _print_label_summary(examples)
    _write_montages(examples, os.path.join(args.out, "montages"))
    if args.epochs == 0:
        print(f"demo finished in {time.perf_counter() - start:.0f} s")
        return 0
    run_dir = os.path.join(args.out, "run")
    print(f"3/6 training a width-{args.width} model for {args.epochs} epochs -> {run_dir}")
    train.train(demo_config(args, data_dir, cohort), run_dir, verbose=fit_verbosity(args))
    print("4/6 evaluation on the test split (54-view TTA)")
    result, out = runs.evaluate_run(run_dir)
    _print_scores(result)
    print(f"report: {out}")
    _predict_held_out(args, run_dir, cohort)
    print(f"demo finished in {time.perf_counter() - start:.0f} s")
    return 0


def _predict_held_out(args, run_dir, cohort):
    """Steps 5 and 6: export the model, grade held-out scans with the export."""
    import dataclasses

    from spine_tf import detection
    from spine_tf.app import predict, predictors, scans
    from spine_tf.data.sources import split_of
    from spine_tf.serving import export
    print("5/6 export for TF Serving")
    exported = export.export_run(run_dir, os.path.join(args.out, "saved_models"), "spinenet",
                                 augmentations=args.augmentations)
    print(f"SavedModel: {exported}")
    jobs = [j for j in scans.find_scans([cohort]) if split_of(j.name) == "test"]
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
    summary = predict.run(jobs, predictors.load_predictor(exported), predictions,
                          augmentations=args.augmentations, progress=True, detector=detector)
    done = sum(s["status"] == "done" for s in summary["scans"])
    for scan in summary["scans"]:
        if scan["status"] != "done":
            print(f"  failed: {scan['name']}: {scan['reason']}")
    print(f"{done} of {len(jobs)} scans graded; open "
          f"{os.path.join(predictions, predict.INDEX_NAME)}")


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
