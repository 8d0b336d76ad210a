"""Atomic file writing: write to a temporary file beside the target, then rename."""

import contextlib
import csv
import json
import os
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
