"""spine_tf.app.dicomweb against a real PACS: Orthanc with its DICOMweb plugin on loopback,
configured by the fixture, holding the phantom study (uploaded through Orthanc's own REST
API, not the code under test). Fetch, grade, store and read back; the bad cases: a closed
port, a server answering 503, a wrong path, an unknown study, a study with no sagittal T2,
and uploads that fail half way."""

import contextlib
import copy
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time

import numpy as np
import pydicom
import pytest

from spine_tf import cli
from spine_tf.app import dicomweb, render
from spine_tf.errors import UsageError
from spine_tf.io import ScanError, dicom
from spine_tf.phantom import make_patient
from spine_tf.phantom.dicom import write_study

ORTHANC = shutil.which("Orthanc") or shutil.which("/usr/sbin/Orthanc")
PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
REJECTED = "REJECTED BY PACS"
"""The SeriesDescription the test server's Lua filter refuses (a server-side policy)."""
REJECT_LUA = f"""function ReceivedInstanceFilter(dicom, origin, info)
  return dicom.SeriesDescription ~= "{REJECTED}"
end
"""
AXIAL_ONLY_STUDY = "1.2.826.0.1.3680043.10.1342.99.1"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _running_orthanc(root, **settings):
    """(base URL, DICOMweb URL) of an Orthanc started on loopback with a config written in
    ``root`` (``settings`` added to it), stopped on exit."""
    import requests
    port = _free_port()
    config = {"Name": "spine-tf-test", "HttpPort": port, "DicomPort": _free_port(),
              "HttpBindAddress": "127.0.0.1", "StorageDirectory": os.fspath(root / "db"),
              "IndexDirectory": os.fspath(root / "db"), "Plugins": [PLUGIN],
              "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
              "RemoteAccessAllowed": False, "AuthenticationEnabled": False, **settings}
    (root / "orthanc.json").write_text(json.dumps(config), encoding="utf-8")
    log = open(root / "orthanc.log", "wb")
    process = subprocess.Popen([ORTHANC, os.fspath(root / "orthanc.json")], stdout=log,
                               stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{base}/system", timeout=1).status_code in (200, 401):
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("Orthanc did not start: "
                                   + (root / "orthanc.log").read_text(errors="replace")[-2000:])
            time.sleep(0.1)
        yield base, f"{base}/dicom-web"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _skip_without_orthanc():
    if not ORTHANC or not os.path.exists(PLUGIN):
        pytest.skip(f"needs Orthanc and its DICOMweb plugin ({ORTHANC or 'no Orthanc'}, "
                    f"{PLUGIN}: Debian orthanc, orthanc-dicomweb; tools/system-packages)")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """(base URL, DICOMweb URL) of an Orthanc started for this module, with a Lua filter that
    rejects one SeriesDescription; stopped at the end. Skips where Orthanc or its DICOMweb
    plugin is not installed."""
    _skip_without_orthanc()
    root = tmp_path_factory.mktemp("orthanc")
    (root / "reject.lua").write_text(REJECT_LUA, encoding="utf-8")
    with _running_orthanc(root, LuaScripts=[os.fspath(root / "reject.lua")]) as urls:
        yield urls


def _upload(base, paths):
    import requests
    for path in paths:
        with open(path, "rb") as f:
            requests.post(f"{base}/instances", data=f.read(), timeout=10).raise_for_status()


@pytest.fixture(scope="module")
def study(orthanc, tmp_path_factory):
    """The phantom study (4 series, 45 instances) on the server, and an axial-only study."""
    written = write_study(make_patient(0, 2), tmp_path_factory.mktemp("study"), layout="nested")
    _upload(orthanc[0], [f for s in written.series.values() for f in s.files])
    axial = tmp_path_factory.mktemp("axial")
    for n, path in enumerate(written.series["axial"].files):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = AXIAL_ONLY_STUDY
        ds.SeriesInstanceUID = AXIAL_ONLY_STUDY + ".4"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = \
            f"{AXIAL_ONLY_STUDY}.4.{n + 1}"
        ds.save_as(axial / f"{n}.dcm")
    _upload(orthanc[0], sorted(axial.iterdir()))
    return written


def _instances(folder):
    return {ds.SOPInstanceUID: ds for ds in (
        pydicom.dcmread(os.path.join(root, name))
        for root, _, names in os.walk(folder) for name in names)}


def test_fetch_of_the_whole_study_gives_the_instances_uploaded(orthanc, study, tmp_path):
    fetched = dicomweb.fetch_study(orthanc[1], study.study_uid, tmp_path, whole_study=True)
    assert fetched.folder == os.fspath(tmp_path / study.study_uid)
    uploaded = {ds.SOPInstanceUID: ds for ds in (
        pydicom.dcmread(f) for s in study.series.values() for f in s.files)}
    got = _instances(fetched.folder)
    assert len(uploaded) == 45 and set(got) == set(uploaded)
    for uid, ds in uploaded.items():
        assert np.array_equal(got[uid].pixel_array, ds.pixel_array), uid
        assert got[uid].SeriesInstanceUID == ds.SeriesInstanceUID
    assert sorted(os.listdir(fetched.folder)) == sorted(s.uid for s in study.series.values())
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]


