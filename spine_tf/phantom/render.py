"""Renders a phantom patient's anatomy into a T2-like sagittal scan and masks.

Signal levels are relative to CSF (1.0) and follow T2-weighted appearance:
bright CSF and healthy nucleus, dark annulus and cortical bone, intermediate
marrow and muscle, bright fat. Slices are drawn one at a time; each element
(body, disc, canal segment, posterior elements) only touches its own crop.
"""

import numpy as np
from scipy import ndimage

from spine_tf import tasks
from spine_tf.phantom.anatomy import VERTEBRA_LABELS

# Signal (relative to CSF = 1) of each tissue.
CSF, FAT, MUSCLE, PREVERTEBRAL = 1.0, 0.78, 0.26, 0.32
ANNULUS, MARROW, CORTEX, POSTERIOR_BONE, LIGAMENT = 0.2, 0.5, 0.1, 0.42, 0.15
_NUCLEUS_BY_GRADE = ((0.0, 1.0, 2.0, 3.0, 4.0, 5.0), (1.0, 0.93, 0.74, 0.48, 0.29, 0.17))


def nucleus_signal(pfirrmann_latent):
    """Signal of the nucleus centre for a latent Pfirrmann value in [0, 5)."""
    return float(np.interp(pfirrmann_latent, *_NUCLEUS_BY_GRADE))


def smooth_noise(rng, shape, spacing_mm, correlation_mm):
    """Zero-mean, unit-variance random field with about the given correlation length.

    White noise on a grid three points per correlation length, smoothed there
    and linearly interpolated up: cheap, and free of blocks.
    """
    coarse = [max(3, int(np.ceil(3 * n * s / correlation_mm)) + 1)
              for n, s in zip(shape, spacing_mm)]
    coarse = [min(c, n) for c, n in zip(coarse, shape)]
    field = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), 1.0,
                                    mode="wrap")
    field = ndimage.zoom(field, [n / c for n, c in zip(shape, coarse)], order=1,
                         grid_mode=True, mode="nearest")
    field = field[tuple(slice(0, n) for n in shape)]
    return (field - field.mean()) / (field.std() + 1e-6)


class _Crop:
    """Local coordinates of an element over a window of the slice around it."""

    def __init__(self, element, ys, xs, radius_mm, centre=None):
        centre = element.centre if centre is None else centre
        dy, dx = ys[1] - ys[0], xs[1] - xs[0]
        r0 = max(0, int((centre[0] - radius_mm) / dy))
        r1 = min(len(ys), int((centre[0] + radius_mm) / dy) + 2)
        c0 = max(0, int((centre[1] - radius_mm) / dx))
        c1 = min(len(xs), int((centre[1] + radius_mm) / dx) + 2)
        self.window = (slice(r0, r1), slice(c0, c1))
        self.empty = r0 >= r1 or c0 >= c1
        y = ys[r0:r1, None] - element.centre[0]
        x = xs[None, c0:c1] - element.centre[1]
        back, up = element.back, element.up
        self.a = (y * back[0] + x * back[1]).astype(np.float32)  # posterior +
        self.b = (y * up[0] + x * up[1]).astype(np.float32)  # superior +


def _superellipse(a, b, half_a, half_b, p_a, p_b):
    return np.abs(a / half_a) ** p_a + np.abs(b / half_b) ** p_b


def _sigmoid(t):
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def render(anatomy, rng):
    """Renders the scan and its masks in the internal (slices, rows, cols) frame.

    Returns:
        image: float32 scan (arbitrary scanner units, noisy, bias field).
        mask: int16 SPIDER-convention labels (vertebrae 1..7 from the bottom,
            canal 100, discs 201..206 with 201 = L5-S1).
        lesions: uint8 (slices, rows, cols, 4), one channel per lesion task in
            task-table order; value = disc label - 200 of the disc it belongs to.
        signal: float32 noise- and bias-free signal (CSF = 1), for tests.
    """
    acq = anatomy.acquisition
    n_slices, n_rows, n_cols = acq.shape
    thickness, dy, dx = acq.spacing_mm
    ys = np.arange(n_rows, dtype=np.float32) * dy
    xs = np.arange(n_cols, dtype=np.float32) * dx

    signal = np.zeros(acq.shape, np.float32)
    mask = np.zeros(acq.shape, np.int16)
    lesions = np.zeros(acq.shape + (len(tasks.LESION_TASKS),), np.uint8)

    textures = {
        "marrow": smooth_noise(rng, acq.shape, acq.spacing_mm, 2.5),
        "soft": smooth_noise(rng, acq.shape, acq.spacing_mm, 12.0),
        "fine": smooth_noise(rng, acq.shape, acq.spacing_mm, 1.2),
    }
    geometry = _Background(anatomy, rng, ys, xs)
    lesions_by_body = _lesions_by_body(anatomy)
    strands = rng.uniform(0.15, 0.85, size=3)

    for s in range(n_slices):
        z = (s - acq.mid_slice) * thickness
        slice_signal = geometry.draw(z, textures["soft"][s], textures["fine"][s])
        slice_mask = mask[s]
        for element in anatomy.bodies + anatomy.discs:
            _draw_canal(element, anatomy, z, ys, xs, slice_signal, slice_mask, strands)
        for element in anatomy.bodies:
            _draw_posterior_elements(element, anatomy, z, ys, xs, slice_signal,
                                     textures["marrow"][s])
        for disc in anatomy.discs:
            _draw_disc(disc, z, ys, xs, slice_signal, slice_mask, textures["fine"][s])
        for body, body_lesions in zip(anatomy.bodies, lesions_by_body):
            _draw_body(body, anatomy, body_lesions, z, ys, xs, slice_signal,
                       slice_mask, lesions[s], textures["marrow"][s])
        signal[s] = slice_signal

    # Partial volume in plane, then coil sensitivity and a smooth bias field.
    image = ndimage.gaussian_filter(signal, sigma=(0, 0.45, 0.45))
    bias = np.exp(0.22 * smooth_noise(rng, acq.shape, acq.spacing_mm, 120.0))
    coil = np.exp(-np.clip(geometry.skin_x - xs[None, None, :], 0, None) / anatomy.coil_decay_mm)
    image = image * bias * coil.astype(np.float32)
    sigma = acq.noise_sigma
    image = np.sqrt((image + rng.normal(0, sigma, image.shape)) ** 2
                    + rng.normal(0, sigma, image.shape) ** 2).astype(np.float32)
    image *= acq.intensity_scale
    if acq.store_int16:
        image = np.round(np.clip(image, 0, 32767)).astype(np.int16)
    return image, mask, lesions, signal


