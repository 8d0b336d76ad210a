"""Reading scan and mask files: the formats, each file's checks, and ScanError.

Every reader returns plain arrays (and a RAS affine) in the file's own voxel
order; ``spine_tf.io.scan`` turns them into a ``Scan`` in the internal frame.
NIfTI through nibabel, .mha/.mhd/.nrrd and DICOM series folders through
SimpleITK, 2D pictures through Pillow.
"""

import os
from typing import Sequence, Tuple

import nibabel as nib
import numpy as np
from nibabel.spatialimages import HeaderDataError

from spine_tf.io.atomic import atomic_path

from spine_tf.errors import SpineTFError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd")
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MASK_2D_SUFFIXES = (".npy", ".png")

_SITK_HINT = "needs SimpleITK (a spine-tf dependency): pip install SimpleITK"


class ScanError(SpineTFError, ValueError):
    """A scan or mask file that cannot be used; the message starts with its path."""


def scan_error(path, reason: str) -> ScanError:
    return ScanError(f"{path or '<in-memory array>'}: {reason}")


def scan_name(path) -> str:
    """A scan's name: its file (or DICOM folder; a DICOMDIR's folder) name without the
    suffix.

    Double suffixes count as one: ``case.01.nii.gz`` -> ``case.01``.
    """
    name = os.path.basename(os.path.normpath(os.fspath(path)))
    if name.upper() == "DICOMDIR":  # a file-set is named after its folder
        return os.path.basename(os.path.dirname(os.path.abspath(os.fspath(path))))
    for suffix in NIFTI_SUFFIXES + ITK_SUFFIXES + IMAGE_2D_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def suffix_of(path: str) -> str:
    name = os.path.basename(path.rstrip("/\\")).lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return os.path.splitext(name)[1]


def file_kind(path: str, image_2d_suffixes: Sequence[str]) -> str:
    """Returns 'nifti', 'itk', 'dicom' or 'image2d' for an existing path."""
    if not os.path.exists(path):
        raise scan_error(path, "file not found (no such file or directory)")
    if os.path.isdir(path):
        return "dicom"
    suffix = suffix_of(path)
    if suffix in NIFTI_SUFFIXES:
        return "nifti"
    if suffix in ITK_SUFFIXES:
        return "itk"
    if suffix in image_2d_suffixes:
        return "image2d"
    known = NIFTI_SUFFIXES + ITK_SUFFIXES + tuple(image_2d_suffixes)
    raise scan_error(path, f"unsupported file type {suffix or '(no suffix)'!r}; expected one "
                     f"of {', '.join(known)} or a DICOM folder")


def check_dtype(path, dtype) -> None:
    dtype = np.dtype(dtype)
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise scan_error(path, f"non-numeric voxel type {dtype}: expected integer or real "
                         f"greyscale values")


def squeeze_to_3d(path, data: np.ndarray, what: str) -> np.ndarray:
    """Brings a 2D..nD voxel array to 3D, squeezing singleton trailing axes."""
    if data.ndim < 2:
        raise scan_error(path, f"wrong number of dimensions: a {what} must be 3D, got "
                         f"{data.ndim}D data of shape {data.shape}")
    if data.ndim == 2:
        return data[:, :, None]
    if data.ndim > 3:
        extra = data.shape[3:]
        if any(n != 1 for n in extra):
            raise scan_error(path, f"wrong number of dimensions: {data.ndim}D data of shape "
                             f"{data.shape} holds {int(np.prod(extra))} volumes; a "
                             f"{what} must be a single 3D volume")
        return data.reshape(data.shape[:3])
    return data


def read_volume(path: str, kind: str, what: str, series_files=None) -> Tuple[np.ndarray,
                                                                             np.ndarray]:
    """Reads a NIfTI / SimpleITK volume: (3D array in file order, RAS affine); for a DICOM
    folder, ``series_files``: the files of the series to read."""
    if kind == "nifti":
        data, affine = read_nifti(path, what)
    else:
        data, affine = read_itk(path, kind, what, series_files)
    return squeeze_to_3d(path, data, what), affine


