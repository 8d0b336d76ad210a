"""What ``spine-tf predict`` writes for people to read: each scan's HTML report, the
index page of a run and the rows of its ``grades.csv``; and the names of those files.

The pages are self-contained (inline style, pictures beside them) and open
offline.
"""

import html

from spine_tf import tasks
from spine_tf.app import overview
from spine_tf.extraction import SLICES

CSV_NAME, SUMMARY_NAME, INDEX_NAME = "grades.csv", "summary.json", "index.html"
GRADES_NAME, REPORT_NAME, NIFTI_NAME = "grades.json", "report.html", "hotspots.nii.gz"
DISCS_PICTURE, OVERVIEW_PICTURE = "discs.png", "overview.png"
DICOM_FOLDER = "dicom"
"""A DICOM scan's results as DICOM (``app.dicom_results``), which ``--store`` sends back."""


def hotspot_picture(task_name):
    """The file name of a task's hotspot montage in a scan's folder."""
    return f"hotspots_{task_name}.png"


def hotspot_scan_picture(task_name):
    """The file name of a task's hotspots on the overview slice in a scan's folder."""
    return f"hotspots_scan_{task_name}.png"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: center; }
th { background: #eee; }
td.flagged, span.flagged, p.flagged { color: #b00; font-weight: bold; }
small { color: #666; }
img { max-width: 100%; border: 1px solid #ccc; }
.failed { color: #b00; }
svg.overview { max-width: 100%; height: auto; border: 1px solid #ccc; background: #000; }
svg.overview polygon { fill: transparent; stroke: #fff; stroke-opacity: 0; stroke-width: 3; }
svg.overview polygon:hover { stroke-opacity: 0.9; }
ul.legend { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 0.4em 1.2em; }
ul.legend span { display: inline-block; width: 1.4em; height: 0.9em; margin-right: 0.3em;
                 vertical-align: middle; }
div.pictures { display: flex; flex-wrap: wrap; gap: 1em; }
div.pictures figure { margin: 0; width: 340px; }
div.pictures img { width: 100%; }
"""


def _page(title, body):
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")


def _series_line(series):
    """The DICOM series a study was graded from, and why."""
    return (f"{series.get('number', '?')} {series.get('description', '')!r} "
            f"({series.get('orientation')}, {series.get('weighting')}, "
            f"{series.get('images')} images): {series.get('why')}")


def _study_line(study):
    """Whose study it is, for the reader to check: patient ID, date, accession, description
    and UID (what the headers hold)."""
    date = study.get("date", "")
    date = f"{date[:4]}-{date[4:6]}-{date[6:]}" if len(date) == 8 and date.isdigit() else date
    parts = [f"patient ID {study['patient_id']}" if study.get("patient_id") else "",
             f"date {date}" if date else "",
             f"accession {study['accession']}" if study.get("accession") else "",
             repr(study["description"]) if study.get("description") else ""]
    return ", ".join(p for p in parts if p) + f" (StudyInstanceUID {study.get('uid', '?')})"


def _dicom_line(dicom):
    """Where a DICOM scan's DICOM results are, or why they could not be written."""
    if not dicom:
        return ""
    if "error" in dicom:
        return (f"<p class=\"flagged\">No DICOM results: {html.escape(dicom['error'])}</p>")
    links = ", ".join(f"<a href=\"{DICOM_FOLDER}/{html.escape(f)}\">{html.escape(f)}</a>"
                      for f in dicom["files"])
    return (f"<p>DICOM results (in the scan's study, for a PACS or viewer): {links}<br>"
            "<small>the grades as a TID 1500 structured report; the hotspots as Parametric "
            "Maps over the graded series</small></p>")


def record_tasks(record):
    """The tasks a scan's record grades (its ``task_set``; records written before task
    sets graded the paper's)."""
    return tasks.task_set(record.get("task_set", tasks.DEFAULT_TASK_SET)).tasks


def _grades_tooltip(disc, graded):
    lines = [disc["level"]] + [
        f"{task.name.replace('_', ' ')}: {disc['tasks'][task.name]['class_name']} "
        f"(p = {disc['tasks'][task.name]['probability']:.2f})" for task in graded]
    if disc["flagged"]:
        lines.append(f"low localisation confidence {disc['confidence']:.2f}: check it")
    return "\n".join(lines)


def _polygon(box, frame, css, colour, tooltip, level):
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in frame.to_pixels(box))
    return (f"<polygon class=\"{css}\" data-level=\"{html.escape(level)}\" "
            f"data-colour=\"{colour}\" points=\"{points}\"><title>{html.escape(tooltip)}"
            "</title></polygon>")


def overview_section(record):
    """The overview of a scan's report: ``overview.png`` under an inline SVG with one
    polygon per disc box (class ``disc-box``, plus ``flagged``; ``ungraded-box`` for a disc
    not graded) carrying its grades as a tooltip, and the colour legend. Empty for a record
    written before overviews."""
    view = record.get("overview")
    if not view:
        return ""
    e = html.escape
    graded = record_tasks(record)
    width, height = view["size_px"]
    frame = overview.Frame(tuple(view["pixels_per_voxel"]), tuple(view["image_px"]),
                           (width, height))
    marks = overview.disc_marks(record)
    shapes = [_polygon(mark.box, frame, "disc-box flagged" if mark.flagged else "disc-box",
                       overview.hex_colour(mark.colour), _grades_tooltip(disc, graded),
                       mark.level) for mark, disc in zip(marks, record["discs"])]
    shapes += [_polygon(mark.box, frame, "ungraded-box", overview.hex_colour(mark.colour),
                        f"{mark.level}: not graded", mark.level)
               for mark in marks[len(record["discs"]):]]
    legend = "".join(f"<li><span style=\"background: {overview.hex_colour(c)}\"></span>"
                     f"{e(text)}</li>" for c, text in overview.legend_items(record))
    legend += (f"<li><span style=\"border: 2px dashed {overview.hex_colour(overview.FLAG_COLOUR)}"
               "\"></span>? low localisation confidence: check the disc and its level</li>"
               f"<li><span style=\"border: 1px solid "
               f"{overview.hex_colour(overview.UNGRADED_COLOUR)}\"></span>not graded</li>")
    task = overview.short_name(view["task"])
    where = (f"slice {view['slice'] + 1} of {record['scan_slices']}, the discs' middle"
             if record["scan_slices"] > 1 else "its one slice")
    return (f"<h2>Overview</h2><p><small>The scan ({e(where)}; anterior left, head up) with "
            f"every graded disc boxed, named and coloured by its {e(task)} grade; hover a box "
            "for all its grades.</small></p>"
            f"<svg class=\"overview\" xmlns=\"http://www.w3.org/2000/svg\" "
            f"viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" "
            f"role=\"img\" aria-label=\"overview of {e(record['name'])}\">"
            f"<image href=\"{OVERVIEW_PICTURE}\" x=\"0\" y=\"0\" width=\"{width}\" "
            f"height=\"{height}\"/>{''.join(shapes)}</svg>"
            f"<ul class=\"legend\">{legend}</ul>")


def scan_page(record, pictures, scan_pictures=None):
    """The HTML report of one scan: overview, grades table, hotspots on the scan and on the
    disc volumes, model (self-contained, offline).

    Args:
        record: the scan's record (``grades.json``).
        pictures: {task: file} of the hotspot montages (empty: no hotspots).
        scan_pictures: {task: file} of the hotspots on the scan, if any.
    """
    e = html.escape
    graded = record_tasks(record)
    head = "".join(f"<th>{e(t.name.replace('_', ' '))}</th>" for t in graded)
    rows = []
    for disc in record["discs"]:
        cells = []
        for task in graded:
            result = disc["tasks"][task.name]
            shade = result["grade"] / (task.num_classes - 1)
            cells.append(f"<td style=\"background: rgba(230, 120, 30, {0.5 * shade:.2f})\">"
                         f"{e(result['class_name'])}<br>"
                         f"<small>p = {result['probability']:.2f}</small></td>")
        flag = (" <span class=\"flagged\">(low localisation confidence "
                f"{disc['confidence']:.2f}: check it)</span>") if disc["flagged"] else ""
        rows.append(f"<tr><th>{e(disc['level'])}{flag}</th>{''.join(cells)}</tr>")
    # a record written before the input modes has no tta_views: it used the 54 views
    views = f"{record.get('tta_views', 54)} views" if record["tta"] else "off"
    parts = [f"<h1>{e(record['name'])}</h1>",
             f"<p>Scan: <code>{e(record['scan'])}</code><br>"
             + (f"Study: {e(_study_line(record['series']['study']))}<br>"
                if record.get("series", {}).get("study") else "")
             + (f"Series: {e(_series_line(record['series']))}<br>" if record.get("series")
                else "")
             + "Discs localised from: "
             f"<code>{e(record['localisation'])}</code><br>Model: {e(record['model'])}<br>"
             f"Test-time augmentation: {views}</p>",
             *(f"<p class=\"flagged\">Detector: {e(note)}</p>"
               for note in record.get("localisation_notes", [])),
             *(f"<p class=\"flagged\">{e(note)}</p>" for note in record.get("input_notes", [])),
             _dicom_line(record.get("dicom")),
             overview_section(record),
             f"<table><tr><th>level</th>{head}</tr>{''.join(rows)}</table>",
             "<p><small>Each cell: the predicted class and its probability; the higher "
             "the class, the darker the shade.</small></p>"]
    if record["not_graded"]:
        parts.append("<h2>Not graded</h2><ul>" + "".join(
            f"<li>{e(d['level'])}: {e(d['reason'])}</li>" for d in record["not_graded"])
            + "</ul>")
    shown = record.get("montage_slices", list(range(SLICES)))  # records before: all
    which = ("the centre slice (the one the model reads)" if len(shown) == 1
             else f"slices {shown[0] + 1}..{shown[-1] + 1}")
    parts.append(f"<h2>Disc volumes</h2><p><small>{which.capitalize()} of every disc, top to "
                 "bottom.</small></p>"
                 f"<img src=\"{DISCS_PICTURE}\" alt=\"disc volumes\">")
    if pictures:
        parts.append("<h2>Evidence hotspots</h2><p><small>Where the evidence for each "
                     "predicted class lies (brighter = more), from "
                     f"{record['hotspots']['augmentations']} augmented copies per disc. The "
                     f"same maps in the scan's grid: <code>{NIFTI_NAME}</code> (one volume per "
                     "task, in table order).</small></p>")
        if scan_pictures:
            parts.append("<h3>On the scan</h3><p><small>Each disc's hotspot from its own "
                         "centre slice, drawn over the overview slice (click for full size)."
                         "</small></p>"
                         "<div class=\"pictures\">" + "".join(
                             f"<figure><a href=\"{e(scan_pictures[task.name])}\"><img "
                             f"src=\"{e(scan_pictures[task.name])}\" "
                             f"alt=\"{e(task.name)} on the scan\"></a><figcaption>"
                             f"{e(task.description)}</figcaption></figure>" for task in graded)
                         + "</div><h3>On the disc volumes</h3>")
        for task in graded:
            parts.append(f"<h3>{e(task.description)}</h3>"
                         f"<img src=\"{e(pictures[task.name])}\" alt=\"{e(task.name)}\">")
    parts.append(f"<p><small>spine_tf; written {e(record.get('written', ''))}</small></p>")
    return _page(f"spine_tf: {record['name']}", "\n".join(parts))


def index_page(summary):
    """The HTML index of a run: one line per scan, links to the reports, failures."""
    e = html.escape
    items = []
    for scan in summary["scans"]:
        if scan["status"] == "done":
            items.append(f"<li><a href=\"{e(scan['name'])}/{REPORT_NAME}\">{e(scan['name'])}"
                         f"</a>: {scan['discs']} discs graded</li>")
        else:
            items.append(f"<li class=\"failed\">{e(scan['name'])}: failed: "
                         f"{e(scan['reason'])}</li>")
    done = sum(s["status"] == "done" for s in summary["scans"])
    body = (f"<h1>spine_tf predictions</h1><p>Model: {e(summary['model'])}<br>"
            f"{done} of {len(summary['scans'])} scans graded; all grades in "
            f"<a href=\"{CSV_NAME}\">{CSV_NAME}</a>.</p><ul>{''.join(items)}</ul>")
    return _page("spine_tf predictions", body)


def csv_header(task_set=tasks.PAPER):
    header = ["scan", "level", "confidence", "flagged"]
    for task in task_set.tasks:
        header += [f"{task.name}_grade", f"{task.name}_class", f"{task.name}_probability"]
    return header


def csv_rows(record):
    rows = []
    for disc in record["discs"]:
        row = [record["name"], disc["level"], f"{disc['confidence']:.3f}", int(disc["flagged"])]
        for task in record_tasks(record):
            result = disc["tasks"][task.name]
            row += [result["grade"], result["class_name"], f"{result['probability']:.4f}"]
        rows.append(row)
    return rows


__all__ = ["CSV_NAME", "DICOM_FOLDER", "DISCS_PICTURE", "GRADES_NAME", "INDEX_NAME", "NIFTI_NAME",
           "OVERVIEW_PICTURE", "REPORT_NAME", "SUMMARY_NAME", "csv_header", "csv_rows",
           "hotspot_picture", "hotspot_scan_picture", "index_page", "overview_section",
           "scan_page"]
