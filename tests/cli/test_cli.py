"""The spine-tf command line: help texts, phantom, extract, errors."""

import argparse
import os

import numpy as np
import pytest
from PIL import Image

from spine_tf import cli


def test_commands_lists_every_command_of_the_parser():
    from spine_tf.cli.parser import build_parser
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert tuple(commands.choices) == cli.COMMANDS


@pytest.mark.parametrize("command", cli.COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: spine-tf " + command in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_phantom_then_extract_with_mask_and_landmarks(tmp_path, capsys):
    out = tmp_path / "cohort"
    assert cli.main(["phantom", "--patients", "1", "--seed", "5", "--out", str(out),
                     "--workers", "1"]) in (0, None)
    scan = out / "scans" / "ph5-00000.nii.gz"
    assert scan.exists() and (out / "labels.csv").exists()
    for flag, path in (("--mask", out / "masks" / "ph5-00000.nii.gz"),
                       ("--landmarks", out / "landmarks" / "ph5-00000.json")):
        target = tmp_path / flag.strip("-")
        assert cli.main(["extract", str(scan), flag, str(path), "--out", str(target)]) == 0
        saved = np.load(target / "ph5-00000_discs.npz")
        assert saved["volumes"].shape[1:] == (112, 224, 9)
        assert list(saved["levels"])[-1] == "L5-S1"
        assert 0.0 <= saved["volumes"].min() and saved["volumes"].max() <= 1.0
        picture = np.asarray(Image.open(target / "ph5-00000_discs.png"))
        assert picture.shape[1] == 9 * 224 + 8 * 2
    assert "discs (" in capsys.readouterr().out


def test_extract_real_slice_with_binary_mask(real_slices_dir, tmp_path):
    code = cli.main(["extract", str(real_slices_dir / "2.png"), "--mask",
                     str(real_slices_dir / "2.npy"), "--out", str(tmp_path)])
    assert code == 0
    saved = np.load(tmp_path / "2_discs.npz")
    assert len(saved["levels"]) >= 3
    assert list(saved["levels"])[-1] == "L5-S1"
    # one-slice scan: only the middle slice of each volume has signal
    assert np.all(saved["volumes"][..., [0, 1, 2, 3, 5, 6, 7, 8]] == 0)
    assert np.all(saved["volumes"][..., 4].mean(axis=(1, 2)) > 0.1)


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti file at all")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["extract", str(broken), "--mask", str(broken), "--out", str(tmp_path)])
    code = exit_info.value.code
    assert code == 1
    error = capsys.readouterr().err
    assert "broken.nii.gz" in error and "error" in error
    assert not [f for f in os.listdir(tmp_path) if f != "broken.nii.gz"]


def test_build_data_refuses_contradictory_sources():
    with pytest.raises(SystemExit, match="does not apply to --config folder"):
        cli.main(["build-data", "--config", "folder", "--patients", "5"])
    with pytest.raises(SystemExit, match="--manual-dir is needed for spider"):
        cli.main(["build-data", "--config", "spider"])


def test_export_from_a_run_directory(tmp_path, capsys):
    import json

    from spine_tf.serving import export
    from spine_tf.modeling import model as model_lib
    run = tmp_path / "run"
    run.mkdir()
    model_lib.build_model(width=0.0625).save(run / "best.keras")
    (run / "config.json").write_text(json.dumps({"model": {"width": 0.0625}}))
    base = tmp_path / "saved_models"
    assert cli.main(["export", "--model", str(run), "--name", "disc", "--base", str(base)]) == 0
    assert f"-> {base / 'disc' / '1'}" in capsys.readouterr().out
    assert export.read_metadata(base / "disc" / "1")["training_config"] == \
        {"model": {"width": 0.0625}}
    with pytest.raises(SystemExit, match="no such model file"):
        cli.main(["export", "--model", str(tmp_path / "absent.keras"), "--base", str(base)])
