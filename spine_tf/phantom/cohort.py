"""Phantom patients in memory and phantom cohorts on disk.

A patient is fully determined by ``(seed, index)``: patient 7 of seed 0 is the
same whether the cohort has 10 or 1000 patients, and generation is parallel
over patients.

On disk a cohort has the layout of the ``folder`` data source::

    DIR/scans/<patient>.nii.gz       the scan (int16 or float32, any orientation)
    DIR/masks/<patient>.nii.gz       SPIDER-convention label mask, same grid
    DIR/lesions/<patient>.nii.gz     4D uint8 lesion masks, one volume per lesion task
    DIR/landmarks/<patient>.json     vertebral body corners (world mm)
    DIR/labels.csv                   one row per visible disc, labels and re-read
    DIR/cohort.json                  seed, size and settings that made it
"""

import concurrent.futures
import dataclasses
import multiprocessing
import os
import re
import sys

import nibabel as nib
import numpy as np

from spine_tf import tasks
from spine_tf.io import landmarks as landmarks_io
from spine_tf.io import labels as labels_io
from spine_tf.io.atomic import atomic_path, write_json
from spine_tf.io.scan import INTERNAL_AXCODES
from spine_tf.phantom.anatomy import VERTEBRAE, PhantomConfig, sample_anatomy
from spine_tf.phantom.render import render


@dataclasses.dataclass
class PhantomPatient:
    """One rendered phantom patient, in the internal (slices, rows, cols) frame."""

    patient_id: str
    image: np.ndarray
    mask: np.ndarray
    lesions: np.ndarray
    signal: np.ndarray  # noise-free signal, CSF = 1
    affine: np.ndarray  # internal voxel index -> world RAS mm
    spacing_mm: tuple
    labels: dict
    reread: dict
    landmarks: dict
    anatomy: object

    @property
    def levels(self):
        """Levels of the discs that are fully in view, top to bottom."""
        return self.anatomy.visible_levels


def patient_id(seed, index):
    """Identifier of phantom patient ``index`` of cohort ``seed``."""
    return f"ph{seed}-{index:05d}"


def parse_patient_id(pid):
    """(seed, index) of a phantom patient id made by ``patient_id``.

    Raises:
        ValueError: ``pid`` is not a phantom patient id.
    """
    match = re.fullmatch(r"ph(\d+)-(\d+)", pid)
    if match is None:
        raise ValueError(f"{pid!r} is not a phantom patient id (ph<seed>-<index>)")
    return int(match.group(1)), int(match.group(2))


def patient_anatomy(seed, index, config=PhantomConfig()):
    """The anatomy (lesions, latent grades, labels) of a patient, without rendering it.

    The same draw ``make_patient`` starts with, so it describes that patient's scan.
    """
    return sample_anatomy(np.random.default_rng([seed, index]), patient_id(seed, index), config)


def make_patient(seed, index, config=PhantomConfig()):
    """Draws and renders phantom patient ``index`` of the cohort with ``seed``."""
    rng = np.random.default_rng([seed, index])
    pid = patient_id(seed, index)
    anatomy = sample_anatomy(rng, pid, config)  # as patient_anatomy draws it
    image, mask, lesions, signal = render(anatomy, rng)
    affine = internal_affine(anatomy.acquisition)
    return PhantomPatient(
        patient_id=pid, image=image, mask=mask, lesions=lesions, signal=signal, affine=affine,
        spacing_mm=anatomy.acquisition.spacing_mm, labels=anatomy.labels,
        reread=anatomy.reread, landmarks=_landmarks(anatomy, affine), anatomy=anatomy)


def internal_affine(acquisition):
    """Voxel (slice, row, col) -> RAS mm; mid-sagittal plane at x = 0, image centred."""
    thickness, dy, dx = acquisition.spacing_mm
    _, rows, cols = acquisition.shape
    affine = np.zeros((4, 4))
    affine[0, 0] = -thickness  # slices go to the patient's left
    affine[2, 1] = -dy  # rows go to the feet
    affine[1, 2] = -dx  # columns go to the back
    affine[:3, 3] = (acquisition.mid_slice * thickness, (cols - 1) * dx / 2, (rows - 1) * dy / 2)
    affine[3, 3] = 1.0
    return affine


