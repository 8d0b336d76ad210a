"""Benchmark of training throughput on the full-size model (see tools/bench_train).

Side by side in one run, alternating round by round so that load from others
hits all alike:

1. the bare train step: ``model.fit`` on one resident batch
   (``Dataset.from_tensors(batch).repeat()``: no input work at all);
2. ``model.fit`` on the real input pipeline
   (``input_pipeline.training_dataset`` on a phantom ``spine_discs`` split:
   decode, cache, shuffle, batch, augmentation, sample weights, prefetch);
3. the input pipeline alone (iterated, no model).

Both fits run the same compiled model (``train.build_compiled_model``, full
size: width 1, branch after conv5) on the same element structure (volumes,
labels, sample weights); the resident batch is the pipeline's first batch.
Each timed window starts after warm-up steps (tracing, filling the cache) and
covers whole epochs of the split, which is cut to a multiple of the batch
size so that every batch is full. Throughput of a window is discs / wall
seconds; the table gives the median over the rounds. Peak memory is the
highest resident set size (sampled every 20 ms) while training. Optionally
(``--jit``) the XLA-compiled train step against the default one.

Prints a Markdown table and writes it to docs/benchmarks.md ("Training
throughput").

Run: tools/bench_train [--batch 64] [--rounds 3] [--epochs 2] [--jit] [--dry-run]
(or .venv/bin/python -m tools.bench.train ...)
"""

import dataclasses
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from spine_tf import config as config_lib  # noqa: E402
from spine_tf.training import input_pipeline  # noqa: E402
from spine_tf.training import train  # noqa: E402
from spine_tf.data import spine_discs  # noqa: E402
from tools.bench import benchlib  # noqa: E402


