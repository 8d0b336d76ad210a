"""All settings of an experiment, as nested frozen dataclasses.

``ExperimentConfig`` holds ``DataConfig``, ``ModelConfig``, ``PipelineConfig`` (with
the ``AugmentConfig``) and ``TrainConfig``. This module imports no TensorFlow. A run
writes its resolved config as JSON next to its checkpoints; ``load`` reads one back,
``override`` applies ``a.b=value`` strings (as ``spine-tf train --set`` does).

Example:
    config = override(ExperimentConfig(), ["model.width=0.125", "train.epochs=5"])
    save(config, "run/config.json")
"""

import ast
import dataclasses
import json
import typing

from spine_tf import tasks
from spine_tf.errors import SpineTFError
from spine_tf.io.atomic import write_json

STRATEGIES = ("default", "mirrored", "multiworker")
OPTIMIZERS = ("sgd", "adamw")
INPUT_SLICES = (9, 1)
"""The model input modes: the whole 9-slice disc volume, or its centre slice only."""


class ConfigError(SpineTFError, KeyError):
    """An unknown setting, section or preset; the message names the known ones."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture settings.

    Attributes:
        branch_point: last shared layer (``conv1`` .. ``fc7``), or ``none``
            for six separate networks. Default ``conv5``, the paper's best.
        width: multiplies every layer's filters and units (1 = the paper's
            size, 182,765,777 parameters at conv5); e.g. 0.125 for tests.
        dropout: dropout rate after fc6 and fc7.
        input_slices: what of the 112 x 224 x 9 disc volume the model sees:
            9, the whole volume (the paper's, default), or 1, the centre
            (mid-sagittal) slice only, for data with one sagittal slice per
            disc (2D pictures, whose 8 neighbour slices extraction
            zero-pads). Either way the model's input is the whole volume.
            A 1-slice model's slice window never moves: its training
            augmentation has ``shift_slices`` 0 and ``flip_probability`` 0
            whatever the config file says (``AugmentConfig.for_input_slices``,
            applied when an ExperimentConfig is made), since a shift puts a
            zero-padded neighbour in the centre and a flip leaves the centre
            slice where it is. Any other value is a ConfigError.
        task_set: the tasks the model grades, one head each
            (``spine_tf.tasks.TASK_SETS``): ``paper`` (default) or ``spider``.
    """

    branch_point: str = "conv5"
    width: float = 1.0
    dropout: float = 0.5
    input_slices: int = 9
    task_set: str = tasks.DEFAULT_TASK_SET

    def __post_init__(self):
        if type(self.input_slices) is not int or self.input_slices not in INPUT_SLICES:
            raise ConfigError(f"model.input_slices must be 9 (the disc volume) or 1 (its "
                              f"centre slice only), not {self.input_slices!r}")
        if self.task_set not in tasks.TASK_SETS:
            raise ConfigError(f"model.task_set must be one of {', '.join(tasks.TASK_SETS)}, "
                              f"not {self.task_set!r}")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """The augmentation ranges (the paper's, section 4); one place for them.

    Attributes:
        rotation_deg: in-plane rotation uniform in [-r, +r] degrees.
        shift_cols_px: translation along columns (x), uniform in [-s, +s] pixels.
        shift_rows_px: translation along rows (y), uniform in [-s, +s] pixels.
        shift_slices: slice-window shift, integer uniform in [-s, +s].
        scale: isotropic in-plane scaling uniform in [lo, hi].
        intensity: offset uniform in [-i, +i] added to every voxel.
        flip_probability: chance of reversing the slice order.
        mirror_probability: chance of reflecting the rows about the volume's
            centre (across the disc plane: the vertebra above becomes the
            one below), with the upper and lower lesion labels swapped
            (``input_pipeline``; ``tasks.MIRRORED``). Not in the paper, so
            off by default; it shows each upper/lower head the other side's
            lesions too (its measured effect: docs/results/grading.md).
    """

    rotation_deg: float = 15.0
    shift_cols_px: float = 32.0
    shift_rows_px: float = 24.0
    shift_slices: int = 2
    scale: tuple = (0.9, 1.1)
    intensity: float = 0.1
    flip_probability: float = 0.5
    mirror_probability: float = 0.0

    def for_input_slices(self, input_slices):
        """The ranges a model of ``input_slices`` (``ModelConfig``) is augmented with.

        9: these ranges as they are. 1: no slice shift and no slice flip (a
        centre-slice model sees only slice 4; a shift would show it a
        zero-padded neighbour, a flip shows it the same slice again).
        """
        if input_slices == 1:
            return dataclasses.replace(self, shift_slices=0, flip_probability=0.0)
        return self


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Input pipeline settings.

    Attributes:
        batch_size: discs per batch (the paper: 256).
        shuffle_buffer: examples in the shuffle buffer (0: the whole split).
        cache: keep decoded examples in memory after the first epoch.
        seed: seed of shuffling and augmentation.
        augmentation: AugmentConfig for training (``augment.NONE`` turns it off).
    """

    batch_size: int = 64
    shuffle_buffer: int = 0
    cache: bool = True
    seed: int = 0
    augmentation: AugmentConfig = AugmentConfig()


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which spine_discs dataset to train on.

    Attributes:
        config: a spine_discs config name (``phantom_small``, ``phantom``,
            ``phantom_large``, ``folder``, ``spider``, ``spider_slices``).
        patients: if set, a phantom cohort of this size instead (``seed``).
        seed: phantom cohort seed (with ``patients``).
        data_dir: TFDS data dir (None: TFDS's default).
        manual_dir: source folder for ``folder`` / ``spider``.
        swap_validation_test: validate on ``test`` and test on ``validation``
            (the paper's second run of each experiment).
        workers: processes when the dataset has to be built.
        train_split: the TFDS split expression trained on (default
            ``train``); e.g. ``train+validation+test`` for a model of every
            patient once its held-out figures are recorded (the validation
            figures of such a run are not held out).
    """

    config: str = "phantom_small"
    patients: typing.Optional[int] = None
    seed: int = 0
    data_dir: typing.Optional[str] = None
    manual_dir: typing.Optional[str] = None
    swap_validation_test: bool = False
    workers: typing.Optional[int] = None
    train_split: str = "train"

    @property
    def validation_split(self):
        return "test" if self.swap_validation_test else "validation"

    @property
    def test_split(self):
        return "validation" if self.swap_validation_test else "test"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and callbacks (the paper's settings by default).

    Attributes:
        epochs: maximum epochs.
        optimizer: ``sgd`` (the paper's: SGD with momentum) or ``adamw``
            (AdamW, which fits a small real data set in fewer epochs).
        learning_rate: initial learning rate.
        momentum: SGD momentum (``sgd`` only).
        weight_decay: decoupled weight decay, scaled by the learning rate
            as Keras applies it.
        lr_factor: learning-rate factor when the validation loss plateaus.
        lr_patience: epochs without improvement before the factor applies.
        min_learning_rate: floor for those reductions (without one, a long
            run decayed to 1e-13 and spent its last epochs standing still).
        early_stopping_patience: epochs without validation-loss improvement
            before training stops (0: never).
        task_weights: {task: w_t} loss weights; None = 1 for every task; a
            task left out of a given dict gets 0 (single-task training).
        strategy: ``default``, ``mirrored`` or ``multiworker`` (TF_CONFIG).
        jit_compile: XLA. Off by default: each new batch shape costs a
            compile of its own (its speed: docs/benchmarks.md, "Training
            throughput").
        seed: seeds weight initialisation and dropout (``keras.utils.set_random_seed``).
        hotspot_images: discs of the validation split whose hotspots (every
            trained task) TensorBoard shows as images (0: none).
        hotspot_images_every: epochs between those images.
        hotspot_image_augmentations: augmented copies per image hotspot.
        init_from: start from another model's weights (a ``.keras`` file or
            a run directory: its best model) instead of random ones: every
            layer whose name and weight shapes match is copied, except the
            mean subtraction (this data's mean stays); e.g. a model
            pre-trained on the phantom, fine-tuned on real discs. The run
            folder's ``init.json`` lists the layers copied and left.
        ordinal_tasks: tasks trained on soft ordinal labels
            (``losses.MaskedSoftOrdinalCrossentropy``), e.g. ``('pfirrmann',)``.
    """

    epochs: int = 1000
    optimizer: str = "sgd"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_factor: float = 0.1
    lr_patience: int = 20
    min_learning_rate: float = 1e-6
    early_stopping_patience: int = 60
    task_weights: typing.Optional[dict] = None
    strategy: str = "default"
    jit_compile: bool = False
    seed: int = 0
    hotspot_images: int = 4
    hotspot_images_every: int = 5
    hotspot_image_augmentations: int = 16
    init_from: typing.Optional[str] = None
    ordinal_tasks: tuple = ()

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, "
                              f"not {self.optimizer!r}")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything a training run needs.

    The pipeline's augmentation is the one the model's input mode allows
    (``AugmentConfig.for_input_slices``): made with ``model.input_slices=1``,
    the config holds (and a run saves) ``shift_slices`` 0 and
    ``flip_probability`` 0.
    """

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    pipeline: PipelineConfig = PipelineConfig()
    train: TrainConfig = TrainConfig()

    def __post_init__(self):
        augmentation = self.pipeline.augmentation.for_input_slices(self.model.input_slices)
        if augmentation != self.pipeline.augmentation:
            # frozen: the one place the input mode's augmentation rule is applied
            object.__setattr__(self, "pipeline", dataclasses.replace(
                self.pipeline, augmentation=augmentation))


def to_dict(config):
    """Plain nested dict (JSON-ready)."""
    return dataclasses.asdict(config)


def from_dict(cls, values):
    """Builds dataclass ``cls`` from a nested dict, checking the keys; what the dict leaves
    out keeps its default.

    Raises:
        ConfigError: naming an unknown key and the known ones.
    """
    return _merged(cls(), values)


def _merged(config, values):
    """``config`` with the settings of a nested dict (e.g. a JSON file's) put over it."""
    fields = {f.name for f in dataclasses.fields(config)}
    changes = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown setting {type(config).__name__}.{key}; known: "
                              f"{', '.join(fields)}")
        current = getattr(config, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            value = _merged(current, value)
        elif isinstance(value, list):
            value = tuple(value)
        changes[key] = value
    return dataclasses.replace(config, **changes)


def save(config, path):
    """Writes the config as JSON, atomically."""
    write_json(path, to_dict(config), indent=2, sort_keys=True)


def load(path):
    """Reads an ExperimentConfig from JSON (any subset of the keys)."""
    with open(path, encoding="utf-8") as f:
        return from_dict(ExperimentConfig, json.load(f))


def override(config, assignments):
    """Applies ``section.key=value`` strings (Python literals; bare words are strings).

    Example: ``override(c, ["train.epochs=5", "model.branch_point=fc6",
    "train.task_weights={'pfirrmann': 1}"])``.
    """
    values = to_dict(config)
    for assignment in assignments:
        if "=" not in assignment:
            raise ConfigError(f"override {assignment!r} is not section.key=value")
        path, text = assignment.split("=", 1)
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        node = values
        keys = path.strip().split(".")
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                raise ConfigError(f"unknown setting section {path!r}")
            node = node[key]
        if keys[-1] not in node:
            raise ConfigError(f"unknown setting {path!r}; known here: {', '.join(node)}")
        node[keys[-1]] = value
    return from_dict(ExperimentConfig, values)


PRESETS = {
    "paper": (),
    "demo": ("model.width=0.125", "pipeline.batch_size=32",
             "train.epochs=40", "train.learning_rate=0.01", "train.lr_patience=10",
             "train.early_stopping_patience=0"),
    "spider": ("data.config='spider_slices'", "model.input_slices=1", "model.task_set='spider'",
               "model.width=0.25", "model.branch_point='fc6'", "pipeline.batch_size=32",
               "train.epochs=300", "train.learning_rate=0.003", "train.lr_patience=30",
               "train.early_stopping_patience=0", "train.hotspot_images=0"),
}
"""Named experiments, as ``section.key=value`` overrides of the defaults.

``paper``: the paper's settings (the defaults). ``demo``: what ``spine-tf demo``
trains: a width-0.125 model, batch 32, 40 epochs at 10x the paper's learning rate
(the paper trains for ~1000 epochs), quicker learning-rate drops and no early
stopping. Its data is the default (``phantom_small``); the demo trains it on the
``folder`` dataset it builds from its cohort. ``spider``: the best single network
for real single slices (``spider_slices``, give ``data.manual_dir``): a 1-slice
model of the ``spider`` task set, width 0.25 branching after fc6 (15.6 MB of
weights), 300 epochs at learning rate 0.003, cut tenfold after 30 epochs without a
better validation loss; the width, branch point and this schedule were chosen on
the validation split (docs/results/grading.md). At the demo's rate (0.01, 60
epochs) the model did not fit its own training discs. The shipped grading model is
two of these branching after fc7 (8.6 MB each), seeds 0 and 1, averaged by
``spine-tf ensemble``: within 25 MB, that did best on validation.
"""


def preset(name="paper", config_path=None, assignments=()):
    """The ExperimentConfig of preset ``name``, then a JSON config file's settings over it,
    then ``section.key=value`` overrides (``spine-tf train --preset --config --set``).

    Example:
        config = preset("demo", assignments=["data.data_dir='out/tfds'"])

    Raises:
        ConfigError: an unknown preset (naming the known ones) or setting.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    config = override(ExperimentConfig(), PRESETS[name])
    if config_path:
        with open(config_path, encoding="utf-8") as f:
            config = _merged(config, json.load(f))
    return override(config, list(assignments))


__all__ = ["AugmentConfig", "ConfigError", "DataConfig", "ExperimentConfig", "INPUT_SLICES",
           "ModelConfig", "OPTIMIZERS", "PipelineConfig", "PRESETS", "STRATEGIES", "TrainConfig",
           "from_dict", "load", "override", "preset", "save", "to_dict"]
