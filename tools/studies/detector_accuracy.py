"""How well the disc detector finds, names and orients discs, and how long it takes.

Two test sets:
- held-out phantom scans (cohort seed 0; the detector trains on seed 1000),
  truth from their label masks;
- the real sagittal slices in ../shared/data/real-lumbar-slices (disc and
  body masks, no pixel size: taken as 1 mm), truth from the masks, levels
  named upwards from the lowest annotated disc. The package's default
  detector was fine-tuned on them (all but 9.png), so for it they are a
  training-set check; ``tools.studies.detector_real_folds`` gives the held-out estimate,
  and ``--detector phantom`` scores the phantom-only detector, which never
  saw them.

A disc is found when a detected centre lies within 3 mm (in the sagittal
plane) of the true one. Writes the "Disc detection" section of
docs/results/detection.md and the detection time per scan ("Disc detection time") to
docs/benchmarks.md.

Run: .venv/bin/python -m tools.studies.detector_accuracy [--detector PATH] [--phantoms 40]
"""

import os
import time

import numpy as np

from spine_tf import detection, localisation
from spine_tf.detection import evaluate, inference
from spine_tf.io.scan import read_mask, read_scan, scan_from_array
from spine_tf.phantom.cohort import make_patient
from tools.bench import benchlib

DOC = "detection"  # the results document written (benchlib.DOCS); the timing: "benchmarks"
REAL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data",
                    "real-lumbar-slices")  # beside the repository
PHANTOM_SEED = 0
FIRST_PHANTOM = 900  # beyond the patients the tests and the demo use


def _run(detector, cases):
    """Matches, detection counts and per-scan rows for (name, scan, mask, spacing, convention)."""
    matches, detections, false, times, rows = [], 0, 0, [], []
    for name, scan, mask, spacing, convention in cases:
        start = time.perf_counter()
        located = detection.detect(scan, detector)
        times.append(time.perf_counter() - start)
        m, d, f = evaluate.match(located, mask, spacing, convention)
        matches += m
        detections += d
        false += f
        hits = [x for x in m if x.found]
        rows.append([name, len(m), sum(x.found for x in m), d, f,
                     sum(bool(x.level_correct) for x in hits), "; ".join(located.notes) or "-"])
    return evaluate.summarise(matches, detections, false), times, rows


def _phantom_cases(count):
    for index in range(FIRST_PHANTOM, FIRST_PHANTOM + count):
        patient = make_patient(PHANTOM_SEED, index)
        scan = scan_from_array(patient.image, patient.spacing_mm, patient.affine,
                               path=patient.patient_id)
        yield patient.patient_id, scan, patient.mask, patient.spacing_mm, localisation.SPIDER


def _real_cases():
    for n in range(10):
        scan = read_scan(os.path.join(REAL, f"{n}.png"))
        mask = read_mask(os.path.join(REAL, f"{n}.npy"), scan)
        if not (mask == 1).any():
            continue  # no annotation to score against
        yield f"{n}.png", scan, mask, scan.spacing_mm, localisation.BINARY


SUMMARY_COLUMNS = ["true discs", "detections", "recall (%)", "precision (%)",
                   "level named right (%)", "median distance (mm)", "median angle error (deg)",
                   "95th pct angle error (deg)"]
"""The columns of ``_summary_row`` after its name."""
SLICE_COLUMNS = ["slice", "true discs", "found", "detections", "false", "levels right",
                 "detector notes"]
"""The per-slice table of the real slices (``_run``'s rows)."""


def _summary_row(name, scores):
    return [name, scores["true_discs"], scores["detections"], f"{100 * scores['recall']:.1f}",
            f"{100 * scores['precision']:.1f}", f"{100 * scores['level_accuracy']:.1f}",
            f"{scores['distance_mm_median']:.2f}", f"{scores['angle_deg_median']:.1f}",
            f"{scores['angle_deg_p95']:.1f}"]


def parser():
    out = benchlib.argument_parser(__file__, __doc__)
    out.add_argument("--detector", help="a detector file or folder, or 'phantom' (the "
                     "package's phantom-only one); default: the package's default")
    out.add_argument("--phantoms", type=int, default=40)
    return out


def main(argv=None):
    args = parser().parse_args(argv)
    detector = detection.load(args.detector)
    phantom, phantom_times, _ = _run(detector, _phantom_cases(args.phantoms))
    real, real_times, real_rows = _run(detector, _real_cases())
    body = benchlib.table(
        ["test set"] + SUMMARY_COLUMNS,
        [_summary_row(f"phantom, {args.phantoms} held-out scans", phantom),
         _summary_row(f"real slices ({len(real_rows)} annotated)", real)])
    body += ("\n\nPer real slice (true discs: gradable discs of the annotation, both bodies in "
             "view; false: detections near no annotated disc):\n\n")
    body += benchlib.table(SLICE_COLUMNS, real_rows)
    source = {None: "the package's default detector (spine_tf/detection/weights/"
                    "detector.keras), fine-tuned on SPIDER's disc boxes and on these real "
                    "slices except 9.png: their row is a training-set check, not a held-out "
                    "measurement (that is \"Disc detection after training on real masks\", "
                    "for the detector fine-tuned on these slices alone)",
              "phantom": "the package's phantom-only detector (spine_tf/detection/weights/"
                         "detector_phantom.keras), which never saw a real scan"}.get(
                             args.detector, args.detector)
    sizes = inference.PIXEL_SEARCH_MM
    body += (f"\n\nDetector: {source}. A disc is found when a detected centre lies within "
             f"{evaluate.TOLERANCE_MM:g} mm of the true centre in the sagittal plane. Real "
             "slices record no pixel size: they are read without one and the detector tries "
             f"{sizes[0]:g}-{sizes[-1]:g} mm pixels, then the size its discs' spacing gives "
             "(spine_tf.detection.inference.detect; the notes say which it kept). "
             "They show the thoracic spine above T12-L1 (only six levels are "
             "named), and their level truth assumes the lowest annotated disc is L5-S1; a "
             "level is named right only where the detector found the sacrum.")
    section = "Disc detection" + {None: "", "phantom": ", phantom-only detector"}.get(
        args.detector, f", {args.detector}")
    command = benchlib.reproduce_command(__file__, argv)
    benchlib.write_section(section, body, command, doc=DOC)
    timing = benchlib.table(
        ["scans", "median s per scan", "max s per scan"],
        [[f"phantom ({args.phantoms}; 9-20 slices, up to 512 x 512)",
          f"{np.median(phantom_times):.2f}", f"{np.max(phantom_times):.2f}"],
         [f"real slices ({len(real_times)}; one 256 x 256 slice)",
          f"{np.median(real_times):.2f}", f"{np.max(real_times):.2f}"]])
    one, five, _ = os.getloadavg()
    timing += ("\n\nDetection alone (U-Net on every slice, post-processing, localisation), "
               "the detector already loaded; a real slice runs once per pixel size tried "
               f"({len(sizes)}, and once more at the size its discs' spacing gives). "
               f"Load average after the run: {one:.1f} (1 min), {five:.1f} (5 min) on 2 cores.")
    benchlib.write_section("Disc detection time", timing, command, doc="benchmarks")
    print(body)
    print(timing)


if __name__ == "__main__":
    main()
