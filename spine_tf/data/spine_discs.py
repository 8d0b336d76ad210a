"""The ``spine_discs`` TFDS dataset: one example per labelled disc.

Configs:
- ``phantom_small`` (24 patients), ``phantom`` (200), ``phantom_large`` (600):
  the built-in phantom cohort, generated during the build (no download);
  any size or seed through ``SpineDiscsConfig``.
- ``folder``: a folder of NIfTI scans with masks or landmarks and a labels
  CSV, given as ``manual_dir`` (layout in ``spine_tf.data.sources``).
- ``spider``: the SPIDER set in ``manual_dir``.
- ``spider_slices``: single real T2 slices with SPIDER's gradings in
  ``manual_dir`` (``spine_tf.data.spider_slices``); discs placed from the boxes
  or, given ``detect``, by the disc detector.

Splits are by patient, 80/10/10 (spider_slices: 60/20/20) from a hash of the
patient id (``sources.split_of``); a split without any usable patient is left
out. Example keys are ``<series>/<level>`` (series: the scan; the patient id
where a patient has one), so TFDS's own check for duplicate keys across a
split also catches a scan appearing twice. A scan that cannot be
read or localised is skipped (``strict=True`` raises instead); skipped scans
and labelled discs that could not be extracted are listed, with reasons, in
``build_report.json`` in the dataset folder (``builder.data_dir``;
``SpineDiscs.build_report()`` reads it).

Example:
    import tensorflow_datasets as tfds
    from spine_tf.data import spine_discs
    ds = tfds.load("spine_discs/phantom_small", split="train")
"""

import contextlib
import json
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from spine_tf import tasks
from spine_tf.data import sources, spider_slices
from spine_tf.data.jobs import PatientJob, read_cache, run_jobs
from spine_tf.tasks import VOLUME_SHAPE
from spine_tf.io import labels as labels_io
from spine_tf.io.scan import ScanError
from spine_tf.phantom import PhantomConfig

REPORT_NAME = "build_report.json"
CACHE_NAME = "extraction-cache"  # pass one's disc volumes, inside the incomplete dataset dir


class SpineDiscsConfig(tfds.core.BuilderConfig):
    """A source of patients for ``spine_discs``.

    Args:
        source: ``"phantom"``, ``"folder"``, ``"spider"`` or ``"spider_slices"``.
        patients: phantom cohort size.
        seed: phantom cohort seed.
        phantom: PhantomConfig of the phantom cohort.
        split_percent: train / validation / test shares of the patients.
        task_set: the ``tasks.TASK_SETS`` name whose tasks the examples label.

    How a build runs (worker processes, strictness) is not part of the
    dataset's identity: those are ``SpineDiscs`` arguments.
    """

    def __init__(self, *, source, patients=0, seed=0, phantom=PhantomConfig(),
                 split_percent=sources.SPLIT_PERCENT, task_set=tasks.DEFAULT_TASK_SET,
                 **kwargs):
        super().__init__(**kwargs)
        self.task_set = task_set
        self.source = source
        self.patients = patients
        self.seed = seed
        self.phantom = phantom
        self.split_percent = split_percent


def phantom_config(patients, seed=0, phantom=PhantomConfig(), **kwargs):
    """A phantom config of any size, named ``phantom_<patients>_seed<seed>``."""
    return SpineDiscsConfig(
        name=f"phantom_{patients}_seed{seed}", source="phantom", patients=patients, seed=seed,
        phantom=phantom, description=f"Phantom cohort of {patients} patients, seed {seed}.",
        **kwargs)


