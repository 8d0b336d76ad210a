"""Training examples for the disc detector, from phantom label maps.

The detector works on single sagittal slices resampled to ``SPACING_MM``.
An example is one slice of one phantom patient, stored as label maps rather
than as an image, so that ``synth.randomise`` can paint a new random
appearance on every epoch (domain randomisation in the style of SynthSeg):

- ``regions`` (uint8): what each pixel is, finely enough to paint it. 0 is
  outside the field of view; 1..``TISSUE_BINS`` are the background tissues
  (the phantom's noise-free signal, quantised, so fat, muscle, CSF and the
  posterior elements each get their own random intensity); then the canal,
  each vertebral body and each disc (``REGION_*`` below).
- ``classes`` (uint8): the segmentation target, ``CLASSES``.
- ``centres`` (float16): the disc-centre heatmap target, a Gaussian of
  ``CENTRE_SIGMA_MM`` at the centre of every disc cut by the slice.
- ``image`` (float16): the phantom's own rendering, scaled to [0, 1], which
  ``synth`` uses for a share of the examples.
"""

import concurrent.futures

import numpy as np
from scipy import ndimage

from spine_tf import localisation, tasks
from spine_tf.phantom.anatomy import VERTEBRA_LABELS
from spine_tf.phantom.cohort import make_patient, worker_context

SPACING_MM = 1.5
"""In-plane pixel size (mm) the detector sees."""

CLASSES = ("background", "disc", "body", "sacrum")
DISC, BODY, SACRUM = 1, 2, 3

CENTRE_SIGMA_MM = 3.0

TISSUE_BINS = 8
REGION_CANAL = TISSUE_BINS + 1
REGION_FIRST_BODY = REGION_CANAL + 1
REGION_FIRST_DISC = REGION_FIRST_BODY + len(tasks.VERTEBRAE)
REGIONS = REGION_FIRST_DISC + len(tasks.LEVELS)
"""Number of region values (0 .. REGIONS - 1)."""

_SACRUM_LABEL = VERTEBRA_LABELS[tasks.VERTEBRAE[-1]]


def resample_slice(plane, spacing_mm, order):
    """Resamples a 2D (rows, cols) array with pixel size ``spacing_mm`` to ``SPACING_MM``.

    ``order`` 0 (labels) or 1 (images: smoothed first when shrinking, so
    fine noise does not alias). Returns the resampled array and the zoom
    factors (new pixels per old pixel) per axis.
    """
    zoom = np.asarray(spacing_mm, np.float64) / SPACING_MM
    plane = np.asarray(plane)
    if order > 0:
        sigma = np.maximum(0.0, (1.0 / zoom - 1.0) / 2.0)
        if sigma.max() > 0:
            plane = ndimage.gaussian_filter(plane.astype(np.float32), sigma)
    shape = np.maximum(1, np.round(np.asarray(plane.shape) * zoom).astype(int))
    factors = shape / np.asarray(plane.shape)
    # sample at pixel centres: new pixel i sits at old (i + 0.5) / f - 0.5
    coords = [(np.arange(n) + 0.5) / f - 0.5 for n, f in zip(shape, factors)]
    grid = np.meshgrid(*coords, indexing="ij")
    out = ndimage.map_coordinates(plane, grid, order=order, mode="nearest")
    return out, factors


def scale_image(plane):
    """Scales an image to [0, 1] by its 99.5th percentile (the model normalises again)."""
    plane = np.asarray(plane, np.float32)
    top = float(np.percentile(plane, 99.5))
    return np.clip(plane / top, 0.0, 1.0) if top > 0 else np.zeros_like(plane)


