"""The detector on pictures: a given pixel size is used, an unknown one is estimated over
0.25-2 mm; scoring detections against disc boxes (spine-tf evaluate-detector)."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from spine_tf import cli, detection, localisation, tasks
from spine_tf.data.spider_slices import DiscBox
from spine_tf.detection import evaluate, inference
from spine_tf.io.scan import read_scan
from spine_tf.phantom.anatomy import DISC_SPACING_MM

needs_weights = pytest.mark.skipif(not os.path.exists(detection.WEIGHTS),
                                   reason="no shipped detector weights")


def _disc(level, row, col, confidence=0.9):
    return localisation.DiscLocation(
        level=level, centre=np.array([0.0, row, col]), axis=np.array([0.0, 1.0]),
        height_mm=8.0, upper=None, lower=None, confidence=confidence)


def _spine(pixel_mm, levels=tasks.LEVELS, top=40.0):
    """Named discs down a straight column, as far apart as a typical spine at ``pixel_mm``."""
    rows = top + np.concatenate([[0.0], np.cumsum(np.array(DISC_SPACING_MM) / pixel_mm)])
    return localisation.Localisation(
        [_disc(level, row, 100.0) for level, row in zip(tasks.LEVELS, rows) if level in levels],
        [])


def test_anatomical_pixel_size_reads_the_disc_spacing():
    assert inference.anatomical_pixel_size(_spine(0.5)) == pytest.approx(0.5)
    assert inference.anatomical_pixel_size(_spine(1.7)) == pytest.approx(1.7)
    # a gap in the named levels: only neighbouring pairs count
    assert inference.anatomical_pixel_size(
        _spine(0.8, levels=("T12-L1", "L1-L2", "L3-L4", "L4-L5"))) == pytest.approx(0.8)
    assert inference.anatomical_pixel_size(_spine(0.8, levels=("L4-L5", "L5-S1"))) is None
    assert inference.PIXEL_SEARCH_MM[0] == 0.25 and inference.PIXEL_SEARCH_MM[-1] == 2.0
    steps = np.array(inference.PIXEL_SEARCH_MM[1:]) / inference.PIXEL_SEARCH_MM[:-1]
    assert np.all(steps < 1.4)  # every size within 18 % of one tried


def test_match_boxes_counts_found_levels_and_false_positives():
    boxes = [DiscBox(1, 80, 290, 120, 310), DiscBox(2, 80, 240, 120, 260),
             DiscBox(7, 80, 40, 120, 60)]
    located = localisation.Localisation([
        _disc("L4-L5", 250.0, 100.0),   # in box 2, named right
        _disc("L3-L4", 299.0, 109.0),   # in box 1, but named two levels too high
        _disc("T12-L1", 150.0, 100.0),  # between boxes: a false positive
    ], [])
    matches, detections, false = evaluate.match_boxes(located, boxes, (0.5, 0.5))
    assert [m.level for m in matches] == ["L5-S1", "L4-L5", "disc 7 from the bottom"]
    assert [m.found for m in matches] == [True, True, False]
    assert [m.level_correct for m in matches] == [False, True, None]
    assert matches[0].distance_mm == pytest.approx(0.5 * np.hypot(1.0, 9.0))
    assert (detections, false) == (3, 1)
    figures = evaluate.summarise(matches, detections, false)
    assert figures["recall"] == pytest.approx(2 / 3)
    assert figures["precision"] == pytest.approx(2 / 3)
    assert figures["level_accuracy"] == pytest.approx(0.5)


@needs_weights
def test_an_unknown_small_pixel_size_is_found_from_the_anatomy(tmp_path):
    """A phantom mid-slice at 0.4 mm pixels (outside the 1.0-1.7 mm once searched)."""
    from spine_tf.phantom.cohort import make_patient
    patient = make_patient(0, 901)
    s = int(round(patient.anatomy.acquisition.mid_slice))
    zoom = patient.spacing_mm[1] / 0.4
    plane = ndimage.zoom(patient.image[s], zoom, order=1)
    mask = ndimage.zoom(patient.mask[s], zoom, order=0)
    picture = np.clip(plane / np.percentile(plane, 99.5), 0, 1)
    Image.fromarray((picture * 255).astype(np.uint8)).save(tmp_path / "slice.png")
    located = detection.detect(read_scan(tmp_path / "slice.png"), detection.load())
    assert located.pixel_size_mm == pytest.approx(0.4, rel=0.15)
    assert "from the spacing of its discs, used" in located.notes[-1]
    matches, _, false = evaluate.match(located, mask[None], (1.0, 0.4, 0.4))
    assert all(m.found and m.level_correct for m in matches) and len(matches) == 6
    assert false == 0


def _spider_folder(spider_slices_dir, folder, series):
    """A folder in the SPIDER slices layout holding the given series only."""
    (folder / "images").mkdir(parents=True)
    for name in ("series.csv", "boxes.csv"):
        with open(spider_slices_dir / name, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        with open(folder / name, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([rows[0]] + [r for r in rows[1:] if r[0] in series])
    for name in series:
        shutil.copy(spider_slices_dir / "images" / f"{name}.png", folder / "images")
    return folder


@needs_weights
def test_a_given_pixel_size_is_used_on_a_real_slice(spider_slices_dir, tmp_path, capsys):
    """SPIDER 127_t2 (0.47 mm pixels): extracted with its pixel size, no search."""
    path = spider_slices_dir / "images" / "127_t2.png"
    scan = read_scan(path, spacing_mm=(0.46875, 0.46875))
    located = detection.detect(scan, detection.load())
    assert located.pixel_size_mm is None
    assert not any("pixel size" in note for note in located.notes)
    assert [d.level for d in located.discs] == list(tasks.LEVELS)
    assert cli.main(["extract", os.fspath(path), "--spacing", "0.46875", "0.46875",
                     "--out", os.fspath(tmp_path)]) == 0
    assert "pixel size unknown" not in capsys.readouterr().out
    assert list(np.load(tmp_path / "127_t2_discs.npz")["levels"]) == list(tasks.LEVELS)


@needs_weights
def test_evaluate_detector_command_on_a_spider_folder(spider_slices_dir, tmp_path, capsys):
    """Two boxed slices, one of them a .bmp; a listed image that is missing and one that is
    not an image are named on a line each and left out, and the rest go on."""
    from PIL import Image
    folder = _spider_folder(spider_slices_dir, tmp_path / "spider",
                            ("127_t2", "7_t2", "104_t2", "12_t2"))
    images = folder / "images"
    Image.open(images / "7_t2.png").save(images / "7_t2.bmp")
    (images / "7_t2.png").unlink()
    (images / "104_t2.png").unlink()
    (images / "12_t2.png").write_bytes(b"not an image")
    assert cli.main(["evaluate-detector", "--manual-dir", os.fspath(folder),
                     "--out", os.fspath(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    result = json.loads((tmp_path / "out" / "detector_evaluation.json").read_text())
    assert (result["layout"], result["pixel_size"]) == ("boxes", "estimate")
    missing, unreadable = result["skipped"]
    assert missing.endswith("104_t2.png: missing (listed in "
                            f"{folder / 'series.csv'}, line 2)")
    assert unreadable.startswith(f"{images / '12_t2.png'}: cannot read")
    assert err.count("; left out\n") == 2
    assert [i["image"] for i in result["images"]] == ["127_t2", "7_t2"]
    assert result["overall"]["true_discs"] == 8 + 7  # every box, thoracic ones included
    assert result["lumbar"]["true_discs"] == 12
    # both images: the six lumbar discs found and named (the detector names no thoracic disc)
    assert result["lumbar"]["recall"] == 1.0 and result["lumbar"]["level_accuracy"] == 1.0
    assert result["images"][0]["missed"] == ["disc 7 from the bottom", "disc 8 from the bottom"]
    assert "lumbar      12 discs  recall 100.0 % (100.0-100.0)" in out
    for part in ("overall", "lumbar"):  # 95 % patient-bootstrap intervals around each figure
        for key in ("recall", "precision", "level_accuracy"):
            low, high = result[part][f"{key}_interval"]
            assert low <= result[part][key] <= high
    # overall recall 12 of 15 (6 of 8 on 127_t2, 6 of 7 on 7_t2); resampling the two
    # patients gives 12/16 (127 twice) to 12/14 (7 twice)
    assert result["overall"]["recall"] == pytest.approx(12 / 15)
    assert result["overall"]["recall_interval"] == pytest.approx((0.75, 6 / 7))
    assert [i["boxes_contradicted"] for i in result["images"]] == [None, None]
    assert "counted as it is" not in out


@needs_weights
def test_evaluate_detector_names_an_image_whose_box_spans_two_discs(
        spider_slices_dir, tmp_path, capsys):
    """SPIDER 228_t2's box 1 covers L5-S1 and L4-L5 together: its boxes say five discs where
    there are six, and the detector's levels count as wrong against them."""
    folder = _spider_folder(spider_slices_dir, tmp_path / "spider", ("228_t2",))
    assert cli.main(["evaluate-detector", "--manual-dir", os.fspath(folder), "--pixel-size",
                     "estimate", "--out", os.fspath(tmp_path / "out")]) == 0
    (image,) = json.loads((tmp_path / "out" / "detector_evaluation.json").read_text())["images"]
    assert image["boxes_contradicted"].startswith("box 1 holds two of the discs")
    assert image["levels_wrong"]  # still counted against the detector
    assert "228_t2: box 1 holds two of the discs the detector found" in capsys.readouterr().out


def test_a_top_disc_whose_body_is_cut_off_is_found_on_a_real_slice(spider_slices_dir):
    """12_t2's field of view cuts through T12: its T12-L1 disc is kept (it was skipped, as a
    mask's would be), with a note, and lies in its box (the sixth from the bottom)."""
    scan = read_scan(spider_slices_dir / "images" / "12_t2.png")
    located = detection.detect(scan, detection.load())
    assert [d.level for d in located.discs] == list(tasks.LEVELS)
    assert any(n.startswith("T12-L1: the vertebral body above is cut off by the field of view")
               for n in located.notes)
    with open(spider_slices_dir / "boxes.csv", newline="", encoding="utf-8") as f:
        [box] = [r for r in csv.DictReader(f) if r["series"] == "12_t2"
                 and r["from_bottom"] == "6"]
    row, col = located.by_level()["T12-L1"].centre[1:]
    assert float(box["y0"]) < row < float(box["y1"]) and float(box["x0"]) < col < float(box["x1"])
