"""Tests of spine_tf.localisation: discs from label masks and from landmarks.

Phantom patients know their anatomy exactly (``patient.anatomy``: centres,
angles and heights in mm), so both localisation sources are checked against
it and against each other. The real slices check the binary (disc = 1,
body = 2) convention on real anatomy.
"""

import numpy as np
import pytest

from spine_tf import localisation, tasks
from spine_tf.io import landmarks as landmarks_io
from spine_tf.io import read_mask, read_scan, scan_from_array
from spine_tf.phantom.anatomy import VERTEBRA_LABELS

PATIENT_INDICES = (0, 1, 2)
SOURCES = ("mask", "landmarks")


def _scan(patient):
    return scan_from_array(patient.image, patient.spacing_mm, patient.affine,
                           path=patient.patient_id)


def _localise(patient, source, scan=None):
    if source == "mask":
        return localisation.from_mask(patient.mask, patient.spacing_mm)
    return localisation.from_landmarks(patient.landmarks, scan or _scan(patient))


@pytest.fixture(scope="module")
def localised(phantom_patients):
    """{(patient index, source): Localisation} for the three phantom patients."""
    return {(i, source): _localise(patient, source)
            for i, patient in enumerate(phantom_patients) for source in SOURCES}


@pytest.fixture(scope="module")
def cropped_patient(phantom_patients):
    """Patient 0 with its field of view cut through the middle of L1.

    A cut-off scan made by hand, so the cut-off path is tested whatever the
    phantom draws: T12 and the T12-L1 disc are gone, L1 is cut in half, so
    L2-L3 .. L5-S1 are usable and L1-L2 is not. The landmarks stay those of
    the whole spine (world mm): the ones outside the new field of view must
    be recognised as such.
    """
    patient = phantom_patients[0]
    l1 = patient.anatomy.bodies[1]
    cut = int(round(l1.centre[0] / patient.spacing_mm[1]))
    shift = np.eye(4)
    shift[1, 3] = cut
    affine = patient.affine @ shift  # voxel (s, r, c) of the crop is (s, r + cut, c)
    scan = scan_from_array(patient.image[:, cut:], patient.spacing_mm, affine, path="cropped")
    return scan, patient.mask[:, cut:], patient.landmarks


# ------------------------------------------------------------------ levels

@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("index", PATIENT_INDICES)
def test_finds_exactly_the_visible_levels(phantom_patients, localised, index, source):
    patient = phantom_patients[index]
    found = localised[index, source]
    assert [d.level for d in found.discs] == list(patient.levels)
    # every other lumbar level is accounted for, with a reason
    missing = [level for level in tasks.LEVELS if level not in patient.levels]
    assert sorted(level for level, _ in found.skipped) == sorted(missing)
    assert all(isinstance(reason, str) and reason for _, reason in found.skipped)


def test_cut_off_scan_from_mask(cropped_patient):
    scan, mask, _ = cropped_patient
    found = localisation.from_mask(mask, scan.spacing_mm)
    assert [d.level for d in found.discs] == ["L2-L3", "L3-L4", "L4-L5", "L5-S1"]
    reasons = dict(found.skipped)
    assert set(reasons) == {"T12-L1", "L1-L2"}
    assert "cut off" in reasons["L1-L2"]
    assert "not in the mask" in reasons["T12-L1"]


def test_a_disc_whose_body_is_cut_off_is_kept_where_asked(cropped_patient, phantom_patients):
    """cut_bodies (the detector's choice): L1-L2, whose L1 is cut in half, is kept; its L1
    keeps the side facing the disc and reaches as far up as L2 is tall, past row 0."""
    from spine_tf import extraction
    scan, mask, _ = cropped_patient
    found = localisation.from_mask(mask, scan.spacing_mm, cut_bodies=True)
    assert [d.level for d in found.discs] == ["L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"]
    assert found.notes == ["L1-L2: the vertebral body above is cut off by the field of view; "
                           "its far side was placed as far from the disc as the other body "
                           "is tall"]
    assert dict(found.skipped).keys() == {"T12-L1"}
    disc = found.by_level()["L1-L2"]
    whole = localisation.from_mask(phantom_patients[0].mask,
                                   phantom_patients[0].spacing_mm).by_level()["L1-L2"]
    cut_rows = int(round(phantom_patients[0].anatomy.bodies[1].centre[0]
                         / scan.spacing_mm[1]))
    # the side facing the disc is where the whole scan has it; the far side, L2's height up
    np.testing.assert_allclose(disc.upper.corners[2:] + [cut_rows, 0], whole.upper.corners[2:],
                               atol=1.5)
    height = localisation.body_height_mm(disc.upper, scan.spacing_mm)
    assert height == pytest.approx(localisation.body_height_mm(disc.lower, scan.spacing_mm),
                                   rel=0.05)
    assert disc.upper.corners[:2, 0].max() < 0  # above the field of view
    # its disc volume is the one the whole scan gives (40 % of L1 is still in view) more than
    # any other disc's
    patient = phantom_patients[0]
    cropped = extraction.extract_disc(scan.image, scan.spacing_mm, disc).volume.ravel()
    everywhere = localisation.from_mask(patient.mask, patient.spacing_mm).by_level()
    alike = {level: np.corrcoef(cropped, extraction.extract_disc(
        patient.image, patient.spacing_mm, everywhere[level]).volume.ravel())[0, 1]
        for level in ("L1-L2", "L2-L3", "L3-L4")}
    assert max(alike, key=alike.get) == "L1-L2" and alike["L1-L2"] > 0.85
    # both bodies cut, or too little of one in view: still skipped
    top = int(round(disc.upper.corners[2:, 0].min())) - 2
    sliver = localisation.from_mask(mask[:, top:], scan.spacing_mm, cut_bodies=True)
    assert "L1-L2" in dict(sliver.skipped)


