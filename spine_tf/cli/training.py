"""``spine-tf train``, ``evaluate`` and ``sweep``: training runs and their scores."""

import time

from spine_tf import config as config_lib
from spine_tf.cli.options import add_keras_log, at_least_one, fit_verbosity
from spine_tf.detection import dataset_detector
from spine_tf.errors import UsageError
from spine_tf.training import rundir


def add_parsers(commands):
    tr = commands.add_parser("train", help="train a model with model.fit",
                             description="Trains SpineNet on a spine_discs dataset. Settings: "
                             "a named preset (--preset), then a JSON ExperimentConfig "
                             "(--config), then --set overrides, then the shortcut flags. "
                             "Re-running on an unfinished run directory resumes it.")
    tr.add_argument("--run-dir", required=True, help="run directory (checkpoints, logs)")
    tr.add_argument("--preset", default="paper", choices=tuple(config_lib.PRESETS),
                    help="named settings to start from (default: %(default)s; "
                    "spine_tf.config.PRESETS)")
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
    add_keras_log(tr)
    tr.set_defaults(run=_train)

    ev = commands.add_parser("evaluate", help="evaluate a trained run or model with TTA",
                             description="Scores a run's best model on its test split (or "
                             "any model on any dataset): balanced accuracy with and without "
                             "test-time augmentation, with 95 %% patient-bootstrap "
                             "intervals, the second reader's agreement, the Lootus protocol, "
                             "confusion matrices; writes JSON, Markdown, CSV and PNGs.")
    which = ev.add_mutually_exclusive_group(required=True)
    which.add_argument("--run-dir", help="a spine-tf train run directory (its data config, "
                       "test split and report folder are the defaults)")
    which.add_argument("--model", help="a model to score on --data: a .keras file, a run "
                       "directory, a SavedModel export (or its base folder)")
    ev.add_argument("--split", help="split to score: a TFDS split expression or 'all' "
                    "(default: the data's test split)")
    ev.add_argument("--model-file", default=rundir.BEST_MODEL,
                    help="model in the run dir (default: %(default)s)")
    ev.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                    help="the dataset to score (over the run's data config, or the "
                    "defaults with --model), e.g. --data patients=500 --data seed=1 --split "
                    "all (a fresh phantom cohort, every split), or --data config=spider_slices "
                    "--data manual_dir=DIR --split all (any folder in that layout)")
    ev.add_argument("--no-tta", action="store_true", help="single view only")
    ev.add_argument("--calibrate-on", metavar="SPLIT",
                    help="fit a temperature per task on this split (e.g. validation) and "
                    "report calibration (ECE, NLL, reliability diagrams) before and after")
    ev.add_argument("--out", help="report folder (default with --run-dir: "
                    "RUN_DIR/evaluation_<split>, with the --data overrides in the name; "
                    "needed with --model)")
    ev.set_defaults(run=_evaluate)

    en = commands.add_parser("ensemble", help="average several models into one",
                             description="Writes one .keras model whose logits are the mean of "
                             "the members' (spine_tf.modeling.model.ensemble), e.g. runs of "
                             "one recipe with other seeds; it grades, explains, exports and "
                             "serves as a single model does.")
    en.add_argument("models", nargs="+", metavar="MODEL",
                    help="a .keras file, a run directory (its best model) or 'shipped'")
    en.add_argument("--out", required=True, help="the ensemble's .keras file")
    en.set_defaults(run=_ensemble)

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


def _train(args):
    from spine_tf.training import train
    shortcuts = [f"{key}={value!r}" for key, value in vars(args).items()
                 if "." in key and value is not None]
    config = config_lib.preset(args.preset, args.config, args.set + shortcuts)
    start = time.perf_counter()
    _, history = train.train(config, args.run_dir, verbose=fit_verbosity(args),
                             detect=dataset_detector(config.data.config))
    epochs = len(history.get("loss", []))
    best = max(history.get(train.MONITOR, [float("nan")]))
    print(f"trained {epochs} epochs in {time.perf_counter() - start:.0f} s; best "
          f"{train.MONITOR} {best:.3f}; models in {args.run_dir}")
    return 0


def _evaluate(args):
    from spine_tf.evaluation import evaluate as evaluation
    from spine_tf.evaluation import runs
    if args.run_dir:
        result, out = runs.evaluate_run(args.run_dir, split=args.split, tta=not args.no_tta,
                                        out_dir=args.out, model_file=args.model_file,
                                        data=args.data, calibrate_on=args.calibrate_on)
    else:
        if not args.out:
            raise UsageError("--out is needed with --model (the report folder)")
        from spine_tf.app.predictors import load_predictor
        predictor = load_predictor(args.model)
        data = config_lib.override(config_lib.ExperimentConfig(),
                                   [f"data.{a}" for a in args.data]).data
        result, out = runs.evaluate_model(
            predictor, data, args.split, args.out, predictor.description,
            tta=not args.no_tta, data=args.data, calibrate_on=args.calibrate_on)
    print(evaluation.summary_markdown(result, result["model"]))
    print(f"\nreport (with confusion matrices and per-disc predictions): {out}")
    return 0


def _ensemble(args):
    if not args.out.endswith(".keras"):
        raise UsageError(f"--out {args.out}: the ensemble is written as a .keras file")
    from spine_tf.app.predictors import KerasPredictor, load_predictor
    from spine_tf.modeling import model as model_lib
    members = []
    for path in args.models:
        predictor = load_predictor(path)
        if not isinstance(predictor, KerasPredictor):
            raise UsageError(f"{path}: a SavedModel cannot join an ensemble; give its .keras "
                             "model or run directory")
        members.append(predictor.model)
    try:
        model = model_lib.save_ensemble(members, args.out)
    except ValueError as error:
        raise UsageError(f"{', '.join(args.models)}: {error}") from error
    print(f"{args.out}: the mean of {len(members)} models ({model.count_params():,} "
          "parameters)")
    return 0


def _sweep(args):
    at_least_one(args.repeats, "--repeats")
    from spine_tf.evaluation import sweep
    table = sweep.sweep(config_lib.preset(config_path=args.config, assignments=args.set),
                        args.out, branch_points=args.branch_points,
                        single_task=args.single_task, swap=args.swap,
                        also_data=args.also_data, repeats=args.repeats)
    print(sweep.markdown(table))
    return 0
