"""Probability calibration of the grading tasks: temperature scaling and its measures.

A task's probabilities are calibrated when, among the discs graded with
confidence ``c`` (the top class's probability), a fraction ``c`` is graded
right. The measures here are top-label: the expected calibration error (ECE,
the count-weighted mean of ``|accuracy - confidence|`` over equal-width
confidence bins in [0, 1]), the reliability diagram (accuracy against mean
confidence per bin) and the negative log-likelihood of the true grade.

The model's outputs are probabilities averaged over the TTA views, so there
are no logits to rescale; temperature scaling works on ``log(p)`` instead:
``softmax(log(p) / T)``. ``T > 1`` softens an over-confident task, ``T < 1``
sharpens an under-confident one, and the grade (the argmax) never changes,
so accuracy and confusion matrices stay as they are. One ``T`` per task is
fitted on the validation split and judged on the test split.

Discs with the label ``tasks.MISSING_LABEL`` (-1) are left out everywhere.

Example::

    temperature = fit_temperature(validation_probabilities, validation_labels)
    calibrated = apply_temperature(test_probabilities, temperature)
    report = calibrate({"pfirrmann": (p_val, y_val)}, {"pfirrmann": (p_test, y_test)})
    svg = reliability_svg(report["pfirrmann"]["reliability_before"],
                          report["pfirrmann"]["reliability_after"], "Pfirrmann grade")
"""

import math
from xml.sax.saxutils import escape

import numpy as np
from scipy import optimize, special

from spine_tf import errors, tasks

BINS = 15
# Probabilities are clipped to this before the log, so a class the model rules out
# (p == 0) costs a finite amount and every temperature stays defined.
PROBABILITY_FLOOR = 1e-7
# The temperatures fit_temperature searches (log-uniform between them).
TEMPERATURE_RANGE = (0.05, 20.0)


def _probabilities(probabilities):
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 1:
        raise errors.UsageError(f"probabilities must be (discs, classes), got shape {p.shape}")
    return p


def _labelled(probabilities, labels):
    """(probabilities, labels) of the labelled discs only."""
    p = _probabilities(probabilities)
    y = np.asarray(labels).reshape(-1).astype(np.int64)
    if len(y) != len(p):
        raise errors.UsageError(f"{len(p)} rows of probabilities but {len(y)} labels")
    if ((y < tasks.MISSING_LABEL) | (y >= p.shape[1])).any():
        raise errors.UsageError(f"labels must be {tasks.MISSING_LABEL} (missing) or a class "
                                f"in 0..{p.shape[1] - 1}, got {sorted(set(y.tolist()))}")
    keep = y != tasks.MISSING_LABEL
    return p[keep], y[keep]


def _log_probabilities(p):
    return np.log(np.clip(p, PROBABILITY_FLOOR, None))


