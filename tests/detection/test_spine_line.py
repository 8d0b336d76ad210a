"""Following the spine through disc candidates: where the line starts at the sacrum, and an
L5-S1 whose sacrum the network missed (detection.spine_line)."""

import os

import numpy as np
import pytest

from spine_tf import detection, tasks
from spine_tf.detection import data, spine_line
from spine_tf.data import spider_slices
from spine_tf.io.scan import read_scan

needs_weights = pytest.mark.skipif(not os.path.exists(detection.WEIGHTS),
                                   reason="no shipped detector weights")

SPACING = np.array([4.0, 1.0, 1.0])
UP, POSTERIOR = np.array([-1.0, 0.0]), np.array([0.0, 1.0])


def _disc(row, col=100.0, peak=0.7, half_width=15, above=data.BODY, below=data.BODY):
    """A flat 31 x 7 mm candidate centred at (row, col) mm, 1 mm pixels."""
    rows, cols = np.meshgrid(np.arange(row - 3, row + 4), np.arange(col - half_width,
                                                                    col + half_width + 1))
    voxels = np.stack([np.zeros(rows.size), rows.ravel(), cols.ravel()], 1).astype(int)
    return spine_line.Candidate(voxels, peak, np.array([row, col]), UP, POSTERIOR, above,
                                below)


def _block(row0, row1, col0, col1):
    rows, cols = np.mgrid[row0:row1, col0:col1]
    return np.stack([np.zeros(rows.size), rows.ravel(), cols.ravel()], 1).astype(int)


# five discs 35 mm apart, lowest (L4-L5, really) at row 240
LINE = [240.0 - 35.0 * k for k in range(5)]


def test_an_l5_s1_without_bone_below_is_taken_where_no_sacrum_anchors_the_line():
    line = [_disc(r) for r in LINE]
    l5_s1 = _disc(275.0, below=None)
    discs, numbers, anchored = spine_line.spine_line(line, None, SPACING, [l5_s1])
    assert not anchored and discs[0] is l5_s1 and discs[1:] == line
    assert numbers == [0, 1, 2, 3, 4, 5]
    # without it the line starts one disc up, and every level would be one too low
    discs, numbers, _ = spine_line.spine_line(line, None, SPACING)
    assert discs[0] is line[0] and numbers == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("why, lowest", [
    ("too faint: an S1-S2 remnant", _disc(275.0, peak=0.2, below=None)),
    ("too small", _disc(275.0, half_width=4, below=None)),
    ("two steps down, not one", _disc(310.0, below=None)),
    ("far behind the spine", _disc(275.0, col=140.0, below=None)),
    ("under a line of two discs only", _disc(275.0, below=None)),
    ("two steps below a line of three", _disc(310.0, below=None)),
])
def test_what_is_not_taken_for_an_l5_s1_without_bone_below(why, lowest):
    line = [_disc(r) for r in (LINE[:2] if "two discs" in why
                               else LINE[:3] if "three" in why else LINE)]
    discs, _, _ = spine_line.spine_line(line, None, SPACING, [lowest])
    assert discs[0] is line[0], why


def test_with_a_sacrum_anchoring_the_line_an_l5_s1_without_bone_below_must_lie_nearer_it():
    line = [_disc(r) for r in LINE]
    l5_s1 = _disc(275.0, below=None)
    beside_lowest = _block(236, 246, 108, 118)  # sacrum found beside the line's lowest disc
    discs, _, anchored = spine_line.spine_line(line, beside_lowest, SPACING, [l5_s1])
    assert anchored and discs[0] is line[0]
    beside_both = _block(250, 280, 108, 120)  # a sacrum piece beside both, nearer the new one
    discs, _, anchored = spine_line.spine_line(line, beside_both, SPACING, [l5_s1])
    assert anchored and discs[0] is l5_s1


