"""Tests of spine_tf.extraction: disc volumes, their geometry, intensities and transforms.

Each phantom disc is extracted from both localisation sources (mask and
landmarks) and checked against the phantom's own mask resampled into the
volume: the disc is centred and horizontal, about 40 % of each vertebral
body is inside, the bodies' median is 0.5. Transforms are checked by round
trips between volume and scan.
"""

import numpy as np
import pytest

from spine_tf import extraction, localisation, tasks
from spine_tf.extraction import (SLICES, VOLUME_SHAPE, DiscVolume, ExtractionError,
                                 body_masks, extract, extract_disc, lesion_boxes,
                                 sample_into_volume, volume_to_scan,
                                 voxel_to_scan_transform)
from spine_tf.io import read_mask, read_scan, scan_from_array
from spine_tf.phantom.anatomy import VERTEBRA_LABELS

ROWS, COLS = VOLUME_SHAPE[:2]
CENTRE = ((ROWS - 1) / 2, (COLS - 1) / 2)  # (55.5, 111.5)
MID = (SLICES - 1) // 2
PATIENT_INDICES = (0, 1, 2)
SOURCES = ("mask", "landmarks")


def _scan(patient, image=None, path=None):
    image = patient.image if image is None else image
    return scan_from_array(np.asarray(image, np.float32), patient.spacing_mm, patient.affine,
                           path=path or patient.patient_id)


def _localise(patient, source, scan):
    if source == "mask":
        return localisation.from_mask(patient.mask, patient.spacing_mm)
    return localisation.from_landmarks(patient.landmarks, scan)


@pytest.fixture(scope="module")
def scans(phantom_patients):
    return [_scan(patient) for patient in phantom_patients]


@pytest.fixture(scope="module")
def extracted(phantom_patients, scans):
    """{(patient index, source): [(DiscLocation, DiscVolume), ...]}."""
    out = {}
    for i, patient in enumerate(phantom_patients):
        for source in SOURCES:
            located = _localise(patient, source, scans[i])
            volumes, skipped = extract(scans[i], located)
            assert [v.level for v in volumes] == list(patient.levels)
            assert [level for level, _ in skipped] == [level for level, _ in located.skipped]
            out[i, source] = list(zip(located.discs, volumes))
    return out


def _all_discs(extracted):
    for (index, source), pairs in sorted(extracted.items()):
        for disc, volume in pairs:
            yield index, source, disc, volume


def _resampled(binary, transform):
    """A scan-frame binary mask in the volume (nearest neighbour)."""
    return sample_into_volume(np.asarray(binary, np.float32), transform, order=0) > 0.5


def _axis_angle_deg(binary):
    """Angle of a 2D region's principal axis from the horizontal, in (-90, 90]."""
    points = np.argwhere(binary).astype(np.float64)
    centred = points - points.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    row, col = vectors[:, -1]
    angle = np.degrees(np.arctan2(row, col))
    return (angle + 90.0) % 180.0 - 90.0


def _disc_middle(binary):
    """(row, col) of the middle of a 2D disc region, and its area centroid.

    Middle: half way between its leftmost and rightmost pixels, and there
    (over the middle fifth of its length) the mean row, i.e. half way between
    the endplates. For a wedge-shaped disc the centroid lies towards the
    thick end; the middle does not.
    """
    rows, cols = np.nonzero(binary)
    middle_col = (cols.min() + cols.max()) / 2
    band = np.abs(cols - middle_col) <= max(0.1 * (cols.max() - cols.min()), 1.0)
    return np.array([rows[band].mean(), middle_col]), np.array([rows.mean(), cols.mean()])


def _pixel_mm(disc, spacing_mm):
    return extraction.region_height_mm(disc, spacing_mm) / ROWS


# -------------------------------------------------------------- the volume

def test_volumes_have_the_documented_shape_and_range(extracted):
    for _, _, disc, volume in _all_discs(extracted):
        assert isinstance(volume, DiscVolume)
        assert volume.volume.shape == VOLUME_SHAPE == (112, 224, 9)
        assert volume.volume.dtype == np.float32
        assert volume.volume.min() >= 0.0 and volume.volume.max() <= 1.0
        assert volume.level == disc.level and volume.confidence == 1.0
        assert volume.voxel_to_scan.shape == (4, 4)