def _landmarks(anatomy, affine):
    """Corners of the vertebral bodies fully in view, in world mm."""
    acq = anatomy.acquisition
    rows_mm = acq.shape[1] * acq.spacing_mm[1]
    cols_mm = acq.shape[2] * acq.spacing_mm[2]
    vertebrae = {}
    for body in anatomy.bodies:
        corners = body.corners()  # (y, x) mm
        if (corners.min() < 0 or corners[:, 0].max() > rows_mm
                or corners[:, 1].max() > cols_mm):
            continue
        voxels = np.column_stack([np.full(4, acq.mid_slice), corners[:, 0] / acq.spacing_mm[1],
                                  corners[:, 1] / acq.spacing_mm[2], np.ones(4)])
        world = (affine @ voxels.T).T[:, :3]
        vertebrae[body.name] = landmarks_io.Vertebra(corners=world,
                                                     half_width_mm=float(body.half_width))
    return vertebrae


def _to_storage(array, affine, axcodes):
    """Reorients an internal-frame array (and its affine) to ``axcodes``."""
    ornt = nib.orientations
    transform = ornt.ornt_transform(ornt.axcodes2ornt(INTERNAL_AXCODES), ornt.axcodes2ornt(axcodes))
    stored = ornt.apply_orientation(array, transform)
    return np.ascontiguousarray(stored), affine @ ornt.inv_ornt_aff(transform, array.shape[:3])


def write_patient(patient, out_dir):
    """Writes one patient's scan, masks and landmarks (not its labels rows)."""
    axcodes = patient.anatomy.acquisition.storage_axcodes
    for folder, array in (("scans", patient.image), ("masks", patient.mask),
                          ("lesions", patient.lesions)):
        stored, affine = _to_storage(array, patient.affine, axcodes)
        image = nib.Nifti1Image(stored, affine)
        image.header.set_xyzt_units("mm")
        path = os.path.join(out_dir, folder, f"{patient.patient_id}.nii.gz")
        with atomic_path(path) as tmp:
            nib.save(image, tmp)
    landmarks_io.write_landmarks(
        os.path.join(out_dir, "landmarks", f"{patient.patient_id}.json"), patient.landmarks)


def label_rows(patient):
    """Labels CSV rows (dicts) of a patient's visible discs."""
    return [labels_io.row(patient.patient_id, level, patient.labels[level],
                          patient.reread[level]) for level in patient.levels]


def _generate_one(args):
    seed, index, config, out_dir = args
    patient = make_patient(seed, index, config)
    write_patient(patient, out_dir)
    return label_rows(patient)


def write_cohort(out_dir, patients, seed=0, config=PhantomConfig(), workers=None,
                 progress=False):
    """Generates ``patients`` phantom patients into ``out_dir`` (the folder layout).

    Args:
        out_dir: output folder; created if needed.
        patients: number of patients (indices 0..patients-1).
        seed: cohort seed.
        config: PhantomConfig.
        workers: processes to use (default: all cores).
        progress: show a progress bar.

    Returns:
        The path of the labels CSV.
    """
    os.makedirs(out_dir, exist_ok=True)
    jobs = [(seed, i, config, out_dir) for i in range(patients)]
    workers = workers or os.cpu_count() or 1
    rows = []
    bar = _progress(patients, "phantom patients", progress)
    if workers == 1 or patients == 1:
        for job in jobs:
            rows.extend(_generate_one(job))
            bar.update(1)
    else:
        context = worker_context()
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            for result in pool.map(_generate_one, jobs, chunksize=1):
                rows.extend(result)
                bar.update(1)
    bar.close()
    labels_path = os.path.join(out_dir, "labels.csv")
    labels_io.write_labels(labels_path, rows)
    info = {"generator": "spine_tf.phantom", "seed": seed, "patients": patients,
            "config": dataclasses.asdict(config), "vertebrae": list(VERTEBRAE),
            "tasks": list(tasks.TASK_NAMES)}
    write_json(os.path.join(out_dir, "cohort.json"), info, indent=2)
    return labels_path


def _progress(total, desc, enabled):
    import tqdm
    return tqdm.tqdm(total=total, desc=desc, unit="patient", disable=not enabled)


def worker_context():
    """Process start method for worker pools (phantom generation, dataset builds).

    ``fork`` where the platform has it and TensorFlow is not loaded in this
    process: workers run numpy/scipy code only, and unlike ``spawn`` it works
    from scripts without a ``__main__`` guard and from notebooks. Once
    TensorFlow is loaded, ``forkserver`` (else ``spawn``): a forked copy of a
    process whose TensorFlow runtime has started threads can inherit locks
    held by threads that do not exist in the copy. A 500-patient build started
    in the process that had just trained a model (``spine-tf sweep
    --also-data``) lost a worker that way, to an abseil mutex check failure.
    The workers' functions live in modules that import no TensorFlow
    (``spine_tf.data.jobs``, this module), so a pool of such workers starts in
    0.9 s (7 s where the main script imports TensorFlow at its top level: the
    forkserver imports the main module).
    """
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and "tensorflow" not in sys.modules:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
