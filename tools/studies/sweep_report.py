"""A finished ``spine-tf sweep`` as a section of docs/results/sweep.md.

Reads the sweep folder's ``sweep.json`` and its runs, and writes the sweep's
tables (``sweep.markdown``), the training time and length of every row,
and the ``spine-tf sweep`` command that reproduces it, rebuilt from the
sweep's own base config (every setting that differs from the defaults).

A sweep's run folders are large and stay outside the repository, so ``--save``
keeps what the section is made of (sweep.json, each run's epochs and training
minutes, the sweep folder's name, the date and machine) in one small JSON file,
which ``--from-json`` turns into the same section again without the runs.

Example:
    .venv/bin/python -m tools.studies.sweep_report --out runs/sweep --section "Branch-point sweep" \
        --save docs/measurements/sweep.json
"""

import csv
import datetime
import json
import os
import sys

import numpy as np

from spine_tf import config as config_lib
from spine_tf.evaluation import sweep
from spine_tf.training import train
from spine_tf.io.atomic import write_json
from tools.bench import benchlib

DOC = "sweep"  # the results document written (benchlib.DOCS)


def _flat(values, prefix=""):
    """{"a.b": value} of a nested dict."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict) and value and key != "task_weights":
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def sweep_command(out_dir, table):
    """The ``spine-tf sweep`` call that makes ``table`` (sweep.json) in ``out_dir``."""
    defaults = _flat(json.loads(json.dumps(config_lib.to_dict(config_lib.ExperimentConfig()))))
    used = _flat(table["config"])
    words = ["spine-tf sweep", f"--out {out_dir}",
             "--branch-points " + " ".join(table["branch_points"])]
    runs = table.get("runs_per_row", 2)
    swap = table.get("swap", runs != 1)  # sweeps before --repeats: 2 runs swapped, 1 not
    runs_per_repeat = 2 if swap else 1
    if not swap:
        words.append("--no-swap")
    if runs > runs_per_repeat:
        words.append(f"--repeats {runs // runs_per_repeat}")
    if any(row.startswith("single-task") for row in table["rows"]):
        words.append("--single-task")
    words += [f"--also-data {a}" for a in table.get("also", {}).get("data", [])]
    words += [f"--set {key}={json.dumps(value) if isinstance(value, (list, dict)) else value}"
              for key, value in used.items() if defaults.get(key) != value]
    return " ".join(words)


def run_costs(out_dir, table):
    """{row: [[epochs, training minutes] of each of its runs]}, read from the run folders."""
    rows = {}
    for name, row in table["runs"].items():
        run_dir = os.path.join(out_dir, name)
        with open(os.path.join(run_dir, "history.csv"), encoding="utf-8") as f:
            epochs = len(list(csv.DictReader(f)))
        rows.setdefault(row, []).append([epochs, train.training_seconds(run_dir) / 60])
    return rows


def costs_markdown(rows):
    """Markdown: per row, the runs' epochs and training minutes (median over the row's runs)."""
    return benchlib.table(
        ["row", "runs", "epochs", "training minutes per run (median)"],
        [[row, len(runs), "/".join(sorted({str(e) for e, _ in runs})),
          f"{np.median([m for _, m in runs]):.1f}"] for row, runs in rows.items()])


def parser():
    out = benchlib.argument_parser(__file__, __doc__)
    source = out.add_mutually_exclusive_group(required=True)
    source.add_argument("--out", help="the sweep folder (spine-tf sweep --out)")
    source.add_argument("--from-json", help="a file written by --save (no run folders needed)")
    out.add_argument("--section", default="Branch-point sweep",
                     help=f"section name in {benchlib.DOCS[DOC][0]}")
    out.add_argument("--save", help="also keep the section's data in this JSON file")
    return out


def main(argv=None):
    args = parser().parse_args(argv)
    if args.from_json:
        with open(args.from_json, encoding="utf-8") as f:
            saved = json.load(f)
    else:
        with open(os.path.join(args.out, sweep.SWEEP_JSON), encoding="utf-8") as f:
            table = json.load(f)
        saved = {"out": args.out, "sweep": table, "costs": run_costs(args.out, table),
                 "date": datetime.date.today().isoformat(), "machine": benchlib.machine()}
    if args.save:
        write_json(args.save, saved)
    body = (sweep.markdown(saved["sweep"]) + "\nTraining (wall time on this machine, "
            "`RUN/training_time.json`):\n\n" + costs_markdown(saved["costs"]) + "\n")
    made_by = argv if not args.from_json else [  # the call that saved the file
        "--out", saved["out"], "--section", args.section, "--save", args.from_json]
    command = (sweep_command(saved["out"], saved["sweep"]) + "`, then `"
               + benchlib.reproduce_command(__file__, made_by))
    benchlib.write_section(args.section, body, command, doc=DOC,
                           measured=(saved["date"], saved["machine"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
