"""DICOM studies: every series in a folder, and which one is the sagittal T2.

A study arrives as a folder in any layout: study/series/instances, one flat folder of mixed
series, or a DICOMDIR beside its files (the folder, or the DICOMDIR file itself, whose
records name the files). ``study_series`` reads the headers of every DICOM file there
(pydicom, no pixel data), groups them by SeriesInstanceUID and orders each series' files
along its slice normal. ``select_series`` is the one path from a folder to the series read.
``choose_series`` picks the sagittal T2 by these rules, written down once here:

- **orientation**, from ImageOrientationPatient: the slice normal (row x column direction)
  along the patient's left-right axis is sagittal, along anterior-posterior coronal, along
  head-feet axial (the largest component; ``orientation_of``);
- **weighting**, from SeriesDescription first, since scanners name their sequences: STIR,
  TIRM or a fat-suppressed inversion recovery is ``STIR``; T2 (T2W, T2 TSE, T2 SPACE) is
  ``T2``; T1 is ``T1``; PD is ``PD``. Else from EchoTime / RepetitionTime: TE >= 60 ms and
  TR >= 1500 ms is ``T2``, TE <= 30 ms and TR <= 1000 ms is ``T1``, TE <= 30 ms and TR >=
  1500 ms is ``PD`` (``weighting_of``);
- a localiser (ImageType LOCALIZER) is never chosen unless named;
- a folder holding several studies is one scan per study (``studies``);
- the one sagittal T2 series is chosen; none, or several, is an error that lists every
  series (number, description, orientation, weighting, images) so that ``--series NUMBER``,
  ``UID`` or ``DESCRIPTION`` can choose;
- the series read must have its images evenly spaced along the slice normal: two images at
  one position (an image sent twice under a new UID, repeated acquisitions) or a gap (a
  missing slice) are an error naming the series, where a reader would misplace the slices.
"""

import contextlib
import dataclasses
import os
import re
import typing

import numpy as np

from spine_tf.io.formats import ScanError, ras_affine

T2_TE_MS, T2_TR_MS = 60.0, 1500.0
T1_TE_MS, T1_TR_MS = 30.0, 1000.0
SLICE_GAP_TOLERANCE = 0.1
"""Largest relative difference of a series' slice gaps from their median."""
_DESCRIPTIONS = (("STIR", r"stir|tirm|\bir\b"), ("T2", r"t2"), ("T1", r"t1"), ("PD", r"\bpd"))


@dataclasses.dataclass(frozen=True)
class Series:
    """One series of a study.

    Attributes:
        uid: SeriesInstanceUID.
        number: SeriesNumber (None if absent).
        description: SeriesDescription ('' if absent).
        files: its files, sorted.
        orientation: ``sagittal``, ``coronal``, ``axial`` or ``unknown``.
        weighting: ``T2``, ``T1``, ``STIR``, ``PD`` or ``unknown``.
        why: how the weighting was read.
        localizer: its ImageType says LOCALIZER (a scout: never chosen unless named).
        multiframe: one enhanced multi-frame file (``read_multiframe``).
        study_uid: StudyInstanceUID ('' if absent).
        study: the study's identity for reports: ``uid``, ``patient_id``, ``date``,
            ``accession`` and ``description`` (each '' if absent).
        slice_problem: what keeps its images from being one evenly spaced stack ('' if
            nothing; ``slice_problem``).
    """

    uid: str
    number: typing.Optional[int]
    description: str
    files: tuple
    orientation: str
    weighting: str
    why: str
    localizer: bool = False
    multiframe: bool = False
    study_uid: str = ""
    study: typing.Optional[dict] = None
    slice_problem: str = ""

    def label(self):
        """One line naming the series for messages and reports."""
        number = "?" if self.number is None else self.number
        kind = "localiser, " if self.localizer else ""
        return (f"series {number} {self.description!r} ({kind}{self.orientation}, "
                f"{self.weighting}; {len(self.files)} images)")

    def record(self, why):
        """What a scan and its grades.json say about the series: number, uid, description,
        orientation, weighting, images, ``why`` it was chosen, its ``study`` and its
        ``files`` in slice order."""
        return {"number": self.number, "uid": self.uid, "description": self.description,
                "orientation": self.orientation, "weighting": self.weighting,
                "images": len(self.files), "why": why, "study": dict(self.study or {}),
                "files": list(self.files)}


