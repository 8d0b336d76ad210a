"""Smoke tests of tools/: every benchmark and study answers --help as a module, and their
pure parts (tables, sections, reproduce commands, docs targets, helpers) on tiny inputs."""

import importlib
import json
import os
import pathlib
import subprocess
import sys
import types

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BENCH, STUDIES = ([p.stem for p in sorted((REPO / "tools" / folder).glob("*.py"))
                   if p.stem not in ("__init__", "benchlib")] for folder in ("bench", "studies"))
MODULES = [f"tools.bench.{n}" for n in BENCH] + [f"tools.studies.{n}" for n in STUDIES]
MEASUREMENTS = REPO / "docs" / "measurements"


def _run(args, **kwargs):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable] + args, cwd=REPO, env=env, capture_output=True,
                          encoding="utf-8", errors="replace", check=False, **kwargs)


@pytest.fixture
def tools(monkeypatch):
    """Imports ``tools.<module>`` from the repository root (as ``python -m`` does there)."""
    monkeypatch.syspath_prepend(str(REPO))

    def load(name):
        module = importlib.import_module(f"tools.{name}")
        assert pathlib.Path(module.__file__).is_relative_to(REPO / "tools"), module.__file__
        return module
    return load


@pytest.fixture
def benchlib(tools, monkeypatch, tmp_path):
    """tools.bench.benchlib with its repository root (where docs/ is written) in tmp_path."""
    module = tools("bench.benchlib")
    monkeypatch.setattr(module, "REPO", str(tmp_path))
    return module


_HELP_ALL = """
import contextlib, io, json, runpy, sys
out = {}
for name in sys.argv[1:]:
    module = __import__(name, fromlist=["parser"])
    prog = module.parser().prog
    sys.argv = [name, "--help"]
    text = io.StringIO()
    code = None
    with contextlib.redirect_stdout(text):
        try:
            runpy.run_module(name, run_name="__main__", alter_sys=True)
        except SystemExit as exit:
            code = exit.code
    out[name] = [prog, code, text.getvalue()]
print("RESULT " + json.dumps(out))
"""


