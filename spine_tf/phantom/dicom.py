"""A phantom patient as a DICOM MR study, the way a scanner or a PACS export holds one.

``write_study`` writes four series of one study, with the tags the readers of
``spine_tf.io.dicom`` and a viewer use (orientation and position, spacing,
echo and repetition times, descriptions, UIDs, patient and study identity):

=====  ==================  ========  ======================================
 no.    description         TE / TR   what
=====  ==================  ========  ======================================
 1      LOCALIZER           4 / 9     tri-plane: mid-sagittal, coronal, axial
 2      SAG TSE             12 / 550  sagittal, T1-like contrast (by times only)
 3      T2 TSE SAG          100/3500  the phantom scan itself: the one to grade
 4      T2 TSE AX           95/4000   axial slices resliced through the volume
=====  ==================  ========  ======================================

in one of three layouts: ``nested`` (a folder per series, files without a
suffix, as many PACS exports), ``flat`` (every file of every series in one
folder, ``.dcm``), or ``dicomdir`` (a DICOMDIR with pydicom's standard
file-set tree). Uncompressed explicit-VR little endian; geometry from the
patient's RAS affine converted to DICOM's LPS.

Example:
    study = write_study(make_patient(0, 2), "study/", layout="dicomdir")
    study.series["t2"].uid, study.folder
"""

import dataclasses
import os

import numpy as np

from spine_tf.io.formats import LPS_RAS

LAYOUTS = ("nested", "flat", "dicomdir")
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
UID_ROOT = "1.2.826.0.1.3680043.10.1342."
"""Where the phantom's UIDs start (an org root; the rest is derived from the patient)."""
# name: (number, description, echo time ms, repetition time ms)
SERIES = {"localizer": (1, "LOCALIZER", 4.0, 9.0),
          "t1": (2, "SAG TSE", 12.0, 550.0),
          "t2": (3, "T2 TSE SAG", 100.0, 3500.0),
          "axial": (4, "T2 TSE AX", 95.0, 4000.0)}
AXIAL_SLICES = 6


@dataclasses.dataclass(frozen=True)
class WrittenSeries:
    """One series written: its SeriesInstanceUID, number, description and files."""

    uid: str
    number: int
    description: str
    files: tuple


@dataclasses.dataclass(frozen=True)
class PhantomStudy:
    """A study written by ``write_study``: its folder, StudyInstanceUID, PatientID and
    series by name (``localizer``, ``t1``, ``t2``, ``axial``); ``dicomdir`` is the DICOMDIR
    file of that layout, else None."""

    folder: str
    study_uid: str
    patient_id: str
    series: dict
    dicomdir: str = None


def _uid(patient, *parts):
    import zlib
    key = zlib.crc32(patient.patient_id.encode())
    return UID_ROOT + ".".join(str(p) for p in (key, *parts))


