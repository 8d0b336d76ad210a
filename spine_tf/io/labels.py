"""The labels CSV: one row per (patient, level), six task columns and re-reads.

Columns: ``patient``, ``level`` (``T12-L1`` .. ``L5-S1``), one column per task
(``pfirrmann`` stored 0..4 for grades 1..5, ``narrowing`` 0..3, the four
lesion tasks 0/1), and optionally ``<task>_reread`` columns with a second
reading. An empty cell or -1 is a missing label.
"""

import csv

from spine_tf import tasks
from spine_tf.io.atomic import atomic_path
from spine_tf.io.scan import ScanError

REREAD_SUFFIX = "_reread"
COLUMNS = ("patient", "level") + tasks.TASK_NAMES + tuple(
    name + REREAD_SUFFIX for name in tasks.TASK_NAMES)


def row(patient, level, labels, reread=None):
    """A CSV row (dict) from per-task label dicts."""
    out = {"patient": patient, "level": level}
    for name in tasks.TASK_NAMES:
        out[name] = labels.get(name, tasks.MISSING_LABEL)
        out[name + REREAD_SUFFIX] = (reread or {}).get(name, tasks.MISSING_LABEL)
    return out


def write_labels(path, rows):
    """Writes rows (dicts with COLUMNS keys) atomically, sorted by patient and level."""
    order = {level: i for i, level in enumerate(tasks.LEVELS)}
    rows = sorted(rows, key=lambda r: (r["patient"], order[r["level"]]))
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)


def read_labels(path):
    """Reads a labels CSV.

    Returns:
        dict mapping (patient, level) to ``(labels, reread)``, each a dict
        task -> int with -1 for missing (``reread`` all -1 without the columns).

    Raises:
        ScanError: naming the file (and line) for a missing or unknown column,
            an unknown level, a label that is not a whole number within its
            task's classes, or a duplicated disc.
    """
    out = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or ()]
            missing = [c for c in ("patient", "level") if c not in columns]
            if missing:
                raise ScanError(f"{path}: labels CSV lacks column(s) {', '.join(missing)}")
            unknown = [c for c in columns if c not in COLUMNS]
            if unknown:  # a misspelt task column would silently read as all missing
                raise ScanError(f"{path}: unknown column(s) {', '.join(unknown)}; columns "
                                f"are {', '.join(COLUMNS)}")
            reader.fieldnames = columns
            for line, record in enumerate(reader, start=2):
                key = (record["patient"].strip(), record["level"].strip())
                if key[1] not in tasks.LEVELS:
                    raise ScanError(f"{path}: line {line}: unknown level {key[1]!r}; "
                                    f"levels are {', '.join(tasks.LEVELS)}")
                if key in out:
                    raise ScanError(f"{path}: line {line}: disc {key} appears twice")
                out[key] = tuple(
                    {t.name: _label(record.get(t.name + suffix), t, path, line)
                     for t in tasks.TASKS}
                    for suffix in ("", REREAD_SUFFIX))
    except OSError as error:
        raise ScanError(f"{path}: cannot read labels CSV: {error}") from error
    return out


def _label(text, task, path, line):
    if text is None or text.strip() in ("", "-1", "nan", "NA"):
        return tasks.MISSING_LABEL
    try:
        number = float(text)
    except ValueError:
        number = float("nan")
    if not number.is_integer():
        raise ScanError(f"{path}: line {line}: {task.name} label {text!r} is not a whole "
                        "number")
    if not 0 <= number < task.num_classes:
        raise ScanError(f"{path}: line {line}: {task.name} label {int(number)} outside "
                        f"0..{task.num_classes - 1}")
    return int(number)
