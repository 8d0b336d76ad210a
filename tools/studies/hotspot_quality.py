"""How well the hotspots of a trained run localise lesions, and whether they are task-specific.

On a split of the run's phantom dataset (ground-truth lesion boxes): the
localisation table of ``runs.measure_hotspots`` (IoU of the augmented
hotspot, the plain Simonyan map and the whole volume, per lesion task and
threshold percentile) and ``hotspots.task_specificity`` (on discs with a
lesion above and below: the share of each task's hotspot mass in the upper
half). Writes a section of docs/results/hotspots.md.

Run: .venv/bin/python -m tools.studies.hotspot_quality --run-dir RUN [--split test]
     [--augmentations 150]
"""

import time

import numpy as np

from spine_tf import hotspots
from spine_tf.evaluation import runs
from spine_tf.training import rundir
from tools.bench import benchlib

DOC = "hotspots"  # the results document written (benchlib.DOCS)


def specificity_table(specificity):
    """Markdown: per lesion kind of ``hotspots.task_specificity``, discs and mean shares."""
    rows = []
    for kind, entry in specificity.items():
        if not entry["discs"]:
            rows.append([kind, 0, "n/a", "n/a", "n/a"])
            continue
        rows.append([kind, entry["discs"], f"{np.mean(entry['upper_task']):.2f}",
                     f"{np.mean(entry['lower_task']):.2f}", f"{100 * entry['specific']:.0f} %"])
    return benchlib.table(["lesion", "discs", "upper task in upper half",
                           "lower task in upper half", "discs with upper > 0.5 > lower"], rows)


def parser():
    out = benchlib.argument_parser(__file__, __doc__)
    out.add_argument("--run-dir", required=True)
    out.add_argument("--split", default=None, help="default: the run's test split")
    out.add_argument("--augmentations", type=int, default=hotspots.AUGMENTATIONS)
    return out


def main(argv=None):
    args = parser().parse_args(argv)
    start = time.perf_counter()
    result, _ = runs.measure_hotspots(args.run_dir, split=args.split,
                                      augmentations=args.augmentations)
    model, data, split = runs.run_model_and_split(args.run_dir, result["split"],
                                                  rundir.BEST_MODEL)
    specificity = hotspots.task_specificity(model, data.as_numpy_iterator(), args.augmentations)
    body = hotspots.localisation_markdown(result)
    body += ("\n\nTask specificity (discs with a lesion both above and below the disc; share of "
             "the hotspot mass in the upper half of the volume, mean over discs):\n\n")
    body += specificity_table(specificity)
    body += (f"\n\nRun `{args.run_dir}` (best.keras), split `{split}`, {args.augmentations} "
             f"augmented copies per hotspot; {time.perf_counter() - start:.0f} s.")
    benchlib.write_section("Hotspot localisation", body,
                           benchlib.reproduce_command(__file__, argv), doc=DOC)


if __name__ == "__main__":
    main()