class _Background:
    """Soft tissue around the spine: abdomen, prevertebral tissue, muscle, fat, air."""

    def __init__(self, anatomy, rng, ys, xs):
        bodies = anatomy.bodies
        posterior = np.mean([b.point(b.half_depth, 0)[1] for b in bodies])
        anterior = [b.point(-b.half_depth, 0) for b in bodies]
        self.skin_x = posterior + anatomy.canal_depth_mm + rng.uniform(75.0, 110.0) \
            + anatomy.back_fat_mm
        self.fat_x = self.skin_x - anatomy.back_fat_mm
        # Anterior border of the spine, interpolated along the rows.
        rows = np.array([p[0] for p in anterior])
        self.front_x = np.interp(ys, rows, [p[1] for p in anterior]).astype(np.float32)
        self.ys, self.xs = ys, xs
        self.half_width = np.mean([b.half_width for b in bodies])

    def draw(self, z, soft, fine):
        x = self.xs[None, :]
        front = self.front_x[:, None]
        abdomen = np.clip(0.38 + 0.16 * soft, 0.1, 0.75)
        muscle = MUSCLE * (1 + 0.12 * fine)
        out = np.where(x < front - 8.0, abdomen, muscle)
        lateral = abs(z) < self.half_width
        if lateral:
            band = (x >= front - 8.0) & (x < front)
            out = np.where(band, PREVERTEBRAL, out)
        out = np.where(x >= self.fat_x, FAT * (1 + 0.05 * fine), out)
        out = np.where(x >= self.skin_x, 0.0, out)
        return out.astype(np.float32)


def _lateral_factor(z, half_width):
    """Relative antero-posterior size of an element's cross-section at z."""
    t = 1.0 - (z / half_width) ** 2
    return np.sqrt(t) if t > 0 else 0.0


def _draw_canal(element, anatomy, z, ys, xs, out, mask, strands):
    if abs(z) >= anatomy.canal_half_width_mm:
        return
    depth = anatomy.canal_depth_mm
    crop = _Crop(element, ys, xs, element.half_depth + depth + element.half_height + 4)
    if crop.empty:
        return
    a = crop.a - element.half_depth - 0.8
    inside = (a > 0) & (a < depth) & (np.abs(crop.b) < element.half_height + 0.3)
    window = out[crop.window]
    csf = np.full(window.shape, CSF, np.float32)
    if abs(z) < 5.0:  # nerve roots of the cauda equina as dark strands
        for position in strands:
            csf = np.where(np.abs(a - position * depth) < 0.7, 0.45, csf)
    out[crop.window] = np.where(inside, csf, window)
    mask[crop.window] = np.where(inside, tasks.CANAL_LABEL, mask[crop.window])


def _draw_posterior_elements(body, anatomy, z, ys, xs, out, marrow):
    if abs(z) >= body.half_width:
        return
    start = body.half_depth + 0.8 + anatomy.canal_depth_mm
    centre = body.point(start + 16.0, -0.2 * body.half_height)
    crop = _Crop(body, ys, xs, 40.0, centre=centre)
    if crop.empty:
        return
    a = crop.a - start - 16.0
    b = crop.b + 0.2 * body.half_height + 0.4 * a  # spinous process slopes down
    half_height = 0.45 * body.half_height * (1 - 0.6 * abs(z) / body.half_width)
    shape = _superellipse(a, b, 16.0, half_height, 3, 3)
    window = out[crop.window]
    bone = POSTERIOR_BONE * (1 + 0.1 * marrow[crop.window])
    out[crop.window] = np.where(shape < 1, np.where(shape > 0.6, CORTEX, bone), window)
    fat = (np.abs(a) < 16) & (shape >= 1) & (shape < 2.2)
    out[crop.window] = np.where(fat, FAT * 0.8, out[crop.window])


