"""Shared helpers of tools.bench and tools.studies: machine description, timing, the
documents they write (``DOCS``), Markdown tables and sections."""

import argparse
import datetime
import os
import platform
import re
import shlex
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DOCS = {
    "benchmarks": ("docs/benchmarks.md", "Benchmarks",
                   "Written by the scripts in tools/; medians of repeated runs, ratios "
                   "measured side by side in one run."),
    "grading": ("docs/results/grading.md", "Grading accuracy",
                "Written by the scripts in tools/studies/."),
    "detection": ("docs/results/detection.md", "Disc detection",
                  "Written by the scripts in tools/studies/."),
    "hotspots": ("docs/results/hotspots.md", "Hotspot localisation",
                 "Written by the scripts in tools/studies/."),
    "sweep": ("docs/results/sweep.md", "Branch-point sweep",
              "Written by the scripts in tools/studies/."),
}
"""{topic: (file relative to the repository, its title, its first paragraph)}: where each
tool writes its sections (see ``write_section``); title and paragraph start a new file."""


def doc_path(topic):
    """The absolute path of the document of ``topic`` (a key of ``DOCS``)."""
    return os.path.join(REPO, *DOCS[topic][0].split("/"))


def machine():
    """One line naming the CPU, cores and memory this runs on."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            names = re.findall(r"model name\s*:\s*(.+)", f.read())
        model = names[0].strip() if names else model
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            kb = int(re.search(r"MemTotal:\s*(\d+)", f.read()).group(1))
        memory = f", {kb / 2**20:.0f} GiB"
    except (OSError, AttributeError):
        memory = ""
    return f"{model}, {os.cpu_count()} cores{memory}, Python {platform.python_version()}"


def timed(function, repeats):
    """Median wall seconds of ``repeats`` calls, and the last result."""
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def alternated(measures, rounds, warm_ups=1):
    """Median wall seconds of every function in ``measures`` ({name: function}).

    Each is called ``warm_ups`` times untimed (tracing, allocation), then the
    functions are timed in turn, one call each per round, so that load from
    other processes hits all of them alike.
    """
    for _ in range(warm_ups):
        for function in measures.values():
            function()
    seconds = {key: [] for key in measures}
    for _ in range(rounds):
        for key, function in measures.items():
            seconds[key].append(timed(function, 1)[0])
    return {key: statistics.median(values) for key, values in seconds.items()}


def table(header, rows):
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def percent(value, interval=None, unit=""):
    """A share as a table cell: ``63.7`` (``unit`` after it, e.g. " %"), with its interval
    as ``63.7 (52.2-73.3)`` where one is given; "n/a" for None."""
    if value is None:
        return "n/a"
    text = f"{100 * value:.1f}{unit}"
    return text if not interval else f"{text} ({100 * interval[0]:.1f}-{100 * interval[1]:.1f})"


def module_command(script):
    """'python -m tools.<package>.<name>': how to run the tool in file ``script``
    (tools/<package>/<name>.py) from the repository root."""
    package = os.path.basename(os.path.dirname(os.path.abspath(script)))
    name = os.path.splitext(os.path.basename(script))[0]
    return f"python -m tools.{package}.{name}"


def argument_parser(script, doc):
    """The ArgumentParser of the tool in file ``script``: usage names the module command,
    the description is the first paragraph of ``doc``."""
    return argparse.ArgumentParser(prog=module_command(script), description=doc.split("\n\n")[0])


def reproduce_command(script, argv=None):
    """'python -m tools.<package>.<name> ARGS': how the tool in file ``script`` was called
    with ``argv`` (default: sys.argv[1:])."""
    args = argv if argv is not None else sys.argv[1:]
    return " ".join([module_command(script)] + [shlex.quote(a) for a in args])


def add_section_option(parser, doc):
    """``--section NAME``: also write a study's table as that section of ``doc``'s document
    (``publish``)."""
    parser.add_argument("--section", help=f"also write the table as this {DOCS[doc][0]} section")


def publish(body, section, script, argv, doc):
    """A study's table: written as section ``section`` of the document of topic ``doc``
    (with the command that ran ``script`` with ``argv``) when one is named, else printed."""
    if section:
        write_section(section, body, reproduce_command(script, argv), doc=doc)
    else:
        print(body)


def write_section(name, body, command, doc="benchmarks", path=None, measured=None):
    """Replaces (or appends) section ``name`` of the document of topic ``doc`` (a key of
    ``DOCS``; ``path``: another file instead) and prints it.

    ``measured``: (date, machine) of a measurement made elsewhere; default today, here.
    """
    path = path or doc_path(doc)
    _, title, intro = DOCS[doc]
    stamp, where = measured or (datetime.date.today().isoformat(), machine())
    section = (f"<!-- {name} -->\n## {name}\n\nMeasured {stamp} on: {where}.  \n"
               f"Reproduce: `{command}`\n\n{body}\n<!-- /{name} -->")
    print(section)
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else (
        f"# {title}\n\n{intro}\n")
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else \
        text.rstrip("\n") + "\n\n" + section + "\n"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