def test_cut_off_scan_from_landmarks(cropped_patient):
    scan, _, vertebrae = cropped_patient
    assert set(vertebrae) >= {"T12", "L1"}  # all given, but not all in view
    found = localisation.from_landmarks(vertebrae, scan)
    assert [d.level for d in found.discs] == ["L2-L3", "L3-L4", "L4-L5", "L5-S1"]
    reasons = dict(found.skipped)
    assert set(reasons) == {"T12-L1", "L1-L2"}
    assert "L1" in reasons["L1-L2"] and "outside the field of view" in reasons["L1-L2"]
    assert "T12" in reasons["T12-L1"]


def test_missing_landmarks_are_named(phantom_patients):
    patient = phantom_patients[0]
    vertebrae = {k: v for k, v in patient.landmarks.items() if k != "L3"}
    found = localisation.from_landmarks(vertebrae, _scan(patient))
    reasons = dict(found.skipped)
    assert set(reasons) == {"L2-L3", "L3-L4"}
    assert reasons["L2-L3"] == "no landmarks for L3"


def test_spider_neighbours_are_found_by_geometry(phantom_patients):
    """A missing vertebra skips both its discs, naming the side."""
    patient = phantom_patients[0]
    mask = patient.mask.copy()
    mask[mask == VERTEBRA_LABELS["L4"]] = 0
    found = localisation.from_mask(mask, patient.spacing_mm)
    reasons = dict(found.skipped)
    assert "L3-L4" in reasons and "L4-L5" in reasons
    assert "below" in reasons["L3-L4"] and "above" in reasons["L4-L5"]
    assert [d.level for d in found.discs] == ["T12-L1", "L1-L2", "L2-L3", "L5-S1"]


def test_vertebra_numbering_does_not_matter(phantom_patients):
    """SPIDER-like data sets number vertebrae differently (L5 or S1 as 1, 101.. for
    partly visible ones); the localisation must not depend on it."""
    patient = phantom_patients[0]
    reference = localisation.from_mask(patient.mask, patient.spacing_mm)
    renumbered = patient.mask.copy()
    vertebrae = (renumbered > 0) & (renumbered < tasks.CANAL_LABEL)
    renumbered[vertebrae] += 20  # S1 = 21 ...
    again = localisation.from_mask(renumbered, patient.spacing_mm)
    assert [d.level for d in again.discs] == [d.level for d in reference.discs]
    for a, b in zip(reference.discs, again.discs):
        np.testing.assert_allclose(a.centre, b.centre)
        np.testing.assert_allclose(a.upper.corners, b.upper.corners)
        np.testing.assert_allclose(a.lower.corners, b.lower.corners)
    # a vertebra marked as partly out of view (100 + n) is a cut-off body
    partial = patient.mask.copy()
    partial[partial == VERTEBRA_LABELS["T12"]] = tasks.CANAL_LABEL + VERTEBRA_LABELS["T12"]
    reasons = dict(localisation.from_mask(partial, patient.spacing_mm).skipped)
    assert "cut off" in reasons["T12-L1"]


def test_unknown_convention_is_rejected(phantom_patients):
    with pytest.raises(ValueError, match="convention"):
        localisation.from_mask(phantom_patients[0].mask, phantom_patients[0].spacing_mm,
                               convention="nnunet")


# ---------------------------------------------------------------- geometry

def _truth(patient, level):
    """Ground truth of a disc: centre voxel (slice, row, col), axis (row, col), height."""
    disc = patient.anatomy.discs[tasks.LEVELS.index(level)]
    _, dy, dx = patient.spacing_mm
    centre = np.array([patient.anatomy.acquisition.mid_slice, disc.centre[0] / dy,
                       disc.centre[1] / dx])
    return centre, disc.back, 2 * disc.half_height


