"""Reading MRI scans into one internal sagittal frame.

The internal frame
------------------
Every scan is brought to one internal sagittal frame: a numpy array ``image``
of shape ``(slices, rows, cols)``:

- axis 0 (slices): towards the patient's Left (nibabel axis code ``'L'``);
- axis 1 (rows): towards Inferior (``'I'``): row 0 at the head, as displayed;
- axis 2 (cols): towards Posterior (``'P'``): anterior on the left, as displayed.

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
- ``.mha``, ``.mhd``, ``.nrrd``, and DICOM: SimpleITK (an enhanced multi-frame
  series: pydicom); LPS converted to RAS. A DICOM folder (or DICOMDIR) may hold a study:
  ``spine_tf.io.dicom`` picks the series.
- ``.png``, ``.jpg``, ``.jpeg``, ``.tif``, ``.tiff``, ``.bmp``: one greyscale 2D
  sagittal image, read as a one-slice scan (rows top to bottom = superior to
  inferior, columns left to right = anterior to posterior); it records no
  geometry, so the spacing comes from the ``spacing_mm`` argument (default
  1 mm) and the affine from :func:`scan_from_array`.

Every problem with an input raises :class:`ScanError`, naming the path first.

Example:
    >>> save_nifti(heatmap, "case_heatmap.nii.gz", read_scan("case.mha"))  # doctest: +SKIP
"""

import dataclasses
import os
from typing import Optional, Sequence, Tuple

import nibabel as nib
import numpy as np
from nibabel import orientations

from spine_tf.io.formats import (IMAGE_2D_SUFFIXES, ITK_SUFFIXES, MASK_2D_SUFFIXES,  # noqa: F401
                                 NIFTI_SUFFIXES, ScanError, check_dtype, file_kind, open_picture,
                                 read_itk, read_mask_2d, read_nifti, read_volume, save_nifti,
                                 scan_error, scan_name, squeeze_to_3d, suffix_of, to_labels)

INTERNAL_AXCODES = ("L", "I", "P")
"""Axis codes of the internal frame (slices, rows, cols)."""

MIN_SPACING_MM = 0.05
MAX_SPACING_MM = 20.0
MIN_IN_PLANE_VOXELS = 16
"""Fewest rows and columns a sagittal image may have."""

AFFINE_TOLERANCE_MM = 1e-3
"""Largest difference between a mask's affine and its scan's."""


