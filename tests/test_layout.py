"""The package's architecture: imports point one way, modules stay small, and the
light entry points (config, the CLI's parser, the phantom) load no TensorFlow."""

import ast
import pathlib
import subprocess
import sys
import textwrap

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "spine_tf"

# The layers, lowest first. A module may import from its own top-level part of
# spine_tf and from any part in an earlier layer, never from a later layer or
# from another part of its own layer. Changing the architecture is changing this list.
LAYERS = (
    ("tasks", "errors"),
    ("io",),
    ("config",),
    ("localisation",),
    ("extraction",),
    ("phantom",),
    ("data",),
    ("modeling", "augment"),
    ("tta",),
    ("hotspots",),
    ("training",),
    ("detection",),
    ("evaluation",),  # builds datasets whose discs the detector places
    ("serving",),
    ("app",),
    ("cli",),
)
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
MAX_LINES = 450


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path):
    """(line, dotted name) of every spine_tf module or name imported anywhere in the file."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            yield from ((node.lineno, f"{base}.{alias.name}") for alias in node.names)


def _part(dotted):
    """The top-level part of spine_tf a dotted name belongs to (None: outside, or the root)."""
    parts = dotted.split(".")
    return parts[1] if parts[0] == "spine_tf" and len(parts) > 1 else None


def _files():
    return sorted(PACKAGE.rglob("*.py"))


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(_module_name(path)) for path in _files()} - {None}
    assert parts == set(RANK), f"parts without a layer: {parts - set(RANK)}"


def test_imports_point_down_the_layers():
    wrong = []
    for path in _files():
        own = _part(_module_name(path))
        if own is None:
            continue
        for line, dotted in _imported(path):
            other = _part(dotted)
            if other is None or other == own or other not in RANK:
                continue  # the root (__version__), outside, or a name of the root
            if RANK[other] >= RANK[own]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {own} imports {dotted}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_layer_check_sees_an_upward_import(tmp_path):
    # the checker itself: an io module importing training, inside a function, is caught
    bad = PACKAGE / "io" / "_layout_probe.py"
    bad.write_text("def f():\n    from spine_tf.training import train\n")
    try:
        found = [d for _, d in _imported(bad) if RANK[_part(d)] > RANK["io"]]
    finally:
        bad.unlink()
    assert found == ["spine_tf.training.train"]


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_small(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.name}: {lines} lines"


@pytest.mark.parametrize("code", [
    "import spine_tf.config as c\nc.override(c.ExperimentConfig(), ['model.width=0.5'])",
    "from spine_tf import cli\ncli.main(['--help'])",
    "from spine_tf import cli\nfor name in cli.COMMANDS:\n    try:\n"
    "        cli.main([name, '--help'])\n    except SystemExit:\n        pass",
], ids=["config", "cli-help", "command-help"])
def test_light_entry_points_load_no_tensorflow(code):
    probe = ("import sys\ntry:\n" + textwrap.indent(code, "    ")
             + "\nexcept SystemExit:\n    pass\n"
             "heavy = sorted(m for m in ('tensorflow', 'keras', 'tensorflow_datasets') "
             "if m in sys.modules)\nprint('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, encoding="utf-8",
                         errors="replace", check=True).stdout
    assert "HEAVY []" in out, out[-500:]


def test_phantom_command_loads_no_tensorflow(tmp_path):
    probe = ("import sys\nfrom spine_tf import cli\n"
             f"cli.main(['phantom', '--patients', '1', '--out', {str(tmp_path)!r}, "
             "'--workers', '1'])\n"
             "print('HEAVY', sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, encoding="utf-8",
                         errors="replace", check=True).stdout
    assert "HEAVY []" in out, out[-500:]
    assert list((tmp_path / "scans").iterdir())
