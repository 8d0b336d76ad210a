"""Tests of spine_tf.io.scan: orientation, geometry, round trips, bad inputs."""

import gzip
import os
import re
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from spine_tf.io import (Scan, ScanError, read_mask, read_scan, reorient_to_internal,
                         save_nifti, scan_from_array, scan_name)

REAL_SLICES = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
               / "real-lumbar-slices")

# File voxel array of the synthetic volume, its spacing and origin.
SHAPE = (17, 19, 23)
SPACING = (0.9, 1.3, 3.5)
ORIGIN = (12.5, -30.25, 40.75)
# Four non-coplanar marker voxels (file index -> value): they pin the affine.
MARKERS = {(3, 5, 7): 1000.0, (14, 2, 19): 2000.0, (8, 16, 1): 3000.0, (1, 11, 12): 4000.0}

_UNIT = {"R": (1, 0, 0), "L": (-1, 0, 0), "A": (0, 1, 0), "P": (0, -1, 0),
         "S": (0, 0, 1), "I": (0, 0, -1)}


def _volume(shape=SHAPE, seed=0):
    data = np.random.default_rng(seed).uniform(0, 100, shape).astype(np.float32)
    for index, value in MARKERS.items():
        if len(shape) == 3 and all(i < n for i, n in zip(index, shape)):
            data[index] = value
    return data


def _affine(axcodes, spacing=SPACING, origin=ORIGIN, rotation=None):
    """Affine whose file axes point along `axcodes`, rounded to float32 as stored."""
    affine = np.eye(4)
    for axis, (code, step) in enumerate(zip(axcodes, spacing)):
        affine[:3, axis] = np.array(_UNIT[code], dtype=float) * step
    affine[:3, 3] = origin
    if rotation is not None:
        affine[:3, :] = rotation @ affine[:3, :]
    return affine.astype(np.float32).astype(np.float64)


def _rotation(axis, degrees):
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    angle = np.deg2rad(degrees)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def _save(path, data, affine, **kwargs):
    nib.save(nib.Nifti1Image(data, affine, **kwargs), str(path))
    return path


def _save_with_sform(path, data, affine):
    """Writes a NIfTI whose sform is `affine` as is (nibabel refuses some via qform)."""
    header = nib.Nifti1Header()
    header.set_data_shape(data.shape)
    header.set_data_dtype(data.dtype)
    header.set_sform(affine, code=1)
    nib.save(nib.Nifti1Image(data, None, header=header), str(path))
    return path


def _raises(path, keyword):
    """pytest.raises for a ScanError starting with `path` and mentioning `keyword`."""
    return pytest.raises(ScanError, match="^" + re.escape(str(path)) + ": .*" + keyword)


def _world(affine, index):
    return (affine @ np.append(np.asarray(index, dtype=float), 1.0))[:3]


# Written axis codes -> (file array -> expected internal array, expected internal spacing).
# Written out by hand (not through nibabel) so that an error in the reorientation shows.
ORIENTATIONS = {
    "LIP": (lambda d: d, (0.9, 1.3, 3.5)),
    # Axial stack: x flipped to slices, z flipped to rows, y flipped to cols.
    "RAS": (lambda d: np.transpose(d[::-1, ::-1, ::-1], (0, 2, 1)), (0.9, 3.5, 1.3)),
    "LPS": (lambda d: np.transpose(d[:, :, ::-1], (0, 2, 1)), (0.9, 3.5, 1.3)),
    "PIR": (lambda d: np.transpose(d[:, :, ::-1], (2, 1, 0)), (3.5, 1.3, 0.9)),
}
CASES = [(codes, None) for codes in ORIENTATIONS] + [
    ("PIR", _rotation((1.0, 0.3, 0.2), 6.0)),   # oblique sagittal
    ("RAS", _rotation((0.2, 1.0, 0.5), -4.0)),  # oblique axial stack
]


@pytest.mark.parametrize("axcodes,rotation", CASES,
                         ids=[c + ("-oblique" if r is not None else "") for c, r in CASES])
