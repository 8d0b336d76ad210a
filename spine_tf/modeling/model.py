"""SpineNet: a VGG-M trunk on 112 x 224 x 9 disc volumes, one head per task.

The network is VGG-M "1024" with 9-channel input and no local response
normalisation (docs/design.md, "Model"). It branches into one tower per task at
``branch_point``: every layer after it is duplicated per task, and each task
ends in its own logits layer (``fc8``) named after the task. Outputs are a
list in the order of the model's task set (``ModelConfig.task_set``, a
``spine_tf.tasks.TaskSet``; ``task_set(model)`` reads it back from the output
names): Keras 3 would sort a dict alphabetically, and tf-keras-vis needs list
outputs.

Field of view: with "valid" conv1/conv2 and 2x2 pools, the 2 x 6 grid that
fc6 reads is computed from a 97 x 209 window of the input; the other 15 rows
and 15 columns never reach any output. Left to itself that window would sit at
the top left and leave out the far part of the lower vertebral body (about 4
mm), so the model crops the input to the centred 97 x 209 window first
(``CENTRE_CROP``): both bodies lose the same thin far margin, and the parameter
count stays the paper's.

Input mode (``ModelConfig.input_slices``): a 9-slice model reads the whole
volume; a 1-slice model, for data with one sagittal slice per disc, keeps only
the centre slice (``CentreSlice``, its first layer) and its conv1 has one
input channel. Both take the same (batch, 112, 224, 9) ``disc_volume``, so
every pipeline, TTA, hotspot and serving signature fits either;
``input_slices(model)`` reads the mode back from a built or loaded model.

Example:
    model = build_model(width=0.125)          # a small model for tests
    logits = model(np.zeros((2, 112, 224, 9), np.float32))
    [l.shape for l in logits]                 # [(2, 5), (2, 4), (2, 2), ...]
"""

import dataclasses

import keras
import numpy as np

from spine_tf import tasks
from spine_tf.config import ModelConfig
from spine_tf.io.atomic import atomic_path
from spine_tf.modeling.shipped import model_file
from spine_tf.tasks import VOLUME_SHAPE

# (name, kind, units or filters, kernel, stride, pool after) of VGG-M 1024.
# Padding: conv1 and conv2 "valid", conv3-5 "same"; 2x2 max-pools.
_LAYERS = (
    ("conv1", "conv", 96, 7, 2, True),
    ("conv2", "conv", 256, 5, 2, True),
    ("conv3", "conv", 512, 3, 1, False),
    ("conv4", "conv", 512, 3, 1, False),
    ("conv5", "conv", 512, 3, 1, True),
    ("fc6", "dense", 4096, None, None, False),
    ("fc7", "dense", 1024, None, None, False),
)
LAYER_NAMES = tuple(layer[0] for layer in _LAYERS)
# ((top, bottom), (left, right)) input rows / columns outside the window the
# trunk above can see (see the module docstring); test_model checks it.
CENTRE_CROP = ((7, 8), (7, 8))
BRANCH_POINTS = LAYER_NAMES + ("none",)
CENTRE_SLICE = VOLUME_SHAPE[-1] // 2
"""The index of the mid-sagittal slice of a disc volume (4), what a 1-slice model reads."""


@keras.saving.register_keras_serializable(package="spine_tf")
class CentreSlice(keras.layers.Layer):
    """Keeps one slice of disc volumes: (batch, rows, cols, 9) -> (batch, rows, cols, 1).

    The first layer of a 1-slice model (``ModelConfig.input_slices``).

    Args:
        index: the slice kept (default ``CENTRE_SLICE``).
    """

    def __init__(self, index=CENTRE_SLICE, **kwargs):
        super().__init__(**kwargs)
        self.index = index

    def call(self, inputs):
        return inputs[..., self.index:self.index + 1]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (1,)

    def get_config(self):
        config = super().get_config()
        config.update({"index": self.index})
        return config