def _cross_section(element, z, ys, xs):
    """(crop, lateral factor) of an element on the slice at z, or None if it misses it."""
    rho = _lateral_factor(z, element.half_width)
    if rho <= 0.05:
        return None
    crop = _Crop(element, ys, xs, element.half_depth + element.half_height + 3)
    return None if crop.empty else (crop, rho)


def _draw_disc(disc, z, ys, xs, out, mask, fine):
    section = _cross_section(disc, z, ys, xs)
    if section is None:
        return
    crop, rho = section
    a, b = crop.a, crop.b
    half_a = disc.half_depth * rho
    half_b = disc.half_height + 0.7
    inside = _superellipse(a, b, half_a, half_b, 4, 6) < 1.0
    d = disc.pfirrmann_latent
    r = np.sqrt(((a - 0.08 * half_a) / (0.62 * half_a)) ** 2 + (b / (0.62 * disc.half_height)) ** 2)
    softness = 0.05 + 0.12 * np.clip(d - 1.5, 0.0, 2.0)
    core = _sigmoid((1.0 - r) / softness)
    nucleus = nucleus_signal(d) * (1 + (0.03 + 0.07 * np.clip(d - 2.0, 0, 2)) * fine[crop.window])
    if disc.cleft:
        nucleus = nucleus * (1.0 - 0.45 * np.exp(-(b / 0.5) ** 2))
    value = ANNULUS + (nucleus - ANNULUS) * core
    out[crop.window] = np.where(inside, value, out[crop.window])
    label = tasks.disc_label_of_level(disc.level)
    mask[crop.window] = np.where(inside, label, mask[crop.window])


def _lesions_by_body(anatomy):
    """For each body (top to bottom): the lesions at its endplates and marrow.

    Body i lies above disc i (its inferior endplate: the disc's "upper"
    lesions) and below disc i - 1 (its superior endplate: "lower" lesions).
    """
    level_index = {level: i for i, level in enumerate(tasks.LEVELS)}
    out = [[] for _ in anatomy.bodies]
    for lesion in anatomy.lesions:
        side = tasks.task(lesion.task).lesion[1]
        i = level_index[lesion.level]
        out[i if side == "upper" else i + 1].append(lesion)
    return out


def _draw_body(body, anatomy, lesions, z, ys, xs, out, mask, lesion_masks, marrow):
    section = _cross_section(body, z, ys, xs)
    if section is None:
        return
    crop, rho = section
    a, b = crop.a, crop.b
    half_a, half_b = body.half_depth * rho, body.half_height
    f = _superellipse(a, b, half_a, half_b, 5, 5) ** 0.2
    inside = f < 1.0
    shell = (1.0 - f) * min(half_a, half_b)
    value = np.where(shell < 1.1, CORTEX, MARROW * (1 + 0.1 * marrow[crop.window]))
    lesion_window = lesion_masks[crop.window]
    for lesion in lesions:
        task = tasks.task(lesion.task)
        kind, side = task.lesion
        channel = tasks.LESION_TASKS.index(task)
        endplate = -half_b if side == "upper" else half_b  # b of the endplate it sits on
        into = (b - endplate) * (1 if side == "upper" else -1)  # distance into the body
        along = np.abs(a - lesion.depth_offset_mm)
        across = abs(z - lesion.lateral_mm)
        s = lesion.strength
        if kind == "endplate":
            depth = 1.0 + 5.0 * s
            if across >= lesion.lateral_half_mm:
                continue
            scale = np.sqrt(1 - (across / lesion.lateral_half_mm) ** 2)
            r = np.sqrt((along / (lesion.extent_mm * scale)) ** 2 + (into / (depth * scale)) ** 2)
            defect = (r < 1.0) & (into > 0.0) & inside
            disc = anatomy.discs[tasks.LEVELS.index(lesion.level)]
            # disc material and fluid pushed into the body: brighter than marrow
            fill = 0.62 + 0.3 * nucleus_signal(disc.pfirrmann_latent)
            value = np.where((r >= 1.0) & (r < 1.35) & inside, CORTEX, value)
            value = np.where(defect, fill, value)
            region = defect
        else:
            thickness = 2.0 + 8.0 * s
            weight = (_sigmoid((thickness - into) / 0.8) * (into > -0.5)
                      * _sigmoid((lesion.extent_mm - along) / 1.0)
                      * _sigmoid((lesion.lateral_half_mm - across) / 1.5))
            factor = 1.0 + (lesion.brightness - 1.0) * (0.35 + 0.65 * s) * weight
            value = np.where(shell >= 1.1, value * factor, value)
            region = inside & (weight > 0.5)
        disc_number = tasks.disc_label_of_level(lesion.level) - 200
        lesion_window[..., channel] = np.where(region, disc_number, lesion_window[..., channel])
    out[crop.window] = np.where(inside, value, out[crop.window])
    label = VERTEBRA_LABELS[body.name]
    mask[crop.window] = np.where(inside, label, mask[crop.window])
