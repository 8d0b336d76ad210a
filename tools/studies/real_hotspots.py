"""Hotspot task specificity on labelled discs without lesion boxes (real data), and pictures.

On a split of a trained run's dataset, ``hotspots.label_specificity``: for each
sided pair of the model's tasks (endplate upper/lower; marrow upper/lower in the
paper set), the discs labelled on the upper side only, the lower side only and
on both, and on each the positive-class hotspots of both tasks: the share of
the hotspot's mass in the upper half of the volume (the vertebra above) and the
share of discs whose hotspot puts most of its mass in the task's own half, with
95 % patient-bootstrap intervals. A task-specific model's upper task looks up
and its lower task down whichever side the lesion is on; a model that finds "a
defect somewhere" has both look at the defect.

``--pictures K`` draws K discs with a labelled defect and their hotspots:
per sided pair ``real_hotspots_<kind>.png`` (half upper-only, half lower-only
discs, filled from discs labelled on both sides; each row the upper task's
hotspot, then the lower task's, of the positive class), and for the set's
``modic`` task ``real_hotspots_modic.png``; discs of different patients first.

Run: .venv/bin/python -m tools.studies.real_hotspots --run-dir RUN [--split validation]
         [--augmentations 150] [--discs N] [--pictures 8] [--pictures-dir DIR]
         [--json OUT.json] [--section "Hotspot specificity on real discs"]
"""

import itertools
import os
import time

import numpy as np

from spine_tf import hotspots, tasks
from spine_tf.evaluation import runs
from spine_tf.io import pictures
from spine_tf.io.atomic import write_json
from spine_tf.io.codec import from_stored
from spine_tf.modeling import metrics
from spine_tf.modeling.model import input_slices
from spine_tf.training import rundir
from tools.bench import benchlib

DOC = "hotspots"  # the results document written with --section (benchlib.DOCS)
UNSIDED_PICTURE_TASKS = ("modic",)
"""Tasks without a side drawn by ``--pictures`` when the model grades them."""
GROUP_NAMES = {"upper_only": "upper only", "lower_only": "lower only", "both": "both sides"}


def _cell(figure, percent=False):
    if figure["value"] is None:
        return "n/a"
    scale, unit, digits = (100, " %", 0) if percent else (1, "", 2)
    text = f"{scale * figure['value']:.{digits}f}{unit}"
    if figure["interval"] is not None:
        low, high = (scale * v for v in figure["interval"])
        text += f" [{low:.{digits}f}, {high:.{digits}f}]"
    return text


def specificity_table(result):
    """Markdown: one table per sided pair of a ``hotspots.label_specificity`` result."""
    parts = []
    for kind, entry in result.items():
        upper, lower = entry["upper_task"], entry["lower_task"]
        rows = []
        for group, name in GROUP_NAMES.items():
            figures = entry[group]
            rows.append([name, f"{figures['discs']} ({figures['patients']})"] + [
                _cell(figures[task][key], percent=key == "own_half")
                for task in ("upper_task", "lower_task")
                for key in ("upper_fraction", "own_half")] + [_cell(figures["difference"])])
        parts.append(f"**{kind}**\n\n" + benchlib.table(
            ["labelled defect", "discs (patients)", f"{upper}: upper fraction",
             f"{upper}: in upper half", f"{lower}: upper fraction", f"{lower}: in lower half",
             "difference"], rows))
    return "\n\n".join(parts) + (
        "\n\nUpper fraction: the share of the positive-class hotspot's mass in the upper half "
        "of the disc volume (the vertebra above), mean over the discs. In upper / lower half: "
        "the share of discs whose hotspot puts more than half its mass in the task's own half. "
        "Difference: mean per disc of the upper task's upper fraction minus the lower task's "
        "(about 0 where the two tasks look at the same place). In brackets: 95 % intervals "
        "from a patient bootstrap.")


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def _ident(example):
    return {"patient_id": _text(example["patient_id"]), "series": _text(example["series"]),
            "level": tasks.LEVELS[int(example["level"])]}


def spread(candidates, count):
    """The first ``count`` of ``candidates`` ((index, patient) pairs, in data order) taking
    one disc per patient in turn: every patient's first disc, then their second, ..."""
    by_patient = {}
    for index, patient in candidates:
        by_patient.setdefault(patient, []).append(index)
    rounds = itertools.zip_longest(*by_patient.values())
    return [i for i in itertools.chain.from_iterable(rounds) if i is not None][:count]