def test_every_tool_answers_help_as_a_module():
    """One process (TensorFlow is imported once): each tool's parser() and its
    ``python -m tools.X.Y --help`` path (run_module as __main__)."""
    result = _run(["-c", _HELP_ALL] + MODULES, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    line = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")][-1]
    helps = json.loads(line[len("RESULT "):])
    assert sorted(helps) == sorted(MODULES)
    for name, (prog, code, text) in helps.items():
        assert prog == f"python -m {name}"
        assert code == 0, name
        assert text.startswith(f"usage: python -m {name} "), text[:200]
        assert "-h, --help" in text


@pytest.mark.slow
@pytest.mark.parametrize("name", MODULES)
def test_tool_help_in_its_own_process(name):
    result = _run(["-m", name, "--help"], timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith(f"usage: python -m {name}")


def test_no_sys_path_edits_and_old_paths_gone():
    for path in (REPO / "tools").rglob("*.py"):
        assert "sys.path" not in path.read_text(encoding="utf-8"), path
    assert not (REPO / "tools" / "benchlib.py").exists()
    assert not list((REPO / "tools").glob("bench_*.py"))
    for wrapper, module in (("bench_data", "tools.bench.data"),
                            ("bench_train", "tools.bench.train")):
        text = (REPO / "tools" / wrapper).read_text(encoding="utf-8")
        assert f".venv/bin/python -m {module} \"$@\"" in text
        assert os.access(REPO / "tools" / wrapper, os.X_OK)


def test_table(tools):
    benchlib = tools("bench.benchlib")
    assert benchlib.table(("a", "b"), [(1, "x"), ("y", 2.5)]) == (
        "| a | b |\n|---|---|\n| 1 | x |\n| y | 2.5 |")


def test_reproduce_command_names_the_module(tools, monkeypatch):
    benchlib = tools("bench.benchlib")
    assert benchlib.reproduce_command("/x/tools/studies/tta_views.py",
                                      ["--section", "TTA views, width 0.25", "--limit", "3"]) \
        == "python -m tools.studies.tta_views --section 'TTA views, width 0.25' --limit 3"
    model = tools("bench.model")
    monkeypatch.setattr(sys, "argv", ["model.py", "--batch", "256"])
    assert benchlib.reproduce_command(model.__file__) == "python -m tools.bench.model --batch 256"
    assert benchlib.reproduce_command(model.__file__, []) == "python -m tools.bench.model"


def test_write_section_starts_a_file_and_replaces_a_section(benchlib, tmp_path, capsys):
    benchlib.write_section("First", "body one", "cmd 1", doc="hotspots",
                           measured=("2020-01-02", "a machine"))
    path = tmp_path / "docs" / "results" / "hotspots.md"
    first = ("<!-- First -->\n## First\n\nMeasured 2020-01-02 on: a machine.  \n"
             "Reproduce: `cmd 1`\n\nbody one\n<!-- /First -->")
    assert path.read_text(encoding="utf-8") == (
        "# Hotspot localisation\n\nWritten by the scripts in tools/studies/.\n\n" + first + "\n")
    assert first in capsys.readouterr().out
    benchlib.write_section("Second", "body two", "cmd 2", doc="hotspots",
                           measured=("2020-01-03", "m"))
    benchlib.write_section("First", "body three", "cmd 3", doc="hotspots",
                           measured=("2020-01-04", "m"))
    text = path.read_text(encoding="utf-8")
    assert text.count("<!-- First -->") == 1 and text.count("<!-- /First -->") == 1
    assert "body one" not in text and "cmd 1" not in text
    assert text.index("body three") < text.index("<!-- /First -->") < text.index("body two")
    assert text.startswith("# Hotspot localisation\n")
    other = tmp_path / "elsewhere.md"  # path= writes another file; today's date, this machine
    benchlib.write_section("S", "b", "c", path=str(other))
    assert other.read_text(encoding="utf-8").startswith("# Benchmarks\n")
    assert f"on: {benchlib.machine()}." in other.read_text(encoding="utf-8")


def test_docs_targets(tools):
    benchlib = tools("bench.benchlib")
    expected = {"benchmarks": ("docs/benchmarks.md", "Benchmarks"),
                "grading": ("docs/results/grading.md", "Grading accuracy"),
                "detection": ("docs/results/detection.md", "Disc detection"),
                "hotspots": ("docs/results/hotspots.md", "Hotspot localisation"),
                "sweep": ("docs/results/sweep.md", "Branch-point sweep")}
    assert {k: v[:2] for k, v in benchlib.DOCS.items()} == expected
    assert benchlib.doc_path("grading") == str(REPO / "docs" / "results" / "grading.md")
    writes = {"phantom_accuracy": "grading", "phantom_subgroups": "grading",
              "tta_views": "grading", "detector_accuracy": "detection",
              "detector_real_folds": "detection", "hotspot_quality": "hotspots",
              "sweep_report": "sweep", "grading_baseline": "grading", "real_grading": "grading",
              "real_hotspots": "hotspots"}
    for name, doc in writes.items():
        assert tools(f"studies.{name}").DOC == doc, name


def test_sweep_report_from_saved_json(benchlib, tools, tmp_path, capsys):
    from spine_tf.evaluation import sweep
    saved_file = MEASUREMENTS / "sweep_w0125.json"
    if not saved_file.exists():
        pytest.skip(f"{saved_file} missing")
    saved = json.loads(saved_file.read_text(encoding="utf-8"))
    report = tools("studies.sweep_report")
    assert report.main(["--from-json", str(saved_file), "--section", "Sweep, tiny"]) == 0
    capsys.readouterr()
    text = (tmp_path / "docs" / "results" / "sweep.md").read_text(encoding="utf-8")
    assert text.startswith("# Branch-point sweep\n")
    assert f"Measured {saved['date']} on: {saved['machine']}." in text
    assert sweep.markdown(saved["sweep"]) in text
    assert report.costs_markdown(saved["costs"]) in text
    assert (f"`, then `python -m tools.studies.sweep_report --out {saved['out']} "
            f"--section 'Sweep, tiny' --save {saved_file}`") in text
    assert f"Reproduce: `spine-tf sweep --out {saved['out']} --branch-points " in text


def test_bench_model_from_saved_json(benchlib, tools, tmp_path, capsys):
    saved_file = MEASUREMENTS / "bench_model_b64.json"
    if not saved_file.exists():
        pytest.skip(f"{saved_file} missing")
    saved = json.loads(saved_file.read_text(encoding="utf-8"))
    model = tools("bench.model")
    assert model.main(["--from-json", str(saved_file)]) == 0  # default --docs: benchmarks.md
    capsys.readouterr()
    text = (tmp_path / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    name = f"Model compute, {saved['backend']} on {saved['accelerator']}, batch 64"
    assert f"<!-- {name} -->\n## {name}\n\nMeasured {saved['date']} on: " in text
    assert f"Reproduce: `{saved['command']}`" in text
    assert model.body(saved) in text


def test_bench_train_reproduce_lists_changed_options(tools):
    train = tools("bench.train")
    args = train.parser().parse_args(["--dry-run", "--width", "0.25", "--jit", "--batch", "32"])
    assert train.reproduce(args) == "python -m tools.bench.train --batch 32 --width 0.25 --jit"
    assert train.reproduce(train.parser().parse_args([])) == "python -m tools.bench.train"


def test_phantom_accuracy_history_summary(tools, tmp_path):
    from spine_tf.training import callbacks
    (tmp_path / "history.csv").write_text(
        f"epoch,loss,{callbacks.MONITOR}\n0,1.0,0.5\n1,0.9,0.7\n2,0.8,0.6\n", encoding="utf-8")
    study = tools("studies.phantom_accuracy")
    assert study.history_summary(str(tmp_path)) == (3, 2, 0.7)
    assert study._pct(None) == "n/a" and study._pct(0.1234) == "12.3"


def test_phantom_subgroups_helpers(tools):
    study = tools("studies.phantom_subgroups")
    assert study.wilson(0, 0) is None
    low, high = study.wilson(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    assert study.wilson(10, 10)[1] == 1.0
    marrow = types.SimpleNamespace(task="marrow_upper", strength=0.8, brightness=1.5)
    dark = types.SimpleNamespace(task="marrow_lower", strength=0.1, brightness=0.5)
    assert study.lesion_groups(None, 0) == ["negative, no lesion"]
    assert study.lesion_groups(marrow, 1) == [
        "positive, all", "positive, strength 0.7-1.0", "positive, bright lesion"]
    assert study.lesion_groups(dark, 0) == [
        "negative, sub-threshold lesion", "negative, sub-threshold lesion, dark"]


def test_tta_views_standard_set(tools):
    from spine_tf import tta
    study = tools("studies.tta_views")
    assert study.grid_views([16]) == list(tta.VIEWS)
    views = study.grid_views([8, 16])
    assert len(views) == 150 and views[:54] == list(tta.VIEWS)
    assert study.view_set_index(views, study.VIEW_SETS[study.STANDARD]) == list(range(54))
    assert study.view_set_index(study.grid_views([16]),
                                study.VIEW_SETS["+-8 px, columns and rows"]) is None


def test_hotspot_quality_specificity_table(tools):
    study = tools("studies.hotspot_quality")
    text = study.specificity_table({
        "endplate": {"discs": 0, "upper_task": [], "lower_task": [], "specific": 0.0},
        "marrow": {"discs": 2, "upper_task": [0.6, 0.8], "lower_task": [0.2, 0.4],
                   "specific": 0.5}})
    assert text.splitlines()[2:] == ["| endplate | 0 | n/a | n/a | n/a |",
                                     "| marrow | 2 | 0.70 | 0.30 | 50 % |"]


def test_detector_studies_find_the_real_slices(tools, real_slices_dir, tmp_path):
    accuracy = tools("studies.detector_accuracy")
    assert os.path.realpath(accuracy.REAL) == os.path.realpath(real_slices_dir)
    row = accuracy._summary_row("x", {"true_discs": 10, "detections": 9, "recall": 0.9,
                                      "precision": 1.0, "level_accuracy": 0.5,
                                      "distance_mm_median": 1.234, "angle_deg_median": 2.25,
                                      "angle_deg_p95": 7.0})
    assert row == ["x", 10, 9, "90.0", "100.0", "50.0", "1.23", "2.2", "7.0"]
    folds = tools("studies.detector_real_folds")
    folder = folds._fold_folder(str(tmp_path / "fold"), "3")
    masks = sorted(os.listdir(os.path.join(folder, "masks")))
    scans = sorted(os.listdir(os.path.join(folder, "scans")))
    assert masks == sorted(p.name for p in real_slices_dir.glob("*.npy") if p.stem != "3")
    assert "0.npy" in masks and scans == [m.replace(".npy", ".png") for m in masks]
    assert os.path.samefile(os.path.join(folder, "masks", "0.npy"), real_slices_dir / "0.npy")


def test_bench_model_tiny_run(tmp_path):
    """A width-1/16 model, one step: the section and the saved JSON (a process of its own:
    the tool sets Keras' global precision policy)."""
    docs, saved = tmp_path / "b.md", tmp_path / "b.json"
    args = ["--width", "0.0625", "--precisions", "float32", "--batch", "2", "--tta-discs", "1",
            "--steps", "1", "--rounds", "1", "--docs", str(docs), "--json", str(saved)]
    result = _run(["-m", "tools.bench.model"] + args, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(saved.read_text(encoding="utf-8"))
    assert data["command"] == "python -m tools.bench.model " + " ".join(args)
    assert [(r["branch_point"], r["precision"], r["batch"]) for r in data["rows"]] == [
        ("conv5", "float32", 2)]
    assert data["rows"][0]["train_discs_per_s"] > 0 and data["rows"][0]["tta_views_per_batch"] == 54
    text = docs.read_text(encoding="utf-8")
    name = f"Model compute, {data['backend']} on {data['accelerator']}, batch 2, float32"
    assert text.startswith("# Benchmarks\n") and f"<!-- {name} -->\n## {name}\n" in text
    assert f"Reproduce: `{data['command']}`" in text


def test_detector_accuracy_writes_detection_and_its_time(benchlib, tools, tmp_path,
                                                         real_slices_dir, capsys):
    study = tools("studies.detector_accuracy")
    study.main(["--phantoms", "1"])
    capsys.readouterr()
    results = (tmp_path / "docs" / "results" / "detection.md").read_text(encoding="utf-8")
    assert results.startswith("# Disc detection\n")
    assert "<!-- Disc detection -->" in results and "| phantom, 1 held-out scans |" in results
    assert "Disc detection time" not in results
    timing = (tmp_path / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert "<!-- Disc detection time -->" in timing and "<!-- Disc detection -->" not in timing
    for text in (results, timing):
        assert "Reproduce: `python -m tools.studies.detector_accuracy --phantoms 1`" in text


@pytest.mark.slow
def test_bench_data_tiny_run(benchlib, tools, tmp_path, capsys):
    tools("bench.data").main(["--patients", "2"])
    capsys.readouterr()
    text = (tmp_path / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert "<!-- Data foundation -->" in text
    assert "Reproduce: `python -m tools.bench.data --patients 2`" in text
    assert "| build spine_discs (phantom source), 1 worker(s) |" in text


@pytest.mark.slow
def test_bench_train_tiny_dry_run(tmp_path):
    args = ["--dry-run", "--width", "0.0625", "--patients", "4", "--batch", "4", "--rounds", "1",
            "--epochs", "1", "--bare-steps", "1"]
    result = _run(["-m", "tools.bench.train"] + args, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| 1. bare train step (`model.fit` on one resident batch) |" in result.stdout
    assert "Model of width 0.0625" in result.stdout


def test_spider_detector_study_folders(tools, spider_subset_dir, real_slices_dir, tmp_path):
    study = tools("studies.spider_detector")
    folder = study.subset(str(spider_subset_dir), str(tmp_path / "sub"), {"127", "151"})
    from spine_tf.data import spider_slices
    images = spider_slices.read_slices(folder)
    assert sorted(i.series for i in images) == ["127_t2", "127_t2_SPACE", "151_t2"]
    assert [len(i.boxes) for i in sorted(images, key=lambda i: i.series)] == [8, 8, 7]
    gradings = spider_slices.graded_numbers(os.path.join(folder, "radiological_gradings.csv"))
    assert sorted(gradings) == ["127", "151"]
    assert os.path.samefile(os.path.join(folder, "images", "151_t2.png"),
                            spider_subset_dir / "images" / "151_t2.png")
    written, left_out = study.training_masks(str(spider_subset_dir), str(tmp_path / "m"),
                                             {"104", "151"})
    assert written == ["104_t2"] and left_out == []  # 151's boxes are not its graded discs
    masks = sorted(os.listdir(tmp_path / "m" / "masks"))
    assert masks == sorted(["104_t2.nii.gz"] + [p.name for p in real_slices_dir.glob("*.npy")])
    row = study._row("d", "test", "estimate", {
        part: {"recall": 0.9, "recall_interval": [0.8, 1.0], "precision": 0.95,
               "precision_interval": [0.9, 1.0], "level_accuracy": 0.5,
               "level_accuracy_interval": [0.25, 0.75], "true_discs": 12,
               "distance_mm_median": 1.26} for part in ("lumbar", "overall")})
    assert row == ["d", "test", "estimate", "12", "90.0 (80.0-100.0)", "90.0 (80.0-100.0)",
                   "95.0 (90.0-100.0)", "50.0 (25.0-75.0)", "1.3"]
