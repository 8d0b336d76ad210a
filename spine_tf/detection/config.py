"""How the detector is trained: the ranges of its randomisation and its training settings.

Plain dataclasses (no TensorFlow), so the command line reads their defaults quickly;
``spine_tf.config.to_dict`` / ``from_dict`` turn them into JSON and back.
"""

import dataclasses
import typing


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """Ranges of the detector's training randomisation.

    Attributes:
        crop: output size (pixels at ``data.SPACING_MM``); a multiple of 16.
        scale: zoom range (log-uniform): > 1 shows anatomy larger.
        rotation_deg: in-plane rotation, uniform in [-r, r].
        synthetic_fraction: share of samples painted with random contrast.
        spread: per-region standard deviation, uniform in [0, s].
        blur_px: Gaussian blur sigma, uniform in [0, b] (a blend of two).
        bias: log bias-field amplitude, uniform in [0, b].
        gamma: log-gamma standard deviation.
        noise: noise sigma, uniform in [0, n].
        clutter: random ellipses painted over the background of synthetic samples.
    """

    crop: int = 128
    scale: tuple = (0.75, 1.35)
    rotation_deg: float = 20.0
    synthetic_fraction: float = 0.75
    spread: float = 0.1
    blur_px: float = 1.5
    bias: float = 0.6
    gamma: float = 0.35
    noise: float = 0.08
    clutter: int = 12


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
    """How the detector is trained.

    Attributes:
        seed: phantom cohort seed of the training patients (distinct from the
            grading cohorts' seeds, so evaluation on those is held out).
        patients, val_patients: patients for training and for validation
            (the next ``val_patients`` indices).
        slices: slices per patient, near the mid-sagittal plane.
        filters: U-Net width.
        epochs, batch_size, steps_per_epoch, learning_rate: Adam with a cosine decay.
        randomisation: the randomisation ranges (``SynthConfig``).
        masks_dir: real scans with label masks to train on as well (a folder
            source's ``scans/`` + ``masks/``, 2D images allowed, or a SPIDER
            folder); patients outside the ``train`` split (``split_of``)
            join the validation set.
        mask_share: share of the training slices that come from ``masks_dir``
            (its slices are repeated to reach it).
        init: a detector to start from instead of random weights (fine-tuning):
            a path, ``shipped`` (the package's default) or ``phantom`` (the
            package's phantom-only one).
    """

    seed: int = 1000
    patients: int = 160
    val_patients: int = 16
    slices: int = 6
    filters: int = 8
    epochs: int = 60
    batch_size: int = 8
    steps_per_epoch: int = 100
    learning_rate: float = 3e-3
    randomisation: SynthConfig = SynthConfig()
    masks_dir: typing.Optional[str] = None
    mask_share: float = 0.5
    init: typing.Optional[str] = None
