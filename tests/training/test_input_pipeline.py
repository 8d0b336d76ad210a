"""The tf.data pipelines on a small phantom spine_discs dataset."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from spine_tf import augment, tasks
from spine_tf.io import codec
from spine_tf.training import input_pipeline
from spine_tf.data import spine_discs


@pytest.fixture(scope="module")
def train_split(tmp_path_factory):
    builder = spine_discs.builder(spine_discs.phantom_config(5, seed=3),
                                  data_dir=str(tmp_path_factory.mktemp("tfds")), workers=2)
    builder.download_and_prepare()
    return builder.as_dataset(split="train")


def _raw_labels(split):
    return {name: np.array([int(e["labels"][name]) for e in split.as_numpy_iterator()])
            for name in tasks.TASK_NAMES}


def test_training_statistics(train_split):
    weights, mean = input_pipeline.training_statistics(train_split)
    labels = _raw_labels(train_split)
    for task in tasks.TASKS:
        expected = input_pipeline.class_weights(labels[task.name], task.num_classes)
        np.testing.assert_allclose(weights[task.name], expected)
    volumes = np.stack([codec.from_stored(e["disc_volume"]).numpy()
                        for e in train_split.as_numpy_iterator()])
    np.testing.assert_allclose(mean, volumes.mean(axis=(0, 1, 2)), rtol=1e-4)
    assert 0.2 < mean[4] < 0.7  # middle slice: bodies at 0.5, discs brighter or darker


def test_training_pipeline_structure_weights_and_augmentation(train_split):
    weights, _ = input_pipeline.training_statistics(train_split)
    config = input_pipeline.PipelineConfig(batch_size=8, seed=1)
    data = input_pipeline.training_dataset(train_split, weights, config)
    volumes, labels, sample_weights = next(iter(data))
    assert volumes.shape == (8, 112, 224, 9) and volumes.dtype == tf.float32
    assert len(labels) == len(sample_weights) == len(tasks.TASKS)
    for task, label, weight in zip(tasks.TASKS, labels, sample_weights):
        expected = np.where(label.numpy() >= 0,
                            weights[task.name][np.maximum(label.numpy(), 0)], 0.0)
        np.testing.assert_allclose(weight.numpy(), expected, rtol=1e-6)
    # augmented: no batch element equals any stored volume
    stored = [codec.from_stored(e["disc_volume"]).numpy()
              for e in train_split.as_numpy_iterator()]
    assert min(np.abs(volumes[0].numpy() - s).mean() for s in stored) > 1e-3
    # seeded: the same config gives the same first batch; the next epoch differs
    again = next(iter(input_pipeline.training_dataset(train_split, weights, config)))[0]
    np.testing.assert_allclose(again.numpy(), volumes.numpy())
    # the stream runs epoch after epoch; epoch 1 differs from epoch 0, and a
    # stream started at epoch 1 (a resumed run) gives epoch 1's batches exactly
    steps = input_pipeline.steps_per_epoch(train_split, 8)
    stream = list(data.take(2 * steps).as_numpy_iterator())
    assert not np.allclose(stream[0][0], stream[steps][0])
    resumed = input_pipeline.training_dataset(train_split, weights, config, initial_epoch=1)
    for expected, got in zip(stream[steps:], resumed.take(steps).as_numpy_iterator()):
        np.testing.assert_allclose(got[0], expected[0])
        for a, b in zip(got[1], expected[1]):
            np.testing.assert_array_equal(a, b)


def test_evaluation_pipeline_is_plain_and_ordered(train_split):
    weights, _ = input_pipeline.training_statistics(train_split)
    data = input_pipeline.evaluation_dataset(train_split, weights, batch_size=4)
    first = next(iter(data))[0].numpy()
    stored = [codec.from_stored(e["disc_volume"]).numpy()
              for e in train_split.take(4).as_numpy_iterator()]
    np.testing.assert_allclose(first, np.stack(stored))
    none = input_pipeline.PipelineConfig(batch_size=4, augmentation=augment.NONE, cache=False)
    plain = next(iter(input_pipeline.training_dataset(train_split, weights, none)))[0].numpy()
    shuffled = [codec.from_stored(e["disc_volume"]).numpy()
                for e in train_split.as_numpy_iterator()]
    for volume in plain:  # unaugmented training batches hold stored volumes
        assert min(np.abs(volume - s).max() for s in shuffled) < 1e-6


@pytest.mark.parametrize("global_seed", [0, 7])
def test_training_stream_ignores_a_global_seed(train_split, global_seed):
    """keras.utils.set_random_seed(0) must neither break the stream nor change it."""
    weights, _ = input_pipeline.training_statistics(train_split)
    config = input_pipeline.PipelineConfig(batch_size=8, seed=1)
    tf.random.set_seed(None)
    reference = next(iter(input_pipeline.training_dataset(train_split, weights, config)))[0]
    tf.random.set_seed(global_seed)
    try:
        seeded = next(iter(input_pipeline.training_dataset(train_split, weights, config)))[0]
    finally:
        tf.random.set_seed(None)
    np.testing.assert_array_equal(seeded.numpy(), reference.numpy())


def test_mirrored_volumes_swap_the_upper_and_lower_labels(train_split):
    assert tasks.MIRRORED == (0, 1, 3, 2, 5, 4)
    weights, _ = input_pipeline.training_statistics(train_split)
    mirror_only = dataclasses.replace(augment.NONE, mirror_probability=1.0)
    config = input_pipeline.PipelineConfig(batch_size=4, augmentation=mirror_only, seed=2)
    stored = [(codec.from_stored(e["disc_volume"]).numpy(),
               [int(e["labels"][name]) for name in tasks.TASK_NAMES])
              for e in train_split.as_numpy_iterator()]
    epoch = input_pipeline.training_dataset(train_split, weights, config).take(
        input_pipeline.steps_per_epoch(train_split, 4))
    one_sided = 0
    for volumes, labels, _ in epoch.as_numpy_iterator():
        for b, volume in enumerate(volumes):
            # every volume is a stored one upside down (rows reversed about the centre) ...
            source = min(stored, key=lambda s: np.abs(volume - s[0][::-1]).max())
            np.testing.assert_allclose(volume, source[0][::-1], atol=1e-5)
            # ... labelled with the upper and lower lesions swapped
            assert [int(label[b]) for label in labels] == [source[1][j] for j in tasks.MIRRORED]
            one_sided += source[1][2] != source[1][3] or source[1][4] != source[1][5]
    assert one_sided >= 1  # discs whose swap changes the labels were among them