def test_nifti_is_brought_to_the_internal_frame(tmp_path, axcodes, rotation):
    data = _volume()
    affine = _affine(axcodes, rotation=rotation)
    path = _save(tmp_path / "scan.nii.gz", data, affine)

    scan = read_scan(path)

    to_internal, spacing = ORIENTATIONS[axcodes]
    assert isinstance(scan, Scan)
    assert scan.image.dtype == np.float32
    np.testing.assert_array_equal(scan.image, to_internal(data))
    np.testing.assert_allclose(scan.spacing_mm, spacing, rtol=1e-6)
    assert nib.aff2axcodes(scan.affine) == ("L", "I", "P")
    for index, value in MARKERS.items():
        internal_index = np.argwhere(scan.image == value)
        assert len(internal_index) == 1
        np.testing.assert_allclose(_world(scan.affine, internal_index[0]),
                                   _world(affine, index), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(scan.original_affine, affine)
    assert scan.original_shape == SHAPE
    assert scan.path == str(path)
    np.testing.assert_array_equal(scan.to_original(scan.image), data)


@pytest.mark.parametrize("axcodes,rotation", CASES[:4] + CASES[5:])
def test_save_nifti_round_trips_to_the_original_grid(tmp_path, axcodes, rotation):
    data = _volume(seed=1)
    affine = _affine(axcodes, rotation=rotation)
    scan = read_scan(_save(tmp_path / "scan.nii", data, affine))

    target = tmp_path / "new" / "folder" / "overlay.nii.gz"
    save_nifti(scan.image, target, scan)
    written = nib.load(str(target))
    np.testing.assert_array_equal(written.get_fdata(dtype=np.float32), data)
    np.testing.assert_array_equal(written.affine, affine)
    assert written.get_data_dtype() == np.float32

    channels = np.stack([scan.image, 2 * scan.image], axis=-1)
    save_nifti(channels, tmp_path / "channels.nii", scan)
    written = nib.load(str(tmp_path / "channels.nii")).get_fdata()
    assert written.shape == SHAPE + (2,)
    np.testing.assert_array_equal(written[..., 1], 2 * data)

    labels = (scan.image > 500).astype(np.int64) * 7
    save_nifti(labels, tmp_path / "labels.nii.gz", scan)
    written = nib.load(str(tmp_path / "labels.nii.gz"))
    assert written.get_data_dtype() == np.int32
    assert set(zip(*np.nonzero(np.asanyarray(written.dataobj)))) == set(MARKERS)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "channels.nii", "labels.nii.gz", "new", "scan.nii"]


def test_reorient_to_internal_keeps_world_positions():
    data = np.arange(16 * 17 * 18, dtype=np.float32).reshape(16, 17, 18)
    affine = _affine("RAS", spacing=(1.0, 2.0, 3.0), origin=(0, 0, 0))
    internal, internal_affine = reorient_to_internal(data[..., None], affine)
    assert internal.shape == (16, 18, 17, 1)
    # Internal (0, 0, 0) is the file's far corner (15, 16, 17): right, anterior, superior.
    assert internal[0, 0, 0, 0] == data[15, 16, 17]
    np.testing.assert_allclose(_world(internal_affine, (0, 0, 0)), (15.0, 32.0, 51.0))
    np.testing.assert_allclose(internal_affine[:3, :3],
                               [[-1, 0, 0], [0, 0, -2], [0, -3, 0]])


def test_scan_from_array_default_affine():
    image = _volume((3, 20, 24))
    scan = scan_from_array(image, spacing_mm=(2.0, 0.5, 0.25), path="mem")
    np.testing.assert_array_equal(scan.image, image)
    np.testing.assert_array_equal(scan.spacing_mm, (2.0, 0.5, 0.25))
    # x = -2 s, y = -0.25 c, z = -0.5 r.
    np.testing.assert_allclose(_world(scan.affine, (1, 4, 8)), (-2.0, -2.0, -2.0))
    np.testing.assert_allclose(_world(scan.affine, (2, 10, 4)), (-4.0, -1.0, -5.0))
    assert scan.num_slices == 3 and scan.shape == (3, 20, 24)
    np.testing.assert_array_equal(scan.to_original(image), image)

    default = scan_from_array(image)
    np.testing.assert_array_equal(default.spacing_mm, (1.0, 1.0, 1.0))
    np.testing.assert_allclose(_world(default.affine, (1, 2, 3)), (-1.0, -3.0, -2.0))

    with _raises("mem", "not to the internal frame"):
        scan_from_array(image, affine=np.eye(4), path="mem")
    with _raises("mem", "contradicts"):
        scan_from_array(image, spacing_mm=(1, 1, 1), affine=scan.affine, path="mem")
    with _raises("mem", "spacing"):
        scan_from_array(image, spacing_mm=(0.0, 1, 1), path="mem")
    with pytest.raises(ScanError, match="^<in-memory array>: .*empty image"):
        scan_from_array(np.zeros((1, 20, 20)))