def test_fetch_takes_only_the_sagittal_t2_and_the_normal_path_reads_it(orthanc, study,
                                                                       tmp_path):
    fetched = dicomweb.fetch_study(orthanc[1], study.study_uid, tmp_path)
    t2 = study.series["t2"]
    assert [s.number for s in fetched.series] == [1, 2, 3, 4]
    assert [s.uid for s in fetched.fetched] == [t2.uid]
    assert "sagittal T2" in fetched.why
    assert os.listdir(fetched.folder) == [t2.uid]
    chosen, _ = dicom.select_series(fetched.folder)
    assert (chosen.number, chosen.description, len(chosen.files)) == (3, "T2 TSE SAG", 18)
    original, _ = dicom.select_series(study.folder)  # the same slices, in the same order
    assert [pydicom.dcmread(f).SOPInstanceUID for f in chosen.files] == [
        pydicom.dcmread(f).SOPInstanceUID for f in original.files]


def test_fetch_of_a_named_series_and_a_rerun_replaces_the_copy(orthanc, study, tmp_path):
    dicomweb.fetch_study(orthanc[1], study.study_uid, tmp_path)
    fetched = dicomweb.fetch_study(orthanc[1], study.study_uid, tmp_path, series="4")
    assert os.listdir(fetched.folder) == [study.series["axial"].uid]
    assert len(_instances(fetched.folder)) == 6


def _one_line(error):
    text = str(error)
    assert "\n" not in text
    return text


