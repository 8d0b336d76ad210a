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


def _outputs_of_mask(patient):
    """What a perfect network would output for a phantom (``detection.data.slice_example``
    of every slice): class probabilities, centre heatmap, and that grid's spacing."""
    from spine_tf.detection import data
    examples = [data.slice_example(m, i, patient.spacing_mm[1:])
                for m, i in zip(patient.mask, patient.image)]
    classes = np.stack([e["classes"] for e in examples])
    probabilities = np.full(classes.shape + (len(data.CLASSES),), 0.02, np.float32)
    np.put_along_axis(probabilities, classes[..., None].astype(int), 0.94, axis=-1)
    heat = np.stack([e["centres"] for e in examples]).astype(np.float32)
    return probabilities, heat, np.array([patient.spacing_mm[0], data.SPACING_MM,
                                          data.SPACING_MM])


def test_thin_slices_are_read_on_the_mid_sagittal_slab():
    """A disc the network misses on the slices around the midline is found on its other
    slices of the slab, and disc-like blobs lateral to the spine are not looked at; each
    disc sits on the middle of its own slices, its bodies span theirs."""
    from spine_tf.detection import data, inference
    patient = make_patient(7, 1, PhantomConfig(slice_thickness_mm=1.0,
                                               lateral_coverage_mm=60.0, cutoff_fraction=0.0))
    probabilities, heat, spacing = _outputs_of_mask(patient)
    mid = inference.mid_sagittal_slice(np.argmax(probabilities, -1), spacing)
    assert abs(mid - patient.anatomy.acquisition.mid_slice) <= 2
    truth = localisation.from_mask(patient.mask, patient.spacing_mm).by_level()
    factor = patient.spacing_mm[1] / data.SPACING_MM
    missed = np.round(truth["L3-L4"].centre[1:] * factor).astype(int)
    near = slice(mid - 3, mid + 4)  # L3-L4 missed on the 7 slices around the midline
    window = (near, slice(missed[0] - 8, missed[0] + 9), slice(missed[1] - 20, missed[1] + 21))
    probabilities[window] = np.array([0.94, 0.02, 0.02, 0.02], np.float32)
    heat[window] = 0.0
    for s in (2, 3, len(heat) - 3):  # lateral disc-like blobs, no bone around them
        probabilities[s, 20:40, 20:60] = np.array([0.02, 0.94, 0.02, 0.02], np.float32)
        heat[s, 30, 40] = 1.0
    located = inference.locate(probabilities, heat, spacing)
    assert located.notes[0].startswith(f"thin slices: discs found on the mean of the 17 "
                                       f"slices within 8 mm of the mid-sagittal slice {mid}")
    found = located.by_level()
    assert sorted(found) == sorted(tasks.LEVELS)
    for level, disc in found.items():
        offset = disc.centre[1:] / factor - truth[level].centre[1:]
        assert np.linalg.norm(offset * patient.spacing_mm[1:]) < 3.0, level
        assert abs(disc.centre[0] - truth[level].centre[0]) <= 3, level
        for body in (disc.upper, disc.lower):
            assert body.mid_slice == disc.centre[0]
            assert body.slice_range[0] < mid - 10 and body.slice_range[1] > mid + 10
    # thick slices are still read as a whole volume
    thick = inference.locate(probabilities[::4], heat[::4], spacing * np.array([4.0, 1, 1]))
    assert not any(n.startswith("thin slices") for n in thick.notes)
    # and either reading can be asked for (tools.studies.thin_slices compares them)
    whole = inference.locate(probabilities, heat, spacing, thin=False)
    assert not any(n.startswith("thin slices") for n in whole.notes)
    assert abs(whole.by_level()["L3-L4"].centre[0] - truth["L3-L4"].centre[0]) > 5  # off
    assert inference.locate(probabilities[::4], heat[::4], spacing * np.array([4.0, 1, 1]),
                            thin=True).notes[0].startswith("thin slices")


@pytest.mark.slow
def test_noisy_thin_slices_keep_every_disc():
    """Thin slices are noisy: with extra noise of 16 % of the 99th percentile, read as a
    whole volume the detector lost a quarter of the discs (docs/results/detection.md); on
    the mid-sagittal slab it keeps them all."""
    detector = detection.load()
    rng = np.random.default_rng(1)
    for index in range(2):
        patient = make_patient(7, index, THIN)
        image = patient.image.astype(np.float32)
        image += 0.16 * np.percentile(image, 99) * rng.standard_normal(image.shape)
        scan = scan_from_array(np.clip(image, 0, None).astype(np.float32), patient.spacing_mm,
                               patient.affine, path=patient.patient_id)
        truth = localisation.from_mask(patient.mask, patient.spacing_mm).by_level()
        found = detection.detect(scan, detector).by_level()
        assert sorted(found) == sorted(truth) == sorted(tasks.LEVELS), patient.patient_id
