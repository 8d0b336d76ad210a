"""Shared fixtures: phantom patients and cohorts, the real lumbar slices."""

import os
import pathlib

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