@pytest.mark.parametrize("source", SOURCES)
def test_disc_is_centred_and_horizontal(phantom_patients, extracted, source):
    """The phantom's disc mask in the volume: middle within 2 px of the centre, axis within 3 deg.

    The row centroid is also within 2 px (the wedge is symmetric about the
    disc's axis); the column centroid is not asserted (wedges, see
    ``_disc_middle``).
    """
    worst_middle = worst_row_centroid = worst_angle = 0.0
    for index in PATIENT_INDICES:
        patient = phantom_patients[index]
        for disc, volume in extracted[index, source]:
            label = tasks.disc_label_of_level(disc.level)
            plane = _resampled(patient.mask == label, volume.voxel_to_scan)[..., MID]
            middle, centroid = _disc_middle(plane)
            worst_middle = max(worst_middle, np.abs(middle - CENTRE).max())
            worst_row_centroid = max(worst_row_centroid, abs(centroid[0] - CENTRE[0]))
            worst_angle = max(worst_angle, abs(_axis_angle_deg(plane)))
            # the whole disc is inside, with room to spare
            rows, cols = np.nonzero(plane)
            assert rows.min() > 10 and rows.max() < ROWS - 11 and cols.min() > 5
            assert cols.max() < COLS - 6
    assert worst_middle < 2.0
    assert worst_row_centroid < 2.0
    assert worst_angle < 3.0


@pytest.mark.parametrize("source", SOURCES)
def test_bodies_are_normalised_to_half(phantom_patients, extracted, source):
    """Median over the true body voxels (both bodies) of the mid slice is 0.5 +- 0.06."""
    for index in PATIENT_INDICES:
        patient = phantom_patients[index]
        for disc, volume in extracted[index, source]:
            upper, lower = disc.level.split("-")
            bodies = _resampled(np.isin(patient.mask, [VERTEBRA_LABELS[upper],
                                                       VERTEBRA_LABELS[lower]]),
                                volume.voxel_to_scan)[..., MID]
            median = np.median(volume.volume[..., MID][bodies])
            assert abs(median - 0.5) <= 0.06, (index, disc.level, median)


