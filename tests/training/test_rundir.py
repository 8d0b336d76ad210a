"""The run folder's file names, in one place."""

import os

from spine_tf.training.rundir import RunDir


def test_run_folder_files():
    run = RunDir(os.path.join("runs", "a"))
    assert os.fspath(run) == os.path.join("runs", "a")
    assert run.config == os.path.join("runs", "a", "config.json")
    assert run.best_model == os.path.join("runs", "a", "best.keras")
    assert run.final_model == os.path.join("runs", "a", "final.keras")
    assert run.hotspot_images == os.path.join("runs", "a", "tensorboard", "hotspots")
    assert run.file("x.keras") == os.path.join("runs", "a", "x.keras")


def test_evaluation_folder_names_carry_the_data_overrides():
    run = RunDir("r")
    assert run.evaluation("test") == os.path.join("r", "evaluation_test")
    assert run.evaluation("all", ("patients=500", "seed=1")) == \
        os.path.join("r", "evaluation_patients500_seed1_all")
    assert run.evaluation("train[:10%]") == os.path.join("r", "evaluation_train_10")
    assert run.hotspots("validation") == os.path.join("r", "hotspots_validation")
