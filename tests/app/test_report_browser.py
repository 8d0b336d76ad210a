"""A scan's report as a person sees it in a browser (headless Chromium): every picture
loads, the overview boxes every graded disc and marks the flagged one, and the overview is
not blank on screen."""

import dataclasses
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from spine_tf.app import overview, predict, predictors, scans
from spine_tf.modeling import model as model_lib

BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(name)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no headless Chromium (apt install "
                                "chromium; tools/system-packages installs it as root)")

FLAGGED = 1
"""The disc (by index) whose localisation confidence the test lowers."""

# Run after the page has loaded: counts the <img>s and those that loaded, loads the SVG's
# own <image>s the same way, and writes what it found and where the overview lies onto
# <body>, for --dump-dom to show (the overview inside its border).
CHECK_SCRIPT = """<script>
window.addEventListener("load", function () {
  var body = document.body, imgs = Array.from(document.querySelectorAll("img"));
  body.dataset.images = imgs.length;
  body.dataset.loaded = imgs.filter(function (i) {
    return i.complete && i.naturalWidth > 0; }).length;
  var svg = document.querySelector("svg.overview"), r = svg.getBoundingClientRect();
  body.dataset.overview = [r.left + svg.clientLeft, r.top + svg.clientTop, svg.clientWidth,
                           svg.clientHeight].map(Math.round).join(",");  // inside its border
  var probes = Array.from(svg.querySelectorAll("image")).map(function (image) {
    return new Promise(function (done) {
      var probe = new Image();
      probe.onload = function () { done(probe.naturalWidth > 0); };
      probe.onerror = function () { done(false); };
      probe.src = image.href.baseVal;
    });
  });
  Promise.all(probes).then(function (ok) {
    body.dataset.svgImages = ok.length;
    body.dataset.svgLoaded = ok.filter(Boolean).length;
  });
});
</script>"""


@pytest.fixture(scope="module")
def graded(phantom_cohort_dir, tmp_path_factory):
    """One phantom scan graded by a tiny untrained model, its second disc's localisation
    confidence lowered below ``predict.LOW_CONFIDENCE``: (scan folder, record)."""
    model = model_lib.build_model(width=0.0625)
    model_lib.mean_subtraction(model).set_mean(np.full(9, 0.2))
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    predictor = predictors.load_predictor(os.fspath(path))
    job = [j for j in scans.find_scans([phantom_cohort_dir]) if j.name == "ph1-00000"][0]
    out = tmp_path_factory.mktemp("browser")
    original = predict.extract_scan

    def unsure(job, detector=None):
        scan, located, volumes, skipped = original(job, detector)
        volumes[FLAGGED] = dataclasses.replace(volumes[FLAGGED], confidence=0.2)
        return scan, located, volumes, skipped

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(predict, "extract_scan", unsure)
        record = predict.predict_scan(job, predictor, os.fspath(out), tta=False,
                                      augmentations=2)
    return out / job.name, record


def _chromium(*arguments, timeout=60):
    return subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", *arguments], capture_output=True, text=True,
                          timeout=timeout, check=True).stdout


def test_the_report_shows_its_pictures_and_a_box_per_graded_disc(graded, tmp_path):
    folder, record = graded
    assert len(record["discs"]) >= 4 and [d["flagged"] for d in record["discs"]].count(True) == 1
    page = (folder / "report.html").read_text(encoding="utf-8")
    check = folder / "check.html"  # beside the report, so its pictures resolve the same way
    check.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8")
    dom = _chromium("--window-size=1400,1800", "--virtual-time-budget=5000", "--dump-dom",
                    check.as_uri())
    body = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', re.search(r"<body[^>]*>", dom)[0]))
    tasks = len(record["hotspots"]["volumes"])
    assert body["images"] == body["loaded"] == str(1 + 2 * tasks)  # discs, per task 2
    assert body["svg-images"] == body["svg-loaded"] == "1"
    svg = re.search(r'<svg class="overview".*?</svg>', dom, re.S)[0]
    boxes = re.findall(r'<polygon class="(disc-box[^"]*)" data-level="([^"]*)"', svg)
    assert [level for _, level in boxes] == [d["level"] for d in record["discs"]]
    assert [css for css, _ in boxes].count("disc-box flagged") == 1
    assert boxes[FLAGGED] == ("disc-box flagged", record["discs"][FLAGGED]["level"])

    left, top, width, height = (int(v) for v in body["overview"].split(","))
    assert width == record["overview"]["size_px"][0] and height > 300
    shot = tmp_path / "report.png"
    _chromium(f"--window-size=1400,{top + height + 40}", f"--screenshot={shot}", check.as_uri())
    seen = np.asarray(Image.open(shot).convert("RGB"), np.int16)
    image_px = record["overview"]["image_px"]
    area = seen[top + 2:top + image_px[1] - 2, left + 2:left + image_px[0] - 2]
    assert area.std() > 20  # the scan, not a blank or broken picture

    def shown(colour):
        return (np.abs(area - np.array(colour)).max(axis=-1) <= 6).sum()
    assert shown(overview.FLAG_COLOUR) > 50  # the flagged disc's dashed magenta outline
    for disc in record["discs"]:
        grade = disc["tasks"]["pfirrmann"]["grade"]
        assert shown(overview.grade_colour(grade, 5)) > 50
