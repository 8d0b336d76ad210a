"""Atomic folder writes: a folder appears whole under its name, or not at all."""

import os

import pytest

from spine_tf.io.atomic import atomic_folder


def _names(folder):
    return sorted(os.listdir(folder))


def test_success_renames_the_folder_into_place(tmp_path):
    target = tmp_path / "deep" / "er" / "3"
    with atomic_folder(target) as tmp:
        assert os.path.isdir(tmp) and not os.listdir(tmp)
        assert os.path.dirname(tmp) == os.fspath(target.parent)
        assert not target.exists()  # nothing under the name while it is written
        with open(os.path.join(tmp, "a.txt"), "w") as f:
            f.write("new")
    assert (target / "a.txt").read_text() == "new"
    assert _names(target.parent) == ["3"]  # no temporary folder left


def test_a_failure_leaves_no_folder_and_no_temporary_folder(tmp_path):
    with pytest.raises(RuntimeError, match="half way"):
        with atomic_folder(tmp_path / "out") as tmp:
            open(os.path.join(tmp, "a.txt"), "w").close()
            raise RuntimeError("half way")
    assert _names(tmp_path) == []


def test_an_existing_folder_is_replaced_whole_only_on_success(tmp_path):
    target = tmp_path / "scan"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            open(os.path.join(tmp, "new.txt"), "w").close()
            raise RuntimeError("failed")
    assert _names(target) == ["stale.txt"] and _names(tmp_path) == ["scan"]
    with atomic_folder(target) as tmp:
        open(os.path.join(tmp, "new.txt"), "w").close()
    assert _names(target) == ["new.txt"]
    assert _names(tmp_path) == ["scan"]  # neither the old folder nor a temporary one


def test_without_replace_an_existing_folder_is_an_error_and_kept(tmp_path):
    target = tmp_path / "1"
    with atomic_folder(target, replace=False) as tmp:
        open(os.path.join(tmp, "first.txt"), "w").close()
    with pytest.raises(FileExistsError, match="exists already"):
        with atomic_folder(target, replace=False) as tmp:
            open(os.path.join(tmp, "second.txt"), "w").close()
    assert _names(target) == ["first.txt"] and _names(tmp_path) == ["1"]


def test_a_failed_rename_puts_the_previous_folder_back(tmp_path, monkeypatch):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    rename = os.rename

    def failing(source, destination):
        if os.path.basename(source).startswith(".tmp-"):
            raise OSError("disk full")
        rename(source, destination)

    monkeypatch.setattr(os, "rename", failing)
    with pytest.raises(OSError, match="disk full"):
        with atomic_folder(target) as tmp:
            with open(os.path.join(tmp, "new.txt"), "w") as f:
                f.write("new")
    assert _names(tmp_path) == ["out"] and _names(target) == ["old.txt"]