def picture_plan(rows, task_set, count):
    """{picture name: (tasks drawn, chosen disc indices)} for ``--pictures count``.

    ``rows``: per disc of the split (data order), (labels {task: int}, patient).
    A sided pair takes half its discs from upper-only, half from lower-only, and
    fills up from discs labelled on both sides; an unsided task takes its positives.
    """
    def having(predicate):
        return [(n, patient) for n, (labels, patient) in enumerate(rows) if predicate(labels)]

    plan = {}
    for kind, (upper, lower) in hotspots.sided_pairs(task_set).items():
        chosen = spread(having(lambda lab: (lab[upper], lab[lower]) == (1, 0)), (count + 1) // 2)
        chosen += spread(having(lambda lab: (lab[upper], lab[lower]) == (0, 1)),
                         count - len(chosen))
        chosen += spread(having(lambda lab: (lab[upper], lab[lower]) == (1, 1)),
                         count - len(chosen))
        if chosen:
            plan[kind] = ((upper, lower), chosen)
    for name in UNSIDED_PICTURE_TASKS:
        if name in task_set.names:
            chosen = spread(having(lambda lab: lab[name] == 1), count)
            if chosen:
                plan[name] = ((name,), chosen)
    return plan


def draw_pictures(model, data, task_set, count, out_dir, augmentations, seed):
    """Writes ``real_hotspots_<name>.png`` per entry of ``picture_plan`` into ``out_dir``.

    Returns:
        list of {``path``, ``tasks``, ``discs`` (ids, labels of the tasks drawn and the
        probability of class 1 per task)}.
    """
    rows, idents = [], []
    for example in data.as_numpy_iterator():
        rows.append(({t: int(example["labels"][t]) for t in task_set.names},
                     _text(example["patient_id"])))
        idents.append(_ident(example))
    plan = picture_plan(rows, task_set, count)
    wanted = sorted({n for _, chosen in plan.values() for n in chosen})
    volumes = {n: np.asarray(from_stored(e["disc_volume"]))
               for n, e in enumerate(data.as_numpy_iterator()) if n in wanted}
    slices = [tasks.VOLUME_SHAPE[2] // 2] if input_slices(model) == 1 else [3, 4, 5]
    explainer = hotspots.Hotspots(model)
    written = []
    for name, (task_names, chosen) in plan.items():
        batch = np.stack([volumes[n] for n in chosen])
        result = explainer.explain(batch, task_names, {t: 1 for t in task_names},
                                   augmentations, seed)
        heads = [f"{idents[n]['patient_id']} {idents[n]['level']}" for n in chosen]
        panels = [hotspots.overlay_pictures(batch, result[t], heads, slices)
                  for t in task_names]
        gap = np.full((panels[0].shape[0], 8, 3), 255, np.uint8)
        picture = np.concatenate(list(itertools.chain.from_iterable(
            (panel, gap) for panel in panels))[:-1], axis=1)
        path = os.path.join(out_dir, f"real_hotspots_{name}.png")
        os.makedirs(out_dir, exist_ok=True)
        pictures.save_png(picture, path)
        written.append({"path": path, "tasks": list(task_names), "discs": [
            dict(idents[n], labels={t: rows[n][0][t] for t in task_names},
                 probability={t: float(result[t].probabilities[i]) for t in task_names})
            for i, n in enumerate(chosen)]})
    return written


def caption(picture):
    """One paragraph naming the discs of a ``draw_pictures`` entry and their labels."""
    names = " and ".join(picture["tasks"])
    discs = "; ".join(
        f"{d['patient_id']} {d['level']}"
        + (f" ({d['series']})" if d["series"] != d["patient_id"] else "") + ": "
        + ", ".join(f"{t} {d['labels'][t]}" for t in picture["tasks"])
        for d in picture["discs"])
    columns = " (columns, left to right)" if len(picture["tasks"]) > 1 else ""
    return (f"{os.path.basename(picture['path'])}: the positive-class hotspots of {names}"
            f"{columns} over discs with a labelled defect, one disc a row "
            f"(patient, level; the title gives the model's probability of the class): {discs}.")


def parser():
    out = benchlib.argument_parser(__file__, __doc__)
    out.add_argument("--run-dir", required=True)
    out.add_argument("--split", default=None, help="default: the run's test split")
    out.add_argument("--model-file", default=rundir.BEST_MODEL)
    out.add_argument("--augmentations", type=int, default=hotspots.AUGMENTATIONS)
    out.add_argument("--discs", type=int, default=None,
                     help="use the first N discs of the split (default: all)")
    out.add_argument("--resamples", type=int, default=metrics.BOOTSTRAP_RESAMPLES)
    out.add_argument("--seed", type=int, default=0)
    out.add_argument("--pictures", type=int, default=0, metavar="K",
                     help="draw K discs with a labelled defect per lesion kind")
    out.add_argument("--pictures-dir", default=None,
                     help="where the pictures go (default: docs/results/)")
    out.add_argument("--json", help="also write the figures to this JSON file")
    benchlib.add_section_option(out, DOC)
    return out


def main(argv=None):
    args = parser().parse_args(argv)
    start = time.perf_counter()
    model, data, split = runs.run_model_and_split(args.run_dir, args.split, args.model_file)
    if args.discs is not None:
        data = data.take(args.discs)
    task_set = tasks.task_set_of(model.output_names)
    specificity = hotspots.label_specificity(model, data.as_numpy_iterator(),
                                             args.augmentations, args.seed, args.resamples)
    doc_dir = os.path.dirname(benchlib.doc_path(DOC))
    drawn = draw_pictures(model, data, task_set, args.pictures, args.pictures_dir or doc_dir,
                          args.augmentations, args.seed) if args.pictures > 0 else []
    seconds = time.perf_counter() - start
    body = specificity_table(specificity) if specificity else \
        f"The {task_set.name} task set has no sided pair of tasks."
    body += (f"\n\nRun `{args.run_dir}` ({args.model_file}, task set {task_set.name}), split "
             f"`{split}`, {args.augmentations} augmented copies per hotspot; {seconds:.0f} s.")
    for picture in drawn:
        line = caption(picture)
        if os.path.dirname(os.path.abspath(picture["path"])) == os.path.abspath(doc_dir):
            name = os.path.basename(picture["path"])
            line = f"![{name}]({name})\n\n" + line
        body += "\n\n" + line
    if args.json:
        write_json(args.json, {"run_dir": args.run_dir, "model_file": args.model_file,
                               "task_set": task_set.name, "split": split,
                               "augmentations": args.augmentations,
                               "resamples": args.resamples, "seed": args.seed,
                               "seconds": round(seconds, 1), "specificity": specificity,
                               "pictures": drawn}, indent=2, allow_nan=False)
    benchlib.publish(body, args.section, __file__, argv, DOC)
    return 0


if __name__ == "__main__":
    main()