def slice_example(mask, signal, image, spacing_mm):
    """One training example from a phantom slice (all 2D, same grid).

    Args:
        mask: SPIDER-convention labels of the slice.
        signal: noise-free signal (CSF = 1) of the slice.
        image: the rendered slice.
        spacing_mm: (row, col) pixel size.

    Returns:
        dict of ``regions``, ``classes``, ``centres``, ``image`` at ``SPACING_MM``.
    """
    mask = np.asarray(mask)
    regions = np.digitize(np.clip(signal, 0.0, 1.0),
                          np.linspace(0, 1, TISSUE_BINS + 1)[1:-1]) + 1
    classes = np.zeros(mask.shape, np.uint8)
    regions[mask == tasks.CANAL_LABEL] = REGION_CANAL
    for i, name in enumerate(tasks.VERTEBRAE):
        body = mask == VERTEBRA_LABELS[name]
        regions[body] = REGION_FIRST_BODY + i
        classes[body] = SACRUM if VERTEBRA_LABELS[name] == _SACRUM_LABEL else BODY
    for i, level in enumerate(tasks.LEVELS):
        disc = mask == tasks.disc_label_of_level(level)
        regions[disc] = REGION_FIRST_DISC + i
        classes[disc] = DISC
    regions, factors = resample_slice(regions.astype(np.uint8), spacing_mm, order=0)
    classes, _ = resample_slice(classes, spacing_mm, order=0)
    picture, _ = resample_slice(scale_image(image), spacing_mm, order=1)
    centres = np.zeros(regions.shape, np.float32)
    rows, cols = np.indices(regions.shape)
    for level in tasks.LEVELS:
        disc = mask == tasks.disc_label_of_level(level)
        if disc.sum() < 4:
            continue
        centre, _, _ = localisation.disc_geometry(disc[None], (1.0, *spacing_mm))
        r, c = (centre[1:] + 0.5) * factors - 0.5
        d2 = ((rows - r) ** 2 + (cols - c) ** 2) * SPACING_MM ** 2
        centres = np.maximum(centres, np.exp(-d2 / (2 * CENTRE_SIGMA_MM ** 2)))
    return {"regions": regions.astype(np.uint8), "classes": classes.astype(np.uint8),
            "centres": centres.astype(np.float16), "image": picture.astype(np.float16)}


def patient_examples(seed, index, slices=6):
    """Examples from ``slices`` random slices near the mid-sagittal plane of one patient."""
    patient = make_patient(seed, index)
    rng = np.random.default_rng([seed, index, 7])
    n = patient.image.shape[0]
    mid = int(round(patient.anatomy.acquisition.mid_slice))
    near = np.arange(max(0, mid - 4), min(n, mid + 5))
    chosen = rng.choice(near, size=min(slices, len(near)), replace=False)
    spacing = patient.spacing_mm[1:]
    return [slice_example(patient.mask[s], patient.signal[s], patient.image[s], spacing)
            for s in sorted(chosen)]


def _patient_examples(args):
    return patient_examples(*args)


def phantom_examples(seed, indices, slices=6, size=256, workers=None):
    """Stacked examples of phantom patients ``indices`` of cohort ``seed``.

    Slices are padded (region 0, outside the field of view) or centre-cropped
    to ``size`` x ``size`` pixels so they stack.

    Returns:
        dict of arrays (n, size, size): regions, classes, centres, image.
    """
    jobs = [(seed, int(i), slices) for i in indices]
    if workers == 1 or len(jobs) < 4:
        results = [_patient_examples(job) for job in jobs]
    else:
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=worker_context()) as pool:
            results = list(pool.map(_patient_examples, jobs, chunksize=2))
    examples = [e for patient in results for e in patient]
    return {key: np.stack([_fit(e[key], size) for e in examples]) for key in examples[0]}


def _fit(plane, size):
    """Centre-crops or zero-pads a 2D array to (size, size)."""
    out = np.zeros((size, size), plane.dtype)
    src, dst = [], []
    for n in plane.shape:
        if n >= size:
            start = (n - size) // 2
            src.append(slice(start, start + size))
            dst.append(slice(0, size))
        else:
            start = (size - n) // 2
            src.append(slice(0, n))
            dst.append(slice(start, start + n))
    out[tuple(dst)] = plane[tuple(src)]
    return out
