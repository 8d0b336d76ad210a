"""The SPIDER slices layout: images, listed pixel spacing, disc boxes."""

import shutil

import numpy as np
import pytest

from spine_tf.data import spider_slices
from spine_tf.io.scan import ScanError


def test_reads_every_listed_image_with_its_spacing_and_boxes(spider_slices_dir):
    slices = spider_slices.read_slices(spider_slices_dir)
    assert len(slices) == 199 and len({s.patient for s in slices}) == 165
    boxed = [s for s in slices if s.boxes]
    assert len(boxed) == 81 and sum(len(s.boxes) for s in boxed) == 555
    first = next(s for s in slices if s.series == "104_t2")
    assert first.patient == "104" and first.spacing_mm == (0.72916668653488, 0.72916668653488)
    assert [b.from_bottom for b in first.boxes] == list(range(1, 8))
    lowest = first.boxes[0]  # boxes.csv: 104_t2,1,197,302,273,351
    np.testing.assert_allclose(lowest.centre, [326.5, 235.0])
    assert lowest.holds(326.5 + 12.0, 235.0 - 19.0) and not lowest.holds(326.5 + 12.5, 235.0)


def test_layout_errors_name_the_file(spider_slices_dir, tmp_path):
    with pytest.raises(ScanError, match="series.csv: missing"):
        spider_slices.read_slices(tmp_path)
    (tmp_path / "images").mkdir()
    shutil.copy(spider_slices_dir / "images" / "104_t2.png", tmp_path / "images")
    header = "series,patient,sequence,rows,columns,row_spacing_mm,column_spacing_mm\n"
    (tmp_path / "series.csv").write_text(header + "104_t2,104,t2,384,384,0.73,0.73\n"
                                         "105_t2,105,t2,427,448,0.625,0.625\n")
    with pytest.raises(ScanError, match=r"105_t2.png: missing \(listed in .*series.csv, line 3"):
        spider_slices.read_slices(tmp_path)
    (tmp_path / "series.csv").write_text(header + "104_t2,104,t2,384,384,0.73,wide\n")
    with pytest.raises(ScanError, match="series.csv, line 2: needs series"):
        spider_slices.read_slices(tmp_path)
    (tmp_path / "series.csv").write_text(header + "104_t2,104,t2,384,384,0.73,0.73\n")
    (tmp_path / "boxes.csv").write_text("series,from_bottom,x0,y0,x1,y1\n9_t2,1,1,2,3,4\n")
    with pytest.raises(ScanError, match="boxes.csv: boxes for series not in series.csv: 9_t2"):
        spider_slices.read_slices(tmp_path)
    (tmp_path / "boxes.csv").write_text("series,from_bottom,x0,y0,x1,y1\n104_t2,one,1,2,3,4\n")
    with pytest.raises(ScanError, match="boxes.csv, line 2: not a box"):
        spider_slices.read_slices(tmp_path)


def test_box_masks_for_the_detector(spider_subset_dir, tmp_path):
    from spine_tf.io.scan import read_mask, read_scan
    written, contradicted = spider_slices.write_box_masks(spider_subset_dir, tmp_path,
                                                          patients={"104", "151"})
    # 151's boxes are not its graded discs; 127 not asked for
    assert (written, contradicted) == (["104_t2"], [])
    scan = read_scan(tmp_path / "scans" / "104_t2.nii.gz")
    np.testing.assert_allclose(scan.spacing_mm[1:], [0.72916668653488] * 2, rtol=1e-6)
    mask = read_mask(tmp_path / "masks" / "104_t2.nii.gz", scan)
    assert set(np.unique(mask)) == {0} | set(range(1, 9)) | set(range(201, 208))
    image = next(i for i in spider_slices.read_slices(spider_subset_dir) if i.series == "104_t2")
    for box in image.boxes:  # each box's centre lies in its own disc
        row, col = np.round(box.centre).astype(int)
        assert mask[0, row, col] == 200 + box.from_bottom
    assert spider_slices.write_box_masks(spider_subset_dir, tmp_path / "all") == (
        ["104_t2", "127_t2", "127_t2_SPACE"], [])


def test_a_detection_with_no_disc_in_any_box_contradicts_the_boxes(spider_subset_dir):
    from spine_tf import localisation
    image = next(i for i in spider_slices.read_slices(spider_subset_dir) if i.series == "104_t2")
    spacing = (1.0, *image.spacing_mm)

    def detection(shift_rows, count=7):  # discs where the boxes say, moved along the rows
        rows = [(n, (y0 + shift_rows, x0, y1 + shift_rows, x1))
                for n, (y0, x0, y1, x1) in image.row_boxes[:count]]
        return localisation.from_boxes(rows, spacing)

    assert not spider_slices.boxes_contradicted(image, detection(0))
    assert not spider_slices.boxes_contradicted(image, detection(8))  # inside the central half
    heights = [b.y1 - b.y0 for b in image.boxes]
    half_level = -0.6 * float(np.median(heights))  # on the bodies, as two real images are
    assert spider_slices.boxes_contradicted(image, detection(half_level))
    assert not spider_slices.boxes_contradicted(image, detection(half_level, count=2))

    def detect(scan):
        assert scan.shape[1:] == (384, 384)
        return detection(half_level)

    with pytest.raises(ScanError, match=r"104_t2.png: none of the \d discs the detector found "
                                        r"lies in one of its 7 boxes"):
        spider_slices.positions(image, list(range(1, 8)), detect)
    assert spider_slices.positions(image, list(range(1, 8)),
                                   lambda scan: detection(0)).source == "boxes"
    assert spider_slices.write_box_masks(spider_subset_dir, spider_subset_dir.parent / "bm",
                                         patients={"104"}, detect=detect) == ([], ["104_t2"])


def test_a_box_over_two_discs_contradicts_the_boxes(spider_subset_dir):
    from spine_tf import localisation
    image = next(i for i in spider_slices.read_slices(spider_subset_dir) if i.series == "104_t2")
    spacing = (1.0, *image.spacing_mm)
    rows = [(n, box) for n, box in image.row_boxes]

    def detection(boxes):
        return localisation.from_boxes(boxes, spacing)

    assert spider_slices.boxes_contradicted(image, detection(rows)) is None
    # a disc found between boxes 1 and 2 lies in neither: no box holds two
    (y0, x0, y1, x1), above = rows[0][1], rows[1][1][2]  # box 1; the bottom of box 2
    between = (y0 - (y0 - above) / 2 - 2, x0, y0 - (y0 - above) / 2 + 2, x1)
    found = [(1, rows[0][1]), (2, between)] + [(n + 1, b) for n, b in rows[1:]]
    assert spider_slices.boxes_contradicted(image, detection(found)) is None
    # a second disc inside box 1 while every other box holds its own: box 1 spans two
    lower_half = (y0 + (y1 - y0) * 0.6, x0, y1 - 1, x1)
    upper_half = (y0 + 1, x0, y0 + (y1 - y0) * 0.4, x1)
    spanning = [(1, lower_half), (2, upper_half)] + [(n + 1, b) for n, b in rows[1:]]
    assert spider_slices.boxes_contradicted(image, detection(spanning)) == (
        "box 1 holds two of the discs the detector found, where each other box holds one (a "
        "box over two discs, every level above it one off?)")
    with pytest.raises(ScanError, match="104_t2.png: box 1 holds two of the discs"):
        spider_slices.positions(image, list(range(1, 8)), lambda scan: detection(spanning))
    # where the detector also misses other boxes' discs it is not trusted to judge them
    assert spider_slices.boxes_contradicted(image, detection(spanning[:3])) is None