def _sitk_sagittal(data, rotation_degrees=4.0):
    """A SimpleITK image of `data` (x, y, z) acquired sagittally, slightly oblique."""
    sitk = pytest.importorskip("SimpleITK")
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data)))
    # LPS directions of the array axes: x -> posterior, y -> inferior, z -> left.
    direction = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    direction = _rotation((1.0, 0.0, 0.0), rotation_degrees) @ direction
    image.SetDirection(direction.ravel().tolist())
    image.SetSpacing((0.7, 0.8, 3.3))
    image.SetOrigin((10.0, -20.0, 30.0))
    return image


def test_mha_with_direction_matches_itk_geometry_and_nifti(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    data = _volume((20, 24, 21))
    image = _sitk_sagittal(data)
    sitk.WriteImage(image, str(tmp_path / "scan.mha"))
    sitk.WriteImage(image, str(tmp_path / "scan.nii.gz"))

    scan = read_scan(tmp_path / "scan.mha")

    # Array axes x, y, z point P, I, L: slices = z, rows = y, cols = x, no flips.
    np.testing.assert_array_equal(scan.image, np.transpose(data, (2, 1, 0)))
    np.testing.assert_allclose(scan.spacing_mm, (3.3, 0.8, 0.7), rtol=1e-12)
    for index, value in MARKERS.items():
        lps = np.array(image.TransformIndexToPhysicalPoint(tuple(int(i) for i in index)))
        internal_index = np.argwhere(scan.image == value)[0]
        np.testing.assert_allclose(_world(scan.affine, internal_index),
                                   lps * (-1, -1, 1), rtol=0, atol=1e-6)

    from_nifti = read_scan(tmp_path / "scan.nii.gz")  # ITK's own LPS -> RAS conversion.
    np.testing.assert_array_equal(from_nifti.image, scan.image)
    np.testing.assert_allclose(from_nifti.affine, scan.affine, atol=1e-4)

    # An overlay written for the .mha lands on the same voxels of its grid.
    save_nifti(scan.image, tmp_path / "overlay.nii.gz", scan)
    overlay = nib.load(str(tmp_path / "overlay.nii.gz"))
    np.testing.assert_array_equal(overlay.get_fdata(dtype=np.float32), data)
    np.testing.assert_allclose(overlay.affine, scan.original_affine, atol=1e-5)

    mask = sitk.GetImageFromArray((np.transpose(data) > 500).astype(np.uint8))
    mask.CopyInformation(image)
    sitk.WriteImage(mask, str(tmp_path / "mask.mha"))
    labels = read_mask(tmp_path / "mask.mha", scan)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, (scan.image > 500).astype(np.int32))


def test_dicom_series_folder(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    data = np.round(_volume((20, 24, 21))).astype(np.int16)
    volume = _sitk_sagittal(data, rotation_degrees=0.0)
    folder = tmp_path / "series"
    folder.mkdir()
    direction = np.array(volume.GetDirection()).reshape(3, 3)
    orientation = "\\".join(f"{v:.6f}" for v in direction[:, :2].T.ravel())
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume.GetDepth()):
        plane = volume[:, :, k]
        position = volume.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {"0008|0060": "MR", "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
                "0020|000e": "1.2.826.0.1.3680043.2.1125.1.2", "0020|0037": orientation,
                "0020|0032": "\\".join(f"{v:.6f}" for v in position),
                "0020|0013": str(k + 1), "0018|0050": "3.3"}
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(plane)

    scan = read_scan(folder)

    np.testing.assert_array_equal(scan.image, np.transpose(data, (2, 1, 0)))
    np.testing.assert_allclose(scan.spacing_mm, (3.3, 0.8, 0.7), rtol=1e-5)
    index = (3, 5, 7)
    lps = np.array(volume.TransformIndexToPhysicalPoint(index))
    np.testing.assert_allclose(_world(scan.affine, (7, 5, 3)), lps * (-1, -1, 1), atol=1e-4)


