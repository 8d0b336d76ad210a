"""The per-patient jobs of a ``spine_discs`` build, and their disc cache.

A build extracts each patient's discs in a worker process (``run_jobs``) and
caches them as one ``.npz`` file per patient, which the build then reads back
into the dataset. This module imports no TensorFlow, so a worker started with
``forkserver`` or ``spawn`` (``spine_tf.phantom.cohort.worker_context``) loads
numpy and scipy only and starts in about a second.
"""

import concurrent.futures
import dataclasses
import logging
import os

import numpy as np
from etils import epath

from spine_tf import tasks
from spine_tf.data.sources import disc_examples, folder_record, phantom_record, spider_record
from spine_tf.data.spider_slices import slice_record
from spine_tf.io.codec import to_stored
from spine_tf.io.scan import ScanError
from spine_tf.phantom.cohort import worker_context


@dataclasses.dataclass(frozen=True)
class PatientJob:
    """One patient to extract.

    Attributes:
        source: ``"phantom"``, ``"folder"``, ``"spider"`` or ``"spider_slices"``.
        patient_id: the patient.
        file: its scan file (the patient id for phantoms), for the report.
        args: ``(seed, index, PhantomConfig)`` for phantoms; ``(image, labels,
            Localisation)`` for spider_slices (``slice_record``);
            ``(manual_dir, labels)`` otherwise, ``labels`` holding this
            patient's rows only.
    """

    source: str
    patient_id: str
    file: str
    args: tuple


def patient_examples(job):
    """Worker: ``(pid, (examples, skipped))`` or ``(pid, reason)`` for one patient.

    A scan that cannot be used gives the reason as a string; it starts with
    the offending file. Unexpected errors are reported the same way (with the
    exception type) so one odd scan does not stop a long build.
    """
    try:
        if job.source == "phantom":
            record = phantom_record(*job.args)
        elif job.source == "folder":
            record = folder_record(job.args[0], job.patient_id, job.args[1])
        elif job.source == "spider":
            record = spider_record(job.args[0], job.patient_id, job.args[1])
        elif job.source == "spider_slices":
            record = slice_record(*job.args)
        else:
            raise ValueError(f"unknown source {job.source!r}")
        return job.patient_id, disc_examples(record)
    except ScanError as error:
        return job.patient_id, str(error)
    except Exception as error:  # pylint: disable=broad-except
        logging.getLogger(__name__).warning("%s: unexpected error", job.file, exc_info=True)
        return job.patient_id, f"{job.file}: unexpected {type(error).__name__}: {error}"


def extract_to_cache(item):
    """Worker: extracts one patient and writes its discs to ``cache_path``.

    Returns:
        ``(pid, reason)`` for an unusable scan, else ``(pid, (cache_path,
        number of discs, skipped discs))``.
    """
    job, cache_path = item
    pid, outcome = patient_examples(job)
    if isinstance(outcome, str):
        return pid, outcome
    examples, skipped = outcome
    if examples:
        write_cache(cache_path, examples)
    return pid, (cache_path, len(examples), skipped)


def write_cache(path, examples):
    arrays = {
        "patient_id": np.array([e["patient_id"] for e in examples]),
        "series": np.array([e["series"] for e in examples]),
        "position_source": np.array([e["position_source"] for e in examples]),
        "level": np.array([e["level"] for e in examples]),
        "disc_volume": np.stack([to_stored(e["disc_volume"]) for e in examples]),
        "voxel_to_scan": np.stack([e["voxel_to_scan"] for e in examples]).astype(np.float64),
        "spacing_mm": np.stack([e["spacing_mm"] for e in examples]).astype(np.float32),
        "confidence": np.array([e["confidence"] for e in examples], np.float32),
        "lesion_boxes": np.stack([e["lesion_boxes"] for e in examples]).astype(np.float32),
    }
    names = [t.name for t in tasks.TABLE if any(t.name in e["labels"] for e in examples)]
    arrays["task_names"] = np.array(names)
    for key in ("labels", "labels_reread"):
        arrays[key] = np.array([[e[key].get(name, tasks.MISSING_LABEL) for name in names]
                                for e in examples], np.int32).reshape(len(examples), len(names))
    with epath.Path(path).open("wb") as f:
        np.savez(f, **arrays)


def read_cache(path):
    """Yields ``(key, example)`` for the discs cached in ``path``; key = series/level
    (the patient id where a patient has one scan). ``labels`` hold every task the source
    labels (``task_names``); the builder keeps its task set's."""
    with epath.Path(path).open("rb") as f:
        with np.load(f) as cached:
            arrays = {key: cached[key] for key in cached.files}
    for n in range(len(arrays["level"])):
        example = {key: arrays[key][n] for key in
                   ("disc_volume", "voxel_to_scan", "spacing_mm", "confidence", "lesion_boxes")}
        for key in ("patient_id", "series", "position_source", "level"):
            example[key] = str(arrays[key][n])
        for key in ("labels", "labels_reread"):
            example[key] = dict(zip((str(s) for s in arrays["task_names"]), arrays[key][n]))
        yield f"{example['series']}/{example['level']}", example


def run_jobs(items, workers):
    """Runs ``extract_to_cache`` over items (in order), in worker processes if several.

    Stopping early (strict mode, an error, or the consumer closing the
    generator) cancels the patients not started yet.
    """
    workers = min(workers or os.cpu_count() or 1, max(len(items), 1))
    if workers == 1:
        yield from map(extract_to_cache, items)
        return
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=worker_context())
    try:
        yield from pool.map(extract_to_cache, items, chunksize=1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
