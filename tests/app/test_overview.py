"""The overview picture: disc boxes where the discs are, grade colours, flagged marking,
hotspots from each disc's own slice, and the report's SVG boxes."""

import re

import numpy as np
import pytest
from scipy import ndimage

from spine_tf.app import overview, render
from spine_tf.localisation import BodyLocation, DiscLocation


def _disc(centre, axis, height_mm, upper_inferior, lower_superior, level="L4-L5"):
    """A disc whose upper body ends at ``upper_inferior`` (posterior, anterior corner) and
    lower body starts at ``lower_superior`` (anterior, posterior corner), (row, col)."""
    upper = np.array([[0, 0], [0, 0], upper_inferior[0], upper_inferior[1]], np.float64)
    lower = np.array([lower_superior[0], lower_superior[1], [0, 0], [0, 0]], np.float64)
    return DiscLocation(level, np.asarray(centre, np.float64), np.asarray(axis, np.float64),
                        height_mm, BodyLocation(upper, centre[0], (0, 0)),
                        BodyLocation(lower, centre[0], (0, 0)))


def test_disc_box_spans_the_endplates_along_the_axis_and_the_height_across():
    disc = _disc((2, 50, 60), (0, 1), 10.0, ([45, 80], [45, 40]), ([55, 42], [55, 78]))
    box = overview.disc_box(disc, (3.0, 0.5, 0.5))
    # 40..80 along the axis (the endplates' extremes), 10 mm = 20 rows of 0.5 mm high
    np.testing.assert_allclose(box, [[40, 40], [40, 80], [60, 80], [60, 40]], atol=1e-9)


def test_a_tilted_disc_box_lies_along_its_axis():
    angle = np.deg2rad(30)
    axis = np.array([np.sin(angle), np.cos(angle)])  # posterior and down, (row, col) in mm
    centre = np.array([0, 100, 100])
    spacing = (1.0, 0.8, 0.8)

    def at(along_mm, across_mm):
        up = np.array([-axis[1], axis[0]])  # superior
        return (centre[1:] * 0.8 + along_mm * axis + across_mm * up) / 0.8

    disc = _disc(centre, axis, 8.0, (at(18, 4), at(-20, 4)), (at(-16, -4), at(15, -4)))
    box = overview.disc_box(disc, spacing)
    in_mm = box * 0.8
    assert np.isclose(np.linalg.norm(in_mm[1] - in_mm[0]), 38)  # -20 .. 18 mm along
    assert np.isclose(np.linalg.norm(in_mm[3] - in_mm[0]), 8)  # the height across
    np.testing.assert_allclose((in_mm[1] - in_mm[0]) / 38, axis, atol=1e-9)
    np.testing.assert_allclose(box.mean(axis=0), at(-1, 0), atol=1e-9)
    assert in_mm[0][0] < in_mm[3][0]  # superior corners first


def test_overview_slice_is_the_median_of_the_disc_centres():
    assert overview.overview_slice([6.2, 7.0, 7.4, 8.1, 12.0], 15) == 7
    assert overview.overview_slice([0.0], 1) == 0
    assert overview.overview_slice([30.0], 15) == 14


def test_grade_colours_run_green_to_red():
    assert overview.grade_colour(0, 5) == overview.GRADE_STOPS[0]
    assert overview.grade_colour(4, 5) == overview.GRADE_STOPS[-1]
    assert overview.grade_colour(2, 5) == overview.GRADE_STOPS[2]
    assert overview.grade_colour(1, 2) == overview.GRADE_STOPS[-1]
    assert overview.hex_colour((26, 152, 80)) == "#1a9850"
    colours = {overview.grade_colour(g, 5) for g in range(5)}
    assert len(colours) == 5 and overview.FLAG_COLOUR not in colours


BOXES = (np.array([[20, 30], [20, 70], [30, 70], [30, 30]], np.float64),
         np.array([[60, 35], [60, 75], [72, 75], [72, 35]], np.float64))


