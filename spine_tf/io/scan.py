"""Reading MRI scans into one internal sagittal frame.

The internal frame
------------------
Every scan is brought to one internal sagittal frame: a numpy array ``image``
of shape ``(slices, rows, cols)``:

- axis 0 (slices): sagittal slices, index increasing towards the patient's
  Left (nibabel axis code ``'L'``);
- axis 1 (rows): index increasing towards Inferior (``'I'``) -- row 0 is at
  the head end, as a sagittal image is displayed;
- axis 2 (cols): index increasing towards Posterior (``'P'``) -- anterior is
  on the left of the displayed image.

So the internal axis codes are ``('L', 'I', 'P')``. World coordinates are
NIfTI RAS+ millimetres: ``Scan.affine`` maps an internal voxel index
``(s, r, c, 1)`` to world ``(x, y, z, 1)``.

Orientation always comes from the file's affine (never assumed) and is
resolved with ``nibabel.orientations``: the file's axes are permuted and
flipped to the nearest internal axes; an oblique acquisition keeps its
rotation in ``Scan.affine``. A true 3D volume acquired in another plane
(axial, coronal) is made sagittal the same way. A single axial or coronal
plane cannot be, and is rejected.

Readers, chosen by suffix (case-insensitive):

- ``.nii``, ``.nii.gz``: nibabel (scaled data, affine from sform/qform).
- ``.mha``, ``.mhd``, ``.nrrd`` and a directory holding one DICOM series:
  SimpleITK (optional extra ``spine-tf[mha]``). ITK's LPS geometry of the
  array ``(x, y, z)`` is converted to RAS:
  ``affine[:3, :3] = diag(-1, -1, 1) @ direction @ diag(spacing)`` and
  ``affine[:3, 3] = diag(-1, -1, 1) @ origin``.
- ``.png``, ``.jpg``, ``.jpeg``, ``.tif``, ``.tiff``: one greyscale 2D
  sagittal image, read as a one-slice scan (rows top to bottom = superior to
  inferior, columns left to right = anterior to posterior); it records no
  geometry, so the spacing comes from the ``spacing_mm`` argument (default
  1 mm) and the affine from :func:`scan_from_array`.

Every problem with an input raises :class:`ScanError`, whose message starts
with the offending path.

Example:
    >>> scan = read_scan("case_001_t2.mha")               # doctest: +SKIP
    >>> scan.image.shape, scan.spacing_mm                 # doctest: +SKIP
    ((15, 512, 512), array([3.3 , 0.59, 0.59]))
    >>> save_nifti(heatmap, "case_001_heatmap.nii.gz", scan)  # doctest: +SKIP
"""

import dataclasses
import os
from typing import Optional, Sequence, Tuple

import nibabel as nib
import numpy as np
from nibabel import orientations
from nibabel.spatialimages import HeaderDataError

from spine_tf.io.atomic import atomic_path
from spine_tf.errors import SpineTFError

INTERNAL_AXCODES = ("L", "I", "P")
"""Axis codes of the internal frame (slices, rows, cols)."""

MIN_SPACING_MM = 0.05
MAX_SPACING_MM = 20.0
MIN_IN_PLANE_VOXELS = 16
"""Fewest rows and columns a sagittal image may have."""

AFFINE_TOLERANCE_MM = 1e-3
"""Largest difference between a mask's affine and its scan's."""

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd")
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MASK_2D_SUFFIXES = (".npy", ".png")

_INTERNAL_ORNT = orientations.axcodes2ornt(INTERNAL_AXCODES)
_SITK_HINT = "needs SimpleITK: pip install 'spine-tf[mha]'"
_AXIS_WORDS = ("left-right", "superior-inferior", "anterior-posterior")


class ScanError(SpineTFError, ValueError):
    """A scan or mask file that cannot be used; the message starts with its path."""


def _error(path, reason: str) -> ScanError:
    return ScanError(f"{path or '<in-memory array>'}: {reason}")


