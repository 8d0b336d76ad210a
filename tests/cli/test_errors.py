"""spine-tf's one error handler: a SpineTFError from any command is one line on stderr and
exit status 1; argument problems are UsageErrors; library errors need no catch of their own."""

import os
import subprocess
import sys

import pytest

from spine_tf import cli
from spine_tf.errors import SpineTFError, UsageError


def test_a_library_error_is_one_stderr_line_and_exit_status_1(tmp_path):
    missing = os.fspath(tmp_path / "MISSING.nii.gz")
    code = ("import sys; from spine_tf import cli; "
            "sys.exit(cli.main(['predict', sys.argv[1], '--model', 'x', '--out', 'y']))")
    done = subprocess.run([sys.executable, "-c", code, missing], capture_output=True,
                          encoding="utf-8", errors="replace", timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == f"spine-tf predict: error: {missing}: no such file or folder\n"
    assert not (tmp_path / "y").exists()


def test_main_raises_exit_status_1_with_the_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["predict", os.fspath(tmp_path / "absent"), "--model", "x", "--out", "y"])
    assert exit_info.value.code == 1
    assert isinstance(exit_info.value.__cause__, SpineTFError)
    err = capsys.readouterr().err
    assert err.splitlines() == [str(exit_info.value)]
    assert err.startswith("spine-tf predict: error: ") and "absent: no such file" in err


@pytest.mark.parametrize("argv, message", [
    (["predict", "scan.nii.gz", "--model", "x", "--out", "y", "--augmentations", "0"],
     "--augmentations must be at least 1"),
    (["hotspots", "--model", "m.keras"], "give a SCAN"),
    (["hotspots", "scan.nii.gz"], "--model or --run-dir is needed"),
    (["sweep", "--out", "sweep", "--repeats", "0"], "--repeats must be at least 1"),
    (["build-data", "--config", "spider"], "--manual-dir is needed for spider"),
])
def test_argument_problems_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit, match=message) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 1
    assert isinstance(exit_info.value.__cause__, UsageError)
    assert capsys.readouterr().err == f"spine-tf {argv[0]}: error: {exit_info.value.__cause__}\n"


@pytest.mark.parametrize("argv, message", [
    (["--set", "model.wdith=0.5"],
     "unknown setting 'model.wdith'; known here: branch_point, width, dropout, input_slices, "
     "task_set"),
    (["--set", "width"], "override 'width' is not section.key=value"),
    (["--preset", "demo", "--set", "nonsense.key=1"], "unknown setting section 'nonsense.key'"),
])
def test_a_bad_setting_is_one_line(argv, message, tmp_path, capsys):
    from spine_tf.config import ConfigError
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--run-dir", os.fspath(tmp_path / "run")] + argv)
    assert exit_info.value.code == 1
    assert isinstance(exit_info.value.__cause__, ConfigError)
    assert capsys.readouterr().err == f"spine-tf train: error: {message}\n"
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_a_missing_detector_is_a_library_error(phantom_cohort_dir, tmp_path, capsys):
    from spine_tf import detection
    with pytest.raises(detection.DetectorError) as error:
        detection.load(tmp_path / "absent.keras")
    assert isinstance(error.value, FileNotFoundError)
    scan = phantom_cohort_dir / "scans" / "ph1-00000.nii.gz"
    with pytest.raises(SystemExit, match="cannot load the detector: .*absent.keras: no "
                                         "detector file"):
        cli.main(["extract", os.fspath(scan), "--detector", os.fspath(tmp_path / "absent.keras"),
                  "--out", os.fspath(tmp_path)])
    assert capsys.readouterr().err.startswith("spine-tf extract: error: cannot load the detector")


def test_a_scan_without_discs_fails_through_extract_scan(tmp_path, capsys):
    import nibabel as nib
    import numpy as np
    scan = tmp_path / "flat.nii.gz"
    image = np.random.default_rng(0).normal(100, 10, (8, 64, 64)).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.eye(4)), scan)
    mask = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 64, 64), np.uint8), np.eye(4)), mask)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["extract", os.fspath(scan), "--mask", os.fspath(mask), "--out",
                  os.fspath(tmp_path / "out")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("spine-tf extract: error: ")
    assert "flat.nii.gz: no disc could be extracted" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_export_of_a_missing_model_is_a_library_error(tmp_path):
    from spine_tf.serving import export
    with pytest.raises(export.ModelFileError, match="absent.keras: no such model file") as error:
        export.export_run(os.fspath(tmp_path / "absent.keras"), os.fspath(tmp_path), "m")
    assert isinstance(error.value, (SpineTFError, FileNotFoundError))