def _marks(flagged=(False, False), labels=("", "")):
    return [overview.DiscMark(f"L{n}", box, overview.grade_colour(2 * n, 5), labels[n],
                              flagged[n]) for n, box in enumerate(BOXES)]


def _has(picture, colour):
    return np.all(picture == np.array(colour, np.uint8), axis=-1)


def test_boxes_are_drawn_where_the_discs_are_in_their_grade_colour():
    image = np.full((100, 120), 0.3, np.float32)
    picture, frame = overview.draw_overview(image, (0.5, 0.5), _marks())
    assert picture.shape == (frame.size_px[1], frame.size_px[0], 3)
    assert frame.size_px == frame.image_px  # no legend asked for
    # the scan's proportions kept: 100 x 120 voxels of 0.5 mm, 768 px high
    assert frame.image_px == (922, 768)
    for n, box in enumerate(BOXES):
        found = _has(picture, overview.grade_colour(2 * n, 5))
        assert ndimage.label(found)[1] == 1  # one outline per disc
        ys, xs = np.nonzero(found)
        x0, y0 = frame.to_pixels(box).min(axis=0)
        x1, y1 = frame.to_pixels(box).max(axis=0)
        assert abs(xs.min() - x0) <= 2 and abs(xs.max() - x1) <= 2
        assert abs(ys.min() - y0) <= 2 and abs(ys.max() - y1) <= 2
        inside = found[int(y0) + 5:int(y1) - 5, int(x0) + 5:int(x1) - 5]
        assert not inside.any()  # an outline, the disc visible through it
    assert not _has(picture, overview.FLAG_COLOUR).any()


def test_a_disc_not_graded_is_boxed_grey():
    box = np.array([[40, 30], [40, 70], [50, 70], [50, 30]], np.float64)
    mark = overview.DiscMark("L5-S1", box, overview.UNGRADED_COLOUR, "", graded=False)
    picture, frame = overview.draw_overview(np.zeros((100, 120)), (0.5, 0.5), [mark])
    ys, xs = np.nonzero(_has(picture, overview.UNGRADED_COLOUR))
    (x0, y0), (x1, y1) = frame.to_pixels(box).min(axis=0), frame.to_pixels(box).max(axis=0)
    assert abs(xs.min() - x0) <= 1 and abs(xs.max() - x1) <= 1
    assert abs(ys.min() - y0) <= 1 and abs(ys.max() - y1) <= 1


def test_only_a_flagged_disc_is_marked_in_the_flag_colour():
    image = np.random.default_rng(0).uniform(size=(100, 120)).astype(np.float32)
    picture, frame = overview.draw_overview(image, (0.5, 0.5), _marks((False, True),
                                                                      ("L0-L1", "L1-L2")))
    flag = _has(picture, overview.FLAG_COLOUR)
    ys, xs = np.nonzero(flag)
    top = frame.to_pixels(BOXES[1]).min(axis=0)[1]
    assert flag.sum() > 100 and ys.min() >= top - 12  # around the second disc and its "?"
    plain, _ = overview.draw_overview(image, (0.5, 0.5), _marks((False, False),
                                                                ("L0-L1", "L1-L2")))
    assert not _has(plain, overview.FLAG_COLOUR).any()


def test_the_legend_strip_shows_every_grade_colour():
    record = _record()
    picture, frame = overview.draw_overview(np.zeros((100, 120)), (0.5, 0.5), [],
                                            overview.legend_items(record))
    strip = picture[frame.image_px[1]:]
    assert frame.size_px[1] > frame.image_px[1]
    for colour, _ in overview.legend_items(record):
        assert _has(strip, colour).sum() > 50
    assert _has(strip, overview.FLAG_COLOUR).any()


