"""Training runs: run directory, resumption after a kill, single-task, configs."""

import csv
import io
import json
import os
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from spine_tf import config as config_lib
from spine_tf import tasks
from spine_tf.training import callbacks, train

# Five phantom patients of seed 24 fall into all three splits (3 train).
BASE = ["data.patients=5", "data.seed=24", "data.workers=2", "model.width=0.0625",
        "pipeline.batch_size=8", "train.epochs=2"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return os.fspath(tmp_path_factory.mktemp("tfds"))


def _config(data_dir, *more):
    return config_lib.override(config_lib.ExperimentConfig(),
                               BASE + [f"data.data_dir={data_dir!r}", *more])


def test_run_directory(data_dir, tmp_path):
    config = _config(data_dir, "train.hotspot_images=2", "train.hotspot_images_every=1",
                     "train.hotspot_image_augmentations=2")
    run = os.fspath(tmp_path / "run")
    start = time.perf_counter()
    model, history = train.train(config, run, verbose=0)
    assert 0 < train.training_seconds(run) < time.perf_counter() - start
    assert config_lib.load(os.path.join(run, "config.json")) == config
    with open(os.path.join(run, "history.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for column in ("pfirrmann_loss", "val_marrow_lower_balanced_accuracy",
                   "val_mean_balanced_accuracy", "learning_rate"):
        assert column in rows[0]
    assert float(rows[0]["learning_rate"]) == pytest.approx(1e-3)
    best = keras.saving.load_model(os.path.join(run, "best.keras"))
    assert len(best.outputs) == 6
    events = [f for _, _, files in os.walk(os.path.join(run, "tensorboard")) for f in files]
    assert any(f.startswith("events.out.tfevents") for f in events)
    folder = os.path.join(run, "tensorboard", "hotspots")
    images = sorted((value.tag, event.step) for name in os.listdir(folder)
                    for event in tf.compat.v1.train.summary_iterator(os.path.join(folder, name))
                    for value in event.summary.value)
    assert images == sorted((f"hotspots/{t}", step) for t in tasks.TASK_NAMES for step in (0, 1))
    with open(os.path.join(run, "statistics.json"), encoding="utf-8") as f:
        statistics = json.load(f)
    np.testing.assert_allclose(
        train.model_lib.mean_subtraction(model).mean.numpy(), statistics["channel_mean"],
        rtol=1e-6)
    assert not os.path.exists(os.path.join(run, "backup"))  # removed when a run completes


class _Kill(keras.callbacks.Callback):
    """Stops a run like a kill would: an exception in the middle of an epoch."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            raise KeyboardInterrupt("killed")


def test_killed_run_resumes_and_ends_where_an_uninterrupted_run_ends(data_dir, tmp_path):
    config = _config(data_dir, "train.epochs=3")
    whole, _ = train.train(config, os.fspath(tmp_path / "whole"), verbose=0)
    run = os.fspath(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        train.train(config, run, extra_callbacks=[_Kill(epoch=1, batch=1)], verbose=0)
    assert os.path.exists(os.path.join(run, "backup", "training_metadata.json"))
    resumed, history = train.train(config, run, verbose=0)
    assert len(history["loss"]) == 2  # epochs 1 and 2 ran again, epoch 0 was restored
    for a, b in zip(whole.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)  # bit for bit


def test_single_task_training_moves_only_its_head(data_dir, tmp_path):
    config = _config(data_dir, "train.epochs=1", "train.task_weights={'narrowing': 1.0}")
    trained, history = train.train(config, os.fspath(tmp_path / "single"), verbose=0)
    assert history["val_mean_balanced_accuracy"][0] == pytest.approx(
        history["val_narrowing_balanced_accuracy"][0])
    keras.utils.set_random_seed(config.train.seed)  # the same initial weights as the run
    initial = train.build_compiled_model(config, np.zeros(9, np.float32))
    steps = int(trained.optimizer.iterations.numpy())
    decay = (1 - config.train.learning_rate * config.train.weight_decay) ** steps
    for name in ("pfirrmann", "endplate_upper", "marrow_lower"):
        # no gradient reaches an untrained head: only weight decay shrinks it
        np.testing.assert_allclose(trained.get_layer(name).kernel.numpy(),
                                   initial.get_layer(name).kernel.numpy() * decay, rtol=1e-5,
                                   atol=1e-7)
    moved = np.abs(trained.get_layer("narrowing").kernel.numpy()
                   - initial.get_layer("narrowing").kernel.numpy()).max()
    assert moved > 1e-3


def test_evaluate_on_another_cohort(data_dir, tmp_path, capsys):
    from spine_tf import cli
    run = os.fspath(tmp_path / "run")
    train.train(_config(data_dir, "train.epochs=1"), run, verbose=0)
    # a fresh cohort (seed 25, 3 patients), every split of it: no patient seen in training
    assert cli.main(["evaluate", "--run-dir", run, "--data", "patients=3", "--data", "seed=25",
                     "--split", "all", "--no-tta"]) == 0
    out = os.path.join(run, "evaluation_patients3_seed25_all")
    assert out in capsys.readouterr().out
    with open(os.path.join(out, "evaluation.json"), encoding="utf-8") as f:
        result = json.load(f)
    assert result["data"] == ["patients=3", "seed=25"]
    assert result["split"] == "all" and result["interval"]["patients"] == 3
    with open(os.path.join(out, "predictions.csv"), encoding="utf-8") as f:
        patients = {row["patient_id"] for row in csv.DictReader(f)}
    assert patients == {"ph25-00000", "ph25-00001", "ph25-00002"}
    # the run itself still names its own data
    assert config_lib.load(os.path.join(run, "config.json")).data.seed == 24


def test_config_overrides_and_errors(tmp_path):
    config = config_lib.override(config_lib.ExperimentConfig(), [
        "model.branch_point=fc6", "train.epochs=7", "pipeline.augmentation.rotation_deg=5.0",
        "data.swap_validation_test=True"])
    assert config.model.branch_point == "fc6" and config.train.epochs == 7
    assert config.pipeline.augmentation.rotation_deg == 5.0
    assert config.data.validation_split == "test" and config.data.test_split == "validation"
    path = os.fspath(tmp_path / "c.json")
    config_lib.save(config, path)
    assert config_lib.load(path) == config
    with pytest.raises(KeyError, match="epoch"):
        config_lib.override(config, ["train.epoch=3"])
    with pytest.raises(ValueError, match="strategy"):
        train.make_strategy("horovod")


def test_the_optimizer_setting_picks_sgd_or_adamw():
    def first_step(name):
        train_config = config_lib.TrainConfig(optimizer=name, learning_rate=0.01,
                                              weight_decay=0.0)
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
        model.layers[0].kernel.assign([[1.0], [1.0]])
        model.compile(optimizer=train.make_optimizer(train_config), loss="mse")
        # gradients 2 * x * (w.x - 0): 200 and 0.02, four orders of magnitude apart
        model.train_on_batch(np.array([[100.0, 0.01]]), np.zeros((1, 1)))
        return 1.0 - model.layers[0].kernel.numpy()[:, 0]

    # SGD moves each weight by the rate times its gradient; Adam's first step is the rate
    # itself for every weight with a gradient, however small
    np.testing.assert_allclose(first_step("sgd"), [0.01 * 2 * 100 * 100.01,
                                                   0.01 * 2 * 0.01 * 100.01], rtol=1e-4)
    np.testing.assert_allclose(first_step("adamw"), [0.01, 0.01], rtol=1e-3)
    with pytest.raises(config_lib.ConfigError, match="train.optimizer must be one of sgd, "
                                                     "adamw, not 'adam'"):
        config_lib.override(config_lib.ExperimentConfig(), ["train.optimizer='adam'"])


def _replay_live(values, lrs):
    """ReduceLROnPlateau and EarlyStopping fed the epochs live, as in a run."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", mode="min", factor=0.5,
                                                patience=2, cooldown=1)
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", mode="min", patience=3)
    for callback in (plateau, stopper):
        callback.set_model(model)
        callback.on_train_begin()
    for epoch, value in enumerate(values):
        lrs.append(float(model.optimizer.learning_rate.numpy()))
        for callback in (plateau, stopper):
            callback.on_epoch_end(epoch, {"val_loss": value})
    return plateau, stopper


def test_resumed_callback_state_equals_the_live_state():
    values = [1.0, 0.9, 0.95, 0.97, 0.96, 0.85, 0.9, 0.91, 0.92]
    lrs = []
    live_plateau, live_stopper = _replay_live(values, lrs)
    rows = [{"epoch": str(e), "val_loss": str(v), "learning_rate": str(lr)}
            for e, (v, lr) in enumerate(zip(values, lrs))]
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", mode="min", factor=0.5,
                                                patience=2, cooldown=1)
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", mode="min", patience=3)
    for callback in (plateau, stopper):
        callback.on_train_begin()  # as fit does: reset, then the resumed state
    callbacks.ResumedCallbackState(rows, plateau, stopper).on_train_begin()
    assert (plateau.best, plateau.wait, plateau.cooldown_counter) == \
        (live_plateau.best, live_plateau.wait, live_plateau.cooldown_counter)
    assert (stopper.best, stopper.wait, stopper.best_epoch) == \
        (live_stopper.best, live_stopper.wait, live_stopper.best_epoch)
    assert live_plateau.wait > 0 or live_plateau.cooldown_counter > 0  # a non-trivial state


