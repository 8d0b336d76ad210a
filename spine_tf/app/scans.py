"""Scan jobs: which scans to grade, and the one path from a scan to its disc volumes.

``find_scans`` turns files and folders into ``ScanJob`` s (a scan with its
label mask or landmarks file, if any); ``extract_scan`` reads a job's scan,
localises its discs (mask, landmarks, else the disc detector) and cuts out
the disc volumes. ``spine-tf predict``, ``client``, ``extract`` and
``hotspots`` all go through it.

Example:
    job = find_scans(["cohort/"])[0]
    scan, located, volumes, skipped = extract_scan(job)
"""

import dataclasses
import functools
import os
import typing

from spine_tf.errors import SpineTFError
from spine_tf.io.dicom import is_dicomdir
from spine_tf.io.formats import IMAGE_2D_SUFFIXES, ITK_SUFFIXES, NIFTI_SUFFIXES, ScanError
from spine_tf.io.scan import read_scan, scan_name

SCAN_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES


class PredictError(SpineTFError, ValueError):
    """A scan or model cannot be used; the message names the file and the reason."""


@dataclasses.dataclass(frozen=True)
class ScanJob:
    """One scan to grade and how its discs are localised.

    Attributes:
        name: names the scan's outputs (the file name without its suffix).
        scan: the scan file (or DICOM folder, or 2D image).
        mask: its label mask, or None.
        landmarks: its landmarks JSON, or None (neither: the detector).
        spacing_mm: only for a 2D image, which records none: its pixel
            spacing, (rows, cols) or (slices, rows, cols); None: 1 mm.
        series: for a DICOM study, the series to grade (number, UID or
            description); None: its sagittal T2 (``spine_tf.io.dicom``).
        study: for a DICOM folder holding several studies, this job's
            StudyInstanceUID (the job is named ``<folder>_<PatientID>_<StudyDate>``).
        series_why: where the series was chosen before the folder was made (a
            DICOMweb fetch of that series only): why, for the grades and report.
    """

    name: str
    scan: str
    mask: str = None
    landmarks: str = None
    spacing_mm: typing.Optional[tuple] = None
    series: typing.Optional[str] = None
    study: typing.Optional[str] = None
    series_why: typing.Optional[str] = None


def _is_scan(path):
    return os.path.isfile(path) and path.lower().endswith(SCAN_SUFFIXES + IMAGE_2D_SUFFIXES)


def _holds_dicom(path):
    """Whether a folder without scan files is itself a scan: a DICOM series or study, in any
    nesting (files named .dcm, or with no suffix, as many PACS exports are, or carrying
    DICOM's preamble)."""
    for root, _, files in os.walk(path):
        for name in files:
            file = os.path.join(root, name)
            if name.startswith("."):
                continue
            if name.lower().endswith(".dcm") or "." not in name:
                return True
            with open(file, "rb") as f:
                if f.read(132)[128:] == b"DICM":
                    return True
    return False


def _find(folder, name, suffixes):
    if not folder:
        return None
    if os.path.isfile(folder):  # one file given for one scan
        return folder
    for suffix in suffixes:
        path = os.path.join(folder, name + suffix)
        if os.path.exists(path):
            return path
    return None


def _per_study(files):
    """(file, study UID or None, name) per scan: a DICOM folder holding several studies is
    one scan per study."""
    from spine_tf.io import dicom
    for file in files:
        name = scan_name(file)
        if not (os.path.isdir(file) or is_dicomdir(file)):
            yield file, None, name
            continue
        try:
            names = dicom.studies(dicom.study_series(file))
        except ScanError:  # no image: reading the job says so, with the others going on
            names = {}
        if len(names) < 2:
            yield file, None, name
            continue
        for uid, study_name in sorted(names.items(), key=lambda item: item[1]):
            yield file, uid, f"{name}_{study_name}"