class SpineDiscs(tfds.core.GeneratorBasedBuilder):
    """Lumbar disc volumes (112 x 224 x 9) with six grading labels each.

    Args:
        workers: processes for generation and extraction (default: all cores).
        strict: raise on the first unusable scan instead of skipping it.
        detect: a function scan -> Localisation (the disc detector) for the
            spider_slices images whose boxes do not place their discs; it runs
            in this process.
        **kwargs: for ``tfds.core.GeneratorBasedBuilder`` (config, data_dir, ...).
    """

    def __init__(self, *, workers=None, strict=False, detect=None, **kwargs):
        self.workers = workers
        self.strict = strict
        self.detect = detect
        super().__init__(**kwargs)

    VERSION = tfds.core.Version("1.5.0")
    RELEASE_NOTES = {"1.0.0": "First release.",
                     "1.1.0": "Examples name their scan (series) and where their position "
                              "came from (position_source); the spider_slices config; the "
                              "spider configs label the spider task set.",
                     "1.2.0": "spider_slices: a detector-placed disc whose neighbouring "
                              "vertebral body the field of view cuts off (the top disc of "
                              "many slices) is kept, not skipped.",
                     "1.3.0": "spider_slices: discs placed by the detector fine-tuned on "
                              "SPIDER's disc boxes; a boxed image whose boxes hold none of "
                              "the discs the detector finds is left out.",
                     "1.4.0": "spider_slices: a boxed image is also left out where one of "
                              "its boxes holds two of the discs the detector finds and each "
                              "other box one (a box over two discs).",
                     "1.5.0": "spider_slices: the detector takes an L5-S1 whose sacrum the "
                              "network misses, instead of starting the spine at L4-L5 and "
                              "naming every disc a level low (detection.spine_line); "
                              "listed images may be .jpg, .tif or .bmp, and a missing one "
                              "is left out with the reason."}
    BUILDER_CONFIGS = [
        SpineDiscsConfig(name="phantom_small", source="phantom", patients=24,
                         description="Phantom cohort, 24 patients (tests, demos)."),
        SpineDiscsConfig(name="phantom", source="phantom", patients=200,
                         description="Phantom cohort, 200 patients."),
        SpineDiscsConfig(name="phantom_large", source="phantom", patients=600,
                         description="Phantom cohort, 600 patients (accuracy runs)."),
        SpineDiscsConfig(name="folder", source="folder",
                         description="NIfTI scans + masks or landmarks + labels CSV."),
        SpineDiscsConfig(name="spider", source="spider", task_set="spider",
                         description="SPIDER lumbar MRI (manual download; mapping in README)."),
        SpineDiscsConfig(name="spider_slices", source="spider_slices", task_set="spider",
                         split_percent=spider_slices.SPLIT_PERCENT,
                         description="Single real T2 slices with SPIDER's gradings."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    folder: put scans/<patient>.nii.gz, masks/<patient>.nii.gz or
    landmarks/<patient>.json, and labels.csv in manual_dir (README, "Folder layout").
    spider: download SPIDER (https://zenodo.org/records/10159290) and unpack it so that
    manual_dir holds images/<id>_t2.mha, masks/<id>_t2.mha and radiological_gradings.csv.
    spider_slices: manual_dir holds images/<series>.png, series.csv,
    radiological_gradings.csv and optionally boxes.csv (docs/data.md).
    """

    def _info(self):
        task_set = tasks.task_set(self.builder_config.task_set)

        def label(reading):
            return tfds.features.FeaturesDict(
                {task.name: tfds.features.Scalar(
                    np.int32, doc=f"{task.description}: 0..{task.num_classes - 1}, -1 missing")
                 for task in task_set.tasks},
                doc=f"{reading} per task ({task_set.name} tasks: {task_set.description})")

        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n")[0],
            features=tfds.features.FeaturesDict({
                "disc_volume": tfds.features.Tensor(
                    shape=VOLUME_SHAPE, dtype=np.uint16, encoding=tfds.features.Encoding.BYTES,
                    doc="Disc volume, rows x cols x slices; value / 65535 in [0, 1] "
                        "(from_stored)."),
                "labels": label("The labels"),
                "labels_reread": label("A second reading (phantoms), all -1 otherwise"),
                "patient_id": tfds.features.Text(doc="Patient id (the split comes from it)."),
                "series": tfds.features.Text(
                    doc="The scan the disc was cut from (the patient id where a patient has "
                        "one)."),
                "position_source": tfds.features.Text(
                    doc="Where the disc's position and level came from: mask, landmarks, "
                        "boxes or detector."),
                "level": tfds.features.ClassLabel(names=tasks.LEVELS,
                                                  doc="Disc level, T12-L1 (0) .. L5-S1 (5)."),
                "voxel_to_scan": tfds.features.Tensor(
                    shape=(4, 4), dtype=np.float64,
                    doc="Volume (row, col, slice) -> scan (slice, row, col) voxel indices."),
                "spacing_mm": tfds.features.Tensor(
                    shape=(3,), dtype=np.float32,
                    doc="Scan voxel spacing (slices, rows, cols) in mm."),
                "confidence": tfds.features.Scalar(
                    np.float32, doc="Localisation confidence (1 for masks and landmarks)."),
                "lesion_boxes": tfds.features.Tensor(
                    shape=(len(tasks.LESION_TASKS), VOLUME_SHAPE[-1], 4), dtype=np.float32,
                    doc="Per lesion task and slice: (ymin, xmin, ymax, xmax) in [0, 1], "
                        "-1 if none."),
            }),
            homepage="https://www.robots.ox.ac.uk/~vgg/research/spine/",
            citation="Jamaludin, Kadir, Zisserman. SpineNet: Automatically pinpointing "
                     "classification evidence in spinal MRIs. MICCAI 2016.",
        )

    def _split_generators(self, dl_manager):
        """Extracts every patient first, then writes the splits from that.

        Two passes, so that (1) the build report is complete and written
        before TFDS writes any split, whatever TFDS then does with the
        generators (``max_examples_per_split`` stops them early), and (2) a
        split whose patients all failed is left out instead of failing the
        build ("No examples were yielded"). Pass one writes each patient's
        disc volumes to a cache folder inside the (temporary) dataset folder;
        pass two, ``_generate_examples``, reads them back.
        """
        jobs, report = self._jobs(dl_manager)
        cache = epath.Path(self.data_dir) / CACHE_NAME
        cache.mkdir(parents=True, exist_ok=True)
        by_split = {split: [] for split in sources.SPLITS}
        examples = {split: 0 for split in sources.SPLITS}
        by_position = {}
        items = [(job, os.fspath(cache / f"{n:06d}.npz")) for n, job in enumerate(jobs)]
        with contextlib.closing(run_jobs(items, self.workers)) as results:
            for job, (pid, outcome) in zip(jobs, tfds.core.utils.tqdm(
                    results, total=len(jobs), desc="Extracting disc volumes",
                    unit=" patients", leave=False)):
                if isinstance(outcome, str):
                    if self.strict:
                        raise ScanError(outcome)
                    report["skipped_scans"].append(
                        {"patient": pid, "file": job.file, "reason": outcome})
                    continue
                cache_path, count, skipped = outcome
                report["skipped_discs"].extend({"patient": pid, "level": level, "reason": reason}
                                               for level, reason in skipped)
                if count:
                    split = sources.split_of(pid, self.builder_config.split_percent)
                    by_split[split].append(cache_path)
                    examples[split] += count
                if job.source == "spider_slices":
                    position = job.args[2].source  # the job's Localisation
                    by_position[position] = by_position.get(position, 0) + count
        report["patients"] = len({job.patient_id for job in jobs}
                                 | {item["patient"] for item in report["skipped_scans"]})
        report["examples"] = {split: n for split, n in examples.items() if n}
        if by_position:
            report["examples_by_position"] = by_position
        self._write_report(report)
        if not any(by_split.values()):
            reasons = "; ".join(item["reason"] for item in report["skipped_scans"][:3])
            raise ScanError(f"{self._source_name(dl_manager)}: no labelled disc could be "
                            f"extracted from any of the {report['patients']} patients "
                            f"({reasons or 'see the skipped discs'})")
        # TFDS cannot write an empty split; a tiny cohort may leave one empty.
        return {split: self._generate_examples(paths) for split, paths in by_split.items()
                if paths}

    def _generate_examples(self, cache_paths):
        names = tasks.task_set(self.builder_config.task_set).names
        for path in cache_paths:
            for key, example in read_cache(path):
                for labels in ("labels", "labels_reread"):
                    example[labels] = {n: example[labels].get(n, tasks.MISSING_LABEL)
                                       for n in names}
                yield key, example

    def _download_and_prepare(self, dl_manager, download_config):
        try:
            super()._download_and_prepare(dl_manager, download_config)
        finally:
            cache = epath.Path(self.data_dir) / CACHE_NAME
            if cache.exists():
                cache.rmtree()

    def _jobs(self, dl_manager):
        """The patients to extract, and the report started with patients lacking files."""
        config = self.builder_config
        report = {"skipped_scans": [], "skipped_discs": []}
        if config.source == "phantom":
            from spine_tf.phantom import patient_id
            jobs = [PatientJob("phantom", patient_id(config.seed, i), patient_id(config.seed, i),
                               (config.seed, i, config.phantom))
                    for i in range(config.patients)]
            return jobs, report
        manual_dir = os.fspath(dl_manager.manual_dir)
        if config.source == "spider_slices":
            return self._slice_jobs(manual_dir, report)
        if config.source == "folder":
            ids = sources.folder_patients(manual_dir)  # checks the layout first
            table = labels_io.read_labels(os.path.join(manual_dir, "labels.csv"))
            files = {pid: sources.find_scan(os.path.join(manual_dir, "scans"), pid,
                                            dicom=True)
                     for pid in ids}
            what = "labels.csv"
        elif config.source == "spider":
            ids = sources.spider_patients(manual_dir)  # checks the layout first
            table = sources.read_spider_gradings(
                os.path.join(manual_dir, "radiological_gradings.csv"))
            files = {pid: os.path.join(manual_dir, "images", f"{pid}_t2.mha") for pid in ids}
            what = "radiological_gradings.csv"
        else:
            raise ValueError(f"unknown source {config.source!r}")
        rows = {}
        for key, value in table.items():
            rows.setdefault(key[0], {})[key] = value
        expected = ("scans/{}.*" if config.source == "folder"
                    else "images/{0}_t2.mha and masks/{0}_t2.mha")
        for pid in sorted(set(rows) - set(ids)):
            reason = (f"{manual_dir}: patient {pid} has labels in {what} but no "
                      f"{expected.format(pid)}")
            if self.strict:
                raise ScanError(reason)
            report["skipped_scans"].append({"patient": pid, "file": None, "reason": reason})
        jobs = []
        for pid in ids:
            if pid not in rows:
                report["skipped_scans"].append({
                    "patient": pid, "file": files[pid],
                    "reason": f"{files[pid]}: no labelled disc in {what}"})
                continue
            jobs.append(PatientJob(config.source, pid, files[pid], (manual_dir, rows[pid])))
        return jobs, report

    def _slice_jobs(self, manual_dir, report):
        """One job per image of a spider_slices folder; the detector runs here for the
        images whose boxes do not place their discs. Report: ``positions`` counts the
        images by where their discs' positions came from."""
        def missing(patient, path, reason):
            report["skipped_scans"].append({"patient": patient, "file": path, "reason": reason})

        images = spider_slices.read_slices(  # checks the layout first
            manual_dir, on_missing=None if self.strict else missing)
        gradings = os.path.join(manual_dir, spider_slices.GRADINGS_CSV)
        table = sources.read_spider_gradings(gradings)
        numbers = spider_slices.graded_numbers(gradings)
        rows = {}
        for (pid, level), value in table.items():
            rows.setdefault(pid, {})[level] = value
        jobs, counts = [], {}
        for image in tfds.core.utils.tqdm(images, desc="Placing discs", unit=" images",
                                          leave=False):
            if image.patient not in rows:
                report["skipped_scans"].append({
                    "patient": image.patient, "file": image.path,
                    "reason": f"{image.path}: no lumbar disc of patient {image.patient} is "
                              f"graded in {spider_slices.GRADINGS_CSV}"})
                continue
            patient_numbers = numbers.get(image.patient, [])
            try:
                located = spider_slices.positions(image, patient_numbers, self.detect)
            except ScanError as error:
                if self.strict:
                    raise
                report["skipped_scans"].append(
                    {"patient": image.patient, "file": image.path, "reason": str(error)})
                continue
            if located is None:
                reason = (f"{image.path}: its {len(image.boxes)} boxes are not the patient's "
                          f"{len(patient_numbers)} graded discs" if image.boxes
                          else f"{image.path}: no disc boxes")
                report["skipped_scans"].append({
                    "patient": image.patient, "file": image.path,
                    "reason": reason + "; a detector places such discs (spine-tf build-data "
                                       "passes the shipped one)"})
                continue
            counts[located.source] = counts.get(located.source, 0) + 1
            check = (spider_slices.spacing_check(image, located) if located.source == "boxes"
                     else None)
            if check is not None:
                report.setdefault("spacing_checks", []).append(check)
            if located.source == "detector":
                report.setdefault("placed_by_detector", []).append({
                    "file": image.path, "levels": [disc.level for disc in located.discs],
                    "pixel_size_mm": located.pixel_size_mm, "notes": list(located.notes)})
            jobs.append(PatientJob("spider_slices", image.patient, image.path,
                                   (image, rows[image.patient], located)))
        report["positions"] = counts
        return jobs, report

    def _source_name(self, dl_manager):
        if self.builder_config.source == "phantom":
            return f"phantom cohort (seed {self.builder_config.seed})"
        return os.fspath(dl_manager.manual_dir)

    def _write_report(self, report):
        path = epath.Path(self.data_dir) / REPORT_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1))

    def build_report(self):
        """The build report of the prepared dataset (``build_report.json``) as a dict.

        Keys: ``skipped_scans`` (patient, file, reason), ``skipped_discs``
        (patient, level, reason), ``patients`` and ``examples`` per split;
        spider_slices also ``positions`` (images per position source),
        ``examples_by_position`` (discs per position source),
        ``placed_by_detector`` (file, levels found, pixel size, notes) and
        ``spacing_checks`` (per box-placed image: the listed pixel size beside the one its
        discs' spacing gives, and whether they agree; only the ratio of row to column
        spacing shapes a volume, so this is a record, not a correction).
        """
        return json.loads((epath.Path(self.data_dir) / REPORT_NAME).read_text())


def builder(config="phantom_small", data_dir=None, workers=None, strict=False, detect=None,
            **kwargs):
    """A SpineDiscs builder by config name or SpineDiscsConfig (see SpineDiscs)."""
    return SpineDiscs(config=config, data_dir=data_dir, workers=workers, strict=strict,
                      detect=detect, **kwargs)


__all__ = ["SpineDiscs", "SpineDiscsConfig", "builder", "phantom_config"]