@keras.saving.register_keras_serializable(package="spine_tf")
class ChannelMeanSubtraction(keras.layers.Layer):
    """Subtracts a stored per-channel (per-slice) mean from the input.

    The mean is computed on the training split (``set_mean``) and saved with
    the model, so serving needs no outside statistics.

    Args:
        channels: number of input channels.
    """

    def __init__(self, channels=VOLUME_SHAPE[-1], **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.mean = self.add_weight(name="mean", shape=(channels,), initializer="zeros",
                                    trainable=False)

    def set_mean(self, mean):
        """Stores ``mean``: one value per channel.

        A 1-channel layer (a 1-slice model's) also takes the 9 per-slice
        means of whole disc volumes (what training measures) and keeps the
        centre slice's.
        """
        mean = np.asarray(mean, np.float32).reshape(-1)
        if self.channels == 1 and mean.shape == (VOLUME_SHAPE[-1],):
            mean = mean[CENTRE_SLICE:CENTRE_SLICE + 1]
        self.mean.assign(mean.reshape(self.channels))

    def call(self, inputs):
        return inputs - keras.ops.cast(self.mean, inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels})
        return config


def _scaled(units, width):
    return max(1, int(round(units * width)))


def _block(x, spec, width, dropout, prefix=""):
    name, kind, units, kernel, stride, pool = spec
    init = keras.initializers.HeNormal()
    if kind == "conv":
        padding = "valid" if name in ("conv1", "conv2") else "same"
        x = keras.layers.Conv2D(_scaled(units, width), kernel, strides=stride, padding=padding,
                                activation="relu", kernel_initializer=init,
                                name=prefix + name)(x)
        if pool:
            x = keras.layers.MaxPooling2D(2, name=prefix + name + "_pool")(x)
    else:
        if len(x.shape) == 4:
            x = keras.layers.Flatten(name=prefix + name + "_flatten")(x)
        x = keras.layers.Dense(_scaled(units, width), activation="relu", kernel_initializer=init,
                               name=prefix + name)(x)
        x = keras.layers.Dropout(dropout, name=prefix + name + "_dropout")(x)
    return x


def build_model(config=ModelConfig(), width=None, branch_point=None, input_slices=None,
                task_set=None, name="spinenet"):
    """Builds the multi-task SpineNet as a Keras functional model.

    Args:
        config: ModelConfig; ``width`` / ``branch_point`` / ``input_slices`` /
            ``task_set`` (a name) override it.
        name: model name.

    Returns:
        ``keras.Model`` mapping ``disc_volume`` (batch, 112, 224, 9) to a list
        of logits, one (batch, classes) tensor per task of its task set, in
        order; output ``i`` is named after task ``i``. A 1-slice model's
        first layer is ``centre_slice`` and its mean subtraction has one channel.

    Raises:
        ValueError: an unknown branch point.
        ConfigError: ``input_slices`` other than 9 or 1.
    """
    overrides = (("width", width), ("branch_point", branch_point),
                 ("input_slices", input_slices), ("task_set", task_set))
    config = dataclasses.replace(config, **{k: v for k, v in overrides if v is not None})
    if config.branch_point not in BRANCH_POINTS:
        raise ValueError(f"branch_point {config.branch_point!r} is not one of "
                         f"{', '.join(BRANCH_POINTS)}")
    inputs = keras.Input(shape=VOLUME_SHAPE, name=tasks.INPUT_NAME)
    x = inputs
    if config.input_slices == 1:
        x = CentreSlice(name="centre_slice")(x)
    x = ChannelMeanSubtraction(config.input_slices, name="mean_subtraction")(x)
    x = keras.layers.Cropping2D(CENTRE_CROP, name="centre_crop")(x)
    shared = 0 if config.branch_point == "none" else LAYER_NAMES.index(config.branch_point) + 1
    for spec in _LAYERS[:shared]:
        x = _block(x, spec, config.width, config.dropout)
    outputs = []
    for task in tasks.task_set(config.task_set).tasks:
        y = x
        for spec in _LAYERS[shared:]:
            y = _block(y, spec, config.width, config.dropout, prefix=f"{task.name}_")
        outputs.append(keras.layers.Dense(task.num_classes, kernel_initializer="he_normal",
                                          name=task.name)(y))
    return keras.Model(inputs, outputs, name=name)