def find_scans(inputs, masks=None, landmarks=None, series=None):
    """The scans of ``inputs`` (files or folders) with their masks or landmarks.

    A folder contributes its scan files (NIfTI, .mha/.mhd/.nrrd, and 2D
    sagittal pictures: PNG, JPEG, TIFF, BMP); a folder of DICOM files in any
    nesting is one scan (a series, or a study whose series ``series`` chooses,
    by default its sagittal T2: ``extract_scan``; a folder of several studies is one scan
    per study; a DICOMDIR file is its folder's scan); a folder with a ``scans/``
    sub-folder (the folder layout of ``spine-tf phantom``) contributes those,
    with its ``masks/`` and ``landmarks/`` as defaults.
    A scan's mask is ``<masks>/<name>.<suffix>`` and its landmarks
    ``<landmarks>/<name>.json`` (``name`` the scan's file name without its
    suffix); ``masks`` or ``landmarks`` may also be a single file when
    there is one scan.

    Raises:
        PredictError: an input that does not exist or holds no scan, or one
            file given as the mask or landmarks of several scans.
    """
    masks = os.fspath(masks) if masks else None
    landmarks = os.fspath(landmarks) if landmarks else None
    jobs = []
    for path in inputs:
        path = os.fspath(path)
        if not os.path.exists(path):
            raise PredictError(f"{path}: no such file or folder")
        folder_masks, folder_landmarks, files = None, None, [path]
        if os.path.isdir(path):
            if os.path.isdir(os.path.join(path, "scans")):
                folder_masks = os.path.join(path, "masks")
                folder_landmarks = os.path.join(path, "landmarks")
                path = os.path.join(path, "scans")
            names = sorted(os.listdir(path))
            files = [f for f in (os.path.join(path, n) for n in names) if _is_scan(f)]
            if not files and (is_dicomdir(os.path.join(path, "DICOMDIR"))
                              or _holds_dicom(path)):
                files = [path]
            if not files:
                raise PredictError(f"{path}: no scan files ({', '.join(SCAN_SUFFIXES)}, 2D "
                                   f"pictures) and no DICOM series")
        for file, study, name in _per_study(files):
            jobs.append(ScanJob(
                name=name, scan=file,
                mask=_find(masks or folder_masks, name, SCAN_SUFFIXES),
                landmarks=_find(landmarks or folder_landmarks, name, (".json",)),
                series=series if os.path.isdir(file) or is_dicomdir(file) else None,
                study=study))
    for option, value in (("--masks", masks), ("--landmarks", landmarks)):
        if value and os.path.isfile(value) and len(jobs) > 1:
            raise PredictError(f"{value}: one {option} file for {len(jobs)} scans; give a "
                               "folder of files named after the scans")
    names = [j.name for j in jobs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise PredictError(f"several scans are called {', '.join(twice)}: outputs are named "
                           "after the scan, so the names must differ")
    return jobs


def extract_scan(job, detector=None):
    """Reads a job's scan, localises and extracts its discs.

    The job's mask or landmarks localise the discs; without either,
    ``detector`` (``spine_tf.detection``) finds them.

    A DICOM folder holding a study (series in sub-folders, or several in one folder) is read
    as the series ``job.series`` names, else its sagittal T2 (``spine_tf.io.dicom``). The
    scan of any DICOM folder has a ``series``: which series and why, and its ``files`` in
    slice order (the sources DICOM results reference).

    Returns:
        (scan, localisation, DiscVolumes top to bottom, skipped (level, reason)).

    Raises:
        ScanError, PredictError: unreadable files, nothing to localise with,
            or no disc extracted.
    """
    from spine_tf import detection, extraction, localisation
    if not job.mask and not job.landmarks and detector is None:
        raise PredictError(f"{job.scan}: no mask or landmarks file for this scan and no "
                           "detector (give --masks, --landmarks or --detector)")
    scan = read_scan(job.scan, spacing_mm=job.spacing_mm, series=job.series, study=job.study)
    located = localisation.localise(
        scan, mask_path=job.mask, landmarks_path=job.landmarks,
        detect=None if detector is None else functools.partial(detection.detect,
                                                               detector=detector))
    volumes, skipped = extraction.extract(scan, located)
    if not volumes:
        reasons = "; ".join(f"{level}: {reason}" for level, reason in skipped) or "none found"
        raise PredictError(f"{job.scan}: no disc could be extracted ({reasons})")
    return scan, located, volumes, skipped


__all__ = ["PredictError", "SCAN_SUFFIXES", "ScanJob", "extract_scan", "find_scans"]