def test_learning_rate_reductions_stop_at_the_floor(tmp_path):
    config = config_lib.override(config_lib.ExperimentConfig(), [
        "train.lr_patience=1", "train.lr_factor=0.1", "train.min_learning_rate=0.0002"])
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    plateau, = [c for c in train.callbacks(config, os.fspath(tmp_path), ["pfirrmann"])
                if isinstance(c, keras.callbacks.ReduceLROnPlateau)]
    plateau.set_model(model)
    plateau.on_train_begin()
    for epoch in range(6):  # the loss never improves: 1e-3 -> 1e-4 without the floor
        plateau.on_epoch_end(epoch, {"val_loss": 1.0})
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(2e-4)


def test_resuming_with_other_settings_is_refused(data_dir, tmp_path):
    run = os.fspath(tmp_path / "run")
    os.makedirs(run)
    config_lib.save(_config(data_dir), os.path.join(run, "config.json"))
    with pytest.raises(ValueError, match="model.width: 0.0625 -> 0.125"):
        train.train(_config(data_dir, "model.width=0.125"), run, verbose=0)


class _RecordingModel:
    """Stands in for a Keras model: ``save`` writes the epoch's tag, or fails."""

    def __init__(self):
        self.tag, self.fail = "", False

    def save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.tag)
        if self.fail:
            raise OSError("disk full")