@dataclasses.dataclass(frozen=True, eq=False)
class Scan:
    """A scan in the internal sagittal frame (see the module docstring).

    Attributes:
        image: float32 array (slices, rows, cols), all voxels finite.
        spacing_mm: float64 (3,), voxel spacing along (slices, rows, cols).
        affine: float64 (4, 4), internal voxel index (s, r, c, 1) -> world
            RAS+ mm.
        path: the file (or DICOM folder) it came from; '' for in-memory.
        original_affine: float64 (4, 4), the affine of the file's own voxel
            array, for writing overlays in the file's grid.
        original_shape: spatial shape of the file's own voxel array.
    """

    image: np.ndarray
    spacing_mm: np.ndarray
    affine: np.ndarray
    path: str
    original_affine: np.ndarray
    original_shape: Tuple[int, ...]

    @property
    def num_slices(self) -> int:
        """Number of sagittal slices (internal axis 0)."""
        return int(self.image.shape[0])

    @property
    def shape(self) -> Tuple[int, int, int]:
        """Shape (slices, rows, cols) of ``image``."""
        return tuple(int(n) for n in self.image.shape)

    def to_original(self, array) -> np.ndarray:
        """Puts an internal-frame array back into the file's own voxel order.

        ``nib.Nifti1Image(scan.to_original(a), scan.original_affine)`` then
        overlays the original file voxel for voxel.

        Args:
            array: array of shape ``image.shape``, optionally followed by
                trailing (channel) dimensions, which are kept.

        Returns:
            The array with its first three axes permuted and flipped to the
            file's order; shape ``original_shape + array.shape[3:]``.

        Raises:
            ValueError: if the leading shape is not ``image.shape``.
        """
        array = np.asarray(array)
        if array.shape[:3] != self.image.shape:
            raise ValueError(
                f"array of shape {array.shape} does not start with the scan shape "
                f"{self.image.shape}")
        to_file = orientations.ornt_transform(
            _INTERNAL_ORNT, orientations.io_orientation(self.original_affine))
        out = orientations.apply_orientation(array, to_file)
        if tuple(out.shape[:3]) != tuple(self.original_shape):
            raise ValueError(
                f"reoriented shape {out.shape[:3]} is not the original shape "
                f"{tuple(self.original_shape)}")
        return out

    def __repr__(self) -> str:
        spacing = ", ".join(f"{s:g}" for s in self.spacing_mm)
        return (f"Scan(path={self.path!r}, shape={self.shape}, "
                f"spacing_mm=({spacing}), axcodes={nib.aff2axcodes(self.affine)})")


def reorient_to_internal(data, affine) -> Tuple[np.ndarray, np.ndarray]:
    """Permutes and flips a voxel array from its affine's axes to the internal frame.

    Args:
        data: array whose first three axes are the spatial axes described by
            ``affine``; further (channel) axes are carried along.
        affine: (4, 4) voxel index -> world RAS+ mm of ``data``.

    Returns:
        ``(data_internal, affine_internal)``: the array with axes ordered
        ('L', 'I', 'P') and the affine of its voxel indices, which describes
        exactly the same world positions as the input.
    """
    data = np.asarray(data)
    affine = np.asarray(affine, dtype=np.float64)
    to_internal = orientations.ornt_transform(
        orientations.io_orientation(affine), _INTERNAL_ORNT)
    data_internal = orientations.apply_orientation(data, to_internal)
    affine_internal = affine @ orientations.inv_ornt_aff(to_internal, data.shape[:3])
    return data_internal, affine_internal