@pytest.mark.skipif(not (REAL_SLICES / "2.png").exists(), reason="real slices not present")
def test_png_slice_and_npy_mask(tmp_path):
    scan = read_scan(REAL_SLICES / "2.png")
    pixels = np.asarray(Image.open(REAL_SLICES / "2.png"))
    assert scan.image.shape == (1, 256, 256)
    np.testing.assert_array_equal(scan.image[0], pixels.astype(np.float32))
    np.testing.assert_array_equal(scan.spacing_mm, (1.0, 1.0, 1.0))
    # Row 0 is the head end: world z falls with the row; cols go posterior (-y).
    assert _world(scan.affine, (0, 0, 0))[2] - _world(scan.affine, (0, 255, 0))[2] == 255
    assert _world(scan.affine, (0, 0, 0))[1] - _world(scan.affine, (0, 0, 255))[1] == 255

    expected = np.load(REAL_SLICES / "2.npy")
    labels = read_mask(REAL_SLICES / "2.npy", scan)
    assert labels.shape == (1, 256, 256) and labels.dtype == np.int32
    values, counts = np.unique(labels, return_counts=True)
    np.testing.assert_array_equal(values, [0, 1, 2])
    np.testing.assert_array_equal(counts, np.unique(expected, return_counts=True)[1])
    np.testing.assert_array_equal(labels[0], expected)

    Image.fromarray(expected.astype(np.uint8)).save(tmp_path / "mask.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "mask.png", scan)[0], expected)
    np.save(tmp_path / "mask3d.npy", expected[None])
    np.testing.assert_array_equal(read_mask(tmp_path / "mask3d.npy", scan), expected[None])

    fine = read_scan(REAL_SLICES / "2.png", spacing_mm=(0.5, 0.625))
    np.testing.assert_array_equal(fine.spacing_mm, (1.0, 0.5, 0.625))
    np.testing.assert_allclose(_world(fine.affine, (0, 8, 8)), (0.0, -5.0, -4.0))


def test_rgb_png_is_read_as_grey(tmp_path):
    rgb = np.zeros((20, 30, 3), dtype=np.uint8)
    rgb[..., 0] = np.arange(30, dtype=np.uint8) * 8
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    scan = read_scan(tmp_path / "colour.png")
    assert scan.shape == (1, 20, 30)
    np.testing.assert_array_equal(scan.image[0, 3], np.asarray(
        Image.fromarray(rgb).convert("L"))[3].astype(np.float32))


def test_nifti_mask_in_the_scan_grid(tmp_path):
    data = _volume()
    affine = _affine("PIR")
    scan = read_scan(_save(tmp_path / "scan.nii.gz", data, affine))
    labels = (data > 2500).astype(np.int16) * 3
    labels[0, 0, 0] = 5
    mask = read_mask(_save(tmp_path / "mask.nii.gz", labels, affine), scan)
    assert mask.dtype == np.int32
    np.testing.assert_array_equal(mask, ORIENTATIONS["PIR"][0](labels))
    assert mask[scan.shape[0] - 1, 0, 0] == 5  # File x=0 is the rightmost slice.
    # Masks may be empty; a singleton 4th axis is squeezed.
    empty = read_mask(_save(tmp_path / "empty.nii", np.zeros(SHAPE + (1,), np.uint8),
                            affine), scan)
    assert empty.shape == scan.shape and not empty.any()


def test_four_d_with_one_volume_is_squeezed(tmp_path):
    data = _volume()
    scan = read_scan(_save(tmp_path / "one.nii.gz", data[..., None], _affine("LIP")))
    np.testing.assert_array_equal(scan.image, data)


# --- bad inputs --------------------------------------------------------------


def test_missing_file(tmp_path):
    with _raises(tmp_path / "absent.nii.gz", "not found"):
        read_scan(tmp_path / "absent.nii.gz")


@pytest.mark.parametrize("keep_bytes", [60, None])
def test_truncated_nifti_is_corrupt(tmp_path, keep_bytes):
    path = _save(tmp_path / "scan.nii.gz", _volume(), _affine("LIP"))
    raw = gzip.decompress(path.read_bytes())
    keep = keep_bytes if keep_bytes is not None else len(raw) // 2
    path.write_bytes(gzip.compress(raw[:keep]))
    with _raises(path, "corrupt"):
        read_scan(path)


def test_corrupt_mha_and_png(tmp_path):
    pytest.importorskip("SimpleITK")
    for name in ("junk.mha", "junk.png"):
        (tmp_path / name).write_bytes(b"this is not an image at all" * 10)
        with _raises(tmp_path / name, "corrupt"):
            read_scan(tmp_path / name)


def test_nan_and_inf_voxels(tmp_path):
    data = _volume()
    data[4, 4, 4] = np.nan
    with _raises(tmp_path / "nan.nii", "1 NaN and 0 infinite"):
        read_scan(_save(tmp_path / "nan.nii", data, _affine("LIP")))
    data[4, 4, 4] = np.inf
    data[5, 5, 5] = -np.inf
    with _raises(tmp_path / "inf.nii", "0 NaN and 2 infinite"):
        read_scan(_save(tmp_path / "inf.nii", data, _affine("LIP")))


def test_wrong_dimensionality(tmp_path):
    line = _save(tmp_path / "line.nii", np.arange(40, dtype=np.float32), np.eye(4))
    with _raises(line, "wrong number of dimensions"):
        read_scan(line)
    series = _save(tmp_path / "series.nii", np.stack([_volume(), _volume()], -1),
                   _affine("LIP"))
    with _raises(series, "holds 2 volumes"):
        read_scan(series)


def test_non_numeric_dtype(tmp_path):
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    path = _save(tmp_path / "rgb.nii", rgb, _affine("LIP"))
    with _raises(path, "non-numeric"):
        read_scan(path)


def test_empty_image(tmp_path):
    path = _save(tmp_path / "flat.nii.gz", np.full(SHAPE, 7, np.int16), _affine("LIP"))
    with _raises(path, "empty image: all 7429 voxels equal 7"):
        read_scan(path)


@pytest.mark.parametrize("spacing,name", [((0.0, 1.3, 3.5), "zero.nii"),
                                          ((0.9, 25.0, 1.0), "huge.nii"),
                                          ((0.9, 0.01, 1.0), "tiny.nii")])
def test_absurd_spacing(tmp_path, spacing, name):
    path = _save_with_sform(tmp_path / name, _volume(), _affine("LIP", spacing=spacing))
    with _raises(path, "absurd voxel spacing"):
        read_scan(path)


def test_singular_affine(tmp_path):
    affine = _affine("LIP")
    affine[:3, 1] = affine[:3, 0] / 0.9 * 1.3  # Rows parallel to slices.
    path = _save_with_sform(tmp_path / "flat.nii", _volume(), affine)
    with _raises(path, "singular affine"):
        read_scan(path)


@pytest.mark.parametrize("shape,plane", [((32, 40, 1), "axial"), ((32, 1, 40), "coronal")])
def test_single_axial_or_coronal_plane(tmp_path, shape, plane):
    path = _save(tmp_path / f"{plane}.nii.gz", _volume(shape), np.diag([0.8, 0.8, 4.0, 1.0]))
    with _raises(path, f"not a sagittal scan and cannot be resliced: a single {plane}"):
        read_scan(path)


def test_too_few_rows(tmp_path):
    path = _save(tmp_path / "strip.nii", _volume((20, 10, 20)), _affine("LIP"))
    with _raises(path, "not a sagittal scan.* only 10 voxel"):
        read_scan(path)


def test_axial_volume_is_resliced_not_rejected(tmp_path):
    path = _save(tmp_path / "axial.nii", _volume((30, 30, 20)), np.diag([0.8, 0.8, 4.0, 1.0]))
    assert read_scan(path).shape == (30, 20, 30)


def test_unsupported_suffix_and_spacing_for_volumes(tmp_path):
    (tmp_path / "scan.txt").write_text("hello")
    with _raises(tmp_path / "scan.txt", "unsupported file type '.txt'"):
        read_scan(tmp_path / "scan.txt")
    path = _save(tmp_path / "scan.nii", _volume(), _affine("LIP"))
    with _raises(path, "spacing_mm can only be given for 2D"):
        read_scan(path, spacing_mm=(1.0, 1.0, 1.0))


def test_missing_simpleitk(tmp_path, monkeypatch):
    (tmp_path / "scan.mha").write_bytes(b"ObjectType = Image\n")
    monkeypatch.setitem(sys.modules, "SimpleITK", None)
    with _raises(tmp_path / "scan.mha",
                 re.escape("needs SimpleITK (a spine-tf dependency): pip install SimpleITK")):
        read_scan(tmp_path / "scan.mha")


def test_folder_without_dicom(tmp_path):
    pytest.importorskip("SimpleITK")
    (tmp_path / "notes.txt").write_text("no images here")
    with _raises(tmp_path, "no DICOM image below this folder"):
        read_scan(tmp_path)


def test_bad_masks(tmp_path):
    data = _volume()
    affine = _affine("RAS")
    scan = read_scan(_save(tmp_path / "scan.nii.gz", data, affine))
    labels = (data > 500).astype(np.uint8)

    small = _save(tmp_path / "small.nii.gz", labels[:, :, :-1], affine)
    with _raises(small, re.escape("mask shape (17, 22, 19) (internal frame) does not match "
                                  "the shape (17, 23, 19)")):
        read_mask(small, scan)

    shifted_affine = affine.copy()
    shifted_affine[1, 3] += 0.5
    shifted = _save(tmp_path / "shifted.nii.gz", labels, shifted_affine)
    with _raises(shifted, "affine differs .* by up to 0.5 mm"):
        read_mask(shifted, scan)

    fractional = _save(tmp_path / "soft.nii.gz", labels * np.float32(0.5), affine)
    with _raises(fractional, f"mask contains {len(MARKERS)} non-integer value"):
        read_mask(fractional, scan)

    np.save(tmp_path / "flat.npy", labels[0])
    with _raises(tmp_path / "flat.npy", "only accepted for a one-slice scan"):
        read_mask(tmp_path / "flat.npy", scan)


def test_bad_2d_masks(tmp_path):
    scan = scan_from_array(_volume((1, 20, 24)), path="slice.png")
    np.save(tmp_path / "wrong.npy", np.zeros((20, 23), np.int64))
    with _raises(tmp_path / "wrong.npy", re.escape("mask shape (1, 20, 23) does not match")):
        read_mask(tmp_path / "wrong.npy", scan)
    np.save(tmp_path / "objects.npy", np.zeros((20, 24), dtype=object))
    with _raises(tmp_path / "objects.npy", "corrupt"):
        read_mask(tmp_path / "objects.npy", scan)
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(tmp_path / "colour.png")
    with _raises(tmp_path / "colour.png", "colour mask"):
        read_mask(tmp_path / "colour.png", scan)


# --- atomic writes -----------------------------------------------------------


def test_save_nifti_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    scan = read_scan(_save(tmp_path / "scan.nii", _volume(), _affine("LPS")))
    out = tmp_path / "out"
    target = out / "overlay.nii.gz"

    with pytest.raises(Exception, match="object"):
        save_nifti(scan.image.astype(object), target, scan)
    assert not target.exists()
    assert not out.exists() or not any(out.iterdir())

    save_nifti(scan.image, target, scan)
    before = target.read_bytes()

    def broken_write(image, filename, *args, **kwargs):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib.Nifti1Image, "to_filename", broken_write)
    with pytest.raises(OSError, match="disk full"):
        save_nifti(scan.image * 2, target, scan)
    assert target.read_bytes() == before
    assert [p.name for p in out.iterdir()] == ["overlay.nii.gz"]
    monkeypatch.undo()

    with pytest.raises(ValueError, match="does not start with the scan shape"):
        save_nifti(scan.image[:, :-1], target, scan)
    with pytest.raises(ValueError, match=r"\.nii or \.nii\.gz"):
        save_nifti(scan.image, out / "overlay.mha", scan)
    assert target.read_bytes() == before
    written = nib.load(str(target))
    np.testing.assert_array_equal(written.get_fdata(dtype=np.float32), _volume())
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~umask


