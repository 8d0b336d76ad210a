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


def slice_example(mask, image, spacing_mm, signal=None, convention=localisation.SPIDER):
    """One training example from an annotated slice (all 2D, same grid).

    Args:
        mask: labels of the slice, in ``convention``: ``spider`` (vertebrae
            1.. from the bottom with 1 = S1, canal 100, discs 201..) or
            ``binary`` (1 disc, 2 vertebra; as ``localisation.from_mask`` names
            such masks, the lowest disc is L5-S1, so a vertebra below it is
            the sacrum).
        image: the slice.
        spacing_mm: (row, col) pixel size.
        signal: the noise-free tissue signal (CSF = 1), which the phantom
            knows; otherwise the scaled image stands in for it, so a real
            slice's background tissues keep their own boundaries.

    Returns:
        dict of ``regions``, ``classes``, ``centres``, ``image`` at ``SPACING_MM``.
    """
    mask = np.asarray(mask)
    picture = scale_image(image)
    tissue = picture if signal is None else np.clip(signal, 0.0, 1.0)
    regions = np.digitize(tissue, np.linspace(0, 1, TISSUE_BINS + 1)[1:-1]) + 1
    classes = np.zeros(mask.shape, np.uint8)
    bodies, discs = _annotated_parts(mask, convention)
    regions[mask == tasks.CANAL_LABEL] = REGION_CANAL
    for i, (body, target) in enumerate(bodies):
        regions[body] = REGION_FIRST_BODY + min(i, len(tasks.VERTEBRAE) - 1)
        classes[body] = target
    for i, disc in enumerate(discs):
        regions[disc] = REGION_FIRST_DISC + min(i, len(tasks.LEVELS) - 1)
        classes[disc] = DISC
    regions, factors = resample_slice(regions.astype(np.uint8), spacing_mm, order=0)
    classes, _ = resample_slice(classes, spacing_mm, order=0)
    picture, _ = resample_slice(picture, spacing_mm, order=1)
    centres = np.zeros(regions.shape, np.float32)
    rows, cols = np.indices(regions.shape)
    for disc in discs:
        if disc.sum() < 4:
            continue
        centre, _, _ = localisation.disc_geometry(disc[None], (1.0, *spacing_mm))
        r, c = (centre[1:] + 0.5) * factors - 0.5
        d2 = ((rows - r) ** 2 + (cols - c) ** 2) * SPACING_MM ** 2
        centres = np.maximum(centres, np.exp(-d2 / (2 * CENTRE_SIGMA_MM ** 2)))
    return {"regions": regions.astype(np.uint8), "classes": classes.astype(np.uint8),
            "centres": centres.astype(np.float16), "image": picture.astype(np.float16)}


def _annotated_parts(mask, convention):
    """([(body pixels, class)], [disc pixels]) of a slice's mask, each list top to bottom."""
    if convention == localisation.BINARY:
        discs = _parts(mask == 1)
        lowest = _mean_row(discs[-1]) if discs else np.inf
        return [(part, SACRUM if _mean_row(part) > lowest else BODY)
                for part in _parts(_vertebrae(mask, convention))], discs
    vertebrae = sorted((v for v in np.unique(mask[_vertebrae(mask, convention)])), reverse=True)
    bodies = [(mask == v, SACRUM if v == _SACRUM_LABEL else BODY) for v in vertebrae]
    disc_labels = sorted(np.unique(mask[_discs(mask, convention)]))  # 201 = L5-S1: reversed
    return bodies, [mask == v for v in disc_labels[::-1]]


def _discs(mask, convention):
    """Disc pixels of a mask in ``convention`` (as ``localisation.from_mask`` reads it)."""
    return mask == 1 if convention == localisation.BINARY else mask > 200


def _vertebrae(mask, convention):
    """Vertebra pixels: 2 in binary masks; in SPIDER ones every label below 200 but the
    canal's (101.. mark vertebrae partly in view), as ``localisation.from_mask`` reads them."""
    if convention == localisation.BINARY:
        return mask == 2
    return (mask > 0) & (mask < 200) & (mask != tasks.CANAL_LABEL)


def _parts(binary):
    """Connected components of a 2D mask, top to bottom."""
    labelled, count = ndimage.label(binary)
    parts = [labelled == i for i in range(1, count + 1)]
    return sorted(parts, key=_mean_row)


def _mean_row(part):
    return np.argwhere(part)[:, 0].mean()


def patient_examples(seed, index, slices=6):
    """Examples from ``slices`` random slices near the mid-sagittal plane of one patient."""
    patient = make_patient(seed, index)
    rng = np.random.default_rng([seed, index, 7])
    n = patient.image.shape[0]
    mid = int(round(patient.anatomy.acquisition.mid_slice))
    near = np.arange(max(0, mid - 4), min(n, mid + 5))
    chosen = rng.choice(near, size=min(slices, len(near)), replace=False)
    spacing = patient.spacing_mm[1:]
    return [slice_example(patient.mask[s], patient.image[s], spacing, signal=patient.signal[s])
            for s in sorted(chosen)]


ANNOTATION_MARGIN_MM = 10.0
"""A real slice is cut to the rows its annotation spans, plus this margin: beyond
them a disc may be present but unannotated (masks often cover the lumbar spine
only), and it must not be taught as background."""


def annotated_examples(scan, mask, slices=6):
    """Examples from a real scan and its label mask (either convention).

    Uses up to ``slices`` slices with both discs and vertebrae annotated,
    those with the most disc pixels; each is cut to its annotated rows
    (``ANNOTATION_MARGIN_MM``).

    Args:
        scan: ``spine_tf.io.Scan``; mask: its labels (slices, rows, cols).

    Returns:
        list of example dicts (may be empty).
    """
    mask = np.asarray(mask)
    convention = localisation.guess_convention(mask)
    disc_pixels = _discs(mask, convention).sum(axis=(1, 2))
    vertebra = _vertebrae(mask, convention)
    usable = [s for s in np.argsort(-disc_pixels, kind="stable")
              if disc_pixels[s] > 0 and vertebra[s].any()][:slices]
    spacing = np.asarray(scan.spacing_mm[1:], np.float64)
    margin = int(np.ceil(ANNOTATION_MARGIN_MM / spacing[0]))
    examples = []
    for s in sorted(usable):
        rows = np.flatnonzero(mask[s].any(axis=1))
        keep = slice(max(0, rows[0] - margin), rows[-1] + margin + 1)
        examples.append(slice_example(mask[s][keep], scan.image[s][keep], spacing,
                                      convention=convention))
    return examples


def _patient_examples(args):
    return patient_examples(*args)


def phantom_examples(seed, indices, slices=6, size=256, workers=None):
    """Stacked examples of phantom patients ``indices`` of cohort ``seed``.

    Slices are padded (region 0, outside the field of view) or centre-cropped
    to ``size`` x ``size`` pixels so they stack.

    Returns:
        dict of arrays (n, size, size): regions, classes, centres, image;
        None for no patients.
    """
    jobs = [(seed, int(i), slices) for i in indices]
    if workers == 1 or len(jobs) < 4:
        results = [_patient_examples(job) for job in jobs]
    else:
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=worker_context()) as pool:
            results = list(pool.map(_patient_examples, jobs, chunksize=2))
    return stack([e for patient in results for e in patient], size)


def stack(examples, size=256):
    """Example dicts -> one dict of (n, size, size) arrays (``_fit`` each); None if empty."""
    if not examples:
        return None
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