def lip_affine(spacing_mm) -> np.ndarray:
    """The default affine of an internal-frame array with the given spacing.

    Voxel (0, 0, 0) sits at the world origin and, with spacing
    ``(ds, dr, dc)``::

        x = -ds * s        (slices go Left, i.e. towards -x)
        y = -dc * c        (cols go Posterior, i.e. towards -y)
        z = -dr * r        (rows go Inferior, i.e. towards -z)

    Args:
        spacing_mm: spacing along (slices, rows, cols).

    Returns:
        float64 (4, 4) affine.
    """
    ds, dr, dc = (float(s) for s in spacing_mm)
    return np.array([[-ds, 0.0, 0.0, 0.0],
                     [0.0, 0.0, -dc, 0.0],
                     [0.0, -dr, 0.0, 0.0],
                     [0.0, 0.0, 0.0, 1.0]])


def scan_from_array(image, spacing_mm=None, affine=None, path: str = "") -> Scan:
    """Wraps an array that is already in the internal frame as a validated Scan.

    Args:
        image: array (slices, rows, cols) in the internal frame, or a 2D
            array (rows, cols) taken as one slice.
        spacing_mm: spacing along (slices, rows, cols); defaults to the
            spacing of ``affine``, or to 1 mm when no affine is given.
        affine: (4, 4) internal voxel index -> world RAS+ mm; its nearest axes
            must be ('L', 'I', 'P'). Defaults to :func:`lip_affine` of the
            spacing (voxel (0, 0, 0) at the world origin).
        path: where the array came from, used in messages ('' if nowhere).

    Returns:
        A Scan whose original grid is the internal grid itself.

    Raises:
        ScanError: for the same problems a file read reports (dimensions,
            dtype, NaN/inf, empty image, spacing, singular affine, too small),
            or when ``spacing_mm`` contradicts ``affine``.
    """
    image = np.asarray(image)
    _check_dtype(path, image.dtype)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise _error(path, f"wrong number of dimensions: expected a 2D or 3D image, "
                           f"got shape {image.shape}")
    if affine is None:
        spacing = (1.0, 1.0, 1.0) if spacing_mm is None else spacing_mm
        spacing = _as_spacing(path, spacing)
        _check_spacing(path, spacing)
        affine = lip_affine(spacing)
    else:
        affine = np.asarray(affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise _error(path, f"affine must be 4x4, got shape {affine.shape}")
        axcodes = nib.aff2axcodes(affine) if np.all(np.isfinite(affine)) else None
        if axcodes is not None and None not in axcodes and axcodes != INTERNAL_AXCODES:
            raise _error(path, f"the affine's voxel axes point to {axcodes}, not to the "
                               f"internal frame {INTERNAL_AXCODES}: use read_scan or "
                               f"reorient_to_internal for arrays in other orientations")
        if spacing_mm is not None:
            spacing = _as_spacing(path, spacing_mm)
            from_affine = np.linalg.norm(affine[:3, :3], axis=0)
            if not np.allclose(spacing, from_affine, rtol=1e-6, atol=1e-9):
                raise _error(path, f"spacing_mm {tuple(spacing)} contradicts the affine's "
                                   f"voxel sizes {tuple(np.round(from_affine, 6))}")
    return _finish(path, image, affine, check_reorientation=True)


def scan_name(path) -> str:
    """A scan's name: its file (or DICOM folder) name without the suffix.

    Double suffixes count as one: ``case.01.nii.gz`` -> ``case.01``.
    """
    name = os.path.basename(os.path.normpath(os.fspath(path)))
    for suffix in NIFTI_SUFFIXES + ITK_SUFFIXES + IMAGE_2D_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def read_scan(path, *, spacing_mm: Optional[Sequence[float]] = None) -> Scan:
    """Reads a scan file (or DICOM series folder) into the internal frame.

    Args:
        path: ``.nii``/``.nii.gz`` (nibabel), ``.mha``/``.mhd``/``.nrrd`` or a
            folder holding one DICOM series (SimpleITK), or a 2D
            ``.png``/``.jpg``/``.jpeg``/``.tif`` sagittal image.
        spacing_mm: only for 2D images, which record no spacing: the pixel
            spacing as (rows, cols) or (slices, rows, cols); default 1 mm.

    Returns:
        The validated Scan.

    Raises:
        ScanError: when the file is missing, unreadable or corrupt, has the
            wrong number of dimensions, a non-numeric dtype, NaN or infinite
            voxels, no contrast (all voxels equal), an absurd spacing or a
            singular affine, or is a single axial/coronal plane.
    """
    path = os.fspath(path)
    kind = _file_kind(path, IMAGE_2D_SUFFIXES)
    if kind == "image2d":
        return _read_image_2d(path, spacing_mm)
    if spacing_mm is not None:
        raise _error(path, "spacing_mm can only be given for 2D image files; volume "
                           "files record their own spacing")
    data, affine = _read_volume(path, kind, what="scan")
    return _finish(path, data, affine, original_affine=affine, check_reorientation=True)


def read_mask(path, scan: Scan) -> np.ndarray:
    """Reads a label mask into the internal frame of ``scan``.

    For a one-slice scan the mask may be a ``.npy`` array of shape
    (rows, cols) or (1, rows, cols), or a greyscale/palette ``.png``, both
    taken to be in the scan's displayed orientation. For any scan it may be a
    NIfTI or SimpleITK volume in the same world grid: it is reoriented like
    the scan, and its shape and affine must then match the scan's.

    A volume mask may carry one trailing channel axis, e.g. the 4D lesion
    masks of the phantom cohort (one channel per lesion task): a 4D array
    whose first three axes are spatial. A channel axis of size 1 (and any
    further singleton axes) is dropped, so a one-channel mask reads as 3D.

    Args:
        path: the mask file.
        scan: the scan the mask belongs to.

    Returns:
        int32 array of ``scan.image.shape``, or ``scan.image.shape +
        (channels,)`` for a mask with several channels.

    Raises:
        ScanError: (naming the mask file) when the mask is missing or
            unreadable, has non-integer or non-finite values, more than one
            non-singleton axis after the three spatial ones, or does not
            match the scan's shape or affine (1e-3 mm).
    """
    path = os.fspath(path)
    kind = _file_kind(path, MASK_2D_SUFFIXES)
    if kind == "image2d":
        if scan.num_slices != 1:
            raise _error(path, f"a {_suffix_of(path)} mask records no geometry and is only "
                               f"accepted for a one-slice scan; {scan.path} has "
                               f"{scan.num_slices} slices: use a NIfTI or .mha mask")
        labels = _read_mask_2d(path)
        if labels.ndim == 2:
            labels = labels[None]
        if labels.shape != scan.image.shape:
            raise _error(path, f"mask shape {labels.shape} does not match the shape "
                               f"{scan.image.shape} of the scan {scan.path}")
        return _to_labels(path, labels)
    if kind == "nifti":
        data, affine = _read_nifti(path, "mask")
    else:
        data, affine = _read_itk(path, kind, "mask")
    if data.ndim > 3:
        # Keep at most one channel axis: drop singleton axes after the
        # spatial ones; several non-singleton extra axes are an error.
        extra = tuple(n for n in data.shape[3:] if n != 1)
        if len(extra) > 1:
            raise _error(path, f"wrong number of dimensions: {data.ndim}D data of shape "
                               f"{data.shape}; a mask must be 3D, optionally with one "
                               f"trailing channel axis")
        data = data.reshape(data.shape[:3] + extra)
    else:
        data = _squeeze_to_3d(path, data, "mask")
    _check_affine(path, affine)
    data, affine = reorient_to_internal(data, affine)
    if data.shape[:3] != scan.image.shape:
        raise _error(path, f"mask shape {data.shape[:3]} (internal frame) does not match "
                           f"the shape {scan.image.shape} of the scan {scan.path}")
    difference = float(np.max(np.abs(affine - scan.affine)))
    if not difference <= AFFINE_TOLERANCE_MM:
        raise _error(path, f"mask affine differs from the affine of the scan {scan.path} "
                           f"by up to {difference:.4g} mm (tolerance "
                           f"{AFFINE_TOLERANCE_MM} mm): not the same grid")
    return _to_labels(path, data)


def save_nifti(array, path, scan: Scan, *, dtype=None) -> None:
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


# --- helpers ---------------------------------------------------------------


def _suffix_of(path: str) -> str:
    name = os.path.basename(path.rstrip("/\\")).lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return os.path.splitext(name)[1]


def _file_kind(path: str, image_2d_suffixes: Sequence[str]) -> str:
    """Returns 'nifti', 'itk', 'dicom' or 'image2d' for an existing path."""
    if not os.path.exists(path):
        raise _error(path, "file not found (no such file or directory)")
    if os.path.isdir(path):
        return "dicom"
    suffix = _suffix_of(path)
    if suffix in NIFTI_SUFFIXES:
        return "nifti"
    if suffix in ITK_SUFFIXES:
        return "itk"
    if suffix in image_2d_suffixes:
        return "image2d"
    known = NIFTI_SUFFIXES + ITK_SUFFIXES + tuple(image_2d_suffixes)
    raise _error(path, f"unsupported file type {suffix or '(no suffix)'!r}; expected one "
                       f"of {', '.join(known)} or a DICOM folder")


def _check_dtype(path, dtype) -> None:
    dtype = np.dtype(dtype)
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise _error(path, f"non-numeric voxel type {dtype}: expected integer or real "
                           f"greyscale values")


def _as_spacing(path, spacing_mm) -> np.ndarray:
    try:
        spacing = np.asarray(spacing_mm, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise _error(path, f"spacing_mm {spacing_mm!r} is not a sequence of numbers: "
                           f"{exc}") from exc
    if spacing.shape == (2,):
        spacing = np.concatenate([[1.0], spacing])
    if spacing.shape != (3,):
        raise _error(path, f"spacing_mm must have 2 or 3 values, got {spacing_mm!r}")
    return spacing


def _check_spacing(path, spacing_mm) -> None:
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    bad = (~np.isfinite(spacing)) | (spacing < MIN_SPACING_MM) | (spacing > MAX_SPACING_MM)
    if np.any(bad):
        shown = ", ".join(f"{s:g}" for s in spacing)
        raise _error(path, f"absurd voxel spacing ({shown}) mm: each spacing must be "
                           f"finite and between {MIN_SPACING_MM} and {MAX_SPACING_MM} mm")


def _check_affine(path, affine: np.ndarray) -> np.ndarray:
    """Validates a voxel -> world affine; returns the spacing of its columns."""
    if not np.all(np.isfinite(affine)):
        raise _error(path, "affine contains NaN or infinite values")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    _check_spacing(path, spacing)
    unit_columns = affine[:3, :3] / spacing
    if abs(np.linalg.det(unit_columns)) < 1e-6:
        raise _error(path, "singular affine: its voxel axes do not span 3D space")
    return spacing


def _finish(path, data, affine, original_affine=None, check_reorientation=False) -> Scan:
    """Validates a 3D voxel array with its affine and builds the Scan."""
    data = np.asarray(data)
    affine = np.asarray(affine, dtype=np.float64)
    if data.size == 0:
        raise _error(path, f"empty image: zero size (shape {data.shape})")
    _check_affine(path, affine)
    if data.dtype != np.float32:
        data = data.astype(np.float32)
    num_nan = int(np.count_nonzero(np.isnan(data)))
    num_inf = int(np.count_nonzero(np.isinf(data)))
    if num_nan or num_inf:
        raise _error(path, f"contains {num_nan} NaN and {num_inf} infinite voxel(s) out "
                           f"of {data.size}")
    lowest = data.min()
    if lowest == data.max():
        raise _error(path, f"empty image: all {data.size} voxels equal {lowest:g}")
    original_shape = tuple(int(n) for n in data.shape)
    if original_affine is None:
        original_affine = affine
    image, internal_affine = reorient_to_internal(data, affine)
    if check_reorientation:
        _check_sagittal(path, original_shape, image.shape)
    spacing = np.linalg.norm(internal_affine[:3, :3], axis=0)
    return Scan(image=np.ascontiguousarray(image, dtype=np.float32),
                spacing_mm=spacing,
                affine=internal_affine,
                path=path,
                original_affine=np.array(original_affine, dtype=np.float64),
                original_shape=original_shape)


def _check_sagittal(path, original_shape, internal_shape) -> None:
    for axis in (1, 2):
        size = internal_shape[axis]
        if size >= MIN_IN_PLANE_VOXELS:
            continue
        if size == 1 and 1 in original_shape:
            what = "a single axial plane" if axis == 1 else "a single coronal plane"
        else:
            what = "too small in the sagittal plane"
        raise _error(path, f"is not a sagittal scan and cannot be resliced: {what} with "
                           f"only {size} voxel(s) along {_AXIS_WORDS[axis]} (a sagittal "
                           f"image needs at least {MIN_IN_PLANE_VOXELS} rows and columns; "
                           f"internal shape {tuple(internal_shape)})")


def _squeeze_to_3d(path, data: np.ndarray, what: str) -> np.ndarray:
    """Brings a 2D..nD voxel array to 3D, squeezing singleton trailing axes."""
    if data.ndim < 2:
        raise _error(path, f"wrong number of dimensions: a {what} must be 3D, got "
                           f"{data.ndim}D data of shape {data.shape}")
    if data.ndim == 2:
        return data[:, :, None]
    if data.ndim > 3:
        extra = data.shape[3:]
        if any(n != 1 for n in extra):
            raise _error(path, f"wrong number of dimensions: {data.ndim}D data of shape "
                               f"{data.shape} holds {int(np.prod(extra))} volumes; a "
                               f"{what} must be a single 3D volume")
        return data.reshape(data.shape[:3])
    return data


def _read_volume(path: str, kind: str, what: str) -> Tuple[np.ndarray, np.ndarray]:
    """Reads a NIfTI / SimpleITK volume: (3D array in file order, RAS affine)."""
    if kind == "nifti":
        data, affine = _read_nifti(path, what)
    else:
        data, affine = _read_itk(path, kind, what)
    return _squeeze_to_3d(path, data, what), affine


def _read_nifti(path: str, what: str) -> Tuple[np.ndarray, np.ndarray]:
    try:
        image = nib.load(path)
    except Exception as exc:  # nibabel raises many types for broken files.
        raise _error(path, f"cannot read corrupt or unrecognised NIfTI file: "
                           f"{type(exc).__name__}: {exc}") from exc
    _check_dtype(path, image.get_data_dtype())
    dtype = np.float32 if what == "scan" else np.float64
    try:
        data = image.get_fdata(dtype=dtype)
    except Exception as exc:  # truncated or corrupt voxel data.
        raise _error(path, f"cannot read corrupt or truncated NIfTI voxel data: "
                           f"{type(exc).__name__}: {exc}") from exc
    return data, np.array(image.affine, dtype=np.float64)


def _import_sitk(path: str):
    try:
        import SimpleITK  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        raise _error(path, f"reading .mha/DICOM {_SITK_HINT}") from exc
    return SimpleITK


def _read_itk(path: str, kind: str, what: str) -> Tuple[np.ndarray, np.ndarray]:
    sitk = _import_sitk(path)
    try:
        if kind == "dicom":
            image = _read_dicom_series(sitk, path)
        else:
            image = sitk.ReadImage(path)
    except ScanError:
        raise
    except Exception as exc:  # SimpleITK raises RuntimeError for broken files.
        raise _error(path, f"cannot read corrupt or unrecognised image file: "
                           f"{type(exc).__name__}: {str(exc).strip()}") from exc
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise _error(path, f"non-numeric voxel type: {image.GetNumberOfComponentsPerPixel()} "
                           f"components per voxel ({image.GetPixelIDTypeAsString()}); "
                           f"expected greyscale")
    dimension = image.GetDimension()
    array = sitk.GetArrayFromImage(image)
    _check_dtype(path, array.dtype)
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
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = lps_to_ras @ direction @ np.diag(spacing)
    affine[:3, 3] = lps_to_ras @ origin
    return array, affine


def _read_dicom_series(sitk, folder: str):
    reader = sitk.ImageSeriesReader()
    series_ids = reader.GetGDCMSeriesIDs(folder)
    if not series_ids:
        raise _error(folder, "no DICOM series found in this folder")
    if len(series_ids) > 1:
        raise _error(folder, f"{len(series_ids)} DICOM series found in this folder "
                             f"({', '.join(series_ids)}); put each series in its own folder")
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder, series_ids[0]))
    return reader.Execute()