def _planes(patient, name):
    """[(pixels (rows, cols), ImagePositionPatient, ImageOrientationPatient, PixelSpacing,
    thickness)] of one series, in DICOM's LPS frame."""
    linear, origin = LPS_RAS @ patient.affine[:3, :3], LPS_RAS @ patient.affine[:3, 3]
    step = np.linalg.norm(linear, axis=0)  # (slice, row, col) mm
    axis = linear / step  # unit directions of the internal axes
    image = np.asarray(patient.image)
    slices, rows, _ = image.shape

    def plane(pixels, corner, row_axis, col_axis, thickness):
        # a pixel's column runs along row_axis (DICOM's first cosine), its row along col_axis
        return (pixels, origin + linear @ np.asarray(corner, float),
                np.concatenate([axis[:, row_axis], axis[:, col_axis]]),
                (step[col_axis], step[row_axis]), thickness)

    sagittal = [plane(image[s], (s, 0, 0), 2, 1, step[0]) for s in range(slices)]
    if name in ("t1", "t2"):
        if name == "t1":  # discs and fluid dark, the rest brighter: a T1-like look
            top = int(image.max())
            sagittal = [(np.where(p > 0, top - p // 2, 0).astype(p.dtype), *rest)
                        for p, *rest in sagittal]
        return sagittal
    axial_rows = np.linspace(rows * 0.2, rows * 0.8, AXIAL_SLICES).round().astype(int)
    axial = [plane(np.ascontiguousarray(image[:, r, :].T), (0, r, 0), 0, 2, step[1])
             for r in axial_rows]
    if name == "axial":
        return axial
    middle = image.shape[2] // 2  # pixel rows along the slices, columns along the rows
    coronal = plane(np.ascontiguousarray(image[:, :, middle]), (0, 0, middle), 1, 0, step[2])
    # a localiser is coarse and the coronal plane of a 3-4 mm sagittal series is blocky
    return [sagittal[slices // 2], coronal, axial[len(axial) // 2]]


def _dataset(patient, name, index, pixels, position, orientation, spacing, thickness,
             study_uid, series_uid):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian
    number, description, te, tr = SERIES[name]
    sop_uid = _uid(patient, number, index + 1, 7)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER" if name == "localizer" else "M"]
    ds.SOPClassUID, ds.SOPInstanceUID = MR_IMAGE_STORAGE, sop_uid
    ds.StudyDate, ds.StudyTime = "20260101", "120000"
    ds.SeriesDate, ds.SeriesTime = "20260101", f"12{number:02d}00"
    ds.AccessionNumber, ds.Modality, ds.Manufacturer = "PH" + patient.patient_id[-5:], "MR", \
        "spine_tf phantom"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription, ds.SeriesDescription = "LUMBAR SPINE", description
    ds.PatientName, ds.PatientID = f"Phantom^{patient.patient_id}", patient.patient_id
    ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
    ds.BodyPartExamined = "LSPINE"
    ds.ScanningSequence, ds.SequenceVariant = ("GR" if name == "localizer" else "SE"), "NONE"
    ds.MRAcquisitionType = "2D"
    ds.EchoTime, ds.RepetitionTime = f"{te:g}", f"{tr:g}"
    ds.MagneticFieldStrength = "1.5"
    ds.SliceThickness = f"{thickness:.4f}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.FrameOfReferenceUID = _uid(patient, 9)
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", number, index + 1
    ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = [f"{v:.6f}" for v in spacing]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    pixels = np.clip(np.rint(pixels), -32768, 32767)
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
    return ds


def write_study(patient, folder, layout="nested"):
    """Writes ``patient`` (a ``PhantomPatient``) as a four-series DICOM study.

    Args:
        patient: the phantom patient (or anything with its ``patient_id``, int16 internal-
            frame ``image`` and ``affine``); its scan becomes series 3 (T2 sagittal).
        folder: the study's folder (created).
        layout: ``nested``, ``flat`` or ``dicomdir`` (see the module docstring).

    Returns:
        A ``PhantomStudy``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    study_uid = _uid(patient, 1)
    datasets = {}
    for name, (number, description, _, _) in SERIES.items():
        series_uid = _uid(patient, number, 3)
        datasets[name] = [_dataset(patient, name, k, *plane, study_uid, series_uid)
                          for k, plane in enumerate(_planes(patient, name))]
    os.makedirs(folder, exist_ok=True)
    if layout == "dicomdir":
        return _write_file_set(patient, folder, datasets, study_uid)
    series = {}
    for name, items in datasets.items():
        number, description = SERIES[name][:2]
        files = []
        for ds in items:
            if layout == "nested":
                path = os.path.join(folder, f"SE{number:03d}", f"IM{ds.InstanceNumber:05d}")
            else:
                path = os.path.join(folder, f"{ds.SOPInstanceUID}.dcm")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
        series[name] = WrittenSeries(items[0].SeriesInstanceUID, number, description,
                                     tuple(files))
    return PhantomStudy(os.fspath(folder), study_uid, patient.patient_id, series)


def _write_file_set(patient, folder, datasets, study_uid):
    from pydicom.fileset import FileSet
    file_set = FileSet()
    for items in datasets.values():
        for ds in items:
            file_set.add(ds)
    file_set.write(folder)
    by_uid = {}
    for instance in file_set:
        by_uid.setdefault(instance.SeriesInstanceUID, []).append(instance.path)
    series = {name: WrittenSeries(items[0].SeriesInstanceUID, *SERIES[name][:2],
                                  tuple(sorted(by_uid[items[0].SeriesInstanceUID])))
              for name, items in datasets.items()}
    return PhantomStudy(os.fspath(folder), study_uid, patient.patient_id, series,
                        dicomdir=os.path.join(folder, "DICOMDIR"))


__all__ = ["LAYOUTS", "SERIES", "PhantomStudy", "WrittenSeries", "write_study"]
