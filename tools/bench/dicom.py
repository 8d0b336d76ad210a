"""Benchmark of DICOM input and output against NIfTI, side by side in one run.

A phantom patient (cohort seed 5, index 1; 20 slices of 329 x 329) as a NIfTI file and as
a four-series DICOM study (``spine_tf.phantom.dicom``, flat layout: the slowest to sort):

- reading: ``read_scan`` of the NIfTI file against the study folder (every header read
  with pydicom, the sagittal T2 chosen, its slices read by GDCM);
- writing the results of its discs (landmarks; the shipped model's task set, 8 tasks,
  random grades, hotspots as sparse as real ones: a blob at each disc): the hotspots as one
  NIfTI file against the DICOM results (``app.dicom_results``: a Parametric Map per task
  and the TID 1500 report).

Medians of alternated rounds. Prints a Markdown table and writes it to docs/benchmarks.md
("DICOM input and output").

Run: .venv/bin/python -m tools.bench.dicom [--rounds 5]
"""

import os
import shutil
import tempfile
import time

import nibabel as nib
import numpy as np

from spine_tf import tasks
from spine_tf.app import dicom_results, scans
from spine_tf.io import landmarks as landmarks_io
from spine_tf.io.scan import read_scan, save_nifti
from spine_tf.phantom import make_patient
from spine_tf.phantom.dicom import write_study
from tools.bench import benchlib


def parser():
    out = benchlib.argument_parser(__file__, __doc__)
    out.add_argument("--rounds", type=int, default=5)
    return out


def _record(scan, located, volumes, task_set, rng):
    by_level = {d.level: d for d in located.discs}
    discs = []
    for volume in volumes:
        disc = by_level[volume.level]
        graded = {}
        for task in task_set.tasks:
            p = rng.dirichlet(np.ones(task.num_classes))
            grade = int(np.argmax(p))
            graded[task.name] = {"grade": grade, "class_name": task.class_names[grade],
                                 "probability": float(p[grade]),
                                 "probabilities": [float(v) for v in p]}
        discs.append({"level": volume.level, "centre_voxel": [float(v) for v in disc.centre],
                      "height_mm": float(disc.height_mm), "confidence": 1.0, "flagged": False,
                      "tasks": graded})
    return {"series": {k: v for k, v in scan.series.items() if k != "files"},
            "model": "benchmark (random grades)", "task_set": task_set.name, "discs": discs,
            "not_graded": []}


def _hotspots(scan, record, count):
    """Hotspots as sparse as real ones: a blob (sigma 3 voxels) at each disc centre, a
    different height per task, zero elsewhere."""
    grid = np.indices(scan.shape, dtype=np.float32)
    maps = np.zeros(scan.shape + (count,), np.float32)
    for disc in record["discs"]:
        d2 = sum((g - c) ** 2 for g, c in zip(grid, disc["centre_voxel"]))
        blob = np.exp(-d2 / (2 * 3.0 ** 2))
        for k in range(count):
            maps[..., k] = np.maximum(maps[..., k], blob * (k + 1) / count)
    maps[maps < 1e-3] = 0.0
    return maps


def main(argv=None):
    args = parser().parse_args(argv)
    work = tempfile.mkdtemp(prefix="bench_dicom_")
    start = time.perf_counter()
    patient = make_patient(5, 1)
    nifti = os.path.join(work, "scan.nii.gz")
    nib.save(nib.Nifti1Image(patient.image, patient.affine), nifti)
    study = write_study(patient, os.path.join(work, "study"), layout="flat")
    landmarks = os.path.join(work, "landmarks.json")
    landmarks_io.write_landmarks(landmarks, patient.landmarks)
    scan, located, volumes, _ = scans.extract_scan(
        scans.ScanJob("study", study.folder, landmarks=landmarks))
    task_set = tasks.task_set("spider")
    rng = np.random.default_rng(0)
    record = _record(scan, located, volumes, task_set, rng)
    hotspots = _hotspots(scan, record, len(task_set.tasks))
    out = os.path.join(work, "out")

    def write_dicom():
        shutil.rmtree(out, ignore_errors=True)
        return dicom_results.write_dicom_results(record, scan, hotspots, out)

    read = benchlib.alternated({"nifti": lambda: read_scan(nifti),
                                "dicom": lambda: read_scan(study.folder)}, args.rounds)
    write = benchlib.alternated(
        {"nifti": lambda: save_nifti(hotspots, os.path.join(work, "hotspots.nii.gz"), scan,
                                     dtype=np.float32),
         "dicom": write_dicom}, args.rounds)
    files = write_dicom()
    size = sum(os.path.getsize(f) for f in files) / 1e6
    nifti_size = os.path.getsize(os.path.join(work, "hotspots.nii.gz")) / 1e6
    images = sum(len(s.files) for s in study.series.values())
    rows = [
        ["read the scan: NIfTI file", f"{read['nifti']:.3f} s", "", "100 %"],
        [f"read the scan: DICOM study ({len(study.series)} series, {images} files, flat)",
         f"{read['dicom']:.3f} s", f"{1000 * read['dicom'] / images:.1f} ms/file",
         f"{100 * read['dicom'] / read['nifti']:.0f} %"],
        [f"write {len(task_set.tasks)} tasks' hotspots: one NIfTI file",
         f"{write['nifti']:.3f} s", f"{nifti_size:.1f} MB", "100 %"],
        [f"write DICOM results: {len(task_set.tasks)} Parametric Maps + TID 1500 report "
         f"({len(volumes)} discs)", f"{write['dicom']:.3f} s", f"{size:.1f} MB",
         f"{100 * write['dicom'] / write['nifti']:.0f} %"],
    ]
    body = benchlib.table(["what", "median", "per unit / size", "against NIfTI"], rows)
    body += (f"\n\nOne phantom patient ({scan.shape[0]} slices of {scan.shape[1]} x "
             f"{scan.shape[2]}), medians of {args.rounds} alternated rounds after a warm-up. "
             f"Load average at the end: {os.getloadavg()[0]:.1f}. Whole run "
             f"{time.perf_counter() - start:.0f} s.")
    benchlib.write_section("DICOM input and output", body,
                           benchlib.reproduce_command(__file__, argv))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