def read_nifti(path: str, what: str) -> Tuple[np.ndarray, np.ndarray]:
    try:
        image = nib.load(path)
    except Exception as exc:  # nibabel raises many types for broken files.
        raise scan_error(path, f"cannot read corrupt or unrecognised NIfTI file: "
                         f"{type(exc).__name__}: {exc}") from exc
    check_dtype(path, image.get_data_dtype())
    dtype = np.float32 if what == "scan" else np.float64
    try:
        data = image.get_fdata(dtype=dtype)
    except Exception as exc:  # truncated or corrupt voxel data.
        raise scan_error(path, f"cannot read corrupt or truncated NIfTI voxel data: "
                         f"{type(exc).__name__}: {exc}") from exc
    return data, np.array(image.affine, dtype=np.float64)


def import_sitk(path: str):
    try:
        import SimpleITK  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        raise scan_error(path, f"reading .mha/DICOM {_SITK_HINT}") from exc
    return SimpleITK


def read_itk(path: str, kind: str, what: str, series_files=None) -> Tuple[np.ndarray,
                                                                          np.ndarray]:
    sitk = import_sitk(path)
    try:
        if kind == "dicom":
            image = read_dicom_series(sitk, series_files)
        else:
            image = sitk.ReadImage(path)
    except ScanError:
        raise
    except Exception as exc:  # SimpleITK raises RuntimeError for broken files.
        raise scan_error(path, f"cannot read corrupt or unrecognised image file: "
                         f"{type(exc).__name__}: {str(exc).strip()}") from exc
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise scan_error(path, f"non-numeric voxel type: {image.GetNumberOfComponentsPerPixel()} "
                         f"components per voxel ({image.GetPixelIDTypeAsString()}); "
                         f"expected greyscale")
    dimension = image.GetDimension()
    array = sitk.GetArrayFromImage(image)
    check_dtype(path, array.dtype)
    array = np.transpose(array)  # ITK arrays are (..., z, y, x); we want (x, y, z, ...).
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(dimension, dimension)
    spacing = np.array(image.GetSpacing(), dtype=np.float64)
    origin = np.array(image.GetOrigin(), dtype=np.float64)
    if dimension == 2:
        direction = np.block([[direction, np.zeros((2, 1))], [np.zeros((1, 2)), np.ones((1, 1))]])
        spacing = np.append(spacing, 1.0)
        origin = np.append(origin, 0.0)
    elif dimension > 3:
        direction, spacing, origin = direction[:3, :3], spacing[:3], origin[:3]
    return array, ras_affine(direction @ np.diag(spacing), origin)


LPS_RAS = np.diag([-1.0, -1.0, 1.0])
"""DICOM's and ITK's LPS <-> NIfTI's RAS: its own inverse."""


def ras_affine(linear_lps, origin_lps):
    """The (4, 4) voxel -> RAS affine of a grid given in LPS: its (3, 3) voxel steps (one
    column per array axis) and the position of voxel 0."""
    affine = np.eye(4)
    affine[:3, :3] = LPS_RAS @ np.asarray(linear_lps, np.float64)
    affine[:3, 3] = LPS_RAS @ np.asarray(origin_lps, np.float64)
    return affine


