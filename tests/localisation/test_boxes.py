"""Tests of spine_tf.localisation.boxes: discs and bodies from disc boxes alone.

Boxes drawn around the phantom's disc masks on its mid slice are localised and compared
with the localisation from the full label mask: the same centres, tilts and heights, and
disc volumes that look the same.
"""

import numpy as np
import pytest

from spine_tf import localisation
from spine_tf.extraction import extract
from spine_tf.io import scan_from_array


def _boxes(patient, mid):
    """(from_bottom, (row0, col0, row1, col1)) of every disc of the mask on slice ``mid``."""
    boxes = []
    for value in range(201, 226):
        rows, cols = np.nonzero(patient.mask[mid] == value)
        if rows.size:
            boxes.append((value - 200, (rows.min() - 0.5, cols.min() - 0.5,
                                        rows.max() + 0.5, cols.max() + 0.5)))
    return boxes


@pytest.fixture(scope="module")
def pairs(phantom_patients):
    """(patient, scan, localisation from the mask, localisation from its boxes)."""
    out = []
    for patient in phantom_patients:
        truth = localisation.from_mask(patient.mask, patient.spacing_mm)
        mid = int(round(np.mean([disc.centre[0] for disc in truth.discs])))
        located = localisation.from_boxes(_boxes(patient, mid), patient.spacing_mm, mid)
        scan = scan_from_array(patient.image, patient.spacing_mm, patient.affine, path="p")
        out.append((patient, scan, truth, located))
    return out


def test_boxes_give_the_mask_geometry(pairs):
    compared = 0
    for patient, _, truth, located in pairs:
        by_level = truth.by_level()
        for disc in located.discs:
            if disc.level not in by_level:
                continue
            expected = by_level[disc.level]
            offset_mm = (disc.centre[1:] - expected.centre[1:]) * patient.spacing_mm[1:]
            assert np.linalg.norm(offset_mm) < 1.0, disc.level
            angle = np.degrees(np.arccos(min(1.0, abs(disc.axis @ expected.axis))))
            assert angle < 4.0, (disc.level, angle)  # ends too: the parabola's tangent
            assert disc.axis[1] > 0  # posterior
            assert 0.6 < disc.height_mm / expected.height_mm < 1.5, disc.level
            compared += 1
    assert compared >= 15


def test_volumes_from_boxes_look_like_the_masks(pairs):
    correlations = []
    for _, scan, truth, located in pairs:
        from_mask = {v.level: v.volume for v in extract(scan, truth)[0]}
        volumes, skipped = extract(scan, located)
        assert not skipped
        for volume in volumes:
            if volume.level in from_mask:
                correlations.append(np.corrcoef(volume.volume[..., 4].ravel(),
                                                from_mask[volume.level][..., 4].ravel())[0, 1])
    assert len(correlations) >= 15
    assert np.median(correlations) > 0.9 and min(correlations) > 0.7


def test_levels_count_from_the_bottom_and_thoracic_boxes_only_help():
    boxes = [(n, (100 - 36 * n, 50, 108 - 36 * n, 90)) for n in range(1, 9)]  # 8 discs
    located = localisation.from_boxes(boxes, (4.0, 1.0, 1.0))
    assert [d.level for d in located.discs] == [
        "T12-L1", "L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"]
    top = located.discs[0]
    # the body above T12-L1 ends at the T11-T12 disc's box, not by extrapolation
    assert top.upper.corners[:2, 0].min() == pytest.approx(100 - 36 * 7 + 8, abs=0.5)
    assert localisation.level_from_bottom(1) == "L5-S1"
    assert localisation.level_from_bottom(7) is None
    assert localisation.level_from_bottom(0) is None


def test_a_single_box_is_skipped_with_the_reason():
    located = localisation.from_boxes([(2, (10, 10, 18, 50))], (4.0, 1.0, 1.0))
    assert located.discs == []
    assert located.skipped == [("L4-L5", "a single disc box gives no spine line to orient "
                                "it by")]


def test_a_mask_drawn_from_boxes_covers_the_discs_and_bodies(phantom_patients):
    body_ious, disc_ious = [], []
    for patient in phantom_patients:
        truth = localisation.from_mask(patient.mask, patient.spacing_mm)
        mid = int(round(np.mean([disc.centre[0] for disc in truth.discs])))
        drawn = localisation.box_mask(_boxes(patient, mid), patient.spacing_mm,
                                      patient.mask[mid].shape)
        assert drawn.dtype == np.int16
        for value in set(np.unique(drawn)) - {0}:
            a, b = drawn == value, patient.mask[mid] == value
            iou = (a & b).sum() / (a | b).sum()
            (disc_ious if value > 200 else body_ious).append(iou)
    assert len(disc_ious) >= 15 and len(body_ious) >= 18
    # bodies are the quadrilaterals between the endplates; discs the ellipse in each box
    assert np.median(body_ious) > 0.85 and min(body_ious) > 0.7
    assert np.median(disc_ious) > 0.65 and min(disc_ious) > 0.5
