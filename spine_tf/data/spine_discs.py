"""The ``spine_discs`` TFDS dataset: one example per labelled disc.

Configs:
- ``phantom_small`` (24 patients), ``phantom`` (200), ``phantom_large`` (600):
  the built-in phantom cohort, generated during the build (no download);
  any size or seed through ``SpineDiscsConfig``.
- ``folder``: a folder of NIfTI scans with masks or landmarks and a labels
  CSV, given as ``manual_dir`` (layout in ``spine_tf.data.sources``).
- ``spider``: the SPIDER set in ``manual_dir`` (needs ``spine-tf[mha]``).

Splits are by patient, 80/10/10 from a hash of the patient id; example keys
are ``<patient>/<level>``, so TFDS's own check for duplicate keys across a
split also catches a patient appearing twice. A scan that cannot be read or
localised is skipped and listed in ``build_report.json`` beside the dataset
(``strict=True`` raises instead).

Example:
    import tensorflow_datasets as tfds
    from spine_tf.data import spine_discs
    ds = tfds.load("spine_discs/phantom_small", split="train")
"""

import concurrent.futures
import json
import os

import numpy as np
import tensorflow_datasets as tfds

from spine_tf import tasks
from spine_tf.data import sources
from spine_tf.extraction import VOLUME_SHAPE
from spine_tf.io import labels as labels_io
from spine_tf.io.scan import ScanError
from spine_tf.phantom import PhantomConfig
from spine_tf.phantom.cohort import worker_context

VOLUME_MAX = 65535  # disc volumes are stored as uint16: value / VOLUME_MAX in [0, 1]
REPORT_NAME = "build_report.json"


def to_stored(volume):
    """float [0, 1] disc volume -> uint16 as stored."""
    return np.round(np.clip(volume, 0.0, 1.0) * VOLUME_MAX).astype(np.uint16)


def from_stored(stored):
    """Stored uint16 disc volume (numpy or tf) -> float32 in [0, 1]."""
    import tensorflow as tf
    return tf.cast(stored, tf.float32) / VOLUME_MAX


class SpineDiscsConfig(tfds.core.BuilderConfig):
    """A source of patients for ``spine_discs``.

    Args:
        source: ``"phantom"``, ``"folder"`` or ``"spider"``.
        patients: phantom cohort size.
        seed: phantom cohort seed.
        phantom: PhantomConfig of the phantom cohort.
        workers: processes for generation and extraction (default: all cores).
        strict: raise on the first unusable scan instead of skipping it.
    """

    def __init__(self, *, source, patients=0, seed=0, phantom=PhantomConfig(), workers=None,
                 strict=False, **kwargs):
        super().__init__(**kwargs)
        self.source = source
        self.patients = patients
        self.seed = seed
        self.phantom = phantom
        self.workers = workers
        self.strict = strict


def phantom_config(patients, seed=0, phantom=PhantomConfig(), **kwargs):
    """A phantom config of any size, named ``phantom_<patients>_seed<seed>``."""
    return SpineDiscsConfig(
        name=f"phantom_{patients}_seed{seed}", source="phantom", patients=patients, seed=seed,
        phantom=phantom, description=f"Phantom cohort of {patients} patients, seed {seed}.",
        **kwargs)


