"""The detector on 3D-like phantoms: 1 mm slices over 90 mm left to right (90 slices, most of
them lateral to the spine), as a 3D acquisition's sagittal reconstruction gives them."""

import numpy as np
import pytest

from spine_tf import detection, localisation, tasks
from spine_tf.io import scan_from_array
from spine_tf.phantom import PhantomConfig, make_patient

THIN = PhantomConfig(slice_thickness_mm=1.0, lateral_coverage_mm=90.0, cutoff_fraction=0.0)


def test_thin_slice_phantoms_keep_the_default_stream():
    """The option changes the slices only: the same seed draws the same patient otherwise."""
    default, thin = make_patient(7, 0), make_patient(7, 0, THIN)
    assert thin.image.shape[0] == 90 and thin.spacing_mm[0] == 1.0
    assert thin.image.shape[1:] == default.image.shape[1:]
    assert thin.labels == default.labels


@pytest.mark.slow
def test_every_disc_is_found_and_named_on_thin_slices():
    detector = detection.load()
    for index in range(3):
        patient = make_patient(7, index, THIN)
        scan = scan_from_array(patient.image.astype(np.float32), patient.spacing_mm,
                               patient.affine, path=patient.patient_id)
        truth = localisation.from_mask(patient.mask, patient.spacing_mm).by_level()
        found = detection.detect(scan, detector).by_level()
        assert sorted(found) == sorted(truth) == sorted(tasks.LEVELS), patient.patient_id
        for level, disc in found.items():
            offset = (disc.centre[1:] - truth[level].centre[1:]) * patient.spacing_mm[1:]
            assert np.linalg.norm(offset) < 3.0, (patient.patient_id, level)