def test_a_closed_port_fails_within_the_bounded_retries(study, tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/dicom-web"
    started = time.monotonic()
    with pytest.raises(dicomweb.DicomWebError) as error:
        dicomweb.fetch_study(url, study.study_uid, tmp_path)
    elapsed = time.monotonic() - started
    backoff = sum(dicomweb.BACKOFF_S * 2 ** k for k in range(dicomweb.RETRIES - 1))
    assert backoff * 0.9 <= elapsed < backoff + 3
    text = _one_line(error.value)
    assert text.startswith(f"{url}: cannot reach the DICOMweb server (Connection refused; "
                           f"{dicomweb.RETRIES} attempts)")
    assert study.study_uid in text
    assert not os.listdir(tmp_path)


def test_a_server_error_is_retried_then_reported(study, tmp_path):
    requests_seen = []

    class Unavailable(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            requests_seen.append(self.path)
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    try:
        with pytest.raises(dicomweb.DicomWebError) as error:
            dicomweb.fetch_study(url, study.study_uid, tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert len(requests_seen) == dicomweb.RETRIES
    assert requests_seen[0].startswith("/dicom-web/studies?StudyInstanceUID=")
    assert _one_line(error.value).startswith(
        f"{url}: HTTP 503 Service Unavailable; {dicomweb.RETRIES} attempts while looking for "
        f"study {study.study_uid}")


@pytest.mark.parametrize("path, message", [
    ("/wrong", "no DICOMweb service at this URL (HTTP 404"),
    ("", "not a DICOMweb service (its /studies answer is not DICOM JSON)"),
])
def test_a_wrong_url_says_no_dicomweb_there(orthanc, study, tmp_path, path, message):
    url = orthanc[0] + path
    with pytest.raises(dicomweb.DicomWebError) as error:
        dicomweb.fetch_study(url, study.study_uid, tmp_path)
    text = _one_line(error.value)
    assert text.startswith(f"{url}: {message}") and study.study_uid in text


def test_an_unknown_study_is_named(orthanc, study, tmp_path):
    with pytest.raises(dicomweb.DicomWebError) as error:
        dicomweb.fetch_study(orthanc[1], "1.2.3.4.5.6", tmp_path)
    assert _one_line(error.value) == (f"{orthanc[1]}: study 1.2.3.4.5.6 is not on this server "
                                      "(QIDO-RS found no such StudyInstanceUID)")
    assert not os.listdir(tmp_path)


def test_a_study_without_sagittal_t2_names_it_and_lists_its_series(orthanc, study, tmp_path):
    with pytest.raises(ScanError) as error:
        dicomweb.fetch_study(orthanc[1], AXIAL_ONLY_STUDY, tmp_path)
    assert _one_line(error.value) == (
        f"{orthanc[1]} study {AXIAL_ONLY_STUDY}: no sagittal T2 series; choose one with "
        "--series NUMBER|UID|DESCRIPTION. Its series: series 4 'T2 TSE AX' (axial, T2; "
        "6 images)")
    assert not os.listdir(tmp_path)


def _result_folder(study, folder, tag, descriptions=("HOTSPOTS A", "HOTSPOTS B", "HOTSPOTS C"),
                   study_uid=None):
    """A result folder like predict's OUT/<name>/dicom/: one derived image per description
    (copies of T2 instances with new UIDs, in a new series) and a structured report."""
    os.makedirs(folder)
    root = f"{study.study_uid}.{tag}"
    for n, description in enumerate(descriptions):
        ds = pydicom.dcmread(study.series["t2"].files[n])
        ds.SeriesInstanceUID, ds.SeriesNumber = f"{root}.1", 900
        ds.SeriesDescription = description
        del ds.EchoTime, ds.RepetitionTime  # derived images: not a T2 acquisition
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{root}.1.{n + 1}"
        if study_uid:
            ds.StudyInstanceUID = study_uid
        ds.save_as(os.path.join(folder, f"hotspots_{n}.dcm"))
    report = copy.deepcopy(pydicom.dcmread(study.series["t2"].files[0], stop_before_pixels=True))
    for keyword in ("PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient",
                    "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
                    "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation"):
        delattr(report, keyword)
    report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID = \
        "1.2.840.10008.5.1.4.1.1.88.33"
    report.SOPInstanceUID = report.file_meta.MediaStorageSOPInstanceUID = f"{root}.2.1"
    report.Modality, report.SeriesInstanceUID, report.SeriesNumber = "SR", f"{root}.2", 901
    report.ValueType, report.CompletionFlag, report.VerificationFlag = \
        "CONTAINER", "COMPLETE", "UNVERIFIED"
    report.save_as(os.path.join(folder, "grades_sr.dcm"))
    return root


def _on_server(orthanc, study_uid, sop_uid):
    import requests
    answer = requests.get(f"{orthanc[1]}/studies/{study_uid}/instances",
                          params={"SOPInstanceUID": sop_uid}, timeout=10)
    answer.raise_for_status()
    return bool(answer.json())


def _series_on_server(orthanc, study_uid):
    """{SeriesInstanceUID: its number of instances} of a study on the server."""
    import requests
    answer = requests.get(f"{orthanc[1]}/studies/{study_uid}/series", timeout=10,
                          params={"includefield": "NumberOfSeriesRelatedInstances"})
    answer.raise_for_status()
    return {s["0020000E"]["Value"][0]: s["00201209"]["Value"][0] for s in answer.json()}


def test_store_sends_the_report_last_and_reads_back(orthanc, study, tmp_path):
    import requests
    root = _result_folder(study, tmp_path / "dicom", "101")
    stored = dicomweb.store_results(orthanc[1], tmp_path / "dicom")
    assert stored.study_uid == study.study_uid
    assert [(os.path.basename(p), uid) for p, uid in stored.instances] == [
        ("hotspots_0.dcm", f"{root}.1.1"), ("hotspots_1.dcm", f"{root}.1.2"),
        ("hotspots_2.dcm", f"{root}.1.3"), ("grades_sr.dcm", f"{root}.2.1")]
    assert all(_on_server(orthanc, study.study_uid, uid) for _, uid in stored.instances)
    client = dicomweb.connect(orthanc[1])
    back = client.retrieve_instance(study.study_uid, f"{root}.1", f"{root}.1.2")
    original = pydicom.dcmread(tmp_path / "dicom" / "hotspots_1.dcm")
    assert np.array_equal(back.pixel_array, original.pixel_array)
    report = client.retrieve_instance(study.study_uid, f"{root}.2", f"{root}.2.1")
    assert (report.Modality, report.CompletionFlag) == ("SR", "COMPLETE")
    series = requests.get(f"{orthanc[1]}/studies/{study.study_uid}/series", timeout=10).json()
    assert {f"{root}.1", f"{root}.2"} <= {s["0020000E"]["Value"][0] for s in series}


def test_an_upload_rejected_half_way_leaves_no_report(orthanc, study, tmp_path):
    root = _result_folder(study, tmp_path / "dicom", "102",
                          descriptions=("HOTSPOTS A", REJECTED, "HOTSPOTS C"))
    with pytest.raises(dicomweb.DicomWebError) as error:
        dicomweb.store_results(orthanc[1], tmp_path / "dicom")
    assert _one_line(error.value) == (
        f"{orthanc[1]}: storing hotspots_1.dcm of {tmp_path / 'dicom'} in study "
        f"{study.study_uid} failed: accepted but not found again by QIDO-RS (the server "
        "dropped it); stored: hotspots_0.dcm; not stored: hotspots_1.dcm, hotspots_2.dcm, "
        "grades_sr.dcm (so the report grades_sr.dcm does not claim complete results)")
    assert _on_server(orthanc, study.study_uid, f"{root}.1.1")
    for uid in (f"{root}.1.2", f"{root}.1.3", f"{root}.2.1"):
        assert not _on_server(orthanc, study.study_uid, uid), uid


def test_a_folder_of_two_studies_stores_nothing(orthanc, study, tmp_path):
    root = _result_folder(study, tmp_path / "dicom", "103", descriptions=("HOTSPOTS A",),
                          study_uid="1.2.826.0.1.3680043.10.1342.98.1")
    with pytest.raises(dicomweb.DicomWebError, match="belong to studies .*not to one; "
                       "nothing stored"):
        dicomweb.store_results(orthanc[1], tmp_path / "dicom")
    assert not _on_server(orthanc, study.study_uid, f"{root}.2.1")


def test_a_store_to_a_closed_port_says_nothing_was_stored(study, tmp_path):
    _result_folder(study, tmp_path / "dicom", "104", descriptions=("HOTSPOTS A",))
    url = f"http://127.0.0.1:{_free_port()}/dicom-web"
    with pytest.raises(dicomweb.DicomWebError) as error:
        dicomweb.store_results(url, tmp_path / "dicom")
    text = _one_line(error.value)
    assert text.startswith(f"{url}: storing hotspots_0.dcm of ")
    assert "cannot reach the DICOMweb server (Connection refused" in text
    assert text.endswith("stored: none; not stored: hotspots_0.dcm, grades_sr.dcm (so the "
                         "report grades_sr.dcm does not claim complete results)")


@pytest.mark.parametrize("argv, message", [
    (["--study", "1.2.3"], "--study needs --dicomweb URL"),
    (["--store", "scan.nii.gz"], "--store needs --dicomweb URL"),
    ([], "give SCAN_OR_FOLDER (scans or folders) or --dicomweb URL --study STUDY_UID"),
    (["scan.nii.gz", "--dicomweb", "http://pacs/dicom-web", "--study", "1.2.3"],
     "give SCAN_OR_FOLDER or --dicomweb URL --study UID, not both"),
    (["--dicomweb", "http://pacs/dicom-web"], "--dicomweb needs one or more --study"),
    (["--dicomweb", "http://pacs/dicom-web", "--study", "1.2", "--landmarks", "l.json"],
     "--masks and --landmarks do not apply to --dicomweb studies"),
])
def test_pacs_options_that_do_not_fit_are_usage_errors(argv, message, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["predict", *argv, "--out", os.fspath(tmp_path / "out")])
    assert isinstance(exit_info.value.__cause__, UsageError)
    assert message in str(exit_info.value.__cause__)
    assert not (tmp_path / "out").exists()


def test_store_of_predicts_dicom_results_reads_back_on_the_server(orthanc, study, tmp_path):
    """The SR and Parametric Maps of ``app.dicom_results`` (highdicom) for the uploaded
    study: all stored, the report last, and the report read back says what was written."""
    from spine_tf import phantom, tasks
    from spine_tf.app import dicom_results, scans
    from spine_tf.io import landmarks as landmarks_io
    patient = phantom.make_patient(0, 2)
    landmarks_io.write_landmarks(tmp_path / "landmarks.json", patient.landmarks)
    job = scans.ScanJob("case", scan=study.folder, landmarks=os.fspath(tmp_path / "landmarks.json"))
    scan, located, volumes, _ = scans.extract_scan(job)
    task_set = tasks.task_set("paper")
    discs = [{"level": v.level, "centre_voxel": [float(c) for c in place.centre],
              "height_mm": float(place.height_mm), "confidence": 1.0, "flagged": False,
              "tasks": {t.name: {"grade": 0, "class_name": t.class_names[0],
                                 "probability": 0.9, "probabilities":
                                 [0.9] + [0.1 / (t.num_classes - 1)] * (t.num_classes - 1)}
                        for t in task_set.tasks}}
             for v, place in zip(volumes, ({d.level: d for d in located.discs}[v.level]
                                           for v in volumes))]
    record = {"series": {k: v for k, v in scan.series.items() if k != "files"},
              "model": "test", "task_set": task_set.name, "discs": discs, "not_graded": []}
    hotspots = np.zeros(scan.shape + (len(task_set.tasks),), np.float32)
    folder = tmp_path / "case" / render.DICOM_FOLDER
    dicom_results.write_dicom_results(record, scan, hotspots, folder)
    stored = dicomweb.store_results(orthanc[1], folder)
    names = [os.path.basename(p) for p, _ in stored.instances]
    assert names[-1] == dicom_results.SR_NAME
    assert sorted(names[:-1]) == sorted(dicom_results.HOTSPOT_PATTERN.format(task=t.name)
                                        for t in task_set.tasks)
    client = dicomweb.connect(orthanc[1])
    for path, uid in stored.instances:
        local = pydicom.dcmread(path)
        back = client.retrieve_instance(study.study_uid, local.SeriesInstanceUID, uid)
        assert (back.SOPClassUID, back.Modality) == (local.SOPClassUID, local.Modality)
    report = client.retrieve_instance(study.study_uid, pydicom.dcmread(
        stored.instances[-1][0]).SeriesInstanceUID, stored.instances[-1][1])
    report.save_as(tmp_path / "back.dcm")
    described = dicom_results.describe(tmp_path / "back.dcm")
    assert sorted(described["levels"]) == sorted(d["level"] for d in discs)
    # a rerun's same results, stored again: the same instances, no second copy on the server
    series = _series_on_server(orthanc, study.study_uid)
    again = tmp_path / "again" / render.DICOM_FOLDER
    dicom_results.write_dicom_results(record, scan, hotspots, again)
    assert dicomweb.store_results(orthanc[1], again).instances == tuple(
        (os.fspath(again / os.path.basename(p)), uid) for p, uid in stored.instances)
    assert _series_on_server(orthanc, study.study_uid) == series


@pytest.mark.slow
def test_predict_grades_studies_of_the_pacs_and_goes_on_past_bad_ones(orthanc, study,
                                                                      tmp_path, capsys):
    """Last in the module: the study then also holds the results the tests above stored (a
    PACS study after an earlier --store), which the choice of its sagittal T2 passes by."""
    out = tmp_path / "out"
    code = cli.main(["predict", "--dicomweb", orthanc[1], "--study", "1.2.3.4.5.6",
                     "--study", study.study_uid, "--study", AXIAL_ONLY_STUDY, "--out",
                     os.fspath(out), "--no-tta", "--no-hotspots", "--store"])
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    scans = summary["scans"]
    assert [s["name"] for s in scans] == ["1.2.3.4.5.6", study.study_uid, AXIAL_ONLY_STUDY]
    assert [s["status"] for s in scans] == ["failed", "done", "failed"]
    assert "study 1.2.3.4.5.6 is not on this server" in scans[0]["reason"]
    assert "no sagittal T2 series" in scans[2]["reason"]
    assert AXIAL_ONLY_STUDY in scans[2]["reason"]
    grades = json.loads((out / study.study_uid / "grades.json").read_text(encoding="utf-8"))
    assert (grades["series"]["number"], grades["series"]["description"]) == (3, "T2 TSE SAG")
    assert grades["series"]["uid"] == study.series["t2"].uid
    assert len(grades["discs"]) >= 5
    assert grades["scan"] == os.fspath(out / dicomweb.CACHE_NAME / study.study_uid)
    assert grades["series"]["why"] == scans[1]["fetched"]["why"]
    assert "one sagittal T2 series" in grades["series"]["why"]
    stored = scans[1]["stored"]
    results = out / study.study_uid / render.DICOM_FOLDER
    assert sorted(os.listdir(results)) == sorted(grades["dicom"]["files"])
    assert stored["status"] == "done" and code == 0
    assert len(stored["instances"]) == len(grades["dicom"]["files"])
    assert all(_on_server(orthanc, study.study_uid, uid) for uid in stored["instances"])
    printed = capsys.readouterr().out
    assert f"  failed: 1.2.3.4.5.6: {orthanc[1]}: study 1.2.3.4.5.6 is not" in printed
    assert "1 of 3 scans graded" in printed


def test_credentials_come_from_the_environment():
    assert dicomweb.credentials({}) == (None, None)
    assert dicomweb.credentials({"SPINE_TF_DICOMWEB_TOKEN": "t0k"}) == ("token", "t0k")
    assert dicomweb.credentials({"SPINE_TF_DICOMWEB_USER": "ann",
                                 "SPINE_TF_DICOMWEB_PASSWORD": "pw"}) == ("basic", ("ann", "pw"))
    with pytest.raises(dicomweb.DicomWebError, match="SPINE_TF_DICOMWEB_PASSWORD is not"):
        dicomweb.credentials({"SPINE_TF_DICOMWEB_USER": "ann"})


def test_a_pacs_that_asks_for_credentials(tmp_path, monkeypatch):
    """Orthanc with HTTP basic authentication: refused without credentials or with wrong
    ones (one line saying what was sent and which variables to set); fetched with them."""
    import requests
    _skip_without_orthanc()
    for name in ("TOKEN", "USER", "PASSWORD"):
        monkeypatch.delenv(f"SPINE_TF_DICOMWEB_{name}", raising=False)
    with _running_orthanc(tmp_path, AuthenticationEnabled=True,
                          RegisteredUsers={"reader": "s3cret"}) as (base, url):
        written = write_study(make_patient(0, 3), tmp_path / "study", layout="nested")
        for path in written.series["t2"].files:
            with open(path, "rb") as f:
                requests.post(f"{base}/instances", data=f.read(), auth=("reader", "s3cret"),
                              timeout=10).raise_for_status()
        with pytest.raises(dicomweb.DicomWebError, match=r"HTTP 401 .* \(no credentials sent: "
                           r"set SPINE_TF_DICOMWEB_TOKEN, or SPINE_TF_DICOMWEB_USER"):
            dicomweb.fetch_study(url, written.study_uid, tmp_path / "cache")
        monkeypatch.setenv("SPINE_TF_DICOMWEB_USER", "reader")
        monkeypatch.setenv("SPINE_TF_DICOMWEB_PASSWORD", "wrong")
        with pytest.raises(dicomweb.DicomWebError, match=r"HTTP 401 .*credentials sent: basic"):
            dicomweb.fetch_study(url, written.study_uid, tmp_path / "cache")
        monkeypatch.setenv("SPINE_TF_DICOMWEB_PASSWORD", "s3cret")
        fetched = dicomweb.fetch_study(url, written.study_uid, tmp_path / "cache")
        assert [s.number for s in fetched.fetched] == [3]
        assert len(os.listdir(os.path.join(fetched.folder, written.series["t2"].uid))) == len(
            written.series["t2"].files)
