"""Random lumbar anatomy, acquisition and pathology for one phantom patient.

Everything here is drawn from one ``numpy.random.Generator`` and is pure
geometry and labels; ``render.py`` turns it into voxels.

Geometry is in millimetres in the scan's sagittal plane: ``y`` grows towards
the feet (image rows), ``x`` towards the back (image columns), with the centre
of voxel (0, 0) at the origin; ``z`` is left-right, 0 on the spine's
mid-sagittal plane. An element (vertebral body or disc) has a centre, an axis
tilt ``angle`` (radians; 0 = the spine runs straight up the image, positive =
the superior end leans anteriorly) and half sizes: ``half_height`` along the
spine axis, ``half_depth`` antero-posterior, ``half_width`` left-right.
"""

import dataclasses
import typing

import numpy as np

from spine_tf import tasks

VERTEBRAE = tasks.VERTEBRAE  # top to bottom
# Mask labels of the vertebrae, counted from the bottom (S1 = 1); the canal and
# the discs use tasks.CANAL_LABEL and tasks.disc_label_of_level. (Localisation
# does not rely on the vertebra numbering, which differs between data sets.)
VERTEBRA_LABELS = {name: len(VERTEBRAE) - i for i, name in enumerate(VERTEBRAE)}

# Typical adult sizes (mm), top to bottom; a patient scales them.
_BODY_HEIGHT_MM = (22.0, 24.0, 25.5, 26.5, 27.0, 27.0, 28.0)
_BODY_DEPTH_MM = (30.0, 32.0, 33.0, 35.0, 36.0, 37.0, 40.0)
_DISC_HEIGHT_MM = (6.5, 8.0, 9.0, 10.0, 11.0, 10.5)
DISC_SPACING_MM = tuple(_DISC_HEIGHT_MM[i] / 2 + _BODY_HEIGHT_MM[i + 1] + _DISC_HEIGHT_MM[i + 1] / 2
                        for i in range(len(_DISC_HEIGHT_MM) - 1))
"""Typical distance between the centres of neighbouring discs (T12-L1/L1-L2 .. L4-L5/L5-S1),
from the body and disc heights above: about 31-38 mm."""
MIN_ESTIMATE_DISCS = 3
"""Named discs needed to estimate a pixel size from their spacing."""


def anatomical_pixel_size(located):
    """The in-plane pixel size (mm) at which the named discs of ``located`` (a
    ``Localisation``, coordinates in pixels) lie as far apart as in a typical spine
    (``DISC_SPACING_MM``): the median over pairs of neighbouring levels of typical
    millimetres / pixels found; None with fewer than ``MIN_ESTIMATE_DISCS`` named discs."""
    centres = {d.level: np.asarray(d.centre[1:], np.float64) for d in located.discs}
    if len(centres) < MIN_ESTIMATE_DISCS:
        return None
    ratios = [DISC_SPACING_MM[i] / np.linalg.norm(centres[upper] - centres[lower])
              for i, (upper, lower) in enumerate(zip(tasks.LEVELS, tasks.LEVELS[1:]))
              if upper in centres and lower in centres]
    return float(np.median(ratios)) if ratios else None


# Reading noise (latent units) of the lesion tasks: endplate defects are read
# less consistently than marrow changes, as in the paper's intra-rater figures.
_LESION_READING_NOISE = {"endplate": 0.16, "marrow": 0.1}
# Share of the lumbar lordosis taken by each disc, top to bottom.
_LORDOSIS_SHARE = (0.06, 0.09, 0.13, 0.18, 0.24, 0.30)
CLEAR_LESION_STRENGTH = (0.42, 1.0)
"""Strength range of the lesions drawn at the level's prevalence (mostly read positive)."""
SUBTLE_LESION_STRENGTH = (0.12, 0.42)
"""Strength range of the extra subtle lesions (6 % of discs per task, mostly read normal)."""


@dataclasses.dataclass(frozen=True)
class PhantomConfig:
    """How a phantom cohort is drawn.

    Attributes:
        reader_noise: scale of the reading noise of both label sets (the
            labels and the re-read); 0 gives noiseless readers that agree
            perfectly, 1 gives about the paper's intra-rater agreement.
        missing_fraction: share of labels left missing (-1), per task.
        cutoff_fraction: share of scans whose field of view cuts off the top
            of the lumbar spine, so fewer than six discs are visible.
        lesion_scale: multiplies the prevalence of endplate defects and
            marrow changes.
        slice_thickness_mm: every scan's slice thickness instead of the drawn
            one (2.6-6 mm), e.g. 1.0 for a 3D acquisition's reconstruction.
        lateral_coverage_mm: every scan's left-right extent instead of the
            drawn one (55-80 mm); with ``slice_thickness_mm`` it sets the number
            of slices (9 at least; without either, 9 to 20).
    """

    reader_noise: float = 1.0
    missing_fraction: float = 0.04
    cutoff_fraction: float = 0.12
    lesion_scale: float = 1.0
    slice_thickness_mm: typing.Optional[float] = None
    lateral_coverage_mm: typing.Optional[float] = None


