"""Benchmark of the model's own compute, float32 against mixed bfloat16, on any Keras backend.

The model alone, no input pipeline: one resident batch of random volumes and labels
on the device, then

1. the train step (``train_on_batch``: forward, the masked losses of
   ``spine_tf.modeling.losses`` with sample weights, backward, SGD with momentum and weight
   decay, the balanced-accuracy metrics), discs per second at ``--batch``;
2. the forward pass (``predict_on_batch``) at 54 discs' views per batch
   (``--tta-discs`` x 54 volumes), discs per second counting 54 views a disc.

for each branch point and precision policy (``float32``, ``mixed_bfloat16``). Each
figure is the median over ``--rounds`` timed windows of ``--steps`` calls, after
warm-up calls (compilation). The model code is backend-neutral Keras, so this
runs on a machine without TensorFlow with ``--backend jax``; the table names the
backend and the accelerator.

Prints a Markdown table and writes it to docs/benchmarks.md ("Model compute,
<backend> on <accelerator>, batch <batch>"); ``--json FILE`` also saves the rows,
and ``--from-json FILE`` writes the section from a file saved on another machine.

Run: .venv/bin/python -m tools.bench.model [--backend jax] [--width 1]
         [--branch-points conv5,none] [--batch 64] [--json FILE]
"""

import datetime
import json
import os
import time

from tools.bench import benchlib

PRECISIONS = ("float32", "mixed_bfloat16")


def accelerator(keras):
    """The first accelerator the Keras backend sees, in words ('CPU only' if none)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        devices = [d for d in jax.devices() if d.platform != "cpu"]
        return f"{len(devices)} x {devices[0].device_kind}" if devices else "CPU only"
    if backend == "tensorflow":
        import tensorflow as tf
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return f"{len(gpus)} x {details.get('device_name', 'GPU')}"
    return "CPU only"


def measure(branch_point, precision, args):
    """One row: parameters, train-step and forward throughput (discs/s)."""
    import keras
    import numpy as np

    from spine_tf import tasks
    from spine_tf.modeling import losses
    from spine_tf.modeling import metrics
    from spine_tf.modeling import model as model_lib

    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(precision)
    try:
        model = model_lib.build_model(width=args.width, branch_point=branch_point)
        # The optimizer's values do not change its cost; these are the paper's.
        model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9, weight_decay=5e-4),
                      loss=losses.losses(), loss_weights=losses.loss_weights(),
                      metrics=metrics.keras_metrics())
        rng = np.random.default_rng(0)
        shape = (args.batch,) + tuple(tasks.VOLUME_SHAPE)
        x = keras.ops.convert_to_tensor(rng.random(shape, np.float32))
        y = [keras.ops.convert_to_tensor(rng.integers(-1, t.num_classes, args.batch))
             for t in tasks.TASKS]
        w = [keras.ops.convert_to_tensor(rng.random(args.batch, np.float32) + 0.5)
             for _ in tasks.TASKS]
        views = args.tta_discs * 54  # tta.NUM_VIEWS; spine_tf.tta needs TensorFlow, this must not
        x_views = keras.ops.convert_to_tensor(
            rng.random((views,) + tuple(tasks.VOLUME_SHAPE), np.float32))

        def train():
            for _ in range(args.steps):
                losses_ = model.train_on_batch(x, y, sample_weight=w)
            return losses_  # a host value: the steps have finished

        def forward():
            for _ in range(args.steps):
                out = model.predict_on_batch(x_views)
            return out

        start = time.perf_counter()
        train()
        forward()
        warm_up = time.perf_counter() - start
        train_s, _ = benchlib.timed(train, args.rounds)
        forward_s, _ = benchlib.timed(forward, args.rounds)
        return {"branch_point": branch_point, "precision": precision,
                "parameters": model.count_params(), "batch": args.batch,
                "train_discs_per_s": args.batch * args.steps / train_s,
                "tta_views_per_batch": views,
                "tta_discs_per_s": args.tta_discs * args.steps / forward_s,
                "warm_up_s": warm_up}
    finally:
        keras.mixed_precision.set_global_policy("float32")


def body(result):
    rows = []
    float32 = {r["branch_point"]: r for r in result["rows"] if r["precision"] == "float32"}
    for r in result["rows"]:
        base = float32.get(r["branch_point"], r)
        ratio = r["train_discs_per_s"] / base["train_discs_per_s"]
        rows.append([r["branch_point"], r["precision"], f"{r['parameters']:,}",
                     f"{r['train_discs_per_s']:.0f} (x{ratio:.2f})",
                     f"{r['tta_discs_per_s']:.1f}",
                     f"{1000 / r['tta_discs_per_s']:.2f}", f"{r['warm_up_s']:.0f}"])
    return (f"Keras backend `{result['backend']}` ({result['versions']}) on "
            f"{result['accelerator']}; width {result['width']}; median of "
            f"{result['rounds']} windows of {result['steps']} calls; random resident data.\n\n"
            + ("" if result["backend"] == "tensorflow" else
               "The model code is backend-neutral Keras; where TensorFlow is missing (the "
               "lent GPU machine has none), another backend runs it, so these figures are "
               "the model's compute only, not the TensorFlow path (tf.data augmentation, "
               "TF's kernels, the SavedModel).\n\n")
            + benchlib.table(["branch point", "precision", "weights (with the 9-value mean)",
                              f"train step, discs/s at batch {result['rows'][0]['batch']} "
                              "(x float32)", "TTA forward, discs/s (54 views each)",
                              "TTA ms/disc", "warm-up s"], rows))


def parser():
    out = benchlib.argument_parser(__file__, __doc__)
    out.add_argument("--backend", help="KERAS_BACKEND to use (default: the environment's)")
    out.add_argument("--width", type=float, default=1.0)
    out.add_argument("--branch-points", default="conv5")
    out.add_argument("--precisions", default=",".join(PRECISIONS))
    out.add_argument("--batch", type=int, default=64)
    out.add_argument("--tta-discs", type=int, default=8)
    out.add_argument("--steps", type=int, default=10)
    out.add_argument("--rounds", type=int, default=5)
    out.add_argument("--json", help="also save the result here")
    out.add_argument("--from-json", help="write the docs section from a saved result")
    out.add_argument("--docs", default=benchlib.doc_path("benchmarks"))
    return out


def main(argv=None):
    args = parser().parse_args(argv)
    if args.from_json:
        with open(args.from_json, encoding="utf-8") as f:
            result = json.load(f)
    else:
        if args.backend:
            os.environ["KERAS_BACKEND"] = args.backend
        import keras
        backend = keras.backend.backend()
        module = __import__(backend)
        result = {"backend": backend, "accelerator": accelerator(keras),
                  "versions": f"keras {keras.__version__}, {backend} {module.__version__}",
                  "machine": benchlib.machine(), "date": datetime.date.today().isoformat(),
                  "width": args.width,
                  "steps": args.steps, "rounds": args.rounds,
                  "command": benchlib.reproduce_command(__file__, argv),
                  "rows": [measure(b, p, args) for b in args.branch_points.split(",")
                           for p in args.precisions.split(",")]}
        if args.json:
            tmp = args.json + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(result, f, indent=1)
            os.replace(tmp, args.json)
    precisions = sorted({r["precision"] for r in result["rows"]})
    name = (f"Model compute, {result['backend']} on {result['accelerator']}, "
            f"batch {result['rows'][0]['batch']}"
            + ("" if precisions == sorted(PRECISIONS) else f", {' and '.join(precisions)}"))
    benchlib.write_section(name, body(result), result["command"], path=args.docs,
                           measured=(result["date"], result["machine"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
