"""Shared fixtures: phantom patients and cohorts, the real lumbar slices."""

import csv
import os
import pathlib
import shutil

import pytest

from spine_tf import phantom

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_SLICES = SHARED_DATA / "real-lumbar-slices"
SPIDER_SLICES = SHARED_DATA / "spider-t2-slices"


@pytest.fixture(scope="session")
def phantom_patients():
    """Three rendered phantom patients of seed 0 (indices 0, 2, 7); the third is cut off
    at the top (4 visible levels)."""
    return [phantom.make_patient(0, i) for i in (0, 2, 7)]


@pytest.fixture(scope="session")
def phantom_cohort_dir(tmp_path_factory):
    """A phantom cohort of 4 patients written in the folder layout."""
    out = tmp_path_factory.mktemp("cohort")
    phantom.write_cohort(os.fspath(out), patients=4, seed=1, workers=2)
    return out


@pytest.fixture(scope="session")
def real_slices_dir():
    """The real sagittal slices with disc/body masks (skips when shared/ is absent)."""
    if not REAL_SLICES.is_dir():
        pytest.skip(f"real slices not found at {REAL_SLICES}")
    return REAL_SLICES


@pytest.fixture(scope="session")
def spider_slices_dir():
    """The real SPIDER T2 slices with gradings and disc boxes (skips when shared/ is absent)."""
    if not SPIDER_SLICES.is_dir():
        pytest.skip(f"SPIDER slices not found at {SPIDER_SLICES}")
    return SPIDER_SLICES


SPIDER_SUBSET = ("104_t2", "127_t2", "127_t2_SPACE", "151_t2", "100_t2")
"""Five SPIDER images: 104 with 7 boxes for 7 graded discs; 127, two images of one patient
with 8 boxes each; 151, 7 boxes for 6 graded discs (the detector places them); 100, no
boxes."""


def copy_spider_subset(source, target, series=SPIDER_SUBSET):
    """A spider_slices folder holding only ``series`` and their patients' gradings."""
    (target / "images").mkdir(parents=True)
    for name in series:
        shutil.copy(source / "images" / f"{name}.png", target / "images")
    patients = set()
    for name, column in (("series.csv", "series"), ("boxes.csv", "series"),
                         ("radiological_gradings.csv", "Patient")):
        with open(source / name, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            wanted = series if column == "series" else patients
            rows = [row for row in reader if row[column] in wanted]
            fields = reader.fieldnames
        if name == "series.csv":
            patients = {row["patient"] for row in rows}
        with open(target / name, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fields)
            writer.writeheader()
            writer.writerows(rows)
    return target


@pytest.fixture(scope="session")
def spider_subset_dir(spider_slices_dir, tmp_path_factory):
    """``SPIDER_SUBSET`` as a folder in the spider_slices layout (in a temporary folder)."""
    return copy_spider_subset(spider_slices_dir, tmp_path_factory.mktemp("spider") / "subset")