@dataclasses.dataclass
class Element:
    """A vertebral body or a disc (geometry in mm, see the module docstring)."""

    name: str
    centre: np.ndarray  # (y, x)
    angle: float
    half_height: float
    half_depth: float
    half_width: float

    @property
    def up(self):
        """Unit (y, x) vector along the spine axis, pointing to the head."""
        return np.array([-np.cos(self.angle), -np.sin(self.angle)])

    @property
    def back(self):
        """Unit (y, x) vector across the element, pointing posterior."""
        return np.array([-np.sin(self.angle), np.cos(self.angle)])

    def point(self, depth, height):
        """(y, x) of the point at local (antero-posterior, superior) offsets."""
        return self.centre + depth * self.back + height * self.up

    def corners(self):
        """(4, 2) mid-sagittal corners: ant-sup, post-sup, post-inf, ant-inf."""
        a, b = self.half_depth, self.half_height
        return np.stack([self.point(-a, b), self.point(a, b),
                         self.point(a, -b), self.point(-a, -b)])


@dataclasses.dataclass
class Disc(Element):
    """A disc with its latent degeneration (continuous; labels are readings)."""

    pfirrmann_latent: float = 0.0  # in [0, 5): grade index plus position in the grade
    narrowing_latent: float = 0.0  # in [0, 4)
    cleft: bool = False  # intranuclear cleft (a dark line, grades 2-3)

    @property
    def level(self):
        return self.name


@dataclasses.dataclass
class Lesion:
    """An endplate defect or marrow change belonging to one disc and task.

    ``strength`` in (0, 1] sets size and contrast; readers call it present
    near and above 0.5, so weak lesions are the borderline cases.
    """

    task: str
    level: str
    strength: float
    depth_offset_mm: float  # antero-posterior centre in the body's frame
    extent_mm: float  # antero-posterior half extent
    lateral_mm: float  # left-right centre
    lateral_half_mm: float
    brightness: float  # marrow: signal factor at full strength; endplate: unused


@dataclasses.dataclass
class Acquisition:
    """Scan grid: shape (slices, rows, cols), spacing (mm) along the same axes."""

    shape: tuple
    spacing_mm: tuple
    mid_slice: float  # slice coordinate of the spine's mid-sagittal plane
    intensity_scale: float
    noise_sigma: float  # Rician noise, relative to CSF signal
    store_int16: bool
    storage_axcodes: tuple  # orientation the NIfTI file is written in


@dataclasses.dataclass
class Anatomy:
    """Everything needed to render and label one phantom patient."""

    patient_id: str
    acquisition: Acquisition
    bodies: list  # Element, top to bottom (VERTEBRAE)
    discs: list  # Disc, top to bottom (tasks.LEVELS)
    lesions: list
    labels: dict  # level -> {task: int}; visible discs only
    reread: dict  # level -> {task: int}; the second reading
    visible_levels: tuple
    canal_depth_mm: float
    canal_half_width_mm: float
    back_fat_mm: float
    coil_decay_mm: float