def _open_pil(path: str):
    from PIL import Image  # pylint: disable=import-outside-toplevel

    try:
        picture = Image.open(path)
        picture.load()
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, ...
        raise _error(path, f"cannot read corrupt or unrecognised image file: "
                           f"{type(exc).__name__}: {exc}") from exc
    if getattr(picture, "n_frames", 1) != 1:
        raise _error(path, f"wrong number of dimensions: multi-frame image with "
                           f"{picture.n_frames} frames; expected one 2D image")
    return picture


def _read_image_2d(path: str, spacing_mm) -> Scan:
    picture = _open_pil(path)
    if picture.mode not in ("L", "I", "F", "I;16", "I;16B", "I;16L"):
        picture = picture.convert("L")
    pixels = np.asarray(picture)
    if pixels.ndim != 2:
        raise _error(path, f"wrong number of dimensions: expected a 2D greyscale image, "
                           f"got shape {pixels.shape}")
    spacing = _as_spacing(path, (1.0, 1.0, 1.0) if spacing_mm is None else spacing_mm)
    return scan_from_array(pixels[None], spacing_mm=spacing, path=path)


def _read_mask_2d(path: str) -> np.ndarray:
    if _suffix_of(path) == ".npy":
        try:
            labels = np.load(path, allow_pickle=False)
        except Exception as exc:  # ValueError for pickles, OSError/EOFError for junk.
            raise _error(path, f"cannot read corrupt or unrecognised .npy file: "
                               f"{type(exc).__name__}: {exc}") from exc
        if labels.ndim not in (2, 3):
            raise _error(path, f"wrong number of dimensions: a 2D mask must have shape "
                               f"(rows, cols) or (1, rows, cols), got {labels.shape}")
        return labels
    picture = _open_pil(path)
    if picture.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
        raise _error(path, f"colour mask (mode {picture.mode}): a mask PNG must hold one "
                           f"label per pixel (greyscale or palette)")
    return np.asarray(picture)


def _to_labels(path: str, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype.fields is not None or labels.dtype.kind not in "biuf":
        raise _error(path, f"non-numeric mask dtype {labels.dtype}: expected integer labels")
    if labels.dtype.kind == "f":
        finite = np.isfinite(labels)
        if not np.all(finite):
            raise _error(path, f"mask contains {labels.size - int(finite.sum())} NaN or "
                               f"infinite value(s); expected integer labels")
        fractional = np.count_nonzero(labels != np.round(labels))
        if fractional:
            raise _error(path, f"mask contains {fractional} non-integer value(s); expected "
                               f"integer labels")
    if labels.size and (labels.min() < np.iinfo(np.int32).min
                        or labels.max() > np.iinfo(np.int32).max):
        raise _error(path, "mask labels do not fit in int32")
    return np.ascontiguousarray(labels, dtype=np.int32)


def _default_nifti_dtype(array: np.ndarray):
    kind, size = array.dtype.kind, array.dtype.itemsize
    if kind == "b":
        return np.uint8
    if kind in "iu" and size == 8:
        info = np.iinfo(np.int32)
        if array.size == 0 or (array.min() >= info.min and array.max() <= info.max):
            return np.int32
    return array.dtype