def reliability(probabilities, labels, bins=BINS):
    """The data of a top-label reliability diagram.

    Each labelled disc falls in the bin of its confidence (the largest
    probability); bins are ``(lower, upper]`` over [0, 1] in equal widths, the
    first one also holding 0.

    Args:
        probabilities: (discs, classes) class probabilities.
        labels: (discs,) true class, -1 where missing.
        bins: number of equal-width confidence bins.

    Returns:
        list of ``bins`` dicts, lowest first: ``lower``, ``upper`` (edges),
        ``count`` (labelled discs), ``confidence`` (their mean confidence) and
        ``accuracy`` (fraction graded right); the last two None for an empty bin.
    """
    p, y = _labelled(probabilities, labels)
    if bins < 1:
        raise errors.UsageError(f"bins must be at least 1, got {bins}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    index = np.searchsorted(edges[1:-1], confidence, side="left")
    table = []
    for b in range(bins):
        inside = index == b
        count = int(inside.sum())
        table.append({
            "lower": float(edges[b]), "upper": float(edges[b + 1]), "count": count,
            "confidence": float(confidence[inside].mean()) if count else None,
            "accuracy": float(correct[inside].mean()) if count else None})
    return table


def expected_calibration_error(probabilities, labels, bins=BINS):
    """Top-label ECE: sum over bins of ``count / n * |accuracy - confidence|``.

    Args:
        probabilities: (discs, classes) class probabilities.
        labels: (discs,) true class, -1 where missing (ignored).
        bins: number of equal-width confidence bins over [0, 1].

    Returns:
        float in [0, 1]; nan when no disc is labelled.
    """
    table = reliability(probabilities, labels, bins)
    total = sum(row["count"] for row in table)
    if not total:
        return math.nan
    return float(sum(row["count"] / total * abs(row["accuracy"] - row["confidence"])
                     for row in table if row["count"]))


def _nll(log_p, y, temperature):
    z = log_p / temperature
    return float(np.mean(special.logsumexp(z, axis=1) - z[np.arange(len(y)), y]))


def negative_log_likelihood(probabilities, labels):
    """Mean ``-log p(true class)`` over the labelled discs (p clipped to 1e-7).

    Returns:
        float; nan when no disc is labelled.
    """
    p, y = _labelled(probabilities, labels)
    if not len(y):
        return math.nan
    return float(-np.mean(_log_probabilities(p)[np.arange(len(y)), y]))


def fit_temperature(probabilities, labels):
    """The temperature ``T`` minimising the NLL of ``softmax(log(p) / T)``.

    A bounded 1-D search over ``log T`` in ``log`` of ``TEMPERATURE_RANGE``,
    on the labelled discs, with p clipped to 1e-7 before the log.

    Args:
        probabilities: (discs, classes) class probabilities (e.g. validation split).
        labels: (discs,) true class, -1 where missing (ignored).

    Returns:
        float ``T > 0``: above 1 the model was over-confident, below 1
        under-confident. 1.0 (no change) when no disc is labelled or the
        labels hold fewer than 2 classes: a single class says nothing about
        how the probability should spread over the others.
    """
    p, y = _labelled(probabilities, labels)
    if len(np.unique(y)) < 2:
        return 1.0
    log_p = _log_probabilities(p)
    found = optimize.minimize_scalar(
        lambda log_t: _nll(log_p, y, math.exp(log_t)), method="bounded",
        bounds=tuple(math.log(t) for t in TEMPERATURE_RANGE), options={"xatol": 1e-5})
    return float(math.exp(found.x))


def apply_temperature(probabilities, temperature):
    """``softmax(log(p) / T)`` per disc (p clipped to 1e-7): rows sum to 1, argmax kept.

    Args:
        probabilities: (discs, classes) class probabilities.
        temperature: ``T > 0``, e.g. from ``fit_temperature``.

    Returns:
        (discs, classes) float64 array.
    """
    if not temperature > 0:
        raise errors.UsageError(f"temperature must be positive, got {temperature}")
    p = _probabilities(probabilities)
    return special.softmax(_log_probabilities(p) / temperature, axis=1)


def _number(value):
    return None if value is None or math.isnan(value) else float(value)


def calibrate(validation, test, bins=BINS):
    """Per task: a temperature fitted on ``validation``, judged on ``test``.

    Args:
        validation: {task: (probabilities, labels)}, labels -1 where missing.
        test: {task: (probabilities, labels)}; every task needs a validation entry.
        bins: confidence bins of the ECE and the reliability tables.

    Returns:
        {task: {``temperature``, ``ece_before``, ``ece_after``, ``nll_before``,
        ``nll_after``, ``reliability_before``, ``reliability_after`` (see
        ``reliability``), ``discs`` (labelled test discs), ``validation_discs``
        (labelled validation discs)}}, in the order of ``test``. Plain floats,
        ints and None (for no labelled test disc), so ``json.dumps(...,
        allow_nan=False)`` takes it.
    """
    missing = [task for task in test if task not in validation]
    if missing:
        raise errors.UsageError(f"no validation probabilities for task(s) {missing}")
    report = {}
    for task, (probabilities, labels) in test.items():
        temperature = fit_temperature(*validation[task])
        calibrated = apply_temperature(probabilities, temperature)
        report[task] = {
            "temperature": float(temperature),
            "ece_before": _number(expected_calibration_error(probabilities, labels, bins)),
            "ece_after": _number(expected_calibration_error(calibrated, labels, bins)),
            "nll_before": _number(negative_log_likelihood(probabilities, labels)),
            "nll_after": _number(negative_log_likelihood(calibrated, labels)),
            "reliability_before": reliability(probabilities, labels, bins),
            "reliability_after": reliability(calibrated, labels, bins),
            "discs": int(len(_labelled(probabilities, labels)[1])),
            "validation_discs": int(len(_labelled(*validation[task])[1])),
        }
    return report


def reliability_name(task_name):
    """File name of a task's reliability diagram in a report folder."""
    return f"reliability_{task_name}.svg"


# The diagram's frame: the plot square's side and its margins (left, top), in px.
_SIDE, _LEFT, _TOP = 240, 48, 34
_SERIES = (("before", "#d95f02"), ("after", "#1b9e77"))


def reliability_svg(reliability_before, reliability_after, title):
    """A reliability diagram as standalone SVG text (no plotting library).

    Accuracy against mean confidence per non-empty bin, before (orange
    circles) and after (green squares) calibration, with the diagonal of
    perfect calibration; each mark is ``class="mark before"`` or ``class="mark
    after"`` and carries a tooltip with its bin's numbers.

    Args:
        reliability_before, reliability_after: tables from ``reliability`` (or
            ``calibrate``'s ``reliability_before`` / ``reliability_after``).
        title: heading of the diagram; escaped for XML.

    Returns:
        str: an ``<svg>`` document, 320 x 310 px.
    """
    def x(confidence):
        return round(_LEFT + confidence * _SIDE, 1)

    def y(accuracy):
        return round(_TOP + (1.0 - accuracy) * _SIDE, 1)

    bottom, right = y(0.0), x(1.0)
    parts = [
        '<svg xmlns="http://www.w3.org/2000/svg" width="320" height="310" '
        'viewBox="0 0 320 310" font-family="sans-serif" font-size="11">',
        f'<text x="{x(0.5)}" y="18" text-anchor="middle" font-size="13">{escape(title)}</text>',
        f'<rect x="{x(0)}" y="{y(1)}" width="{_SIDE}" height="{_SIDE}" fill="none" '
        f'stroke="#444"/>',
        f'<line x1="{x(0)}" y1="{bottom}" x2="{right}" y2="{y(1)}" stroke="#999" '
        f'stroke-dasharray="4 3"/>',
    ]
    for tick in np.linspace(0.0, 1.0, 6):
        label = f"{tick:.1f}"
        parts += [
            f'<line x1="{x(tick)}" y1="{bottom}" x2="{x(tick)}" y2="{bottom + 4}" stroke="#444"/>',
            f'<text x="{x(tick)}" y="{bottom + 15}" text-anchor="middle">{label}</text>',
            f'<line x1="{x(0) - 4}" y1="{y(tick)}" x2="{x(0)}" y2="{y(tick)}" stroke="#444"/>',
            f'<text x="{x(0) - 6}" y="{y(tick) + 4}" text-anchor="end">{label}</text>']
    parts += [
        f'<text x="{x(0.5)}" y="{bottom + 30}" text-anchor="middle">confidence</text>',
        f'<text transform="translate(12 {y(0.5)}) rotate(-90)" text-anchor="middle">'
        f'accuracy</text>']
    for (name, colour), table in zip(_SERIES, (reliability_before, reliability_after)):
        for row in table:
            if not row["count"]:
                continue
            cx, cy = x(row["confidence"]), y(row["accuracy"])
            tip = (f'<title>{name}: confidence {row["confidence"]:.3f}, accuracy '
                   f'{row["accuracy"]:.3f}, {row["count"]} discs</title>')
            tag, place = (("circle", f'cx="{cx}" cy="{cy}" r="4"') if name == "before"
                          else ("rect", f'x="{cx - 3.5:.1f}" y="{cy - 3.5:.1f}" width="7" '
                                        f'height="7"'))
            parts.append(f'<{tag} {place} class="mark {name}" fill="{colour}" '
                         f'fill-opacity="0.8">{tip}</{tag}>')
    for n, (name, colour) in enumerate(_SERIES):
        row_y = y(1) + 14 + 16 * n
        mark = (f'<circle cx="{x(0) + 12}" cy="{row_y - 4}" r="4"' if name == "before" else
                f'<rect x="{x(0) + 8.5}" y="{row_y - 7.5}" width="7" height="7"')
        parts += [f'{mark} fill="{colour}"/>',
                  f'<text x="{x(0) + 22}" y="{row_y}">{name} calibration</text>']
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