def sample_anatomy(rng, patient_id, config=PhantomConfig()):
    """Draws a patient: spine geometry, acquisition, degeneration, lesions, labels."""
    acquisition = _sample_acquisition(rng, config)
    age = rng.beta(2.0, 2.0)  # 0 young .. 1 old, drives degeneration
    discs_latent = [_sample_degeneration(rng, age, i) for i in range(len(tasks.LEVELS))]
    bodies, discs = _build_spine(rng, discs_latent)

    # Place the spine: centred antero-posteriorly a little anterior of the
    # middle, and vertically so S1 sits low in the field of view, or (for
    # cut-off scans) so the top of the lumbar spine leaves the image.
    corners = np.concatenate([element.corners() for element in bodies])
    top, bottom = corners[:, 0].min(), corners[:, 0].max()
    spine_length = bottom - top
    rows_mm = acquisition.shape[1] * acquisition.spacing_mm[1]
    cols_mm = acquisition.shape[2] * acquisition.spacing_mm[2]
    if rng.random() < config.cutoff_fraction:
        lost_mm = rng.uniform(0.5, 1.6) * (bodies[0].half_height * 2 + discs[0].half_height * 2)
        shift_y = -top - lost_mm
    else:
        margin = rows_mm - spine_length - 10.0
        if margin > 0:
            shift_y = -top + 5.0 + rng.uniform(0.25, 0.75) * margin
        else:  # a long spine in a small field of view: keep the sacrum, lose the top
            shift_y = rows_mm - 5.0 - bottom
    mean_x = np.mean([b.centre[1] for b in bodies])
    shift_x = cols_mm * rng.uniform(0.36, 0.46) - mean_x
    for element in bodies + discs:
        element.centre = element.centre + np.array([shift_y, shift_x])

    visible = tuple(
        level for i, level in enumerate(tasks.LEVELS)
        if all(_inside(e, rows_mm, cols_mm) for e in (bodies[i], discs[i], bodies[i + 1])))

    lesions = _sample_lesions(rng, discs, age, config)
    labels, reread = _read_labels(rng, discs, lesions, visible, config)
    return Anatomy(
        patient_id=patient_id, acquisition=acquisition, bodies=bodies, discs=discs,
        lesions=lesions, labels=labels, reread=reread, visible_levels=visible,
        canal_depth_mm=rng.uniform(13.0, 18.0), canal_half_width_mm=rng.uniform(8.0, 11.0),
        back_fat_mm=rng.uniform(8.0, 25.0), coil_decay_mm=rng.uniform(150.0, 400.0))


def _inside(element, rows_mm, cols_mm, margin_mm=2.0):
    corners = element.corners()
    return (corners[:, 0].min() > margin_mm and corners[:, 0].max() < rows_mm - margin_mm
            and corners[:, 1].min() > margin_mm and corners[:, 1].max() < cols_mm - margin_mm)


def _sample_acquisition(rng, config=PhantomConfig()):
    fov_mm = rng.uniform(260.0, 340.0)
    matrix = int(rng.integers(256, 513))
    matrix = max(matrix, int(np.ceil(fov_mm / 1.0)))  # in-plane spacing at most 1 mm
    in_plane = fov_mm / matrix
    if in_plane < 0.5:
        matrix = int(fov_mm / 0.5)
        in_plane = fov_mm / matrix
    thickness = float(np.clip(rng.lognormal(np.log(4.0), 0.18), 2.6, 6.0))
    lateral_fov = rng.uniform(55.0, 80.0)
    slices = int(np.clip(round(lateral_fov / thickness), 9, 20))
    if config.slice_thickness_mm or config.lateral_coverage_mm:  # drawn first: same stream
        thickness = float(config.slice_thickness_mm or thickness)
        lateral_fov = float(config.lateral_coverage_mm or lateral_fov)
        slices = max(9, int(round(lateral_fov / thickness)))
    mid = (slices - 1) / 2 + rng.uniform(-1.0, 1.0)
    storage = (("L", "I", "P"), ("R", "A", "S"), ("L", "P", "S"), ("P", "I", "R"),
               ("R", "S", "A"))[int(rng.integers(0, 5))]
    return Acquisition(
        shape=(slices, matrix, matrix), spacing_mm=(thickness, in_plane, in_plane),
        mid_slice=mid, intensity_scale=float(rng.uniform(300.0, 3000.0)),
        noise_sigma=float(rng.uniform(0.015, 0.05)), store_int16=bool(rng.random() < 0.7),
        storage_axcodes=storage)


def _sample_degeneration(rng, age, index):
    """Latent Pfirrmann and narrowing for disc ``index`` (0 = T12-L1)."""
    pfirrmann = np.clip(0.7 + 1.9 * age + 0.3 * index + rng.normal(0.0, 0.7), 0.0, 4.999)
    narrowing = np.clip(1.1 * (pfirrmann - 2.2) + rng.normal(0.0, 0.5), 0.0, 3.999)
    cleft = bool(1.0 <= pfirrmann < 3.0 and rng.random() < 0.5)
    return float(pfirrmann), float(narrowing), cleft


