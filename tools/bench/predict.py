"""Benchmark of prediction and serving with the full-size model.

Side by side in one run: model load time (``.keras`` against the SavedModel),
one phantom scan end to end with the 54-view TTA and no hotspots (read,
localise, extract, grade, write the outputs) through the Keras model and the
SavedModel, once with six-task hotspots (150 augmented copies per disc), and
the SavedModel's ``serving_default`` at batch 54 against the in-memory model's
compiled forward pass, alternated round by round. Random weights (speed does
not depend on them). Prints a Markdown table and writes it to
docs/benchmarks.md ("Prediction and serving").

Run: .venv/bin/python -m tools.bench.predict [--rounds 3] [--hotspot-augmentations 150]
"""

import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from spine_tf.serving import export  # noqa: E402
from spine_tf.app import predict, predictors, scans  # noqa: E402
from spine_tf.modeling.model import build_model, load_model, mean_subtraction  # noqa: E402
from spine_tf.phantom import write_cohort  # noqa: E402
from tools.bench import benchlib  # noqa: E402


def parser():
    out = benchlib.argument_parser(__file__, __doc__)
    out.add_argument("--rounds", type=int, default=3)
    out.add_argument("--hotspot-augmentations", type=int, default=150)
    return out


def main(argv=None):
    args = parser().parse_args(argv)
    work = tempfile.mkdtemp(prefix="bench_predict_")
    start = time.perf_counter()
    model = build_model()
    mean_subtraction(model).set_mean(np.full(9, 0.4))
    keras_file = os.path.join(work, "model.keras")
    model.save(keras_file)
    export_start = time.perf_counter()
    exported = export.export(model, os.path.join(work, "saved_models"), "spinenet",
                             augmentations=args.hotspot_augmentations)
    export_seconds = time.perf_counter() - export_start
    size_mb = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(exported)
                  for f in files) / 1e6
    write_cohort(os.path.join(work, "cohort"), 1, seed=3, workers=1)
    job = scans.find_scans([os.path.join(work, "cohort")])[0]
    discs = len(scans.extract_scan(job)[2])

    load = benchlib.alternated({"keras": lambda: load_model(keras_file),
                                "saved": lambda: export.load(exported)}, args.rounds, warm_ups=0)
    keras_predictor = predictors.KerasPredictor(model, keras_file)
    saved_predictor = predictors.SavedModelPredictor(exported)
    out = os.path.join(work, "out")
    scan = benchlib.alternated(
        {name: lambda p=p: predict.predict_scan(job, p, out, hotspots=False)
         for name, p in (("keras", keras_predictor), ("saved", saved_predictor))}, args.rounds)
    t = time.perf_counter()
    predict.predict_scan(job, keras_predictor, out, hotspots=True,
                         augmentations=args.hotspot_augmentations)
    with_hotspots = time.perf_counter() - t

    batch = tf.constant(np.random.default_rng(0).random((54, 112, 224, 9), dtype=np.float32))
    forward = tf.function(lambda x: model(x, training=False))
    signature = saved_predictor.loaded.signatures["serving_default"]
    serve = benchlib.alternated(
        {"memory": lambda: [o.numpy() for o in forward(batch)],
         "signature": lambda: [o.numpy() for o in signature(disc_volume=batch).values()]},
        max(3, args.rounds), warm_ups=2)
    med = {f"{group}_{k}": v for group, values in
           (("load", load), ("scan", scan), ("serve", serve)) for k, v in values.items()}
    rows = [
        ["load `.keras` (`model.load_model`)", f"{med['load_keras']:.2f} s", "", ""],
        ["load SavedModel (`tf.saved_model.load`)", f"{med['load_saved']:.2f} s",
         f"{size_mb:.0f} MB on disk", f"export took {export_seconds:.0f} s"],
        [f"one scan end to end, TTA, no hotspots, Keras model ({discs} discs)",
         f"{med['scan_keras']:.2f} s", f"{med['scan_keras'] / discs:.2f} s/disc",
         "target <= 5 s"],
        ["the same through the SavedModel (`predict_tta` signature)",
         f"{med['scan_saved']:.2f} s", f"{med['scan_saved'] / discs:.2f} s/disc",
         f"{100 * med['scan_keras'] / med['scan_saved']:.0f} % of the Keras model's speed"],
        [f"one scan with six-task hotspots ({args.hotspot_augmentations} copies/disc), Keras",
         f"{with_hotspots:.0f} s", f"{with_hotspots / discs:.1f} s/disc", "one run"],
        ["in-memory model, compiled forward, batch 54", f"{1000 * med['serve_memory']:.0f} ms",
         f"{54 / med['serve_memory']:.0f} discs/s", "100 %"],
        ["SavedModel `serving_default`, batch 54", f"{1000 * med['serve_signature']:.0f} ms",
         f"{54 / med['serve_signature']:.0f} discs/s",
         f"{100 * med['serve_memory'] / med['serve_signature']:.1f} % (target >= 90 %)"],
    ]
    body = benchlib.table(["what", "median", "per unit", "notes"], rows)
    body += (f"\n\nFull-size model (182,765,777 parameters), random weights; one phantom scan "
             f"(seed 3) with its label mask; medians of {args.rounds} rounds alternating Keras "
             f"and SavedModel (serving: {max(3, args.rounds)} rounds alternating), after a "
             f"warm-up. Load average at the end: {os.getloadavg()[0]:.1f}. Whole run "
             f"{time.perf_counter() - start:.0f} s.")
    benchlib.write_section("Prediction and serving", body,
                           benchlib.reproduce_command(__file__, argv))


if __name__ == "__main__":
    main()
