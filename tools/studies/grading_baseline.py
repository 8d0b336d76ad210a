"""The trivial baseline for grading: logistic regression on PCA scores of a disc's pixels.

Per disc, the centre sagittal slice of its volume (index 4 of the 9; the only one
a single-slice dataset such as ``spider_slices`` fills), area-downsampled 4 x 4
to 28 x 56 and flattened, is standardised with the training discs' pixel mean
and standard deviation and projected on their first ``--components`` principal
components (whitened: unit variance on the training discs). One multinomial
logistic regression per task (L2 penalty, C = 1, class-balanced sample weights,
L-BFGS-B with the analytic gradient) is fitted on the training discs whose label
for the task is not -1. Nothing is tuned on the scored discs. A task with fewer
than two classes among a model's training discs is not scorable.

Two protocols, each with balanced accuracy per task and a 95 % patient-bootstrap
interval, and for pfirrmann the share of discs predicted within one grade:
held-out (fit on every split but the data config's test split, score on it) and
``--folds``-fold cross-validation grouped by patient over all splits together
(patients dealt to folds in the order of the SHA-256 of their id; every disc
scored by the model of the folds it was not in). Where the dataset's narrowing
labels are only 0 and 1 (SPIDER's), narrowing is scored as the Lootus et al.
binary protocol: normal (0) vs narrowed (> 0).

Run: .venv/bin/python -m tools.studies.grading_baseline --data config=spider_slices \\
         --data manual_dir=../shared/data/spider-t2-slices [--components 50] [--folds 5] \\
         [--json baseline.json] [--section "Baseline: logistic regression on pixels"]
"""

import dataclasses
import hashlib

import numpy as np
import scipy.optimize

from spine_tf import config as config_lib
from spine_tf import tasks
from spine_tf.io.atomic import write_json
from spine_tf.io.codec import from_stored
from spine_tf.modeling import metrics
from tools.bench import benchlib

DOC = "grading"  # the results document written with --section (benchlib.DOCS)

CENTRE_SLICE = tasks.VOLUME_SHAPE[2] // 2
"""The slice of a disc volume the features come from (4 of 0..8)."""

BLOCK = 4
"""Side of the square pixel blocks averaged into one feature (112 x 224 -> 28 x 56)."""

C = 1.0
"""Inverse L2 strength of the logistic regressions (sklearn's convention: the objective is
0.5 |W|^2 + C * sum of weighted cross-entropies), on whitened PCA scores. Fixed, not tuned."""

COMPONENTS = 50
FOLDS = 5
HELD_OUT, CROSS_VALIDATION = "held_out", "cross_validation"
_BINARY_TASK = "narrowing"  # scored normal vs narrowed when its labels are only 0 and 1


# ------------------------------------------------------------------ features

