"""The disc detector on 3D-like scans: the whole volume against the mid-sagittal slab.

Phantoms with 1 mm slices over 90 mm left to right (a 3D acquisition's sagittal
reconstruction: most slices lateral to the spine), with extra white noise of 0, 1 and 2
times 8 % of the image's 99th percentile (thin slices are noisier than thick ones).
The network runs once per scan; its outputs are then read two ways, side by side:

- whole volume: disc candidates are 3D regions of the whole volume (what
  ``spine_tf.detection.inference`` does for slices thicker than ``THIN_SLICE_MM``);
- mid-sagittal slab: the mean outputs over the slices within ``SLAB_MM`` of the
  mid-sagittal plane (what it does for thin slices).

Scored against the phantoms' masks with ``detection.evaluate`` (a disc found within 3 mm).
Phantoms of cohort seed 3 (the tests use seed 7; the detector trains on seed 1000).

Run: .venv/bin/python -m tools.studies.thin_slices [--phantoms 8] [--section NAME]
"""

import numpy as np

from spine_tf import detection, localisation
from spine_tf.detection import evaluate, inference
from spine_tf.io import scan_from_array
from spine_tf.phantom import PhantomConfig, make_patient
from tools.bench import benchlib

DOC = "detection"
SEED = 3
THIN = PhantomConfig(slice_thickness_mm=1.0, lateral_coverage_mm=90.0, cutoff_fraction=0.0)
NOISE = (0.0, 1.0, 2.0)
NOISE_FRACTION = 0.08


def _outputs(detector, patient, noise, rng):
    image = patient.image.astype(np.float32)
    image += (noise * NOISE_FRACTION * float(np.percentile(image, 99))
              * rng.standard_normal(image.shape).astype(np.float32))
    scan = scan_from_array(np.clip(image, 0.0, None), patient.spacing_mm, patient.affine,
                           path=patient.patient_id)
    return inference.segment(scan, detector)


def parser():
    out = benchlib.argument_parser(__file__, __doc__)
    out.add_argument("--phantoms", type=int, default=8)
    benchlib.add_section_option(out, DOC)
    return out


def main(argv=None):
    args = parser().parse_args(argv)
    detector = detection.load()
    results = {(noise, way): ([], 0, 0) for noise in NOISE for way in (True, False)}
    rng = np.random.default_rng(0)
    for index in range(args.phantoms):
        patient = make_patient(SEED, index, THIN)
        for noise in NOISE:
            outputs = _outputs(detector, patient, noise, rng)
            for whole in (True, False):
                located = inference.from_outputs(*outputs, patient.spacing_mm, thin=not whole)
                m, d, f = evaluate.match(located, patient.mask, patient.spacing_mm,
                                         localisation.SPIDER)
                matches, detections, false = results[noise, whole]
                results[noise, whole] = (matches + m, detections + d, false + f)
    rows = []
    for noise in NOISE:
        for whole in (True, False):
            scores = evaluate.summarise(*results[noise, whole])
            rows.append([f"{noise:g}", "whole volume" if whole else "mid-sagittal slab",
                         scores["true_discs"], scores["detections"],
                         f"{100 * scores['recall']:.1f}", f"{100 * scores['precision']:.1f}",
                         f"{100 * scores['level_accuracy']:.1f}",
                         f"{scores['distance_mm_median']:.2f}"])
    body = benchlib.table(["extra noise", "read on", "true discs", "detections", "recall (%)",
                           "precision (%)", "level named right (%)", "median distance (mm)"],
                          rows)
    body += (f"\n\n{args.phantoms} phantoms (cohort seed {SEED}), 1 mm slices over 90 mm, "
             f"extra white noise of the given multiple of {100 * NOISE_FRACTION:g} % of the "
             "image's 99th percentile; one network pass per scan, read both ways. The "
             f"mid-sagittal slab is the mean output over the slices within "
             f"{inference.SLAB_MM:g} mm of the mid-sagittal slice; spine-tf uses it for "
             f"slices of at most {inference.THIN_SLICE_MM:g} mm. The package's default "
             "detector.")
    benchlib.publish(body, args.section, __file__, argv, DOC)


if __name__ == "__main__":
    main()
