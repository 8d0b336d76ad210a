"""Benchmarks of the data foundation: phantom generation, scan reading, localisation +
extraction per disc, dataset build per patient.

Prints a table and writes it to docs/benchmarks.md ("Data foundation").

Run: tools/bench_data [--patients 8] (or .venv/bin/python -m tools.bench.data)
"""

import os
import shutil
import statistics
import tempfile
import time

from spine_tf import extraction, localisation, phantom
from spine_tf.io import landmarks as landmarks_io
from spine_tf.io import read_mask, read_scan
from tools.bench import benchlib


def parser():
    out = benchlib.argument_parser(__file__, __doc__)
    out.add_argument("--patients", type=int, default=8, help="cohort size per measurement")
    return out


def main(argv=None):
    args = parser().parse_args(argv)
    n = args.patients
    rows = []
    work = tempfile.mkdtemp(prefix="bench_data_")
    try:
        # Phantom generation, written to disk, one worker vs all cores, side by side.
        per_patient = {}
        for workers in (1, os.cpu_count()):
            out = os.path.join(work, f"cohort_w{workers}")
            start = time.perf_counter()
            phantom.write_cohort(out, n, seed=11, workers=workers)
            per_patient[workers] = (time.perf_counter() - start) / n
            rows.append((f"phantom generation + NIfTI writing, {workers} worker(s)",
                         f"{per_patient[workers]:.2f} s/patient",
                         f"{1 / per_patient[workers]:.2f} patients/s"))
        rows.append(("  speed-up of all cores over one", "",
                     f"{per_patient[1] / per_patient[os.cpu_count()]:.2f}x"))

        cohort = os.path.join(work, "cohort_w1")
        ids = sorted(f[: -len(".nii.gz")] for f in os.listdir(os.path.join(cohort, "scans")))
        read_s, mask_s, landmark_s, extract_s, discs = [], [], [], [], 0
        for pid in ids:
            path = os.path.join(cohort, "scans", f"{pid}.nii.gz")
            seconds, scan = benchlib.timed(lambda: read_scan(path), 3)
            read_s.append(seconds)
            mask = read_mask(os.path.join(cohort, "masks", f"{pid}.nii.gz"), scan)
            seconds, located = benchlib.timed(
                lambda: localisation.from_mask(mask, scan.spacing_mm), 3)
            mask_s.append(seconds)
            marks = landmarks_io.read_landmarks(os.path.join(cohort, "landmarks", f"{pid}.json"))
            seconds, _ = benchlib.timed(lambda: localisation.from_landmarks(marks, scan), 3)
            landmark_s.append(seconds)
            for disc in located.discs:
                seconds, _ = benchlib.timed(
                    lambda: extraction.extract_disc(scan.image, scan.spacing_mm, disc), 3)
                extract_s.append(seconds)
                discs += 1
        rows.append(("read one scan (NIfTI .nii.gz, reorient)",
                     f"{statistics.median(read_s) * 1e3:.0f} ms/scan", f"{len(ids)} scans"))
        rows.append(("localise from a label mask",
                     f"{statistics.median(mask_s) * 1e3:.0f} ms/scan", ""))
        rows.append(("localise from landmarks",
                     f"{statistics.median(landmark_s) * 1e3:.2f} ms/scan", ""))
        rows.append(("extract + normalise one disc volume",
                     f"{statistics.median(extract_s) * 1e3:.1f} ms/disc", f"{discs} discs"))

        from spine_tf.data import spine_discs
        for workers in (1, os.cpu_count()):
            builder = spine_discs.builder(spine_discs.phantom_config(n, seed=12),
                                          data_dir=os.path.join(work, f"tfds{workers}"),
                                          workers=workers)
            start = time.perf_counter()
            builder.download_and_prepare()
            seconds = (time.perf_counter() - start) / n
            examples = sum(s.num_examples for s in builder.info.splits.values())
            rows.append((f"build spine_discs (phantom source), {workers} worker(s)",
                         f"{seconds:.2f} s/patient", f"{examples} discs from {n} patients"))
        stored = sum(os.path.getsize(os.path.join(builder.data_dir, f))
                     for f in os.listdir(builder.data_dir) if ".tfrecord" in f)
        rows.append(("stored size per disc (uint16)",
                     f"{stored / 1e6 / max(examples, 1):.2f} MB", "float32 would be 0.90 MB"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    body = benchlib.table(("what", "median", "notes"), rows)
    benchlib.write_section("Data foundation", body,
                           benchlib.reproduce_command(__file__, ["--patients", str(n)]))


if __name__ == "__main__":
    main()