def orientation_of(image_orientation):
    """``sagittal``/``coronal``/``axial`` from ImageOrientationPatient (6 numbers), or
    ``unknown``."""
    try:
        values = np.asarray([float(v) for v in image_orientation], np.float64)
    except (TypeError, ValueError):
        return "unknown"
    if values.shape != (6,):
        return "unknown"
    normal = np.cross(values[:3], values[3:])
    if not np.linalg.norm(normal):
        return "unknown"
    return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(normal)))]


def weighting_of(description, echo_time, repetition_time):
    """(weighting, why) from a series' description, else its TE and TR in ms."""
    text = (description or "").lower()
    for name, pattern in _DESCRIPTIONS:
        if re.search(pattern, text):
            return name, f"description {description!r}"
    if echo_time is None or repetition_time is None:
        return "unknown", "no telling description and no echo and repetition times"
    te, tr = float(echo_time), float(repetition_time)
    times = f"TE {te:g} ms, TR {tr:g} ms"
    if te >= T2_TE_MS and tr >= T2_TR_MS:
        return "T2", times
    if te <= T1_TE_MS and tr <= T1_TR_MS:
        return "T1", times
    if te <= T1_TE_MS and tr >= T2_TR_MS:
        return "PD", times
    return "unknown", times


def _along(header):
    """An image's position (mm) along its slice normal, or None without its geometry."""
    try:
        cosines = np.asarray([float(v) for v in header.ImageOrientationPatient])
        position = np.asarray([float(v) for v in header.ImagePositionPatient])
    except (AttributeError, TypeError, ValueError):
        return None
    return float(np.dot(np.cross(cosines[:3], cosines[3:]), position))


def _in_slice_order(items):
    """A series' files along its slice normal (ImagePositionPatient), else by InstanceNumber,
    else by name: a PACS names files by UID, which sorts ``.10`` before ``.2``."""
    def key(item):
        path, header = item
        along, number = _along(header), getattr(header, "InstanceNumber", None)
        return (along is None, along or 0.0, number in (None, ""), int(number or 0), path)
    return tuple(path for path, _ in sorted(items, key=key))


def slice_problem(headers):
    """'' where a series' images lie one per position, evenly spaced along the slice normal
    (or carry no position), else what is wrong, in words."""
    return spacing_problem([a for a in map(_along, headers) if a is not None])


def spacing_problem(along):
    """'' where images at these positions (mm along the slice normal) lie one per position,
    evenly spaced, else what is wrong, in words."""
    positions = np.sort(np.asarray(along, np.float64))
    gaps = np.diff(positions)
    if not len(gaps):
        return ""
    repeated = int(np.sum(gaps < 1e-3))
    if repeated:
        return (f"{repeated} of its {len(positions)} images repeat another's slice position (an "
                "image stored twice, or several acquisitions in one series)")
    median = float(np.median(gaps))
    if np.any(np.abs(gaps - median) > SLICE_GAP_TOLERANCE * median):
        return (f"uneven slice gaps ({gaps.min():.3g} to {gaps.max():.3g} mm; a missing "
                "slice?): its slices cannot be placed as one volume")
    return ""


def is_dicomdir(path):
    """Whether ``path`` is a DICOMDIR file (a DICOM file-set's index, as on a CD)."""
    return os.path.isfile(path) and os.path.basename(path).upper() == "DICOMDIR"


def _candidate_files(path):
    """The files that may hold the images: a DICOMDIR's image records, or every file below
    a folder."""
    if is_dicomdir(path):
        import pydicom
        from pydicom.fileset import FileSet
        try:
            return sorted(str(instance.path) for instance in FileSet(pydicom.dcmread(path)))
        except Exception as error:  # pylint: disable=broad-except  (pydicom's many kinds)
            raise ScanError(f"{path}: cannot read this DICOMDIR: {error}") from error
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        found += [os.path.join(root, name) for name in sorted(files)
                  if name.upper() != "DICOMDIR" and not name.startswith(".")]
    return found


MULTIFRAME = ("it is stored as several multi-frame files, which spine_tf does not read yet: "
              "export it as one enhanced file or as classic single-frame images")


def _frames(header):
    """The number of frames of a multi-frame image (enhanced MR and the like), else 0."""
    frames = int(getattr(header, "NumberOfFrames", 0) or 0)
    return frames if frames > 1 or "SharedFunctionalGroupsSequence" in header else 0