class PeakRSS:
    """Highest resident set size of this process while active (a 20 ms sampler thread)."""

    def __init__(self, interval=0.02):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = None

    @staticmethod
    def now():
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.now())

    def __enter__(self):
        self.peak = self.now()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def machine_busy_seconds():
    """CPU seconds all processes have spent busy since boot (/proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class OthersLoad:
    """Average cores kept busy by other processes while active (machine busy - this process)."""

    def __enter__(self):
        self._start = (time.perf_counter(), time.process_time(), machine_busy_seconds())
        return self

    def __exit__(self, *exc):
        wall, cpu, busy = self._start
        now = machine_busy_seconds()
        wall = time.perf_counter() - wall
        self.cores = None if busy is None or now is None else max(
            0.0, (now - busy - (time.process_time() - cpu)) / wall)


class StepClock(keras.callbacks.Callback):
    """Wall and process CPU time at the end of every train step (data wait included)."""

    def on_train_begin(self, logs=None):
        self.ends = [(time.perf_counter(), time.process_time())]

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append((time.perf_counter(), time.process_time()))


_T0 = time.perf_counter()


def log(message):
    """Progress on stderr, with the seconds since the start."""
    print(f"[{time.perf_counter() - _T0:4.0f} s] {message}", file=sys.stderr, flush=True)


def fit_throughput(model, data, warmup, steps, batch):
    """(discs/s, busy cores) of ``model.fit`` over ``steps`` steps after ``warmup`` untimed ones."""
    clock = StepClock()
    model.fit(data, epochs=1, steps_per_epoch=warmup + steps, callbacks=[clock], verbose=0)
    (wall0, cpu0), (wall1, cpu1) = clock.ends[warmup], clock.ends[-1]
    steps_s = " ".join(f"{b[0] - a[0]:.1f}" for a, b in zip(clock.ends, clock.ends[1:]))
    log(f"  fit: steps {steps_s} s; {time.perf_counter() - wall1:.1f} s after the last")
    return batch * steps / (wall1 - wall0), (cpu1 - cpu0) / (wall1 - wall0)


def pipeline_throughput(data, warmup, steps, batch):
    """(discs/s, CPU seconds per batch) of iterating the input pipeline alone."""
    iterator = iter(data)
    for _ in range(warmup):
        next(iterator)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        next(iterator)
    return batch * steps / (time.perf_counter() - wall), (time.process_time() - cpu) / steps


def phantom_split(patients, seed, batch, work):
    """The training split of a phantom spine_discs build, cut to whole batches."""
    builder = spine_discs.builder(spine_discs.phantom_config(patients, seed=seed),
                                  data_dir=os.path.join(work, "tfds"), workers=os.cpu_count())
    start = time.perf_counter()
    builder.download_and_prepare()
    build_s = time.perf_counter() - start
    split = builder.as_dataset(split="train")
    available = int(split.cardinality())
    use = available // batch * batch
    if not use:
        raise SystemExit(f"the training split holds {available} discs, fewer than one batch "
                         f"of {batch}: raise --patients")
    return split.take(use), use, available, build_s


def measure_rounds(model, bare, pipeline, rounds, per_epoch, steps, bare_steps, batch):
    """Rounds of 1 (bare), 2 (fit on the pipeline), 3 (the pipeline alone), alternating.

    Returns:
        (medians {variant: discs/s}, medians {variant: busy cores, or CPU s per
        batch for the pipeline}, peak RSS {bare, fit}, cores other processes used).
    """
    seen = {"bare": [], "fit": [], "pipeline": []}
    peaks = {"bare": 0, "fit": 0}
    with OthersLoad() as others:
        for n in range(rounds):
            log(f"round {n + 1} of {rounds}")
            with PeakRSS() as peak:
                seen["bare"].append(fit_throughput(model, bare, 1, bare_steps, batch))
            peaks["bare"] = max(peaks["bare"], peak.peak)
            with PeakRSS() as peak:  # warm-up: one epoch fills this iterator's cache
                seen["fit"].append(fit_throughput(model, pipeline, per_epoch, steps, batch))
            peaks["fit"] = max(peaks["fit"], peak.peak)
            seen["pipeline"].append(
                pipeline_throughput(pipeline, per_epoch, max(4, 2 * steps), batch))
            log("  discs/s and busy cores (pipeline: CPU s per batch): " + ", ".join(
                f"{key} {v[-1][0]:.1f} {v[-1][1]:.2f}" for key, v in seen.items()))
    rate = {key: statistics.median(v[0] for v in values) for key, values in seen.items()}
    busy = {key: statistics.median(v[1] for v in values) for key, values in seen.items()}
    return rate, busy, peaks, others.cores


def measure_jit(model, config, channel_mean, bare, rounds, steps, batch):
    """Bare train step of ``model`` and of its jit_compile=True twin, alternating.

    Returns:
        (medians {default, jit} in discs/s, seconds of the XLA model's first step).
    """
    log("XLA: building the model, compiling the jit_compile=True train step")
    jit_config = dataclasses.replace(
        config, train=dataclasses.replace(config.train, jit_compile=True))
    jit_model = train.build_compiled_model(jit_config, channel_mean)
    start = time.perf_counter()
    fit_throughput(jit_model, bare, 1, 1, batch)
    compile_s = time.perf_counter() - start
    both = {"default": [], "jit": []}
    for n in range(rounds):
        log(f"XLA round {n + 1} of {rounds}")
        both["default"].append(fit_throughput(model, bare, 1, steps, batch)[0])
        both["jit"].append(fit_throughput(jit_model, bare, 1, steps, batch)[0])
    return {key: statistics.median(values) for key, values in both.items()}, compile_s


def parser():
    out = benchlib.argument_parser(__file__, __doc__)
    out.add_argument("--batch", type=int, default=64, help="discs per batch")
    out.add_argument("--patients", type=int, default=28, help="phantom cohort size")
    out.add_argument("--seed", type=int, default=5, help="phantom cohort seed")
    out.add_argument("--rounds", type=int, default=3, help="timed rounds (median)")
    out.add_argument("--epochs", type=int, default=2,
                     help="epochs of the split per timed window (fit with the pipeline)")
    out.add_argument("--bare-steps", type=int, default=0,
                     help="timed bare steps per round (default: as many as with the pipeline)")
    out.add_argument("--jit", action="store_true",
                     help="also time the train step with jit_compile=True (XLA)")
    out.add_argument("--jit-steps", type=int, default=2,
                     help="timed steps per round of each, with --jit")
    out.add_argument("--width", type=float, default=1.0,
                     help="model width (1: the full model; smaller only to try the script)")
    out.add_argument("--dry-run", action="store_true",
                     help="print the table without writing docs/benchmarks.md")
    return out


def reproduce(args):
    """The command that repeats a run with ``args``: the options that differ from the
    defaults, then --jit (--dry-run left out)."""
    defaults = parser()
    argv = []
    for name, value in vars(args).items():
        if name not in ("jit", "dry_run") and value != defaults.get_default(name):
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return benchlib.reproduce_command(__file__, argv + (["--jit"] if args.jit else []))


def main(argv=None):
    args = parser().parse_args(argv)
    batch = args.batch
    work = tempfile.mkdtemp(prefix="bench_train_")
    try:
        log(f"building a phantom spine_discs dataset of {args.patients} patients")
        split, discs, available, build_s = phantom_split(args.patients, args.seed, batch, work)
        per_epoch = discs // batch
        steps = per_epoch * args.epochs
        bare_steps = args.bare_steps or steps
        class_weights, channel_mean = input_pipeline.training_statistics(split)
        config = config_lib.ExperimentConfig(
            model=config_lib.ModelConfig(width=args.width),
            pipeline=input_pipeline.PipelineConfig(batch_size=batch))
        pipeline = input_pipeline.training_dataset(split, class_weights, config.pipeline)
        resident = tuple(next(iter(pipeline)))  # the first real batch, kept in memory
        # Nothing to tune there; and tf.data's autotuning thread can hold up the
        # deletion of a model.fit iterator for up to its current period (seconds).
        untuned = tf.data.Options()
        untuned.autotune.enabled = False
        bare = tf.data.Dataset.from_tensors(resident).repeat().with_options(untuned)

        log("building the model; tracing the train step")
        model = train.build_compiled_model(config, channel_mean)
        parameters = model.count_params()
        with PeakRSS() as tracing:  # the pipeline's variant (batch dim None) first
            start = time.perf_counter()
            fit_throughput(model, pipeline, per_epoch, 1, batch)
            fit_throughput(model, bare, 1, 1, batch)
            warmup_s = time.perf_counter() - start
        rate, busy, peaks, others = measure_rounds(model, bare, pipeline, args.rounds, per_epoch,
                                                   steps, bare_steps, batch)
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        jit = measure_jit(model, config, channel_mean, bare, args.rounds, args.jit_steps,
                          batch) if args.jit else None
        log("done")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def gb(n):
        return f"{n / 2**30:.2f} GB"

    rows = [
        ("1. bare train step (`model.fit` on one resident batch)", f"{rate['bare']:.1f} discs/s",
         "100 %", f"{bare_steps} steps/round; {busy['bare']:.2f} cores busy"),
        ("2. `model.fit` on `training_dataset`", f"{rate['fit']:.1f} discs/s",
         f"{100 * rate['fit'] / rate['bare']:.1f} %",
         f"{steps} steps/round after a warm-up epoch; {busy['fit']:.2f} cores busy; "
         "target >= 90 %"),
        ("3. `training_dataset` alone (no model)", f"{rate['pipeline']:.0f} discs/s",
         f"{rate['pipeline'] / rate['bare']:.1f}x",
         f"{busy['pipeline'] * 1e3:.0f} ms CPU per batch of {batch}; target >= 3x"),
        ("4. peak RSS, bare train step", gb(peaks["bare"]), "",
         f"whole process (model, optimizer, data); tracing peaked at {gb(tracing.peak)}"),
        ("   peak RSS, `model.fit` on `training_dataset`", gb(peaks["fit"]), "",
         f"ru_maxrss (before any XLA model) {gb(maxrss)}"),
    ]
    if jit:
        rates, compile_s = jit
        rows.append(("5. bare train step, default (again, beside XLA)",
                     f"{rates['default']:.1f} discs/s", "100 %",
                     f"{args.jit_steps} steps/round"))
        rows.append(("   bare train step, `jit_compile=True`", f"{rates['jit']:.1f} discs/s",
                     f"{100 * rates['jit'] / rates['default']:.1f} %",
                     f"first step (XLA compilation) {compile_s:.0f} s"))
    body = benchlib.table(("what", "throughput", "vs bare step", "notes"), rows)
    size = "Full-size model" if args.width == 1 else f"Model of width {args.width}"
    body += (f"\n\n{size} ({parameters:,} parameters, branch after conv5), batch {batch}, "
             f"random weights, default `PipelineConfig` (cache, whole-split shuffle, the "
             f"paper's augmentation). Phantom spine_discs split of {args.patients} patients "
             f"(seed {args.seed}): {discs} of its {available} training discs (whole batches), "
             f"{per_epoch} step(s) per epoch; built in {build_s:.0f} s. Medians of "
             f"{args.rounds} rounds alternating 1, 2, 3"
             f"{' (then 5: default, XLA)' if jit else ''}; tracing and warm-up took "
             f"{warmup_s:.0f} s, the whole run {time.perf_counter() - _T0:.0f} s.")
    if others is not None:
        body += (f" Other processes kept {others:.2f} of the {os.cpu_count()} cores busy on "
                 "average during the rounds of 1-3.")
    if args.dry_run:
        print(body)
    else:
        benchlib.write_section("Training throughput", body, reproduce(args))


if __name__ == "__main__":
    main()