def test_a_disc_with_the_sacrum_under_it_below_the_lines_start_becomes_l5_s1():
    """Real slices: the network takes part of L5 for sacrum, next to L4-L5, so the line
    starts there; the disc one step below, with the sacrum under it, is L5-S1."""
    l5_s1 = _disc(275.0, below=data.SACRUM)
    line = [_disc(r) for r in LINE]
    l5_piece = _block(232, 262, 112, 125)  # in L5, beside L4-L5: the largest piece
    discs, numbers, anchored = spine_line.spine_line([l5_s1] + line, l5_piece, SPACING)
    assert anchored and discs[0] is line[0]  # the line alone starts one disc too high
    discs, numbers, _ = spine_line.spine_line([l5_s1] + line, l5_piece, SPACING, [l5_s1])
    assert discs[0] is l5_s1 and numbers == [0, 1, 2, 3, 4, 5]


def test_a_disc_inside_the_sacrum_does_not_start_the_line():
    line = [_disc(r) for r in [275.0] + LINE]
    remnant = _disc(310.0, above=data.SACRUM, below=data.SACRUM)
    sacrum = _block(282, 345, 85, 115)
    discs, _, anchored = spine_line.spine_line([remnant] + line, sacrum, SPACING)
    assert anchored and discs[0] is line[0]


def test_the_mirror_image_of_the_body_above_stands_in_for_a_missing_one():
    disc = _disc(100.0)
    labels = np.zeros((1, 200, 200), np.int16)
    labels[0, 0:10, 0:10] = 1
    labels[0, 70:97, 85:116] = 2  # rows 70-96, 3 mm above the disc's middle
    labels[0, 97:104, 85:116] = 201  # the disc itself is not a body
    assert not spine_line.body_below(disc, labels, SPACING)
    lower = spine_line.mirrored_body(disc, labels, SPACING)
    assert (lower[:, 1].min(), lower[:, 1].max()) == (104, 130)
    assert (lower[:, 2].min(), lower[:, 2].max()) == (85, 115) and len(lower) == 27 * 31
    labels[0, 110:120, 95:105] = 3
    assert spine_line.body_below(disc, labels, SPACING)
    labels[0, 70:97] = 0
    assert spine_line.mirrored_body(disc, labels, SPACING) is None


def test_a_tilted_mirror_image_has_no_holes():
    """A disc tilted 20 degrees: the image is as large as the body and one piece."""
    from scipy import ndimage
    tilt = np.deg2rad(20.0)
    up = np.array([-np.cos(tilt), np.sin(tilt)])
    disc = spine_line.Candidate(np.array([[0, 100, 100]]), 0.7, np.array([100.0, 100.0]), up,
                                np.array([np.sin(tilt), np.cos(tilt)]))
    rows, cols = np.mgrid[0:200, 0:200]
    offset = np.stack([rows - 100.0, cols - 100.0], -1)
    along, across = offset @ up, offset @ disc.axis
    labels = ((along > 4) & (along < 30) & (abs(across) < 15)).astype(np.int16)[None]
    lower = spine_line.mirrored_body(disc, labels, SPACING)
    image = np.zeros((200, 200), bool)
    image[lower[:, 1], lower[:, 2]] = True
    assert len(lower) == pytest.approx(labels.sum(), rel=0.03)
    assert ndimage.label(image)[1] == 1 and ndimage.binary_fill_holes(image).sum() == image.sum()


@needs_weights
@pytest.mark.parametrize("series", ["20_t2", "4_t2"])
def test_real_slices_whose_sacrum_the_network_misses_are_named_from_l5_s1(
        spider_slices_dir, series):
    """SPIDER slices where the shipped detector finds no bone under L5-S1 (the network
    misses the sacrum): L5-S1 is found in box 1 and every level is right."""
    image = next(i for i in spider_slices.read_slices(spider_slices_dir) if i.series == series)
    located = detection.detect(read_scan(image.path), detection.load())
    assert [d.level for d in located.discs][-1] == "L5-S1"
    for disc in located.discs:
        box = image.boxes[tasks.LEVELS[::-1].index(disc.level)]
        assert box.holds(*disc.centre[1:]), disc.level