def _record(flagged=(False, True)):
    discs = [{"level": level, "box_voxel": box.tolist(), "centre_voxel": [3.0, 25.0, 50.0],
              "flagged": flag, "confidence": 0.3 if flag else 1.0,
              "tasks": {"pfirrmann": {"grade": grade, "class_name": str(grade + 1),
                                      "probability": 0.6},
                        "narrowing": {"grade": 0, "class_name": "normal", "probability": 0.9}}}
             for level, box, flag, grade in zip(("L3-L4", "L4-L5"), BOXES, flagged, (0, 3))]
    for disc in discs:  # the rest of the paper's tasks
        for name in ("endplate_upper", "endplate_lower", "marrow_upper", "marrow_lower"):
            disc["tasks"][name] = {"grade": 0, "class_name": "normal", "probability": 0.8}
    return {"name": "scan", "scan": "/x/scan.nii.gz", "task_set": "paper", "discs": discs,
            "not_graded": [{"level": "L5-S1", "reason": "cut off",
                            "box_voxel": [[80, 30], [80, 70], [90, 70], [90, 30]]},
                           {"level": "T12-L1", "reason": "not found"}],
            "scan_slices": 7, "localisation": "mask", "model": "m", "tta": False}


def test_marks_of_a_record_colour_by_pfirrmann_and_grey_the_discs_not_graded():
    marks = overview.disc_marks(_record())
    assert [m.level for m in marks] == ["L3-L4", "L4-L5", "L5-S1"]  # T12-L1 has no box
    assert [m.colour for m in marks] == [overview.grade_colour(0, 5),
                                         overview.grade_colour(3, 5), overview.UNGRADED_COLOUR]
    assert [m.flagged for m in marks] == [False, True, False]
    assert [m.graded for m in marks] == [True, True, False]
    assert marks[1].label == "L4-L5 Pfirrmann 4"


def test_each_disc_shows_the_hotspot_of_its_own_slice_inside_its_volume():
    transform = np.zeros((4, 4))
    transform[0, 2], transform[0, 3] = 1, 0  # volume slice k -> scan slice k
    transform[1, 0], transform[1, 3] = 0.1, 10  # rows 10 .. 21.15 (pixel edges included)
    transform[2, 1], transform[2, 3] = 0.1, 20  # cols 20 .. 42.35
    lower = transform.copy()
    lower[1, 3] = 40  # rows 40 .. 51.1
    scan_map = np.zeros((9, 60, 80), np.float32)
    scan_map[2] = 0.25
    scan_map[6] = 0.75
    out = overview.hotspot_on_own_slices(scan_map, [transform, lower], [2.0, 6.2])
    assert out[15, 30] == 0.25 and out[45, 30] == 0.75
    assert out[30, 30] == 0 and out[15, 60] == 0  # outside both volumes
    footprint = overview.disc_footprint(transform, (60, 80))
    assert footprint.sum() == 12 * 23 and footprint[10:22, 20:43].all()


def test_the_report_svg_has_one_box_per_graded_disc_where_the_picture_draws_it():
    record = _record()
    frame = overview.Frame((4.0, 5.0), (600, 400), (600, 450))
    record["overview"] = {"slice": 3, "task": "pfirrmann", "pixels_per_voxel": [4.0, 5.0],
                          "image_px": [600, 400], "size_px": [600, 450]}
    section = render.overview_section(record)
    boxes = re.findall(r'<polygon class="([^"]*)"[^>]*points="([^"]*)"', section)
    assert [css for css, _ in boxes] == ["disc-box", "disc-box flagged", "ungraded-box"]
    for (_, points), box in zip(boxes, BOXES):
        xy = np.array([p.split(",") for p in points.split()], np.float64)
        np.testing.assert_allclose(xy, frame.to_pixels(box), atol=0.05)
    assert 'href="overview.png"' in section and 'viewBox="0 0 600 450"' in section
    assert "low localisation confidence 0.30" in section  # the flagged disc's tooltip
    assert "slice 4 of 7" in section
    page = render.scan_page(record, {})
    assert page.index("<h2>Overview</h2>") < page.index("<table>")
    del record["overview"]
    assert render.overview_section(record) == ""  # a record written before overviews


@pytest.mark.parametrize("names,expected", [(("pfirrmann", "narrowing"), "pfirrmann"),
                                            (("narrowing", "modic"), "narrowing")])
def test_the_primary_task_is_pfirrmann_where_graded(names, expected):
    assert overview.primary_task(names) == expected
