"""Atomic writes: write a file or a folder under a temporary name beside the target, then
rename it, so readers never see a half-written one."""

import contextlib
import csv
import json
import os
import shutil
import uuid


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path in ``path``'s folder; renames it to ``path`` on success.

    The temporary name ends with the target's own name, so writers that pick
    a format from the extension (``.nii.gz``) behave the same. On an error the
    temporary file is removed and an existing ``path`` is left untouched.

    Example:
        with atomic_path("out/labels.csv") as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write("patient,level\\n")
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex[:12]}-{os.path.basename(path)}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_folder(path, replace=True):
    """Yields a new empty temporary folder beside ``path``; renames it to ``path`` on success.

    On success an existing ``path`` is replaced whole (moved aside, the new
    folder renamed in, the old one removed), so a reader sees the old folder
    or the new one, never a mix; with ``replace=False`` an existing ``path``
    is an error instead (FileExistsError). On an error the temporary folder
    is removed and an existing ``path`` is left untouched. Parent folders are
    created.

    Example:
        with atomic_folder("saved_models/spinenet/3") as tmp:
            tf.saved_model.save(module, tmp)
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex[:12]}-{name}")
    os.makedirs(tmp)
    try:
        yield tmp
        old = None
        if os.path.exists(path):
            if not replace:
                raise FileExistsError(f"{path} exists already")
            old = os.path.join(folder, f".old-{uuid.uuid4().hex[:12]}-{name}")
            os.rename(path, old)
        try:
            os.rename(tmp, path)
        except OSError:
            if old:  # put the previous folder back
                os.rename(old, path)
            raise
        if old:
            shutil.rmtree(old)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)


def write_text(path, text):
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def write_json(path, value, indent=1, **kwargs):
    """Writes ``value`` as JSON to ``path`` atomically (``kwargs`` go to ``json.dump``)."""
    write_text(path, json.dumps(value, indent=indent, **kwargs) + "\n")


def write_csv(path, rows):
    """Writes rows (the header first) as CSV to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(rows)