class SpineDiscs(tfds.core.GeneratorBasedBuilder):
    """Lumbar disc volumes (112 x 224 x 9) with six grading labels each."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        SpineDiscsConfig(name="phantom_small", source="phantom", patients=24,
                         description="Phantom cohort, 24 patients (tests, demos)."),
        SpineDiscsConfig(name="phantom", source="phantom", patients=200,
                         description="Phantom cohort, 200 patients."),
        SpineDiscsConfig(name="phantom_large", source="phantom", patients=600,
                         description="Phantom cohort, 600 patients (accuracy runs)."),
        SpineDiscsConfig(name="folder", source="folder",
                         description="NIfTI scans + masks or landmarks + labels CSV."),
        SpineDiscsConfig(name="spider", source="spider",
                         description="SPIDER lumbar MRI (manual download; mapping in README)."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    folder: put scans/<patient>.nii.gz, masks/<patient>.nii.gz or
    landmarks/<patient>.json, and labels.csv in manual_dir (README, "Folder layout").
    spider: download SPIDER (https://zenodo.org/records/10159290) and unpack it so that
    manual_dir holds images/<id>_t2.mha, masks/<id>_t2.mha and radiological_gradings.csv.
    """

    def _info(self):
        label = lambda: tfds.features.FeaturesDict(  # noqa: E731
            {name: tfds.features.Scalar(np.int32) for name in tasks.TASK_NAMES})
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n")[0],
            features=tfds.features.FeaturesDict({
                "disc_volume": tfds.features.Tensor(
                    shape=VOLUME_SHAPE, dtype=np.uint16, encoding=tfds.features.Encoding.ZLIB,
                    doc="Disc volume, rows x cols x slices; value / 65535 in [0, 1]."),
                "labels": label(),
                "labels_reread": label(),
                "patient_id": tfds.features.Text(),
                "level": tfds.features.ClassLabel(names=tasks.LEVELS),
                "voxel_to_scan": tfds.features.Tensor(shape=(4, 4), dtype=np.float64),
                "spacing_mm": tfds.features.Tensor(shape=(3,), dtype=np.float32),
                "confidence": tfds.features.Scalar(np.float32),
                "lesion_boxes": tfds.features.Tensor(
                    shape=(len(tasks.LESION_TASKS), VOLUME_SHAPE[-1], 4), dtype=np.float32,
                    doc="Per lesion task and slice: (ymin, xmin, ymax, xmax) in [0, 1], -1 if none."),
            }),
            homepage="https://www.robots.ox.ac.uk/~vgg/research/spine/",
            citation="Jamaludin, Kadir, Zisserman. SpineNet: Automatically pinpointing "
                     "classification evidence in spinal MRIs. MICCAI 2016.",
        )

    def _split_generators(self, dl_manager):
        config = self.builder_config
        if config.source == "phantom":
            from spine_tf.phantom import patient_id
            items = [(patient_id(config.seed, i), ("phantom", config.seed, i, config.phantom))
                     for i in range(config.patients)]
        else:
            manual_dir = os.fspath(dl_manager.manual_dir)
            if config.source == "folder":
                table = labels_io.read_labels(os.path.join(manual_dir, "labels.csv"))
                items = [(pid, ("folder", manual_dir, pid, table))
                         for pid in sources.folder_patients(manual_dir)]
            elif config.source == "spider":
                gradings = sources.read_spider_gradings(
                    os.path.join(manual_dir, "radiological_gradings.csv"))
                items = [(pid, ("spider", manual_dir, pid, gradings))
                         for pid in sources.spider_patients(manual_dir)]
            else:
                raise ValueError(f"unknown source {config.source!r}")
        self._report = {"skipped_scans": [], "skipped_discs": []}
        by_split = {split: [job for pid, job in items if sources.split_of(pid) == split]
                    for split in sources.SPLITS}
        # TFDS cannot write an empty split; a tiny cohort may leave one empty.
        return {split: self._generate_examples(jobs) for split, jobs in by_split.items() if jobs}

    def _generate_examples(self, jobs):
        config = self.builder_config
        for pid, outcome in _run(jobs, config.workers):
            if isinstance(outcome, str):
                if config.strict:
                    raise ScanError(outcome)
                self._report["skipped_scans"].append({"patient": pid, "reason": outcome})
                continue
            examples, skipped = outcome
            self._report["skipped_discs"].extend(
                {"patient": pid, "level": level, "reason": reason} for level, reason in skipped)
            for example in examples:
                yield f"{example['patient_id']}/{example['level']}", _encode(example)
        self._write_report()

    def _write_report(self):
        from spine_tf.io.atomic import atomic_path
        path = os.path.join(os.fspath(self.data_dir), REPORT_NAME)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                json.dump(self._report, f, indent=1)


def _encode(example):
    out = dict(example)
    out["disc_volume"] = to_stored(example["disc_volume"])
    out["labels"] = {k: np.int32(v) for k, v in example["labels"].items()}
    out["labels_reread"] = {k: np.int32(v) for k, v in example["labels_reread"].items()}
    return out


def patient_examples(job):
    """Worker: (pid, (examples, skipped)) or (pid, error message) for one patient."""
    kind = job[0]
    try:
        if kind == "phantom":
            _, seed, index, phantom = job
            record = sources.phantom_record(seed, index, phantom)
        elif kind == "folder":
            _, manual_dir, pid, table = job
            record = sources.folder_record(manual_dir, pid, table)
        else:
            _, manual_dir, pid, gradings = job
            record = sources.spider_record(manual_dir, pid, gradings)
    except (ScanError, ValueError, OSError) as error:
        return _job_id(job), str(error)
    return record.patient_id, sources.disc_examples(record)


def _job_id(job):
    if job[0] == "phantom":
        from spine_tf.phantom import patient_id
        return patient_id(job[1], job[2])
    return job[2]


def _run(jobs, workers):
    """Runs ``patient_examples`` over jobs, in worker processes when there are several."""
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(jobs) <= 1:
        yield from map(patient_examples, jobs)
        return
    context = worker_context()
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield from pool.map(patient_examples, jobs, chunksize=1)


def builder(config="phantom_small", data_dir=None, **kwargs):
    """A SpineDiscs builder by config name or SpineDiscsConfig."""
    return SpineDiscs(config=config, data_dir=data_dir, **kwargs)


__all__ = ["SpineDiscs", "SpineDiscsConfig", "builder", "from_stored", "phantom_config",
           "to_stored"]