def _angle_deg(a, b):
    cosine = abs(float(np.dot(a, b))) / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(min(1.0, cosine))))


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("index", PATIENT_INDICES)
def test_disc_matches_the_anatomy(phantom_patients, localised, index, source):
    """Centre within 1 mm in-plane and 1 slice; axis within 3 deg; height within 10 %.

    The centre is the middle of the disc space (half way between the
    endplates' midpoints), which is how the phantom builds its spine. The
    area centroid of the mask is not: phantom discs are lordotic wedges, and
    their centroid sits up to 2 mm anterior of it (L5-S1).
    """
    patient = phantom_patients[index]
    spacing = np.asarray(patient.spacing_mm)
    for disc in localised[index, source].discs:
        centre, axis, height = _truth(patient, disc.level)
        in_plane_mm = np.linalg.norm((disc.centre[1:] - centre[1:]) * spacing[1:])
        assert in_plane_mm < 1.0, (disc.level, in_plane_mm)
        assert abs(disc.centre[0] - centre[0]) < 1.0, disc.level
        assert _angle_deg(disc.axis, axis) < 3.0, disc.level
        assert disc.axis[1] > 0  # points posterior
        assert np.isclose(np.linalg.norm(disc.axis), 1.0)
        assert abs(disc.height_mm / height - 1) < 0.1, (disc.level, disc.height_mm, height)


@pytest.mark.parametrize("index", PATIENT_INDICES)
def test_mask_and_landmarks_agree(phantom_patients, localised, index):
    spacing = np.asarray(phantom_patients[index].spacing_mm)
    from_mask = localised[index, "mask"].by_level()
    from_landmarks = localised[index, "landmarks"].by_level()
    assert set(from_mask) == set(from_landmarks)
    for level, a in from_mask.items():
        b = from_landmarks[level]
        distance_mm = np.linalg.norm((a.centre - b.centre) * spacing)
        assert distance_mm < 1.5, (level, distance_mm)
        assert _angle_deg(a.axis, b.axis) < 3.0, level
        assert abs(a.height_mm / b.height_mm - 1) < 0.2, level
        for body_a, body_b in ((a.upper, b.upper), (a.lower, b.lower)):
            height_a = localisation.body_height_mm(body_a, spacing)
            height_b = localisation.body_height_mm(body_b, spacing)
            assert abs(height_a / height_b - 1) < 0.1, level
            assert abs(body_a.mid_slice - body_b.mid_slice) < 1.0, level
            assert body_a.slice_range[0] <= round(body_a.mid_slice) <= body_a.slice_range[1]


@pytest.mark.parametrize("index", PATIENT_INDICES)
def test_bodies_are_the_neighbours_of_their_disc(phantom_patients, localised, index):
    """Upper body above the disc, lower below, corners in the documented order."""
    patient = phantom_patients[index]
    scale = np.asarray(patient.spacing_mm[1:])
    for disc in localised[index, "mask"].discs:
        i = tasks.LEVELS.index(disc.level)
        for body, truth in ((disc.upper, patient.anatomy.bodies[i]),
                            (disc.lower, patient.anatomy.bodies[i + 1])):
            corners_mm = body.corners * scale
            true_mm = truth.corners()  # ant-sup, post-sup, post-inf, ant-inf (y, x) mm
            assert np.max(np.linalg.norm(corners_mm - true_mm, axis=1)) < 1.5, disc.level


def test_disc_between_of_a_known_box():
    """Two axis-aligned bodies 8 mm apart, pixels 0.5 x 1 mm."""
    spacing = (4.0, 0.5, 1.0)

    def body(top_mm, bottom_mm, mid_slice):
        rows = np.array([top_mm, top_mm, bottom_mm, bottom_mm]) / spacing[1]
        cols = np.array([10.0, 40.0, 40.0, 10.0]) / spacing[2]
        return localisation.BodyLocation(np.column_stack([rows, cols]), mid_slice, (0, 9))

    disc = localisation.disc_between("L4-L5", body(0.0, 25.0, 4.0), body(33.0, 58.0, 5.0),
                                     spacing)
    np.testing.assert_allclose(disc.centre, [4.5, 29.0 / 0.5, 25.0])
    np.testing.assert_allclose(disc.axis, [0.0, 1.0])
    assert disc.height_mm == pytest.approx(8.0)


# -------------------------------------------------------------- real slices

def _read_real(real_slices_dir, n):
    scan = read_scan(real_slices_dir / f"{n}.png")
    return scan, read_mask(real_slices_dir / f"{n}.npy", scan)


