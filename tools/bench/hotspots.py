"""Benchmark of evidence hotspots (spine_tf.hotspots) on the full-size model.

Side by side in one run, alternating round by round: the 150-augmentation
hotspot of one task of one disc, batched (chunks of ``hotspots.CHUNK`` copies
through one compiled GradientTape function) and as a per-augmentation loop
(the same compiled function one copy at a time); all six tasks of one disc
from the same copies (one forward pass per chunk, six backward passes).
Also: the plain single-pass map through tf-keras-vis. Random weights and
volumes (speed does not depend on them). The machine's load average is
recorded before and after, since others may be using its cores. Prints a
Markdown table and writes it to docs/benchmarks.md ("Evidence hotspots").

Run: .venv/bin/python -m tools.bench.hotspots [--rounds 3]
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from spine_tf import hotspots, tasks  # noqa: E402
from spine_tf.modeling.model import build_model  # noqa: E402
from tools.bench import benchlib  # noqa: E402


def _load():
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (1 min), {five:.1f} (5 min)"


def _breakdown(model, disc, n, rounds, task_index):
    """Where the batched hotspot's time goes: the parts of one chunk, over ``n`` copies."""
    import tensorflow as tf
    from spine_tf import augment
    chunk = min(hotspots.CHUNK, n)
    copies = tf.constant(np.repeat(disc, chunk, axis=0))
    draws = augment.draw(chunk, (0, 1))

    def gradient(volumes):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(volumes)
            score = tf.reduce_sum(model(volumes, training=False)[task_index][:, 0])
        return tape.gradient(score, volumes)

    parts = {
        "forward": tf.function(lambda v: model(v, training=False)[task_index]),
        "warps": tf.function(lambda v: augment.invert(augment.apply(v, draws), draws)),
        "gradient": tf.function(gradient),
        "gradient_xla": tf.function(gradient, jit_compile=True),
    }
    calls = -(-n // chunk)
    measures = {k: (lambda f=f: [np.asarray(f(copies)) for _ in range(calls)])
                for k, f in parts.items()}
    return benchlib.alternated(measures, rounds)


def parser():
    out = benchlib.argument_parser(__file__, __doc__)
    out.add_argument("--rounds", type=int, default=3, help="timed runs of each (median)")
    out.add_argument("--augmentations", type=int, default=hotspots.AUGMENTATIONS)
    return out


def main(argv=None):
    args = parser().parse_args(argv)
    n = args.augmentations
    load_before = _load()
    model = build_model()  # 182,765,777 parameters, random weights
    disc = np.random.default_rng(0).random((1, 112, 224, 9), dtype=np.float32)
    batched = hotspots.Hotspots(model)
    looped = hotspots.Hotspots(model, chunk=1)
    task = "endplate_upper"
    measures = {
        "batched": lambda: batched(task, disc, augmentations=n),
        "loop": lambda: looped(task, disc, augmentations=n),
        "six": lambda: batched.explain(disc, augmentations=n),
    }
    s = benchlib.alternated(measures, args.rounds)
    # batch 1 and batch 50 take other oneDNN kernels: float32 sums differ by ~1e-3
    np.testing.assert_allclose(measures["batched"](), measures["loop"](), atol=5e-3)
    hotspots.plain_saliency(model, task, disc)
    plain = benchlib.timed(lambda: hotspots.plain_saliency(model, task, disc), args.rounds)[0]
    parts = _breakdown(model, disc, n, args.rounds, tasks.TASK_NAMES.index(task))
    load_after = _load()

    rows = [
        (f"hotspot, 1 task, 1 disc, {n} augmentations, batched (chunks of {hotspots.CHUNK})",
         f"{s['batched']:.2f} s", f"{1e3 * s['batched'] / n:.1f} ms", "<= 4 s",
         "yes" if s["batched"] <= 4 else "no"),
        ("the same as a per-augmentation loop (1 copy per call)", f"{s['loop']:.2f} s",
         f"{1e3 * s['loop'] / n:.1f} ms", ">= 5x slower than batched",
         f"{s['loop'] / s['batched']:.1f}x"),
        (f"hotspots of all {len(tasks.TASKS)} tasks, 1 disc, same {n} copies",
         f"{s['six']:.2f} s", f"{1e3 * s['six'] / n:.1f} ms", "<= 20 s",
         "yes" if s["six"] <= 20 else "no"),
        ("plain Simonyan map (tf-keras-vis Saliency, 1 pass, eager)", f"{plain:.2f} s", "",
         "baseline", ""),
    ]
    body = (benchlib.table(("what", "median", "per copy", "target", "met"), rows)
            + f"\n\nFull-size model (182,765,777 parameters, branch conv5), random weights; "
            f"median of {args.rounds} runs, the first three rows alternated round by round "
            "after a warm-up; batched and looped maps checked equal (to 5e-3: other oneDNN "
            "kernels at batch 1). Load average of the "
            f"machine (2 cores) before: {load_before}; after: {load_after}. A load near or "
            "above 2 means another job was using the cores during the run, and absolute "
            "times are then slower than on an idle machine; the batched/loop ratio is "
            "measured side by side.")
    breakdown = [
        ("forward pass only", parts["forward"]),
        ("augmentation warp and its inverse", parts["warps"]),
        ("forward + input gradient (no augmentation)", parts["gradient"]),
        ("forward + input gradient, XLA (`jit_compile=True`)", parts["gradient_xla"]),
    ]
    body += (f"\n\nWhere the batched time goes ({n} copies in chunks of {hotspots.CHUNK}, "
             "each part alone, alternated):\n\n"
             + benchlib.table(("part", "median", "share of the batched hotspot"),
                              [(name, f"{t:.2f} s", f"{100 * t / s['batched']:.0f} %")
                               for name, t in breakdown]))
    benchlib.write_section("Evidence hotspots", body, benchlib.reproduce_command(__file__, argv))


if __name__ == "__main__":
    main()
