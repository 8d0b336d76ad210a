"""tools.studies.grading_baseline: its numpy parts on toy problems, and both protocols
end to end on phantom_small, against the same pipeline with permuted labels."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from spine_tf import tasks
from spine_tf.data import spine_discs
from spine_tf.modeling import metrics

REPO = pathlib.Path(__file__).resolve().parents[2]
MODULE = "tools.studies.grading_baseline"


@pytest.fixture(scope="module")
def baseline():
    sys.path.insert(0, str(REPO))
    try:
        import tools.studies.grading_baseline as module
    finally:
        sys.path.remove(str(REPO))
    assert pathlib.Path(module.__file__).is_relative_to(REPO / "tools")
    return module


@pytest.fixture(scope="module")
def phantom_small(tmp_path_factory):
    """phantom_small (24 patients, 136 discs) built in a temporary TFDS data dir."""
    data_dir = os.fspath(tmp_path_factory.mktemp("tfds"))
    builder = spine_discs.builder("phantom_small", data_dir=data_dir, workers=2)
    builder.download_and_prepare()
    return builder, data_dir


@pytest.fixture(scope="module")
def phantom_discs(baseline, phantom_small):
    return baseline.load_discs(phantom_small[0])


# ------------------------------------------------------------------ features and PCA

def test_slice_features_are_4x4_block_means(baseline):
    rng = np.random.default_rng(0)
    slices = rng.random((2, 112, 224))
    features = baseline.slice_features(slices)
    assert features.shape == (2, 28 * 56)
    assert features[1, 0] == pytest.approx(slices[1, :4, :4].mean())
    # row-major: feature (r, c) of the 28 x 56 grid is r * 56 + c
    assert features[0, 3 * 56 + 7] == pytest.approx(slices[0, 12:16, 28:32].mean())
    assert features.mean() == pytest.approx(slices.mean())
    with pytest.raises(ValueError):
        baseline.slice_features(np.zeros((1, 10, 8)))


def test_principal_axes_reproduce_numpys_svd(baseline):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 8)) @ rng.normal(size=(8, 8)) + 5.0
    basis, singular = baseline.principal_axes(x, 3)
    centred = x - x.mean(axis=0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(singular, s[:3])
    signs = np.sign(np.sum(basis * vt[:3], axis=1))
    assert set(signs) <= {-1.0, 1.0}
    np.testing.assert_allclose(basis, vt[:3] * signs[:, None], atol=1e-10)
    np.testing.assert_allclose(centred @ basis.T, u[:, :3] * s[:3] * signs, atol=1e-9)
    # capped by the samples: 6 centred rows have rank 5
    few, _ = baseline.principal_axes(x[:6], 50)
    assert few.shape == (5, 8)


def test_projection_is_fitted_on_the_training_discs_only(baseline):
    rng = np.random.default_rng(2)
    train = rng.normal(size=(40, 12)) * np.arange(1, 13) + 3.0
    train[:, 5] = 7.0  # a constant pixel: std 1, not 0
    project = baseline.fit_projection(train, components=4)
    scores = project(train)
    assert scores.shape == (40, 4)
    np.testing.assert_allclose(scores.mean(axis=0), 0, atol=1e-10)
    np.testing.assert_allclose(np.cov(scores, rowvar=False), np.eye(4), atol=1e-10)
    assert project.std[5] == 1.0
    # other discs are projected with the training mean, std and axes, not their own
    other = rng.normal(size=(10, 12)) + 100.0
    expected = (other - train.mean(0)) / project.std @ project.basis.T / project.scale
    np.testing.assert_allclose(project(other), expected)
    assert project(other).mean() > 1.0


# ------------------------------------------------------------------ logistic regression

def test_logistic_gradient_matches_finite_differences(baseline):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20, 4))
    onehot = np.eye(3)[rng.integers(0, 3, 20)]
    weight = rng.random(20) + 0.5
    params = rng.normal(size=4 * 3 + 3)
    value, gradient = baseline.logistic_objective(params, x, onehot, weight, c=0.7)
    step = 1e-6
    numeric = np.array([
        (baseline.logistic_objective(params + step * e, x, onehot, weight, 0.7)[0]
         - baseline.logistic_objective(params - step * e, x, onehot, weight, 0.7)[0])
        / (2 * step) for e in np.eye(len(params))])
    np.testing.assert_allclose(gradient, numeric, rtol=1e-6, atol=1e-9)
    # the value: weighted mean cross-entropy plus the penalty
    logits = x @ params[:12].reshape(4, 3) + params[12:]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = -(weight * np.log((p * onehot).sum(1))).sum() / 20 \
        + 0.5 * (params[:12] ** 2).sum() / (0.7 * 20)
    assert value == pytest.approx(expected)


def test_logistic_separates_a_separable_problem_with_any_labels(baseline):
    rng = np.random.default_rng(4)
    centres = np.array([[0.0, 6.0], [6.0, 0.0], [-6.0, -6.0]])
    truth = np.repeat([0, 1, 2], [40, 15, 5])
    x = centres[truth] + rng.normal(size=(60, 2))
    labels = np.array([2, 4, 7])[truth]  # any integers: predictions come back in them
    model = baseline.fit_logistic(x, labels)
    assert model.classes.tolist() == [2, 4, 7]
    assert (model.predict(x) == labels).all()
    assert (model.predict(centres) == [2, 4, 7]).all()
    with pytest.raises(ValueError):
        baseline.fit_logistic(x, np.zeros(60, int))


def test_balanced_weights_favour_the_rare_class(baseline):
    weights = baseline.balanced_weights([0] * 90 + [1] * 10)
    assert weights.mean() == pytest.approx(1.0)
    assert weights[:90].sum() == pytest.approx(weights[90:].sum())
    # overlapping classes, 95 to 5: unweighted, the model calls (nearly) everything class 0
    rng = np.random.default_rng(5)
    y = np.repeat([0, 1], [190, 10])
    x = rng.normal(size=(200, 1)) + 1.5 * y[:, None]
    plain = baseline.fit_logistic(x, y, sample_weight=np.ones(200)).predict(x)
    balanced = baseline.fit_logistic(x, y).predict(x)
    assert metrics.balanced_accuracy(y, plain, 2) < 0.6
    assert metrics.balanced_accuracy(y, balanced, 2) > 0.7
    assert (balanced == 1).sum() > (plain == 1).sum() + 30


# ------------------------------------------------------------------ folds and protocols

def test_patient_folds_are_deterministic_and_keep_patients_together(baseline):
    patients = np.array([f"p{i % 11}" for i in range(50)], dtype=object)
    fold = baseline.patient_folds(patients, 3)
    for p in set(patients):
        assert len(set(fold[patients == p])) == 1
    per_fold = [len(set(patients[fold == f])) for f in range(3)]
    assert sorted(per_fold) == [3, 4, 4]
    order = np.random.default_rng(6).permutation(50)
    np.testing.assert_array_equal(baseline.patient_folds(patients[order], 3), fold[order])
    with pytest.raises(ValueError):
        baseline.patient_folds(patients, 12)


def test_a_fold_is_predicted_without_its_own_labels(baseline, phantom_discs):
    fold = baseline.patient_folds(phantom_discs.patients, 2)
    _, predicted = baseline.cross_validation(phantom_discs, 2, components=5)
    labels = {k: v.copy() for k, v in phantom_discs.labels.items()}
    rng = np.random.default_rng(7)
    for name in labels:
        labels[name][fold == 0] = rng.permutation(labels[name][fold == 0])
    shuffled = baseline.Discs(phantom_discs.features, labels, phantom_discs.patients,
                              phantom_discs.splits)
    _, again = baseline.cross_validation(shuffled, 2, components=5)
    for name in tasks.TASK_NAMES:
        np.testing.assert_array_equal(again[name][fold == 0], predicted[name][fold == 0])
    assert any((again[n][fold == 1] != predicted[n][fold == 1]).any() for n in tasks.TASK_NAMES)


def test_binary_narrowing_and_a_task_that_is_not_scorable(baseline, phantom_discs):
    labels = {k: v.copy() for k, v in phantom_discs.labels.items()}
    narrowing = labels["narrowing"]
    labels["narrowing"] = np.where(narrowing > 0, 1, narrowing)  # SPIDER's 0/1 grading
    train = phantom_discs.splits != "test"
    labels["endplate_upper"][train & (labels["endplate_upper"] > 0)] = 0
    labels["marrow_lower"][:] = tasks.MISSING_LABEL  # as SPIDER's marrow columns
    discs = baseline.Discs(phantom_discs.features, labels, phantom_discs.patients,
                           phantom_discs.splits)
    assert baseline.binary_narrowing(labels) and not baseline.binary_narrowing(
        phantom_discs.labels)
    scored, predicted = baseline.held_out(discs, "test", components=5)
    assert predicted["endplate_upper"] == "not scorable: 1 class among the training discs"
    assert predicted["marrow_lower"] == "not scorable: no labelled training discs"
    result = baseline.score(scored, predicted, resamples=50)
    entry = result["narrowing"]
    assert entry["binary"] and entry["classes"] == 2 and entry["chance"] == 0.5
    truth = scored.labels["narrowing"]
    expected = metrics.balanced_accuracy(truth, (predicted["narrowing"] > 0).astype(int), 2)
    assert entry["balanced_accuracy"] == pytest.approx(expected)
    assert entry["discs"] == int((truth >= 0).sum())
    upper = result["endplate_upper"]
    assert not upper["scorable"] and upper["balanced_accuracy"] is None
    assert upper["interval"] is None and upper["reason"].startswith("not scorable")
    assert upper["discs"] == int((scored.labels["endplate_upper"] >= 0).sum()) > 0
    assert result["marrow_lower"]["discs"] == 0 and result["marrow_lower"]["chance"] is None
    _, pooled = baseline.cross_validation(discs, 2, components=5)
    assert pooled["marrow_lower"] == "not scorable: no labelled training discs (fold 1 of 2)"
    # pfirrmann's within-one share: |predicted - truth| <= 1 over its labelled discs
    pf, pf_predicted = scored.labels["pfirrmann"], predicted["pfirrmann"]
    assert result["pfirrmann"]["within_one"] == pytest.approx(
        np.mean(np.abs(pf - pf_predicted)[pf >= 0] <= 1))


# ------------------------------------------------------------------ end to end

def test_both_protocols_on_phantom_small(baseline, phantom_small, phantom_discs, tmp_path,
                                         capsys):
    _, data_dir = phantom_small
    out = tmp_path / "baseline.json"
    assert baseline.main(["--data", "config=phantom_small", "--data", f"data_dir={data_dir}",
                          "--components", "5", "--folds", "2", "--resamples", "200",
                          "--json", os.fspath(out)]) == 0
    table = capsys.readouterr().out
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["discs"] == 136 and result["patients"] == 24
    assert result["binary_narrowing"] is False and "binary" not in table
    test_split = phantom_discs.splits == "test"
    for key in (baseline.HELD_OUT, baseline.CROSS_VALIDATION):
        protocol = result["protocols"][key]
        assert sorted(protocol["tasks"]) == sorted(tasks.TASK_NAMES)
        for name, entry in protocol["tasks"].items():
            labels = phantom_discs.labels[name]
            scored = labels[test_split] if key == baseline.HELD_OUT else labels
            assert entry["discs"] == int((scored >= 0).sum())
            assert entry["scorable"], (key, name)
            low, high = entry["interval"]
            assert 0 <= low <= high <= 1 and 0 <= entry["balanced_accuracy"] <= 1
        pf = protocol["tasks"]["pfirrmann"]
        assert 0 <= pf["within_one_interval"][0] <= pf["within_one"] <= 1
    assert result["protocols"][baseline.HELD_OUT]["fitted_on"] == ["train", "validation"]
    assert result["protocols"][baseline.CROSS_VALIDATION]["tasks"]["pfirrmann"]["discs"] == 133
    for name in tasks.TASK_NAMES:
        assert f"| {name} | " in table
    assert "| pfirrmann within one grade (share of discs) | " in table
    assert "2-fold CV balanced acc." in table
    # Measured: pfirrmann 2-fold CV balanced accuracy 63 % (chance 20 %); with the labels
    # permuted (10 seeds) 11-28 %. The phantom's grade shows in the disc's brightness.
    cv = result["protocols"][baseline.CROSS_VALIDATION]["tasks"]["pfirrmann"]
    assert cv["balanced_accuracy"] > 0.5 and cv["interval"][0] > 0.3
    pf = phantom_discs.labels["pfirrmann"]
    permuted = []
    for seed in range(3):
        labels = dict(phantom_discs.labels, pfirrmann=np.random.default_rng(seed).permutation(pf))
        shuffled = baseline.Discs(phantom_discs.features, labels, phantom_discs.patients,
                                  phantom_discs.splits)
        _, predicted = baseline.cross_validation(shuffled, 2, components=5)
        permuted.append(metrics.balanced_accuracy(labels["pfirrmann"], predicted["pfirrmann"],
                                                  5))
    assert max(permuted) < 0.35
    assert cv["balanced_accuracy"] > max(permuted) + 0.25


def test_answers_help_as_a_module():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-m", MODULE, "--help"], cwd=REPO, env=env,
                            capture_output=True, encoding="utf-8", check=False, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"usage: python -m {MODULE} ")
    assert "--components" in result.stdout and "--folds" in result.stdout