def read_dicom_series(sitk, files):
    """One DICOM series from its files in slice order (``spine_tf.io.dicom.select_series``
    chose them)."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(files))
    return reader.Execute()


def open_picture(path: str):
    from PIL import Image  # pylint: disable=import-outside-toplevel

    try:
        picture = Image.open(path)
        picture.load()
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, ...
        raise scan_error(path, f"cannot read corrupt or unrecognised image file: "
                         f"{type(exc).__name__}: {exc}") from exc
    if getattr(picture, "n_frames", 1) != 1:
        raise scan_error(path, f"wrong number of dimensions: multi-frame image with "
                         f"{picture.n_frames} frames; expected one 2D image")
    return picture


def read_mask_2d(path: str) -> np.ndarray:
    if suffix_of(path) == ".npy":
        try:
            labels = np.load(path, allow_pickle=False)
        except Exception as exc:  # ValueError for pickles, OSError/EOFError for junk.
            raise scan_error(path, f"cannot read corrupt or unrecognised .npy file: "
                             f"{type(exc).__name__}: {exc}") from exc
        if labels.ndim not in (2, 3):
            raise scan_error(path, f"wrong number of dimensions: a 2D mask must have shape "
                             f"(rows, cols) or (1, rows, cols), got {labels.shape}")
        return labels
    picture = open_picture(path)
    if picture.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
        raise scan_error(path, f"colour mask (mode {picture.mode}): a mask PNG must hold one "
                         f"label per pixel (greyscale or palette)")
    return np.asarray(picture)


def to_labels(path: str, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype.fields is not None or labels.dtype.kind not in "biuf":
        raise scan_error(path, f"non-numeric mask dtype {labels.dtype}: expected integer labels")
    if labels.dtype.kind == "f":
        finite = np.isfinite(labels)
        if not np.all(finite):
            raise scan_error(path, f"mask contains {labels.size - int(finite.sum())} NaN or "
                             f"infinite value(s); expected integer labels")
        fractional = np.count_nonzero(labels != np.round(labels))
        if fractional:
            raise scan_error(path, f"mask contains {fractional} non-integer value(s); expected "
                             f"integer labels")
    if labels.size and (labels.min() < np.iinfo(np.int32).min
                        or labels.max() > np.iinfo(np.int32).max):
        raise scan_error(path, "mask labels do not fit in int32")
    return np.ascontiguousarray(labels, dtype=np.int32)


def save_nifti(array, path, scan, *, dtype=None) -> None:
    """Writes an internal-frame array as NIfTI in the scan's original grid.

    The result overlays the original file voxel for voxel. The file is
    written atomically: to a temporary file in the same folder, then moved
    over ``path``; on failure neither a partial file nor the temporary file
    remains, and an existing ``path`` is left untouched. Parent folders are
    created.

    Args:
        array: array of ``scan.image.shape``, optionally with trailing
            channel dimensions.
        path: target ``.nii`` or ``.nii.gz`` file.
        scan: the scan whose grid and affine to use.
        dtype: on-disk dtype; by default the array's, except that bool is
            stored as uint8 and 64-bit integers as int32 when they fit.

    Raises:
        ValueError: for a wrong target suffix or array shape; errors of the
            write itself propagate unchanged.
    """
    path = os.fspath(path)
    name = os.path.basename(path)
    if not any(name.lower().endswith(s) and len(name) > len(s) for s in NIFTI_SUFFIXES):
        raise ValueError(f"{path}: save_nifti writes .nii or .nii.gz files only")
    try:
        out = scan.to_original(np.asarray(array))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if dtype is None:
        dtype = _default_nifti_dtype(out)
    image = nib.Nifti1Image(np.asarray(out, dtype=dtype), scan.original_affine,
                            dtype=dtype)
    image.set_sform(scan.original_affine, code="scanner")
    try:
        image.set_qform(scan.original_affine, code="scanner", strip_shears=False)
    except HeaderDataError:  # A sheared affine has no qform.
        image.set_qform(None)
    with atomic_path(path) as temporary:
        image.to_filename(temporary)


def _default_nifti_dtype(array: np.ndarray):
    kind, size = array.dtype.kind, array.dtype.itemsize
    if kind == "b":
        return np.uint8
    if kind in "iu" and size == 8:
        info = np.iinfo(np.int32)
        if array.size == 0 or (array.min() >= info.min and array.max() <= info.max):
            return np.int32
    return array.dtype
