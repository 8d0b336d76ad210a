"""The labels CSV: round trip and every kind of bad input, each naming file and line."""

import pytest

from spine_tf import tasks
from spine_tf.io import labels
from spine_tf.io.scan import ScanError

HEADER = "patient,level," + ",".join(tasks.TASK_NAMES)


def _write(tmp_path, text):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return str(path)


def test_round_trip_with_missing_and_reread(tmp_path):
    first = {"pfirrmann": 2, "narrowing": -1, "endplate_upper": 1, "endplate_lower": 0,
             "marrow_upper": 0, "marrow_lower": 1}
    second = dict(first, pfirrmann=3)
    path = str(tmp_path / "labels.csv")
    labels.write_labels(path, [labels.row("p1", "L5-S1", first, second),
                               labels.row("p1", "T12-L1", second)])
    table = labels.read_labels(path)
    assert table[("p1", "L5-S1")] == (first, second)
    assert table[("p1", "T12-L1")][1] == {name: -1 for name in tasks.TASK_NAMES}
    # rows are written top to bottom per patient
    assert open(path, encoding="utf-8").read().splitlines()[1].startswith("p1,T12-L1")


@pytest.mark.parametrize("body, match", [
    ("p1,L5-S1,2,0,0,0,0,0\np1,L5-S1,1,0,0,0,0,0", r"line 3: disc .* appears twice"),
    ("p1,L6-S1,2,0,0,0,0,0", r"line 2: unknown level 'L6-S1'"),
    ("p1,L5-S1,5,0,0,0,0,0", r"line 2: pfirrmann label 5 outside 0..4"),
    ("p1,L5-S1,2.7,0,0,0,0,0", r"line 2: pfirrmann label '2.7' is not a whole number"),
    ("p1,L5-S1,2,x,0,0,0,0", r"line 2: narrowing label 'x' is not a whole number"),
])
def test_bad_rows_name_file_and_line(tmp_path, body, match):
    path = _write(tmp_path, HEADER + "\n" + body + "\n")
    with pytest.raises(ScanError, match="labels.csv: " + match):
        labels.read_labels(path)


def test_misspelt_or_missing_columns_are_refused(tmp_path):
    path = _write(tmp_path, HEADER.replace("pfirrmann", "pfirrman") + "\np1,L5-S1,2,0,0,0,0,0\n")
    with pytest.raises(ScanError, match="unknown column.s. pfirrman"):
        labels.read_labels(path)
    path = _write(tmp_path, "patient," + ",".join(tasks.TASK_NAMES) + "\n")
    with pytest.raises(ScanError, match="lacks column.s. level"):
        labels.read_labels(path)
    with pytest.raises(ScanError, match="cannot read labels CSV"):
        labels.read_labels(str(tmp_path / "absent.csv"))
