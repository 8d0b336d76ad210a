"""The spider_slices config of spine_discs, built through ``spine-tf build-data`` from a few
real SPIDER images: discs placed from boxes or by the detector, split by patient, keys and
labels per image."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from spine_tf import tasks
from spine_tf.cli import main
from spine_tf.data import sources, spider_slices, spine_discs


def _build(manual_dir, data_dir, *flags):
    main(["build-data", "--config", "spider_slices", "--manual-dir", str(manual_dir),
          "--data-dir", str(data_dir), "--workers", "1", *flags])
    return spine_discs.builder("spider_slices", data_dir=str(data_dir))


def _examples(builder):
    out = []
    for split in builder.info.splits:
        for example in tfds.as_numpy(builder.as_dataset(split=split)):
            out.append((split, example))
    return out


@pytest.fixture(scope="module")
def built(spider_subset_dir, tmp_path_factory):
    """The subset of tests/conftest.py (SPIDER_SUBSET), built with the shipped detector."""
    builder = _build(spider_subset_dir, tmp_path_factory.mktemp("data"))
    return spider_subset_dir, builder, _examples(builder)


def test_discs_come_from_boxes_where_they_name_the_graded_discs(built):
    _, builder, examples = built
    by_series = {}
    for _, example in examples:
        by_series.setdefault(example["series"].decode(), set()).add(
            example["position_source"].decode())
    assert by_series["104_t2"] == {"boxes"}
    assert by_series["127_t2"] == by_series["127_t2_SPACE"] == {"boxes"}
    assert by_series["151_t2"] == {"detector"} and by_series["100_t2"] == {"detector"}
    report = builder.build_report()
    assert report["positions"] == {"boxes": 3, "detector": 2}
    placed = {item["file"].rsplit("/", 1)[-1]: item for item in report["placed_by_detector"]}
    assert set(placed) == {"151_t2.png", "100_t2.png"}
    assert all(0.25 <= item["pixel_size_mm"] <= 2.0 for item in placed.values())
    boxed = sum(1 for _, e in examples if e["position_source"] == b"boxes")
    assert report["examples_by_position"]["boxes"] == boxed
    assert boxed == 6 + 6 + 6  # the six lumbar discs of 104 and of both images of 127
    checks = {item["file"].rsplit("/", 1)[-1]: item for item in report["spacing_checks"]}
    assert set(checks) == {"104_t2.png", "127_t2.png", "127_t2_SPACE.png"}
    assert checks["104_t2.png"]["agrees"] and checks["104_t2.png"]["listed_mm"] == pytest.approx(
        0.7292, abs=1e-4)
    # 127_t2's boxes lie 1.3 times further apart than its listed 0.47 mm pixels allow
    assert not checks["127_t2.png"]["agrees"]
    assert checks["127_t2.png"]["anatomy_mm"] == pytest.approx(0.607, abs=0.01)


def test_labels_levels_and_splits_follow_the_patient(built, spider_slices_dir):
    _, builder, examples = built
    gradings = sources.read_spider_gradings(spider_slices_dir / "radiological_gradings.csv")
    levels = builder.info.features["level"].names
    keys = set()
    for split, example in examples:
        patient = example["patient_id"].decode()
        assert split == sources.split_of(patient, spider_slices.SPLIT_PERCENT)
        level = levels[example["level"]]
        expected = gradings[(patient, level)]
        assert {k: int(v) for k, v in example["labels"].items()} == {
            name: expected[name] for name in tasks.task_set("spider").names}
        volume = example["disc_volume"]
        assert volume[..., 4].max() > 0 and not volume[..., [0, 1, 2, 3, 5, 6, 7, 8]].any()
        keys.add((example["series"].decode(), level))
    assert len(keys) == len(examples)  # one example per image and level
    patient_127 = {split for split, e in examples if e["patient_id"] == b"127"}
    assert len(patient_127) == 1 and {("127_t2", "L5-S1"), ("127_t2_SPACE", "L5-S1")} <= keys


def test_without_a_detector_unplaced_images_are_skipped_with_the_reason(built, tmp_path):
    folder, _, _ = built
    builder = _build(folder, tmp_path, "--no-detector")
    report = builder.build_report()
    reasons = {item["file"].rsplit("/", 1)[-1]: item["reason"] for item in report["skipped_scans"]}
    assert set(reasons) == {"151_t2.png", "100_t2.png"}
    assert "its 7 boxes are not the patient's 6 graded discs" in reasons["151_t2.png"]
    assert "no disc boxes; a detector places such discs" in reasons["100_t2.png"]
    assert report["positions"] == {"boxes": 3}
    assert sum(info.num_examples for info in builder.info.splits.values()) == 18


def test_graded_numbers_and_box_matching(spider_slices_dir):
    numbers = spider_slices.graded_numbers(spider_slices_dir / "radiological_gradings.csv")
    images = {i.series: i for i in spider_slices.read_slices(spider_slices_dir)}
    assert numbers["104"] == [1, 2, 3, 4, 5, 6, 7]
    assert spider_slices.boxes_name_levels(images["104_t2"], numbers["104"])
    assert not spider_slices.boxes_name_levels(images["151_t2"], numbers["151"])
    assert not spider_slices.boxes_name_levels(images["100_t2"], numbers["100"])
    matched = [i for i in images.values()
               if spider_slices.boxes_name_levels(i, numbers.get(i.patient, []))]
    assert len(matched) == 73  # as the data's README counts


def test_split_percent_is_a_config_fact():
    assert spine_discs.SpineDiscs.builder_configs["spider_slices"].split_percent == (60, 20, 20)
    assert spine_discs.SpineDiscs.builder_configs["phantom"].split_percent == (80, 10, 10)
    ids = [str(n) for n in range(2000)]
    shares = [np.mean([sources.split_of(i, (60, 20, 20)) == s for i in ids])
              for s in sources.SPLITS]
    np.testing.assert_allclose(shares, (0.6, 0.2, 0.2), atol=0.03)


def test_a_missing_image_is_reported_and_the_rest_build(built, tmp_path):
    """104_t2 listed without its file; 127_t2_SPACE given as .bmp."""
    import shutil
    from PIL import Image
    folder = shutil.copytree(built[0], tmp_path / "folder")
    (folder / "images" / "104_t2.png").unlink()
    Image.open(folder / "images" / "127_t2_SPACE.png").save(folder / "images" / "127_t2_SPACE.bmp")
    (folder / "images" / "127_t2_SPACE.png").unlink()
    builder = _build(folder, tmp_path / "data", "--no-detector")
    report = builder.build_report()
    reasons = {item["file"].rsplit("/", 1)[-1]: item["reason"] for item in report["skipped_scans"]}
    assert reasons["104_t2.png"] == (f"{folder / 'images' / '104_t2.png'}: missing (listed in "
                                     f"{folder / 'series.csv'}, line 3)")
    assert report["positions"] == {"boxes": 2}  # both images of 127
    assert sum(info.num_examples for info in builder.info.splits.values()) == 12