def _build_spine(rng, discs_latent):
    """Stacks bodies and discs from S1 upwards along a lordotic curve."""
    scale = rng.uniform(0.88, 1.12)
    # Lordosis (L1 to S1) and the sacral tilt that balances it, so that the
    # spine stands about upright with its apex near L3-L4; plus a small
    # positioning tilt of the whole spine.
    lordosis = np.radians(rng.uniform(30.0, 60.0))
    angle = lordosis * rng.uniform(0.5, 0.65) + np.radians(rng.uniform(-6.0, 6.0))
    n = len(VERTEBRAE)
    body_angles = [0.0] * n
    body_angles[-1] = angle
    for i in range(n - 2, -1, -1):  # going up: each disc takes a share of lordosis
        body_angles[i] = body_angles[i + 1] - lordosis * _LORDOSIS_SHARE[i] \
            * rng.uniform(0.7, 1.3)

    bodies = []
    for i, name in enumerate(VERTEBRAE):
        height = _BODY_HEIGHT_MM[i] * scale * rng.normal(1.0, 0.03)
        depth = _BODY_DEPTH_MM[i] * scale * rng.normal(1.0, 0.03)
        bodies.append(Element(name, np.zeros(2), body_angles[i], height / 2, depth / 2,
                              depth * rng.uniform(0.55, 0.65)))
    discs = []
    for i, level in enumerate(tasks.LEVELS):
        pfirrmann, narrowing, cleft = discs_latent[i]
        height_factor = (1.0 - 0.16 * narrowing) * (1.0 - 0.05 * max(0.0, pfirrmann - 3.0))
        height = _DISC_HEIGHT_MM[i] * scale * rng.normal(1.0, 0.06) * height_factor
        up, down = bodies[i], bodies[i + 1]
        discs.append(Disc(level, np.zeros(2), (up.angle + down.angle) / 2, height / 2,
                          (up.half_depth + down.half_depth) / 2 * 1.03,
                          (up.half_width + down.half_width) / 2 * 1.02,
                          pfirrmann_latent=pfirrmann, narrowing_latent=narrowing, cleft=cleft))

    # Walk upwards from S1, the sacrum's centre at the origin.
    for i in range(n - 2, -1, -1):
        below, disc, body = bodies[i + 1], discs[i], bodies[i]
        disc.centre = below.centre + below.up * below.half_height + disc.up * disc.half_height
        body.centre = disc.centre + disc.up * disc.half_height + body.up * body.half_height
    return bodies, discs


def _sample_lesions(rng, discs, age, config):
    lesions = []
    for i, disc in enumerate(discs):
        for task in tasks.LESION_TASKS:
            kind, side = task.lesion
            # More common at lower levels and in degenerate discs: ~5 % at
            # T12-L1 to ~20 % at L5-S1 on average.
            prevalence = (0.03 + 0.025 * i + 0.02 * max(0.0, disc.pfirrmann_latent - 2.0)
                          + 0.02 * age) * config.lesion_scale
            draw = rng.random()
            if draw < prevalence:
                strength = rng.uniform(*CLEAR_LESION_STRENGTH)
            elif draw < prevalence + 0.06:
                strength = rng.uniform(*SUBTLE_LESION_STRENGTH)
            else:
                continue
            body_depth = disc.half_depth
            if kind == "endplate":
                offset = rng.uniform(-0.55, 0.55) * body_depth
                extent = rng.uniform(2.5, 6.0)
                lateral_half = rng.uniform(4.0, 10.0)
            else:
                extent = rng.uniform(0.35, 0.9) * body_depth
                offset = rng.uniform(-1.0, 1.0) * (body_depth - extent)
                lateral_half = rng.uniform(8.0, 20.0)
            lesions.append(Lesion(
                task=task.name, level=disc.level, strength=float(strength),
                depth_offset_mm=float(offset), extent_mm=float(extent),
                lateral_mm=float(rng.uniform(-6.0, 6.0)), lateral_half_mm=float(lateral_half),
                brightness=float(rng.uniform(1.6, 2.0) if rng.random() < 0.75
                                 else rng.uniform(0.35, 0.5))))
    return lesions


def _read_labels(rng, discs, lesions, visible, config):
    """Two noisy readings of every visible disc (the labels and the re-read)."""
    strength = {(lesion.level, lesion.task): lesion.strength for lesion in lesions}
    readings = []
    for _ in range(2):
        reading = {}
        for disc in discs:
            if disc.level not in visible:
                continue
            noise = config.reader_noise
            labels = {
                "pfirrmann": int(np.clip(disc.pfirrmann_latent + rng.normal(0, 0.3 * noise + 1e-9),
                                         0, 4.999)),
                "narrowing": int(np.clip(disc.narrowing_latent + rng.normal(0, 0.3 * noise + 1e-9),
                                         0, 3.999)),
            }
            for task in tasks.LESION_TASKS:
                s = strength.get((disc.level, task.name), 0.0)
                sigma = _LESION_READING_NOISE[task.lesion[0]] * noise + 1e-9
                labels[task.name] = int(s > 0 and s + rng.normal(0, sigma) > 0.5)
            reading[disc.level] = labels
        readings.append(reading)
    labels, reread = readings
    # Missing labels are missing in the primary reading only.
    for level_labels in labels.values():
        for name in tasks.TASK_NAMES:
            if rng.random() < config.missing_fraction:
                level_labels[name] = tasks.MISSING_LABEL
    return labels, reread