def test_best_model_saves_improvements_only_and_atomically(tmp_path):
    path = os.fspath(tmp_path / "best.keras")
    callback = callbacks.BestModel(path, best=0.4)
    model = _RecordingModel()
    callback.set_model(model)
    for epoch, value in enumerate((0.3, 0.5, 0.45, None, 0.6)):
        model.tag = f"epoch {epoch}"
        callback.on_epoch_end(epoch, {} if value is None else {callbacks.MONITOR: value})
        if epoch == 0:
            assert not os.path.exists(path)  # 0.3 does not beat the resumed best 0.4
    assert callback.best == 0.6
    assert open(path, encoding="utf-8").read() == "epoch 4"
    model.tag, model.fail = "half written", True
    with pytest.raises(OSError):
        callback.on_epoch_end(5, {callbacks.MONITOR: 0.9})
    assert open(path, encoding="utf-8").read() == "epoch 4"
    assert callback.best == 0.6
    assert os.listdir(tmp_path) == ["best.keras"]


def test_epoch_line_prints_one_short_line_per_epoch():
    stream = io.StringIO()
    line = callbacks.EpochLine(40, stream=stream)
    line.on_epoch_begin(2)
    line.on_epoch_end(2, {"loss": 4.2134, "val_loss": 4.38, "mean_balanced_accuracy": 0.4121,
                          "val_mean_balanced_accuracy": 0.3879, "learning_rate": 0.01,
                          "pfirrmann_balanced_accuracy": 0.5})
    text = stream.getvalue()
    assert text.startswith("epoch  3/40  loss 4.213 / 4.380  balanced accuracy 0.412 / 0.388  "
                           "lr 1.0e-02  ")
    assert text.endswith(" s\n") and text.count("\n") == 1 and "pfirrmann" not in text
    line.on_epoch_end(3, {"loss": 1.0})  # no validation, no rate: dashes, no lr
    second = stream.getvalue().splitlines()[1]
    assert second.startswith("epoch  4/40  loss 1.000 / -  balanced accuracy - / -  ")
    assert "lr" not in second