def test_two_d_sagittal_nifti_is_one_slice(tmp_path):
    plane = _volume((24, 30))  # File axes: posterior, inferior, (left, one voxel).
    path = _save(tmp_path / "plane.nii", plane, _affine("PIL", spacing=(0.6, 0.7, 4.0)))
    scan = read_scan(path)
    assert scan.shape == (1, 30, 24)
    np.testing.assert_array_equal(scan.image[0], plane.T)
    np.testing.assert_allclose(scan.spacing_mm, (4.0, 0.7, 0.6), rtol=1e-6)
    assert scan.original_shape == (24, 30, 1)


def test_a_picture_knows_whether_its_pixel_size_was_given(tmp_path):
    pixels = (np.arange(40 * 30).reshape(40, 30) % 251).astype(np.uint8)
    for suffix in (".png", ".bmp"):
        Image.fromarray(pixels).save(tmp_path / f"slice{suffix}")
        guessed = read_scan(tmp_path / f"slice{suffix}")
        given = read_scan(tmp_path / f"slice{suffix}", spacing_mm=(0.5, 0.6))
        np.testing.assert_array_equal(guessed.image[0], pixels)
        assert not guessed.pixel_size_known and given.pixel_size_known
        np.testing.assert_allclose(given.spacing_mm, [1.0, 0.5, 0.6])
        assert scan_name(tmp_path / f"slice{suffix}") == "slice"
    assert scan_from_array(pixels).pixel_size_known  # an array's spacing is the caller's word