@pytest.mark.parametrize("source", SOURCES)
def test_about_forty_percent_of_each_body_is_inside(phantom_patients, extracted, source):
    """Rows of the centre column covered by each true body / the body's height: 0.3..0.5."""
    for index in PATIENT_INDICES:
        patient = phantom_patients[index]
        spacing = patient.spacing_mm
        for disc, volume in extracted[index, source]:
            i = tasks.LEVELS.index(disc.level)
            pixel_mm = _pixel_mm(disc, spacing)
            for body, rows_at in ((patient.anatomy.bodies[i], slice(0, ROWS // 2)),
                                  (patient.anatomy.bodies[i + 1], slice(ROWS // 2, ROWS))):
                inside = _resampled(patient.mask == VERTEBRA_LABELS[body.name],
                                    volume.voxel_to_scan)[..., MID]
                column = inside[:, int(CENTRE[1]):int(CENTRE[1]) + 2].any(axis=1)
                assert column.sum() == column[rows_at].sum()  # on its own side only
                fraction = column[rows_at].sum() / (2 * body.half_height / pixel_mm)
                assert 0.3 <= fraction <= 0.5, (index, disc.level, body.name, fraction)


def test_body_masks_cover_both_true_bodies(phantom_patients, extracted):
    """The corner polygons used for normalisation overlap the true bodies (IoU > 0.8).

    Both of them: the lower body's polygon, which only partly overlaps the
    volume, was once empty (its winding was judged from the pixels).
    """
    for index, source, disc, volume in _all_discs(extracted):
        patient = phantom_patients[index]
        masks = body_masks(disc, volume.voxel_to_scan)
        assert masks.shape == (2, ROWS, COLS)
        for polygon, name in zip(masks, disc.level.split("-")):
            truth = _resampled(patient.mask == VERTEBRA_LABELS[name], volume.voxel_to_scan)
            truth = truth[..., MID]
            iou = (polygon & truth).sum() / (polygon | truth).sum()
            assert iou > 0.8, (index, source, disc.level, name, iou)
        # upper polygon above the disc, lower below
        assert np.nonzero(masks[0].any(axis=1))[0].max() < CENTRE[0]
        assert np.nonzero(masks[1].any(axis=1))[0].min() > CENTRE[0]


# ------------------------------------------------------------- slices

def test_slices_past_the_scan_edge_are_zero(phantom_patients):
    """A scan of 5 slices around the mid-sagittal plane: the 9-slice window is zero-padded."""
    patient = phantom_patients[0]
    m = int(round(patient.anatomy.acquisition.mid_slice))
    image, mask = patient.image[m - 2:m + 3], patient.mask[m - 2:m + 3]
    shift = np.eye(4)
    shift[0, 3] = m - 2
    scan = scan_from_array(image.astype(np.float32), patient.spacing_mm, patient.affine @ shift)
    located = localisation.from_mask(mask, patient.spacing_mm)
    assert located.discs
    for disc in located.discs:
        volume = extract_disc(scan.image, scan.spacing_mm, disc)
        first = int(volume.voxel_to_scan[0, 3])
        assert first == round(disc.centre[0]) - MID
        for k in range(SLICES):
            on_scan = 0 <= first + k < 5
            nonzero = np.count_nonzero(volume.volume[..., k])
            if on_scan:
                assert nonzero > 0.9 * ROWS * COLS, (disc.level, k)
            else:
                assert nonzero == 0, (disc.level, k)
        assert 0 < first + MID < 5  # the mid slice itself is on the scan
        assert first < 0 and first + SLICES > 5  # padded on both sides


def test_volume_slices_are_consecutive_scan_slices(scans, extracted):
    """Volume slice k is scan slice round(centre) - 4 + k, with no through-plane mixing."""
    scan = scans[1]
    disc, volume = extracted[1, "mask"][2]
    marked = np.zeros(scan.shape, np.float32)
    for s in range(scan.num_slices):
        marked[s] = s + 1  # each slice holds its own number
    sampled = sample_into_volume(marked, volume.voxel_to_scan, order=1)
    first = round(disc.centre[0]) - MID
    for k in range(SLICES):
        s = first + k
        expected = s + 1 if 0 <= s < scan.num_slices else 0
        inner = sampled[5:-5, 5:-5, k]
        np.testing.assert_array_equal(inner, np.full(inner.shape, expected, np.float32))


# ---------------------------------------------------------- intensities

@pytest.mark.parametrize("index", PATIENT_INDICES)
def test_normalisation_removes_a_bias_field(scans, extracted, index):
    """A x3 intensity ramp down the rows changes the volumes by < 0.08 in the bodies."""
    scan = scans[index]
    ramp = np.linspace(1.0, 3.0, scan.shape[1], dtype=np.float32)[None, :, None]
    biased = scan.image * ramp
    for disc, volume in extracted[index, "mask"]:
        again = extract_disc(biased, scan.spacing_mm, disc).volume
        bodies = body_masks(disc, volume.voxel_to_scan).any(axis=0)
        raw = sample_into_volume(scan.image, volume.voxel_to_scan)
        raw_biased = sample_into_volume(biased, volume.voxel_to_scan)
        for k in range(SLICES):
            if not volume.volume[..., k].any():
                continue
            change = np.abs(again[..., k] - volume.volume[..., k])[bodies].mean()
            assert change < 0.08, (disc.level, k, change)
            # control: keeping the unbiased scan's scale would not remove it
            unclipped = (volume.volume[..., k] > 0.01) & (volume.volume[..., k] < 0.99)
            scale = np.median(volume.volume[..., k][unclipped] / raw[..., k][unclipped])
            kept = np.clip(raw_biased[..., k] * scale, 0, 1)
            assert np.abs(kept - volume.volume[..., k])[bodies].mean() > 0.1


def test_each_slice_is_normalised_on_its_own(scans, extracted):
    """A different factor per slice (1x .. 2.9x) leaves the volumes unchanged."""
    scan = scans[1]
    factors = np.linspace(1.0, 2.9, scan.num_slices, dtype=np.float32)[:, None, None]
    for disc, volume in extracted[1, "mask"]:
        again = extract_disc(scan.image * factors, scan.spacing_mm, disc).volume
        np.testing.assert_allclose(again, volume.volume, atol=2e-5)


@pytest.mark.parametrize("index", PATIENT_INDICES)
def test_global_intensity_scale_does_not_matter(scans, extracted, index):
    scan = scans[index]
    for disc, volume in extracted[index, "landmarks"]:
        scaled = extract_disc(scan.image * 1000.0, scan.spacing_mm, disc).volume
        np.testing.assert_allclose(scaled, volume.volume, rtol=1e-5, atol=1e-6)


def test_bodies_without_signal_raise_naming_scan_and_level(phantom_patients):
    patient = phantom_patients[0]
    located = localisation.from_mask(patient.mask, patient.spacing_mm)
    disc = located.by_level()["L3-L4"]
    image = patient.image.astype(np.float32).copy()
    image[np.isin(patient.mask, [VERTEBRA_LABELS["L3"], VERTEBRA_LABELS["L4"]])] = 0.0
    scan = _scan(patient, image, path="/data/scans/ph0-00000.nii.gz")
    with pytest.raises(ExtractionError) as error:
        extract_disc(scan.image, scan.spacing_mm, disc, scan.path)
    assert "/data/scans/ph0-00000.nii.gz" in str(error.value)
    assert "L3-L4" in str(error.value)
    # extract() reports it as skipped and goes on with the other discs
    volumes, skipped = extract(scan, located)
    assert "L3-L4" not in [v.level for v in volumes]
    assert len(volumes) == len(located.discs) - 1
    reasons = dict(skipped)
    assert "/data/scans/ph0-00000.nii.gz" in reasons["L3-L4"]


# ------------------------------------------------------------ lesion boxes

def _lesions_with_masks(phantom_patients, extracted):
    for index, patient in enumerate(phantom_patients):
        volumes = {disc.level: (disc, volume) for disc, volume in extracted[index, "mask"]}
        for lesion in patient.anatomy.lesions:
            if lesion.level not in volumes:
                continue
            task = tasks.task(lesion.task)
            channel = tasks.LESION_TASKS.index(task)
            number = tasks.disc_label_of_level(lesion.level) - 200
            region = patient.lesions[..., channel] == number
            if region.any():
                yield patient, lesion, task, channel, number, region, volumes[lesion.level]


def test_lesion_boxes_lie_on_the_right_side_of_the_disc(phantom_patients, extracted):
    checked = 0
    for patient, lesion, task, channel, number, region, (disc, volume) in \
            _lesions_with_masks(phantom_patients, extracted):
        kind, side = task.lesion
        transform = volume.voxel_to_scan
        boxes = lesion_boxes(patient.lesions, transform, number)
        assert boxes.shape == (len(tasks.LESION_TASKS), SLICES, 4)
        box = boxes[channel]
        present = box[:, 0] >= 0
        assert present.any(), (patient.patient_id, lesion.task, lesion.level)
        assert np.all(box[~present] == -1)
        ymin, xmin, ymax, xmax = box[present].T
        assert np.all((ymin < ymax) & (xmin < xmax))
        assert np.all((box[present] >= 0) & (box[present] <= 1))
        if side == "upper":
            assert ymax.max() <= 0.6, (lesion.task, lesion.level, ymax.max())
        else:
            assert ymin.min() >= 0.4, (lesion.task, lesion.level, ymin.min())

        disc_in_volume = _resampled(
            patient.mask == tasks.disc_label_of_level(lesion.level), transform)
        lesion_in_volume = _resampled(region, transform)
        for k in np.nonzero(present)[0]:
            # forward check: the lesion's scan voxels, mapped into the volume,
            # span the box to within the footprint of a scan voxel
            voxels = np.argwhere(region[_first_slice(transform) + k])
            if voxels.size:
                ij = _scan_to_volume(transform, _first_slice(transform) + k, voxels)
                pixel_ratio = patient.spacing_mm[1] / _pixel_mm(disc, patient.spacing_mm)
                tolerance = pixel_ratio * np.sqrt(2) / 2 + 1.0
                fitted = np.array([ij[:, 0].min(), ij[:, 1].min(),
                                   ij[:, 0].max() + 1, ij[:, 1].max() + 1])
                fitted = np.clip(fitted, 0, [ROWS, COLS, ROWS, COLS])
                in_pixels = box[k] * [ROWS, COLS, ROWS, COLS]
                assert np.abs(fitted - in_pixels).max() <= tolerance
            if kind == "endplate":
                # an endplate defect touches the disc: its box edge is within
                # 6 px (about 1.5 mm) of the disc's edge in the same columns
                c0, c1 = int(box[k, 1] * COLS), int(np.ceil(box[k, 3] * COLS))
                disc_rows = np.nonzero(disc_in_volume[:, c0:c1, k].any(axis=1))[0]
                if disc_rows.size:
                    if side == "upper":
                        gap = box[k, 2] * ROWS - disc_rows.min()
                    else:
                        gap = disc_rows.max() + 1 - box[k, 0] * ROWS
                    assert -1 <= gap <= 6, (lesion.task, lesion.level, k, gap)

        # the noise-free signal confirms something is there
        signal = sample_into_volume(patient.signal, transform, order=1)
        body_name = disc.level.split("-")[0 if side == "upper" else 1]
        body = _resampled(patient.mask == VERTEBRA_LABELS[body_name], transform)
        lesion_signal = signal[lesion_in_volume].mean()
        marrow_signal = np.median(signal[body & ~lesion_in_volume])
        if kind == "marrow":
            direction = np.sign(lesion.brightness - 1.0)
            assert direction * (lesion_signal - marrow_signal) > 0.03, lesion
        else:
            assert lesion_signal > marrow_signal, lesion  # disc material: brighter
        checked += 1
    assert checked >= 3  # the phantom patients do have lesions to check


def _first_slice(transform):
    return int(round(transform[0, 3]))


def _scan_to_volume(transform, s, voxels):
    homogeneous = np.column_stack([np.full(len(voxels), s), voxels, np.ones(len(voxels))])
    return (np.linalg.inv(transform) @ homogeneous.T).T[:, :3]


def test_no_lesion_gives_minus_one(phantom_patients, extracted):
    patient = phantom_patients[0]
    disc, volume = extracted[0, "mask"][0]
    empty = np.zeros_like(patient.lesions)
    boxes = lesion_boxes(empty, volume.voxel_to_scan, 6)
    assert np.all(boxes == -1)


# ------------------------------------------------------------- transforms

@pytest.mark.parametrize("source", SOURCES)
def test_voxel_to_scan_is_a_rotation_about_the_disc(phantom_patients, extracted, source):
    """Volume centre -> disc centre; one column = pixel_mm along the disc's axis; no mirror."""
    for index in PATIENT_INDICES:
        spacing = np.asarray(phantom_patients[index].spacing_mm)
        for disc, volume in extracted[index, source]:
            transform = volume.voxel_to_scan
            np.testing.assert_array_equal(transform, voxel_to_scan_transform(disc, spacing))
            np.testing.assert_array_equal(transform[3], [0, 0, 0, 1])
            centre = transform @ [*CENTRE, MID, 1.0]
            np.testing.assert_allclose(centre[1:3], disc.centre[1:], atol=1e-9)
            assert centre[0] == round(disc.centre[0])
            pixel_mm = _pixel_mm(disc, spacing)
            row_step_mm = transform[1:3, 0] * spacing[1:]
            col_step_mm = transform[1:3, 1] * spacing[1:]
            np.testing.assert_allclose(np.linalg.norm(row_step_mm), pixel_mm)
            np.testing.assert_allclose(col_step_mm / pixel_mm, disc.axis, atol=1e-9)
            assert abs(row_step_mm @ col_step_mm) < 1e-9
            assert row_step_mm[0] > 0  # volume rows go towards the feet
            assert np.linalg.det(transform[1:3, :2] * spacing[1:, None]) > 0  # not mirrored
            np.testing.assert_array_equal(transform[0, :3], [0, 0, 1])  # slices only shift
            # region 1:2, height = disc + 40 % of each body
            heights = [localisation.body_height_mm(b, spacing) for b in (disc.upper, disc.lower)]
            assert ROWS * pixel_mm == pytest.approx(disc.height_mm + 0.4 * sum(heights))
            assert COLS / ROWS == 2


def test_round_trips_between_volume_and_scan(phantom_patients, extracted):
    rng = np.random.default_rng(0)
    for index in PATIENT_INDICES:
        spacing = np.asarray(phantom_patients[index].spacing_mm)
        for disc, volume in extracted[index, "mask"][::2]:
            transform = volume.voxel_to_scan
            inverse = np.linalg.inv(transform)
            points = np.column_stack([rng.uniform(0, ROWS - 1, 20000),
                                      rng.uniform(0, COLS - 1, 20000),
                                      rng.integers(0, SLICES, 20000), np.ones(20000)])
            in_scan = transform @ points.T
            np.testing.assert_allclose((inverse @ in_scan).T, points, atol=1e-6)
            # through the nearest scan voxel: the in-plane error is the
            # rounding error (<= 1/2 voxel per scan axis) in volume pixels,
            # |(dy e_r, dx e_c)| / pixel_mm <= hypot(dy, dx) / 2 / pixel_mm
            rounded = inverse @ np.round(in_scan)
            error = np.linalg.norm((rounded.T - points)[:, :2], axis=1)
            bound = np.hypot(spacing[1], spacing[2]) / 2 / _pixel_mm(disc, spacing)
            assert error.max() <= bound + 1e-9
            assert error.max() > 0.9 * bound  # and the bound is what is reached
            np.testing.assert_array_equal(rounded[2], points[:, 2])  # slices are exact


def _inner_scan_voxels(transform, scan_shape, margin):
    """Scan voxels (s, r, c) of the volume's slices at least ``margin`` px inside it."""
    inverse = np.linalg.inv(transform)
    first = _first_slice(transform)
    r, c = np.meshgrid(np.arange(scan_shape[1]), np.arange(scan_shape[2]), indexing="ij")
    out = []
    for k in range(SLICES):
        s = first + k
        if not 0 <= s < scan_shape[0]:
            continue
        ij = inverse @ np.stack([np.full(r.size, s), r.ravel(), c.ravel(), np.ones(r.size)])
        inner = ((ij[0] >= margin) & (ij[0] <= ROWS - 1 - margin)
                 & (ij[1] >= margin) & (ij[1] <= COLS - 1 - margin))
        out.append(np.column_stack([np.full(inner.sum(), s), r.ravel()[inner],
                                    c.ravel()[inner]]))
    return np.concatenate(out)


def test_volume_to_scan_puts_the_volume_back(scans, extracted):
    """volume_to_scan(volume) ~ the scan times each slice's scale, inside the region."""
    scan = scans[1]
    for disc, volume in extracted[1, "mask"][1::2]:
        transform = volume.voxel_to_scan
        back = volume_to_scan(volume.volume, transform, scan.shape)
        assert back.shape == scan.shape and back.dtype == np.float32
        raw = sample_into_volume(scan.image, transform)
        voxels = _inner_scan_voxels(transform, scan.shape, margin=4)
        errors = []
        for k in range(SLICES):
            s = _first_slice(transform) + k
            if not 0 <= s < scan.num_slices:
                continue
            unclipped = (volume.volume[..., k] > 0.01) & (volume.volume[..., k] < 0.99)
            scale = np.median(volume.volume[..., k][unclipped] / raw[..., k][unclipped])
            on = voxels[voxels[:, 0] == s]
            expected = np.clip(scan.image[s][on[:, 1], on[:, 2]] * scale, 0, 1)
            errors.append(np.abs(back[s][on[:, 1], on[:, 2]] - expected))
        errors = np.concatenate(errors)
        # a scan voxel gets its footprint's mean: a light smoothing of a noisy image
        assert np.median(errors) < 0.04 and np.mean(errors) < 0.05, disc.level
        # and nothing outside the region
        region = np.zeros(scan.shape, bool)
        outer = _inner_scan_voxels(transform, scan.shape, margin=-3)
        region[tuple(outer.T)] = True
        assert not back[~region].any()


def test_volume_to_scan_is_exact_for_a_linear_map(scans, extracted):
    """A map linear in (i, j) comes back as its value at each scan voxel's position."""
    scan = scans[0]
    disc, volume = extracted[0, "landmarks"][3]
    transform = volume.voxel_to_scan
    i, j = np.meshgrid(np.arange(ROWS), np.arange(COLS), indexing="ij")
    linear = np.repeat((0.2 + 0.004 * i + 0.001 * j)[..., None], SLICES, axis=2)
    linear += np.arange(SLICES) * 0.01
    back = volume_to_scan(linear.astype(np.float32), transform, scan.shape)
    voxels = _inner_scan_voxels(transform, scan.shape, margin=4)
    ijk = _scan_to_volume(transform, 0, voxels[:, 1:])
    expected = 0.2 + 0.004 * ijk[:, 0] + 0.001 * ijk[:, 1] \
        + 0.01 * (voxels[:, 0] - _first_slice(transform))
    np.testing.assert_allclose(back[tuple(voxels.T)], expected, atol=1e-5)


def test_one_hot_map_lands_on_its_scan_voxel(scans, extracted):
    """A delta at volume voxel (i, j, k) lands within a scan voxel of voxel_to_scan @ (i, j, k)."""
    rng = np.random.default_rng(1)
    for index in (0, 1):
        scan = scans[index]
        disc, volume = extracted[index, "mask"][-1]
        transform = volume.voxel_to_scan
        for _ in range(25):
            i, j, k = rng.integers(1, ROWS - 1), rng.integers(1, COLS - 1), rng.integers(0, SLICES)
            target = (transform @ [i, j, k, 1.0])[:3]
            if not 0 <= target[0] < scan.num_slices:
                continue
            delta = np.zeros(VOLUME_SHAPE, np.float32)
            delta[i, j, k] = 1.0
            back = volume_to_scan(delta, transform, scan.shape)
            assert back.max() > 0, (i, j, k)  # never lost between scan voxel centres
            landed = np.array(np.unravel_index(np.argmax(back), back.shape))
            assert landed[0] == target[0]
            assert np.abs(landed[1:] - target[1:]).max() <= 1.0, (i, j, k, landed, target)
            # most of it in the nearest voxel or its neighbours
            r, c = np.round(target[1:]).astype(int)
            near = back[int(target[0]), r - 1:r + 2, c - 1:c + 2].sum()
            assert near >= 0.99 * back.sum()


# ------------------------------------------------------------- real slices

def test_real_slices(real_slices_dir):
    """Every usable real disc: middle within 3 px, axis within 4 deg, body median 0.5."""
    from scipy import ndimage
    table = []
    for n in range(10):
        png = real_slices_dir / f"{n}.png"
        scan = read_scan(png)
        mask = read_mask(real_slices_dir / f"{n}.npy", scan)
        located = localisation.from_mask(mask, scan.spacing_mm, convention="binary")
        volumes, skipped = extract(scan, located)
        assert [v.level for v in volumes] == [d.level for d in located.discs]
        assert len(skipped) == len(located.skipped)
        discs, _ = ndimage.label(mask[0] == 1)
        worst_middle = worst_centroid = worst_angle = 0.0
        for disc, volume in zip(located.discs, volumes):
            r, c = np.round(disc.centre[1:]).astype(int)
            own = discs == discs[r, c]
            assert discs[r, c] > 0  # the centre lies on the disc
            plane = _resampled(own[None], volume.voxel_to_scan)[..., MID]
            middle, centroid = _disc_middle(plane)
            worst_middle = max(worst_middle, np.abs(middle - CENTRE).max())
            worst_centroid = max(worst_centroid, np.linalg.norm(centroid - CENTRE))
            worst_angle = max(worst_angle, abs(_axis_angle_deg(plane)))
            bodies = _resampled(mask == 2, volume.voxel_to_scan)[..., MID]
            assert abs(np.median(volume.volume[..., MID][bodies]) - 0.5) <= 0.06
            # one slice, zero-padded to nine
            assert volume.volume[..., MID].any()
            assert not np.delete(volume.volume, MID, axis=2).any()
        table.append((n, len(volumes), len(skipped), worst_middle, worst_centroid, worst_angle))
        assert worst_middle < 3.0, n
        assert worst_angle < 4.0, n
    print("\nslice  discs  skipped  worst middle px  worst centroid px  worst angle deg")
    for row in table:
        print("%5d  %5d  %7d  %15.2f  %17.2f  %15.2f" % row)
    found = {n: count for n, count, *_ in table}
    assert found[0] == found[5] == found[1] == 0
    assert all(found[n] >= 3 for n in (2, 3, 4, 6, 7, 8, 9))