def slice_features(slices, block=BLOCK):
    """(discs, rows, cols) slices -> (discs, rows/block * cols/block) block means, flattened.

    Example:
        slice_features(np.ones((2, 112, 224))).shape == (2, 1568)
    """
    slices = np.asarray(slices, np.float64)
    n, rows, cols = slices.shape
    if rows % block or cols % block:
        raise ValueError(f"slices of {rows} x {cols} do not split into {block} x {block} blocks")
    blocks = slices.reshape(n, rows // block, block, cols // block, block).mean(axis=(2, 4))
    return blocks.reshape(n, -1)


@dataclasses.dataclass(frozen=True)
class Discs:
    """The discs of a dataset as the baseline sees them.

    Attributes:
        features: (discs, features) ``slice_features`` of the centre slices.
        labels: {task: (discs,) int labels, -1 missing}, the dataset's task set in order.
        patients: (discs,) patient ids.
        splits: (discs,) the split each disc is in.
    """

    features: np.ndarray
    labels: dict
    patients: np.ndarray
    splits: np.ndarray

    def subset(self, keep):
        return Discs(self.features[keep], {k: v[keep] for k, v in self.labels.items()},
                     self.patients[keep], self.splits[keep])


def load_discs(builder, batch_size=64):
    """Reads every split of a prepared spine_discs builder into ``Discs`` (centre slices only;
    the volumes are decoded with ``from_stored``)."""
    task_set = tasks.task_set(builder.builder_config.task_set)
    features, labels, patients, splits = [], {t: [] for t in task_set.names}, [], []
    for split in builder.info.splits:
        data = builder.as_dataset(split=split).map(
            lambda e: (from_stored(e["disc_volume"][:, :, CENTRE_SLICE]), e["labels"],
                       e["patient_id"]))
        for slices, batch_labels, ids in data.batch(batch_size).as_numpy_iterator():
            features.append(slice_features(slices))
            for name in task_set.names:
                labels[name].append(batch_labels[name].astype(np.int64))
            patients += [p.decode("utf-8") for p in ids]
            splits += [split] * len(ids)
    width = (tasks.VOLUME_SHAPE[0] // BLOCK) * (tasks.VOLUME_SHAPE[1] // BLOCK)
    return Discs(np.concatenate(features) if features else np.zeros((0, width)),
                 {k: np.concatenate(v) if v else np.zeros(0, np.int64)
                  for k, v in labels.items()},
                 np.array(patients, dtype=object), np.array(splits, dtype=object))


# ------------------------------------------------------------------ PCA

@dataclasses.dataclass(frozen=True)
class Projection:
    """Standardisation then whitened PCA, fitted on training discs (``fit_projection``).

    Attributes:
        mean, std: (features,) per-pixel mean and standard deviation (1 where constant).
        basis: (components, features) principal axes of the standardised features.
        scale: (components,) standard deviation of the training scores along each axis.
    """

    mean: np.ndarray
    std: np.ndarray
    basis: np.ndarray
    scale: np.ndarray

    def __call__(self, features):
        """(discs, features) -> (discs, components) whitened scores."""
        standard = (np.asarray(features, np.float64) - self.mean) / self.std
        return standard @ self.basis.T / self.scale


def principal_axes(x, components):
    """The first ``components`` principal axes of the rows of ``x`` (centred here) and the
    singular values along them, by numpy's SVD.

    Axes with a zero singular value are dropped, and so there are at most rows - 1. Each
    axis's sign is fixed so that its largest-magnitude entry is positive.

    Returns:
        (basis (k, features), singular values (k,)), k <= ``components``.
    """
    x = np.asarray(x, np.float64)
    _, singular, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    k = min(components, int(np.count_nonzero(singular > 1e-9 * singular.max(initial=0))))
    basis = vt[:k]
    signs = np.sign(basis[np.arange(k), np.abs(basis).argmax(axis=1)])
    return basis * signs[:, None], singular[:k]


def fit_projection(features, components=COMPONENTS):
    """Standardises with the training features' mean and std, then fits ``principal_axes``;
    scores are whitened to unit variance on the training features."""
    features = np.asarray(features, np.float64)
    if len(features) < 2:
        raise ValueError("a projection needs at least two training discs")
    mean, std = features.mean(axis=0), features.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    basis, singular = principal_axes((features - mean) / std, components)
    return Projection(mean, std, basis, singular / np.sqrt(len(features) - 1))


# ------------------------------------------------------------------ logistic regression

def balanced_weights(y):
    """Sample weights inversely proportional to each class's frequency in ``y``, mean 1
    (every class present gets the same total weight)."""
    y = np.asarray(y)
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    return len(y) / (len(classes) * counts[inverse])


def logistic_objective(params, x, onehot, sample_weight, c=C):
    """Value and gradient of the multinomial logistic objective, divided by ``c`` * discs:
    ``(0.5 |W|^2 + c * sum_i w_i CE_i) / (c n)``; the bias is not penalised.

    Args:
        params: flat (features * classes + classes,): W (features, classes) row-major, then b.
        x: (n, features); onehot: (n, classes); sample_weight: (n,).

    Returns:
        (value, gradient as flat as ``params``).
    """
    n, d = x.shape
    k = onehot.shape[1]
    weights, bias = params[:d * k].reshape(d, k), params[d * k:]
    logits = x @ weights + bias
    logits -= logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    value = -(sample_weight * (onehot * log_p).sum(axis=1)).sum() / n \
        + 0.5 * (weights ** 2).sum() / (c * n)
    residual = sample_weight[:, None] * (np.exp(log_p) - onehot) / n
    gradient = np.concatenate([(x.T @ residual + weights / (c * n)).ravel(),
                               residual.sum(axis=0)])
    return value, gradient


@dataclasses.dataclass(frozen=True)
class Logistic:
    """A fitted multinomial logistic regression over ``classes`` (the labels it saw)."""

    classes: np.ndarray
    weights: np.ndarray
    bias: np.ndarray

    def logits(self, x):
        return np.asarray(x, np.float64) @ self.weights + self.bias

    def predict(self, x):
        """(n, features) -> (n,) the most probable class label of each row."""
        return self.classes[self.logits(x).argmax(axis=1)]


def fit_logistic(x, y, c=C, sample_weight=None, max_iterations=1000):
    """Fits a multinomial L2 logistic regression with L-BFGS-B (``logistic_objective``).

    Args:
        x: (n, features); y: (n,) class labels (any integers, at least two distinct).
        c: inverse regularisation strength.
        sample_weight: (n,) or None (default: ``balanced_weights(y)``).

    Raises:
        ValueError: fewer than two classes in ``y``.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y)
    classes, index = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"need two classes to fit, got {classes.tolist()}")
    sample_weight = balanced_weights(y) if sample_weight is None else \
        np.asarray(sample_weight, np.float64)
    onehot = np.eye(len(classes))[index]
    d, k = x.shape[1], len(classes)
    result = scipy.optimize.minimize(
        logistic_objective, np.zeros(d * k + k), args=(x, onehot, sample_weight, c),
        jac=True, method="L-BFGS-B",
        options={"maxiter": max_iterations, "gtol": 1e-8, "ftol": 1e-12})
    return Logistic(classes, result.x[:d * k].reshape(d, k), result.x[d * k:])


# ------------------------------------------------------------------ protocols

def fit_and_predict(train, test, components=COMPONENTS, c=C):
    """Fits the projection on ``train`` and one model per task on its labelled discs, and
    predicts every disc of ``test``.

    Returns:
        {task: (test discs,) predicted labels, or a string saying why the task is not
        scorable}.
    """
    project = fit_projection(train.features, components)
    train_scores, test_scores = project(train.features), project(test.features)
    out = {}
    for name in train.labels:
        labelled = train.labels[name] >= 0
        present = np.unique(train.labels[name][labelled])
        if len(present) < 2:
            out[name] = ("not scorable: 1 class among the training discs" if len(present)
                         else "not scorable: no labelled training discs")
            continue
        model = fit_logistic(train_scores[labelled], train.labels[name][labelled], c)
        out[name] = model.predict(test_scores)
    return out


def patient_folds(patients, folds):
    """(discs,) fold of every disc: the distinct patients sorted by the SHA-256 of their id and
    dealt to folds 0, 1, .., folds - 1 in turn (the same patient, the same fold, on any
    machine).

    Raises:
        ValueError: fewer patients than folds, or fewer than two folds.
    """
    distinct = sorted(set(patients), key=lambda p: (hashlib.sha256(p.encode()).hexdigest(), p))
    if folds < 2 or len(distinct) < folds:
        raise ValueError(f"{folds} folds of {len(distinct)} patients: need 2 <= folds <= "
                         "patients")
    fold_of = {p: i % folds for i, p in enumerate(distinct)}
    return np.array([fold_of[p] for p in patients], np.int64)


def held_out(discs, test_split, components=COMPONENTS, c=C):
    """Protocol (a): fit on every split but ``test_split``, predict ``test_split``.

    Returns:
        (the scored Discs, {task: predictions or reason}).
    """
    test = discs.splits == test_split
    if not test.any() or test.all():
        raise ValueError(f"held-out needs discs in split {test_split!r} and in other splits; "
                         f"splits: {sorted(set(discs.splits))}")
    scored = discs.subset(test)
    return scored, fit_and_predict(discs.subset(~test), scored, components, c)


def cross_validation(discs, folds=FOLDS, components=COMPONENTS, c=C):
    """Protocol (b): patient-grouped ``folds``-fold cross-validation over all discs; each
    disc predicted by the model fitted on the other folds. A task not scorable in any fold
    is not scorable.

    Returns:
        (discs, {task: pooled predictions or reason}).
    """
    fold = patient_folds(discs.patients, folds)
    pooled = {name: np.full(len(fold), tasks.MISSING_LABEL, np.int64) for name in discs.labels}
    for f in range(folds):
        within = fold == f
        for name, predicted in fit_and_predict(discs.subset(~within), discs.subset(within),
                                               components, c).items():
            if isinstance(pooled[name], str):
                continue  # the first fold that could not fit it says why
            if isinstance(predicted, str):
                pooled[name] = f"{predicted} (fold {f + 1} of {folds})"
            else:
                pooled[name][within] = predicted
    return discs, pooled


# ------------------------------------------------------------------ scoring

def binary_narrowing(labels):
    """Whether the labelled (four-grade) narrowing grades are only 0 and 1 (SPIDER's binary
    grading in the paper's task set); False without that task."""
    if _BINARY_TASK not in labels:
        return False
    narrowing = labels[_BINARY_TASK]
    return bool(np.isin(narrowing[narrowing >= 0], (0, 1)).all())


def _label_tasks(labels):
    """The rows of the task table of a labels dict, in its order."""
    return [tasks.task(name) for name in labels]


def _figures(labels, predicted, binary):
    """Every scorable task's figures on one set of discs (arrays indexed alike).

    The within-one share and binary narrowing are those of ``metrics.lootus``; a task not
    scorable enters it with every label missing.
    """
    grade, narrowing = "pfirrmann", _BINARY_TASK
    inputs = [(labels[n], predicted[n]) if n in labels and not isinstance(predicted[n], str)
              else (np.full(len(labels[grade]), tasks.MISSING_LABEL),
                    np.zeros(len(labels[grade]), int))
              for n in (grade, narrowing)]
    lootus = metrics.lootus(*inputs[0], *inputs[1])
    out = {"within_one": lootus["pfirrmann_within_1"]}
    for task in _label_tasks(labels):
        if isinstance(predicted[task.name], str):
            continue
        out[task.name] = lootus["narrowing_binary"] if binary and task.name == narrowing \
            else metrics.balanced_accuracy(labels[task.name], predicted[task.name],
                                           task.num_classes)
    return out


def _number(value):
    return None if value is None or not np.isfinite(value) else float(value)


def score(discs, predicted, resamples=metrics.BOOTSTRAP_RESAMPLES, seed=0, binary=None):
    """Balanced accuracy per task (pfirrmann: also the within-one share) with percentile
    intervals from one patient bootstrap shared by every figure.

    Args:
        discs: the scored Discs; predicted: {task: predictions or the reason it is not
            scorable}, as the protocols return.
        binary: score narrowing normal vs narrowed (default: ``binary_narrowing``).

    Returns:
        {task: {``discs`` (labelled discs scored), ``classes`` (labels present),
        ``chance`` (1 / classes: a constant prediction's balanced accuracy),
        ``balanced_accuracy``, ``interval`` ((low, high) or None), ``scorable``, ``reason``
        (None if scorable), for narrowing ``binary``, for pfirrmann ``within_one`` and
        ``within_one_interval``}}; None where a figure has no disc.
    """
    binary = binary_narrowing(discs.labels) if binary is None else binary
    point = _figures(discs.labels, predicted, binary)
    samples = metrics.patient_bootstrap(discs.patients, resamples, seed)
    draws = [_figures({k: v[idx] for k, v in discs.labels.items()},
                      {k: v if isinstance(v, str) else v[idx] for k, v in predicted.items()},
                      binary) for idx in samples]
    out = {}
    for task in _label_tasks(discs.labels):
        truth = discs.labels[task.name]
        if binary and task.name == _BINARY_TASK:
            truth = np.where(truth >= 0, (truth > 0).astype(np.int64), tasks.MISSING_LABEL)
        classes = np.unique(truth[truth >= 0])
        scorable = not isinstance(predicted[task.name], str)
        entry = {"discs": int((truth >= 0).sum()), "classes": len(classes),
                 "chance": 1.0 / len(classes) if len(classes) else None,
                 "scorable": scorable, "reason": None if scorable else predicted[task.name],
                 "balanced_accuracy": _number(point[task.name]) if scorable else None,
                 "interval": metrics.percentile_interval([d[task.name] for d in draws])
                 if scorable else None}
        if task.name == _BINARY_TASK:
            entry["binary"] = binary
        if task.name == "pfirrmann":
            entry["within_one"] = _number(point["within_one"]) if scorable else None
            entry["within_one_interval"] = metrics.percentile_interval(
                [d["within_one"] for d in draws]) if scorable else None
        out[task.name] = entry
    return out


def markdown(result):
    """The table of both protocols (``run``'s result) and a paragraph saying what it is."""
    held, folds = result["protocols"][HELD_OUT], result["protocols"][CROSS_VALIDATION]
    rows = []
    for name in held["tasks"]:
        task = tasks.task(name)
        if name == _BINARY_TASK and held["tasks"][name]["binary"]:
            name += " (binary: normal vs narrowed)"
        cells = []
        for protocol in (held, folds):
            entry = protocol["tasks"][task.name]
            figure = benchlib.percent(entry["balanced_accuracy"], entry["interval"], " %") \
                if entry["scorable"] else "not scorable"
            cells += [entry["discs"], figure]
        chance = folds["tasks"][task.name]["chance"]
        rows.append([name] + cells + ["n/a" if chance is None else f"{100 * chance:.1f} %"])
        if task.name == "pfirrmann":
            cells = []
            for protocol in (held, folds):
                entry = protocol["tasks"][task.name]
                cells += [entry["discs"], benchlib.percent(
                    entry["within_one"], entry["within_one_interval"], " %")]
            rows.append(["pfirrmann within one grade (share of discs)"] + cells + ["-"])
    header = ["task", "held-out discs", "held-out balanced acc.",
              f"{result['folds']}-fold CV discs", f"{result['folds']}-fold CV balanced acc.",
              "chance"]
    reasons = [f"{p}, {t}: {e['reason']}" for p, protocol in result["protocols"].items()
               for t, e in protocol["tasks"].items() if e["reason"]]
    text = (f"Dataset `{result['dataset']}`: {result['discs']} discs of {result['patients']} "
            f"patients. Logistic regression (L2, C = {result['c']:g}, class-balanced) on the "
            f"first {result['components']} whitened principal components of the centre slice "
            f"downsampled to {result['feature_shape'][0]} x {result['feature_shape'][1]}. "
            f"Held-out: fitted on {' + '.join(held['fitted_on'])}, scored on "
            f"{held['scored_on']} ({held['patients']} patients). {result['folds']}-fold CV: "
            f"patients dealt to folds by the SHA-256 of their id, every disc scored by the "
            f"model of the other folds ({folds['patients']} patients).\n\n"
            + benchlib.table(header, rows)
            + f"\n\nIn brackets: {100 * metrics.INTERVAL_LEVEL:.0f} % intervals from "
              f"{result['resamples']} patient-bootstrap resamples. Chance: the balanced "
              "accuracy of a constant prediction (1 / classes present).")
    if reasons:
        text += "\n\n" + "\n".join(f"- {r}" for r in reasons)
    return text


def run(discs, dataset, test_split, components=COMPONENTS, folds=FOLDS,
        resamples=metrics.BOOTSTRAP_RESAMPLES, c=C):
    """Both protocols on ``discs``; the JSON-ready result ``markdown`` prints."""
    binary = binary_narrowing(discs.labels)
    protocols = {}
    for key, (scored, predicted) in ((HELD_OUT, held_out(discs, test_split, components, c)),
                                     (CROSS_VALIDATION,
                                      cross_validation(discs, folds, components, c))):
        protocols[key] = {"discs": len(scored.patients),
                          "patients": len(set(scored.patients)),
                          "tasks": score(scored, predicted, resamples, binary=binary)}
    protocols[HELD_OUT].update(fitted_on=sorted(set(discs.splits) - {test_split}),
                               scored_on=test_split)
    rows, cols = tasks.VOLUME_SHAPE[0] // BLOCK, tasks.VOLUME_SHAPE[1] // BLOCK
    return {"dataset": dataset, "discs": len(discs.patients),
            "patients": len(set(discs.patients)), "components": components, "c": c,
            "folds": folds, "resamples": resamples, "interval_level": metrics.INTERVAL_LEVEL,
            "feature_shape": [rows, cols], "centre_slice": CENTRE_SLICE,
            "binary_narrowing": binary, "protocols": protocols}


# ------------------------------------------------------------------ command line

def parser():
    out = benchlib.argument_parser(__file__, __doc__)
    out.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                     help="DataConfig setting (as spine-tf evaluate --data), e.g. "
                     "--data config=spider_slices --data manual_dir=DIR --data data_dir=DIR")
    out.add_argument("--components", type=int, default=COMPONENTS,
                     help="principal components (default %(default)s; at most training "
                     "discs - 1)")
    out.add_argument("--folds", type=int, default=FOLDS,
                     help="cross-validation folds (default %(default)s)")
    out.add_argument("--resamples", type=int, default=metrics.BOOTSTRAP_RESAMPLES,
                     help="patient-bootstrap resamples (default %(default)s)")
    out.add_argument("--json", help="also write the figures to this JSON file")
    benchlib.add_section_option(out, DOC)
    return out


def main(argv=None):
    options = parser()
    args = options.parse_args(argv)
    if args.components < 1:
        options.error("--components must be at least 1")
    from spine_tf.training import train
    data_config = config_lib.override(config_lib.ExperimentConfig(),
                                      [f"data.{a}" for a in args.data]).data
    builder = train.prepare_dataset(data_config)
    discs = load_discs(builder)
    try:
        result = run(discs, builder.info.full_name, data_config.test_split, args.components,
                     args.folds, args.resamples)
    except ValueError as error:
        options.error(str(error))
    result["data"] = list(args.data)
    if args.json:
        write_json(args.json, result, indent=2, allow_nan=False)
    body = markdown(result)
    benchlib.publish(body, args.section, __file__, argv, DOC)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