def _orientation(header):
    """ImageOrientationPatient, at the top level or in a multi-frame image's shared
    functional groups."""
    if "ImageOrientationPatient" in header:
        return header.ImageOrientationPatient
    try:
        return header.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0] \
            .ImageOrientationPatient
    except (AttributeError, IndexError):
        return None


def study_series(folder):
    """Every DICOM series below ``folder`` (any nesting) or indexed by a DICOMDIR file, by
    series number.

    Raises:
        ScanError: no DICOM image there.
    """
    import pydicom
    groups = {}
    for path in _candidate_files(folder):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # pylint: disable=broad-except  (not DICOM: pydicom's many kinds)
            continue
        uid = str(getattr(header, "SeriesInstanceUID", "") or "")
        if not uid or ("ImagePositionPatient" not in header and "PixelSpacing" not in header
                       and not _frames(header)):
            continue
        groups.setdefault(uid, []).append((path, header))
    if not groups:
        raise ScanError(f"{folder}: no DICOM image "
                        + ("indexed by this DICOMDIR" if is_dicomdir(folder)
                           else "below this folder"))
    out = []
    for uid, items in groups.items():
        header = items[0][1]

        def value(keyword, default=None, header=header):
            if keyword == "ImageOrientationPatient":
                return _orientation(header)
            return getattr(header, keyword, default)
        study = {key: str(value(tag, "") or "") for key, tag in (
            ("uid", "StudyInstanceUID"), ("patient_id", "PatientID"), ("date", "StudyDate"),
            ("accession", "AccessionNumber"), ("description", "StudyDescription"))}
        frames = _frames(header)
        problem = (MULTIFRAME if len(items) > 1 else "") if frames else slice_problem(
            [h for _, h in items])
        out.append(series_from(
            uid, _in_slice_order(items), value, study_uid=study["uid"], study=study,
            multiframe=bool(frames), slice_problem=problem))
    return by_number(out)


def series_from(uid, files, value, **details):
    """A ``Series`` of ``files`` (its images' paths, or SOPInstanceUIDs on a server) from
    ``value(keyword, default=None)``, which reads the header of the image that speaks for
    the series (a pydicom dataset here, DICOM JSON over DICOMweb): its number, description,
    weighting and why, orientation and whether it is a localiser; ``details``: the other
    fields."""
    description = str(value("SeriesDescription", "") or "")
    weighting, why = weighting_of(description, value("EchoTime"), value("RepetitionTime"))
    number = value("SeriesNumber")
    return Series(uid=uid, number=None if number in (None, "") else int(number),
                  description=description, files=tuple(files),
                  orientation=orientation_of(value("ImageOrientationPatient")),
                  weighting=weighting, why=why,
                  localizer="LOCALIZER" in [str(v).upper() for v in value("ImageType", []) or []],
                  **details)


def by_number(series):
    """Series in SeriesNumber order (those without one last), then by UID."""
    return sorted(series, key=lambda s: (s.number is None, s.number or 0, s.uid))


def choose_series(series, folder, choice=None):
    """(the series to grade, the reason) among a study's ``series``.

    Args:
        series: ``study_series``'s list.
        folder: the study, for messages.
        choice: None (the sagittal T2), or a series number, SeriesInstanceUID or
            description (case-insensitive) that names exactly one series.

    Raises:
        ScanError: naming the study and listing every series, when the choice names none or
            several, or without a choice when no series or several are sagittal T2.
    """
    listing = "; ".join(s.label() for s in series)
    if choice is not None:
        text = str(choice).strip()
        named = [s for s in series if text in (str(s.number), s.uid)
                 or text.lower() == s.description.lower()]
        if len(named) != 1:
            raise ScanError(f"{folder}: --series {text!r} names {len(named)} of its series; "
                            f"they are: {listing}")
        return named[0], f"chosen with --series {text}"
    fitting = [s for s in series if s.orientation == "sagittal" and s.weighting == "T2"
               and not s.localizer]
    if len(fitting) == 1:
        chosen = fitting[0]
        return chosen, (f"the study's one sagittal T2 series (orientation from "
                        f"ImageOrientationPatient; T2 from its {chosen.why})")
    what = "no sagittal T2 series" if not fitting else f"{len(fitting)} sagittal T2 series"
    raise ScanError(f"{folder}: {what}; choose one with --series NUMBER|UID|DESCRIPTION. "
                    f"Its series: {listing}")