def ensemble(members, name="spinenet_ensemble"):
    """One model whose logits are the mean of several SpineNet models' logits.

    Each member is copied in whole (weights, mean subtraction, input mode)
    with its layers renamed ``member<i>_<name>``; output ``i`` is an
    ``Average`` layer named after task ``i``, so the result is graded,
    explained, exported and served as any single model is. Members trained
    with other seeds make errors of their own, and their mean varies less
    from one training to the next than any one of them.

    Args:
        members: built or loaded SpineNet models of one task set and one
            input mode (their widths and branch points may differ).

    Raises:
        ValueError: fewer than two members, or members of another task set or
            input mode than the first.
    """
    members = list(members)
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least two members, not {len(members)}")
    first = members[0]
    for index, member in enumerate(members[1:], 1):
        if list(member.output_names) != list(first.output_names):
            raise ValueError(f"member {index} grades {', '.join(member.output_names)}, not "
                             f"{', '.join(first.output_names)} as member 0 does")
        if input_slices(member) != input_slices(first):
            raise ValueError(f"member {index} reads {input_slices(member)} slice(s), member 0 "
                             f"{input_slices(first)}")
    inputs = keras.Input(shape=VOLUME_SHAPE, name=tasks.INPUT_NAME)
    outputs = []
    for index, member in enumerate(members):
        prefix = f"member{index}_"

        def renamed(layer):
            return layer.__class__.from_config({**layer.get_config(),
                                                "name": prefix + layer.name})
        copy = keras.models.clone_model(member, input_tensors=inputs, clone_function=renamed)
        for source in member.layers:
            if source.weights:
                copy.get_layer(prefix + source.name).set_weights(source.get_weights())
        outputs.append(copy.outputs)
    return keras.Model(inputs, [keras.layers.Average(name=task)(list(logits))
                                for task, logits in zip(first.output_names, zip(*outputs))],
                       name=name)


def save_ensemble(members, path):
    """``ensemble(members)`` written to ``path`` (a ``.keras`` file, through a temporary
    name); returns it.

    Raises:
        ValueError: as ``ensemble``.
    """
    model = ensemble(members)
    with atomic_path(path) as tmp:
        model.save(tmp)
    return model


def load_model(path):
    """Loads a saved SpineNet ``.keras`` model (or ``"shipped"``) for inference (grading,
    hotspots, export).

    The training state (optimizer, loss, metrics) is not restored: a model
    saved during training loads without spine_tf's loss and metric classes.
    ``train`` resumes runs through BackupAndRestore, not through this.
    """
    return keras.saving.load_model(model_file(path), compile=False)


def mean_subtraction(model):
    """The model's ChannelMeanSubtraction layer."""
    return model.get_layer("mean_subtraction")


def channel_means(model):
    """The mean every ``ChannelMeanSubtraction`` of a model subtracts: one (channels,)
    array for a single model, one per member for an ``ensemble``."""
    return [layer.mean.numpy() for layer in model.layers
            if isinstance(layer, ChannelMeanSubtraction)]


def task_set(model):
    """The ``tasks.TaskSet`` a built or loaded SpineNet model grades (from its output
    names).

    Raises:
        ValueError: the outputs are not a task set's.
    """
    return tasks.task_set_of(model.output_names)


def input_slices(model):
    """The input mode of a built or loaded SpineNet model (``ModelConfig.input_slices``).

    Returns:
        1 when the model keeps only the centre slice (it has a ``CentreSlice``
        layer), else 9.
    """
    return 1 if any(isinstance(layer, CentreSlice) for layer in model.layers) else 9
