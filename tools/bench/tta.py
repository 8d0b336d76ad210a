"""Benchmark of the 54-view test-time augmentation on the full-size model.

Side by side in one run, alternating round by round: the bare forward pass at
batch 54 (``predict_on_batch``: the work of one disc's 54 views) against
``spine_tf.tta.predict`` (views, forward, averaging in one compiled function)
per disc. Also: making the views alone, the plain single-view prediction.
Random weights and random volumes (speed does not depend on them). Prints a
Markdown table and writes it to docs/benchmarks.md ("Test-time augmentation").

Run: .venv/bin/python -m tools.bench.tta [--discs 4] [--rounds 5]
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from spine_tf import augment, tta  # noqa: E402
from spine_tf.modeling.model import build_model  # noqa: E402
from tools.bench import benchlib  # noqa: E402


def parser():
    out = benchlib.argument_parser(__file__, __doc__)
    out.add_argument("--discs", type=int, default=4, help="discs per timed run")
    out.add_argument("--rounds", type=int, default=5, help="timed runs of each (median)")
    return out


def main(argv=None):
    args = parser().parse_args(argv)
    n = args.discs
    model = build_model()  # 182,765,777 parameters, random weights
    rng = np.random.default_rng(0)
    discs = rng.random((n, 112, 224, 9), dtype=np.float32)
    batch54 = rng.random((tta.NUM_VIEWS, 112, 224, 9), dtype=np.float32)
    spec = tf.TensorSpec((None, 112, 224, 9), tf.float32)
    gathered = tf.function(tta.views, input_signature=[spec])
    warped = tf.function(lambda v: augment.apply(
        tf.repeat(v, tta.NUM_VIEWS, axis=0), tta.view_draws(tf.shape(v)[0]), intensity=False),
        input_signature=[spec])

    forward = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    resident = tf.constant(batch54)

    def bare():
        for _ in range(n):
            model.predict_on_batch(batch54)

    def bare_compiled():
        for _ in range(n):
            [o.numpy() for o in forward(resident)]

    measures = {
        "bare": bare,
        "bare_compiled": bare_compiled,
        "tta": lambda: tta.predict(model, discs, tta=True),
        "tta2": lambda: tta.predict(model, discs, tta=True, discs_per_batch=2),
    }
    ms = {key: seconds / n * 1e3
          for key, seconds in benchlib.alternated(measures, args.rounds).items()}
    strict = 100 * ms["bare_compiled"] / ms["tta"]

    one = discs[:1]
    views_ms = {}
    for key, function in (("gathered", gathered), ("warped", warped)):
        function(one)
        views_ms[key] = benchlib.timed(lambda: function(one), 2 * args.rounds)[0] * 1e3
    plain_batch = rng.random((tta.PLAIN_BATCH, 112, 224, 9), dtype=np.float32)
    tta.predict(model, plain_batch, tta=False)
    plain = benchlib.timed(lambda: tta.predict(model, plain_batch, tta=False),
                           args.rounds)[0] / tta.PLAIN_BATCH * 1e3

    rows = [
        ("bare forward, batch 54 (predict_on_batch)", f"{ms['bare']:.0f} ms/disc",
         "54 views' worth of forward work; numpy in and out", "100 %"),
        ("bare forward, batch 54, compiled `model(x)` on a tensor", f"{ms['bare_compiled']:.0f} "
         "ms/disc", "no numpy conversion of the 48 MB batch",
         f"{100 * ms['bare'] / ms['bare_compiled']:.1f} %"),
        ("`tta.predict`, 1 disc (54 views) per batch", f"{ms['tta']:.0f} ms/disc",
         "views + forward + softmax average", f"{100 * ms['bare'] / ms['tta']:.1f} %"),
        ("`tta.predict`, 2 discs (108 views) per batch", f"{ms['tta2']:.0f} ms/disc", "",
         f"{100 * ms['bare'] / ms['tta2']:.1f} %"),
        ("making the 54 views alone (`tta.views`, gathers)", f"{views_ms['gathered']:.1f} ms/disc",
         "compiled", ""),
        ("the same views by `augment.apply` on 54 copies", f"{views_ms['warped']:.1f} ms/disc",
         "compiled; identical output", ""),
        ("`tta.predict(tta=False)`, batch 64", f"{plain:.1f} ms/disc", "single view", ""),
    ]
    body = (benchlib.table(("what", "median", "notes", "throughput vs bare forward"), rows)
            + f"\n\nFull-size model (182,765,777 parameters), random weights; {n} discs per "
            f"timed run, median of {args.rounds} runs, the first four rows alternated round "
            "by round after a warm-up. Target: TTA at >= 90 % of the bare forward throughput; "
            f"against the compiled forward on a resident tensor it runs at {strict:.1f} %.")
    benchlib.write_section("Test-time augmentation", body,
                           benchlib.reproduce_command(__file__, argv))


if __name__ == "__main__":
    main()