@contextlib.contextmanager
def naming_series(path, chosen):
    """Turns a ScanError raised inside into one line naming ``chosen`` (a ``Series``, or None:
    left as it is); ITK's errors about a series' pixel data run over several lines."""
    try:
        yield
    except ScanError as error:
        if chosen is None:
            raise
        reason = " ".join(str(error).split()).removeprefix(f"{path}: ")
        raise ScanError(f"{path}: {chosen.label()}: {reason}") from None


def _group(frames, shared, index, name):
    """A functional group item of frame ``index``: its own, else the shared one."""
    for groups in (frames[index] if frames else None, shared):
        if groups is not None and name in groups:
            return groups[name].value[0]
    return None


def read_multiframe(series):
    """(voxels (columns, rows, frames), RAS affine) of an enhanced multi-frame series: its
    frames in order along the slice normal (PlanePositionSequence), each scaled by its
    PixelValueTransformationSequence (else RescaleSlope / RescaleIntercept).

    Raises:
        ScanError: naming the file: no frame geometry, or frames not evenly spaced.
    """
    import pydicom
    path = series.files[0]
    ds = pydicom.dcmread(path)
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds \
        else None
    frames = ds.get("PerFrameFunctionalGroupsSequence")
    count = int(ds.get("NumberOfFrames", 1) or 1)
    plane = _group(frames, shared, 0, "PlaneOrientationSequence")
    measures = _group(frames, shared, 0, "PixelMeasuresSequence")
    found = [_group(frames, shared, k, "PlanePositionSequence") for k in range(count)]
    if plane is None or measures is None or any(p is None for p in found):
        raise ScanError(f"{path}: a multi-frame image without the orientation, pixel spacing "
                        "or position of its frames")
    cosines = np.asarray(plane.ImageOrientationPatient, np.float64)
    row_mm, col_mm = (float(v) for v in measures.PixelSpacing)
    positions = np.asarray([p.ImagePositionPatient for p in found], np.float64)
    normal = np.cross(cosines[:3], cosines[3:])
    order = np.argsort(positions @ normal, kind="stable")
    pixels = ds.pixel_array.reshape(count, ds.Rows, ds.Columns).astype(np.float32)
    for k in range(count):
        scale = _group(frames, shared, k, "PixelValueTransformationSequence") or ds
        pixels[k] = (pixels[k] * float(scale.get("RescaleSlope", 1) or 1)
                     + float(scale.get("RescaleIntercept", 0) or 0))
    problem = spacing_problem(positions @ normal)
    if problem:
        raise ScanError(f"{path}: its frames are not evenly spaced: {problem}")
    if count > 1:
        step = np.diff(positions[order], axis=0).mean(axis=0)
    else:
        step = normal * float(measures.get("SliceThickness", 1.0) or 1.0)
    lps = np.column_stack([cosines[:3] * col_mm, cosines[3:] * row_mm, step])
    return np.transpose(pixels[order], (2, 1, 0)), ras_affine(lps, positions[order][0])


def studies(series):
    """{StudyInstanceUID: a name for it} of a folder's ``study_series``: its PatientID and
    StudyDate, made unique with the UID's end where two studies share them."""
    names = {}
    for one in series:
        study = one.study or {}
        named = "_".join(v for v in (study.get("patient_id"), study.get("date")) if v)
        names.setdefault(one.study_uid, named or one.study_uid[-8:])
    shared = [n for n in names.values() if list(names.values()).count(n) > 1]
    return {uid: f"{name}_{uid[-6:]}" if name in shared else name
            for uid, name in names.items()}


def select_series(path, choice=None, study=None):
    """(the series of a DICOM folder or DICOMDIR to read, why): a folder's one sagittal (or
    unoriented) series, else ``choose_series`` among the study's (``choice`` as there: it
    can name an axial 3D series, which is then resliced); ``study``: a StudyInstanceUID, for
    a folder holding several studies.

    Raises:
        ScanError: naming the folder (see ``study_series`` and ``choose_series``).
    """
    series = study_series(path)  # every header read once
    if study is not None:
        series = [s for s in series if s.study_uid == study]
        if not series:
            raise ScanError(f"{path}: no series of study {study}")
        path = f"{path} (study {study})"
    if choice is None and len(series) == 1 and series[0].orientation in ("sagittal",
                                                                         "unknown"):
        chosen, why = series[0], "the folder's one series"
    else:
        chosen, why = choose_series(series, path, choice)
    if chosen.slice_problem:
        raise ScanError(f"{path}: {chosen.label()}: {chosen.slice_problem}")
    return chosen, why