@pytest.mark.parametrize("n", [0, 5])
def test_real_slices_without_annotation_give_nothing(real_slices_dir, n):
    scan, mask = _read_real(real_slices_dir, n)
    found = localisation.from_mask(mask, scan.spacing_mm, convention="binary")
    assert found.discs == [] and found.skipped == []


def test_real_slice_with_discs_only_skips_them(real_slices_dir):
    scan, mask = _read_real(real_slices_dir, 1)
    found = localisation.from_mask(mask, scan.spacing_mm, convention="binary")
    assert found.discs == []
    assert len(found.skipped) == 3
    assert all("no vertebral body" in reason for _, reason in found.skipped)
    # named from the bottom up
    assert [level for level, _ in found.skipped] == ["L3-L4", "L4-L5", "L5-S1"]


def _disc_components_with_bodies(mask):
    """Disc components (binary mask) with a body touching-close above and below.

    An independent count: a body counts as above (below) when one of its
    pixels lies within 6 px above (below) the disc in the disc's columns.
    """
    from scipy import ndimage
    discs, n_discs = ndimage.label(mask == 1)
    bodies = ndimage.binary_dilation(mask == 2, iterations=1)
    out = []
    for i in range(1, n_discs + 1):
        disc = discs == i
        if disc.sum() < 20:
            continue
        rows, cols = np.nonzero(disc)
        centre = int(round(cols.mean()))
        column = slice(max(centre - 3, 0), centre + 4)
        top, bottom = rows.min(), rows.max()
        above = bodies[max(top - 6, 0):top + 1, column].any()
        below = bodies[bottom:bottom + 7, column].any()
        out.append((rows.mean(), above and below))
    return [has for _, has in sorted(out, reverse=True)]  # bottom first


@pytest.mark.parametrize("n", [2, 3, 4, 6, 7, 8, 9])
def test_real_slices_find_every_disc_between_bodies(real_slices_dir, n):
    scan, mask = _read_real(real_slices_dir, n)
    found = localisation.from_mask(mask, scan.spacing_mm, convention="binary")
    expected = _disc_components_with_bodies(mask[0])[:len(tasks.LEVELS)]
    named_bottom_up = list(reversed(tasks.LEVELS))[:len(expected)]
    expected_levels = [level for level, has in zip(named_bottom_up, expected) if has]
    assert sorted(d.level for d in found.discs) == sorted(expected_levels)
    assert len(found.discs) >= 3
    # top to bottom, lowest = L5-S1 when the lowest disc is usable
    rows = [d.centre[1] for d in found.discs]
    assert rows == sorted(rows)
    if expected[0]:
        assert found.discs[-1].level == "L5-S1"
    for disc in found.discs:
        # the lower body lies below the upper one, the disc between them
        upper_row = disc.upper.corners[:, 0].mean()
        lower_row = disc.lower.corners[:, 0].mean()
        assert upper_row < disc.centre[1] < lower_row
        assert 2.0 < disc.height_mm < 20.0


def test_binary_mask_does_not_skip_over_a_missing_body(real_slices_dir):
    """With one body erased, the discs on either side of it lose that neighbour.

    They must be skipped, not given the next body beyond the next disc.
    """
    from scipy import ndimage
    scan, mask = _read_real(real_slices_dir, 2)
    found = localisation.from_mask(mask, scan.spacing_mm, convention="binary")
    target = found.by_level()["L3-L4"]
    bodies, _ = ndimage.label(mask[0] == 2)
    row, col = np.round(target.upper.corners.mean(axis=0)).astype(int)
    erased = mask.copy()
    erased[0][bodies == bodies[row, col]] = 0  # L3
    again = localisation.from_mask(erased, scan.spacing_mm, convention="binary")
    reasons = dict(again.skipped)
    assert "no vertebral body found above" in reasons["L3-L4"]
    assert "no vertebral body found below" in reasons["L2-L3"]
    assert {d.level for d in again.discs} == set(found.by_level()) - {"L2-L3", "L3-L4"}


def test_landmarks_file_round_trip(tmp_path, phantom_patients):
    """Landmarks written to JSON and read back localise the same discs."""
    patient = phantom_patients[1]
    path = tmp_path / "landmarks.json"
    landmarks_io.write_landmarks(path, patient.landmarks)
    scan = _scan(patient)
    direct = localisation.from_landmarks(patient.landmarks, scan)
    read = localisation.from_landmarks(landmarks_io.read_landmarks(path, scan), scan)
    assert [d.level for d in read.discs] == [d.level for d in direct.discs]
    for a, b in zip(read.discs, direct.discs):
        np.testing.assert_allclose(a.centre, b.centre, atol=1e-3)