_INTERNAL_ORNT = orientations.axcodes2ornt(INTERNAL_AXCODES)
_AXIS_WORDS = ("left-right", "superior-inferior", "anterior-posterior")


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
        pixel_size_known: False for a 2D picture read without a pixel size
            (its 1 mm is a placeholder; the disc detector then estimates it).
        series: for a DICOM series (alone in its folder or one of a study's),
            which (number, uid, description, orientation, weighting, images),
            why it was chosen and its ``files`` in slice order
            (``spine_tf.io.dicom.Series.record``); None otherwise.
    """

    image: np.ndarray
    spacing_mm: np.ndarray
    affine: np.ndarray
    path: str
    original_affine: np.ndarray
    original_shape: Tuple[int, ...]
    pixel_size_known: bool = True
    series: Optional[dict] = None

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
    check_dtype(path, image.dtype)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise scan_error(path, f"wrong number of dimensions: expected a 2D or 3D image, "
                         f"got shape {image.shape}")
    if affine is None:
        spacing = (1.0, 1.0, 1.0) if spacing_mm is None else spacing_mm
        spacing = _as_spacing(path, spacing)
        _check_spacing(path, spacing)
        affine = lip_affine(spacing)
    else:
        affine = np.asarray(affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise scan_error(path, f"affine must be 4x4, got shape {affine.shape}")
        axcodes = nib.aff2axcodes(affine) if np.all(np.isfinite(affine)) else None
        if axcodes is not None and None not in axcodes and axcodes != INTERNAL_AXCODES:
            raise scan_error(path, f"the affine's voxel axes point to {axcodes}, not to the "
                             f"internal frame {INTERNAL_AXCODES}: use read_scan or "
                             f"reorient_to_internal for arrays in other orientations")
        if spacing_mm is not None:
            spacing = _as_spacing(path, spacing_mm)
            from_affine = np.linalg.norm(affine[:3, :3], axis=0)
            if not np.allclose(spacing, from_affine, rtol=1e-6, atol=1e-9):
                raise scan_error(path, f"spacing_mm {tuple(spacing)} contradicts the affine's "
                                 f"voxel sizes {tuple(np.round(from_affine, 6))}")
    return _finish(path, image, affine, check_reorientation=True)


def read_scan(path, *, spacing_mm: Optional[Sequence[float]] = None,
              series: Optional[str] = None, study: Optional[str] = None) -> Scan:
    """Reads a scan file (or DICOM folder) into the internal frame.

    Args:
        path: ``.nii``/``.nii.gz`` (nibabel), ``.mha``/``.mhd``/``.nrrd``
            (SimpleITK), a DICOM folder (a series, or a study in any layout) or
            DICOMDIR file, or a 2D ``.png``/``.jpg``/``.jpeg``/``.tif``/``.bmp``
            sagittal image.
        spacing_mm: only for 2D images, which record no spacing: the pixel
            spacing as (rows, cols) or (slices, rows, cols); default 1 mm.
        series, study: for a DICOM study, the series to read (number, UID or
            description; None: a folder's one series, else the sagittal T2) and,
            in a folder of several studies, the StudyInstanceUID
            (``spine_tf.io.dicom.select_series``). ``Scan.series`` says which.

    Returns:
        The validated Scan.

    Raises:
        ScanError: when the file is missing, unreadable or corrupt, has the
            wrong number of dimensions, a non-numeric dtype, NaN or infinite
            voxels, no contrast (all voxels equal), an absurd spacing or a
            singular affine, or is a single axial/coronal plane.
    """
    from spine_tf.io import dicom
    path = os.fspath(path)
    kind = "dicom" if dicom.is_dicomdir(path) else file_kind(path, IMAGE_2D_SUFFIXES)
    if kind == "image2d":
        return _read_image_2d(path, spacing_mm)
    if spacing_mm is not None:
        raise scan_error(path, "spacing_mm can only be given for 2D image files; volume "
                         "files record their own spacing")
    if series is not None and kind != "dicom":
        raise scan_error(path, "a series can only be chosen in a DICOM folder")
    chosen, why = dicom.select_series(path, series, study) if kind == "dicom" else (None,) * 2
    with dicom.naming_series(path, chosen):  # an error: one line, naming the series
        data, affine = (dicom.read_multiframe(chosen) if chosen and chosen.multiframe else
                        read_volume(path, kind, what="scan", series_files=chosen and chosen.files))
    scan = _finish(path, data, affine, original_affine=affine, check_reorientation=True)
    return dataclasses.replace(scan, series=chosen.record(why)) if chosen else scan


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
    kind = file_kind(path, MASK_2D_SUFFIXES)
    if kind == "image2d":
        if scan.num_slices != 1:
            raise scan_error(path, f"a {suffix_of(path)} mask records no geometry and is only "
                             f"accepted for a one-slice scan; {scan.path} has "
                             f"{scan.num_slices} slices: use a NIfTI or .mha mask")
        labels = read_mask_2d(path)
        if labels.ndim == 2:
            labels = labels[None]
        if labels.shape != scan.image.shape:
            raise scan_error(path, f"mask shape {labels.shape} does not match the shape "
                             f"{scan.image.shape} of the scan {scan.path}")
        return to_labels(path, labels)
    if kind == "nifti":
        data, affine = read_nifti(path, "mask")
    else:
        data, affine = read_itk(path, kind, "mask")
    if data.ndim > 3:
        # Keep at most one channel axis: drop singleton axes after the
        # spatial ones; several non-singleton extra axes are an error.
        extra = tuple(n for n in data.shape[3:] if n != 1)
        if len(extra) > 1:
            raise scan_error(path, f"wrong number of dimensions: {data.ndim}D data of shape "
                             f"{data.shape}; a mask must be 3D, optionally with one "
                             f"trailing channel axis")
        data = data.reshape(data.shape[:3] + extra)
    else:
        data = squeeze_to_3d(path, data, "mask")
    _check_affine(path, affine)
    data, affine = reorient_to_internal(data, affine)
    if data.shape[:3] != scan.image.shape:
        raise scan_error(path, f"mask shape {data.shape[:3]} (internal frame) does not match "
                         f"the shape {scan.image.shape} of the scan {scan.path}")
    difference = float(np.max(np.abs(affine - scan.affine)))
    if not difference <= AFFINE_TOLERANCE_MM:
        raise scan_error(path, f"mask affine differs from the affine of the scan {scan.path} "
                         f"by up to {difference:.4g} mm (tolerance "
                         f"{AFFINE_TOLERANCE_MM} mm): not the same grid")
    return to_labels(path, data)


# --- helpers ---------------------------------------------------------------


def _as_spacing(path, spacing_mm) -> np.ndarray:
    try:
        spacing = np.asarray(spacing_mm, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise scan_error(path, f"spacing_mm {spacing_mm!r} is not a sequence of numbers: "
                         f"{exc}") from exc
    if spacing.shape == (2,):
        spacing = np.concatenate([[1.0], spacing])
    if spacing.shape != (3,):
        raise scan_error(path, f"spacing_mm must have 2 or 3 values, got {spacing_mm!r}")
    return spacing


def _check_spacing(path, spacing_mm) -> None:
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    bad = (~np.isfinite(spacing)) | (spacing < MIN_SPACING_MM) | (spacing > MAX_SPACING_MM)
    if np.any(bad):
        shown = ", ".join(f"{s:g}" for s in spacing)
        raise scan_error(path, f"absurd voxel spacing ({shown}) mm: each spacing must be "
                         f"finite and between {MIN_SPACING_MM} and {MAX_SPACING_MM} mm")


def _check_affine(path, affine: np.ndarray) -> np.ndarray:
    """Validates a voxel -> world affine; returns the spacing of its columns."""
    if not np.all(np.isfinite(affine)):
        raise scan_error(path, "affine contains NaN or infinite values")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    _check_spacing(path, spacing)
    unit_columns = affine[:3, :3] / spacing
    if abs(np.linalg.det(unit_columns)) < 1e-6:
        raise scan_error(path, "singular affine: its voxel axes do not span 3D space")
    return spacing


def _finish(path, data, affine, original_affine=None, check_reorientation=False) -> Scan:
    """Validates a 3D voxel array with its affine and builds the Scan."""
    data = np.asarray(data)
    affine = np.asarray(affine, dtype=np.float64)
    if data.size == 0:
        raise scan_error(path, f"empty image: zero size (shape {data.shape})")
    _check_affine(path, affine)
    if data.dtype != np.float32:
        data = data.astype(np.float32)
    num_nan = int(np.count_nonzero(np.isnan(data)))
    num_inf = int(np.count_nonzero(np.isinf(data)))
    if num_nan or num_inf:
        raise scan_error(path, f"contains {num_nan} NaN and {num_inf} infinite voxel(s) out "
                         f"of {data.size}")
    lowest = data.min()
    if lowest == data.max():
        raise scan_error(path, f"empty image: all {data.size} voxels equal {lowest:g}")
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
        raise scan_error(path, f"is not a sagittal scan and cannot be resliced: {what} with "
                         f"only {size} voxel(s) along {_AXIS_WORDS[axis]} (a sagittal "
                         f"image needs at least {MIN_IN_PLANE_VOXELS} rows and columns; "
                         f"internal shape {tuple(internal_shape)})")


def _read_image_2d(path: str, spacing_mm) -> Scan:
    picture = open_picture(path)
    if picture.mode not in ("L", "I", "F", "I;16", "I;16B", "I;16L"):
        picture = picture.convert("L")
    pixels = np.asarray(picture)
    if pixels.ndim != 2:
        raise scan_error(path, f"wrong number of dimensions: expected a 2D greyscale image, "
                         f"got shape {pixels.shape}")
    spacing = _as_spacing(path, (1.0, 1.0, 1.0) if spacing_mm is None else spacing_mm)
    scan = scan_from_array(pixels[None], spacing_mm=spacing, path=path)
    return dataclasses.replace(scan, pixel_size_known=spacing_mm is not None)
