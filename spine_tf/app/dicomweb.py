"""A PACS over DICOMweb: fetch a study to grade, store its DICOM results back.

``fetch_study`` finds a study's series with QIDO-RS, reads the per-instance metadata of its
MR series (WADO-RS ``.../metadata``: no pixel data) to tell which one is the sagittal T2 by
the rules of ``spine_tf.io.dicom`` (or the series ``--series`` names), and retrieves only
that series with WADO-RS (``whole_study=True``: every series) into a folder
``<folder>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``, written under a temporary name and
renamed. That folder is a DICOM study for ``app.scans``: the normal path reads and grades it.

``store_results`` sends a result folder's DICOM files with STOW-RS, one instance per request,
every other instance first and the structured report (SR) last: the SR is the claim that
the results are complete, so it is stored only when every other instance was stored and
found again with QIDO-RS; after any failure the error says which files were stored and
which were not. ``grade_studies`` is ``spine-tf predict --dicomweb``: fetch, grade (``app.
predict.run``), optionally store, and record every study in ``summary.json``.

Connection errors, timeouts and HTTP 5xx are retried ``RETRIES`` times in all with a short
backoff; every error is one line naming the server URL and the study.

Credentials come from the environment, never the command line (``credentials``):
``SPINE_TF_DICOMWEB_TOKEN`` (an OAuth bearer token), else ``SPINE_TF_DICOMWEB_USER`` and
``SPINE_TF_DICOMWEB_PASSWORD`` (HTTP basic authentication).

Example:
    fetched = fetch_study("http://pacs:8042/dicom-web", "1.2.826.0.1.3680043.10.1342.7.1",
                          "cache/")
    jobs = [scans.ScanJob(fetched.study_uid, fetched.folder)]
    store_results("http://pacs:8042/dicom-web", "predictions/1.2.826...1/dicom")
"""

import dataclasses
import os
import re
import time

from spine_tf.errors import SpineTFError
from spine_tf.io import dicom
from spine_tf.io.atomic import atomic_folder

RETRIES = 3
"""Attempts per request for connection errors, timeouts and HTTP 5xx."""
BACKOFF_S = 0.25
"""Wait before the second attempt; doubled before each further one."""
TIMEOUT_S = (5.0, 120.0)
"""(connect, read) timeout of every request."""
SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
"""SOP Class UIDs of the structured reports (Basic, Enhanced, Comprehensive, 3D SR ...)."""
CACHE_NAME = ".dicomweb"
"""``grade_studies`` fetches each study to ``OUT/.dicomweb/<StudyInstanceUID>/``."""


class DicomWebError(SpineTFError):
    """The DICOMweb server cannot be used for a study; the message names both."""


@dataclasses.dataclass(frozen=True)
class FetchedStudy:
    """A study fetched by ``fetch_study``.

    Attributes:
        study_uid: its StudyInstanceUID.
        folder: the local study folder (one sub-folder per series fetched).
        series: every image series on the server (``io.dicom.Series``; ``files`` holds
            SOPInstanceUIDs there).
        fetched: the series fetched.
        why: why those.
    """

    study_uid: str
    folder: str
    series: tuple
    fetched: tuple
    why: str


@dataclasses.dataclass(frozen=True)
class StoredResults:
    """What ``store_results`` stored: (file, SOPInstanceUID) pairs in the order stored (the
    SR, if any, last) and the study they belong to."""

    study_uid: str
    instances: tuple


TOKEN_VARIABLE = "SPINE_TF_DICOMWEB_TOKEN"
USER_VARIABLE, PASSWORD_VARIABLE = "SPINE_TF_DICOMWEB_USER", "SPINE_TF_DICOMWEB_PASSWORD"


def credentials(environment=None):
    """(kind, value) of the DICOMweb credentials in ``environment`` (default:
    ``os.environ``): ``("token", TOKEN)``, ``("basic", (USER, PASSWORD))`` or (None, None).

    Raises:
        DicomWebError: a user without a password.
    """
    environment = os.environ if environment is None else environment
    if environment.get(TOKEN_VARIABLE):
        return "token", environment[TOKEN_VARIABLE]
    if environment.get(USER_VARIABLE):
        if PASSWORD_VARIABLE not in environment:
            raise DicomWebError(f"{USER_VARIABLE} is set but {PASSWORD_VARIABLE} is not")
        return "basic", (environment[USER_VARIABLE], environment[PASSWORD_VARIABLE])
    return None, None


def connect(url):
    """A ``dicomweb_client`` client of ``url`` with the environment's ``credentials``, its
    own retries off (``call`` retries).

    Raises:
        DicomWebError: not an http(s) URL, or incomplete credentials.
    """
    import requests
    from dicomweb_client.api import DICOMwebClient
    kind, value = credentials()
    session = requests.Session()
    if kind == "token":
        session.headers["Authorization"] = f"Bearer {value}"
    elif kind == "basic":
        session.auth = value
    try:
        client = DICOMwebClient(url.rstrip("/"), session=session, timeout=TIMEOUT_S)
    except ValueError as error:
        raise DicomWebError(f"{url}: not a DICOMweb URL ({error})") from None
    client.set_http_retry_params(retry=False)
    return client


def _connection_reason(error):
    text = str(getattr(error.args[0], "reason", error) if error.args else error)
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    return found.group(1).strip() if found else type(error).__name__


def call(url, what, request, *args, **kwargs):
    """``request(*args, **kwargs)``, retried on connection errors, timeouts and HTTP 5xx.

    Args:
        url: the server, for messages.
        what: what the request does, for messages (``"finding study 1.2.3"``).

    Raises:
        DicomWebError: one line naming ``url`` and ``what``: the server cannot be reached,
            answered an HTTP error, or did not answer DICOM JSON.
    """
    import requests
    for attempt in range(1, RETRIES + 1):
        try:
            return request(*args, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as error:
            if attempt == RETRIES:
                raise DicomWebError(f"{url}: cannot reach the DICOMweb server "
                                    f"({_connection_reason(error)}; {RETRIES} attempts) "
                                    f"while {what}") from None
        except requests.HTTPError as error:
            status = error.response.status_code if error.response is not None else 0
            if status < 500 or attempt == RETRIES:
                tries = f"; {RETRIES} attempts" if status >= 500 else ""
                reason = error.response.reason if error.response is not None else error
                hint = ""
                if status in (401, 403):
                    kind = credentials()[0]
                    hint = (f" (credentials sent: {kind}; see {TOKEN_VARIABLE}, or "
                            f"{USER_VARIABLE} and {PASSWORD_VARIABLE})" if kind else
                            f" (no credentials sent: set {TOKEN_VARIABLE}, or {USER_VARIABLE} "
                            f"and {PASSWORD_VARIABLE})")
                raise DicomWebError(f"{url}: HTTP {status} {reason}{tries} while "
                                    f"{what}{hint}") from None
        except ValueError as error:  # a JSON body that is not JSON, a malformed UID
            raise DicomWebError(f"{url}: {what}: {error}") from None
        time.sleep(BACKOFF_S * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def _value(item, keyword, default=None):
    """The first value of ``keyword`` in a DICOM JSON data set (all values: a list)."""
    from pydicom.datadict import tag_for_keyword
    if not isinstance(item, dict):
        return default
    values = item.get(f"{tag_for_keyword(keyword):08X}", {}).get("Value")
    if not values:
        return default
    return values if keyword in ("ImageOrientationPatient", "PixelSpacing",
                                 "ImagePositionPatient", "ImageType") else values[0]


def find_study(client, url, study_uid):
    """Checks that ``url`` is a DICOMweb service holding the study (QIDO-RS at study level).

    Raises:
        DicomWebError: no DICOMweb service there (HTTP 404, or not DICOM JSON), or no such
            study on it.
    """
    what = f"looking for study {study_uid} (QIDO-RS)"
    try:
        found = call(url, what, client.search_for_studies,
                     search_filters={"StudyInstanceUID": study_uid})
    except DicomWebError as error:
        if "HTTP 404" in str(error):
            raise DicomWebError(f"{url}: no DICOMweb service at this URL (HTTP 404 for "
                                f"QIDO-RS /studies; Orthanc's is http://HOST:8042/dicom-web) "
                                f"while {what}") from None
        raise
    if not all(isinstance(item, dict) for item in found):
        raise DicomWebError(f"{url}: not a DICOMweb service (its /studies answer is not DICOM "
                            f"JSON) while {what}")
    if not any(_value(item, "StudyInstanceUID") == study_uid for item in found):
        raise DicomWebError(f"{url}: study {study_uid} is not on this server (QIDO-RS found "
                            "no such StudyInstanceUID)")


def remote_series(client, url, study_uid):
    """Every image series of a study on the server, as ``io.dicom.Series`` (``files``: the
    SOPInstanceUIDs), read from QIDO-RS and each MR series' instance metadata the way
    ``io.dicom.study_series`` reads a local study: the instance with the lowest
    InstanceNumber speaks for its series; instances without ImagePositionPatient and
    PixelSpacing (reports, parametric maps) are not images; other modalities are skipped."""
    listed = call(url, f"listing the series of study {study_uid} (QIDO-RS)",
                  client.search_for_series, study_uid,
                  fields=["SeriesDescription", "SeriesNumber", "Modality"])
    out = []
    for item in listed:
        uid = _value(item, "SeriesInstanceUID")
        if not uid or _value(item, "Modality", "MR") != "MR":
            continue
        metadata = call(url, f"reading the metadata of series {uid} of study {study_uid} "
                        "(WADO-RS)", client.retrieve_series_metadata, study_uid, uid)
        images = [m for m in metadata if _value(m, "ImagePositionPatient")
                  or _value(m, "PixelSpacing")]
        if not images:
            continue
        first = min(images, key=lambda m: int(_value(m, "InstanceNumber", 0) or 0))
        out.append(dicom.series_from(
            uid, sorted(str(_value(m, "SOPInstanceUID")) for m in images),
            lambda keyword, default=None, first=first: _value(first, keyword, default),
            study_uid=study_uid))
    return dicom.by_number(out)


def fetch_study(url, study_uid, folder, series=None, whole_study=False):
    """Fetches a study's sagittal T2 series (or the one ``series`` names, or every series)
    into ``folder/<StudyInstanceUID>/`` (see the module docstring).

    Args:
        url: the DICOMweb root (``http://host:8042/dicom-web`` for Orthanc).
        study_uid: the StudyInstanceUID.
        folder: where the study folder goes (created); an older copy is replaced whole.
        series: a series number, SeriesInstanceUID or description (``--series``).
        whole_study: fetch every series instead (the grading path then chooses).

    Returns:
        A ``FetchedStudy``.

    Raises:
        DicomWebError: the server cannot be reached, is no DICOMweb service, lacks the
            study or fails a request.
        ScanError: no series fits (none or several sagittal T2, or ``series`` names none);
            the message names the study and lists its series.
    """
    client = connect(url)
    find_study(client, url, study_uid)
    listed = remote_series(client, url, study_uid)
    where = f"{url} study {study_uid}"
    if not listed:
        raise DicomWebError(f"{where}: no MR image series on the server")
    if whole_study:
        fetched, why = listed, "the whole study"
    else:
        chosen, why = dicom.choose_series(listed, where, series)
        fetched = [chosen]
    target = os.path.join(folder, study_uid)
    with atomic_folder(target) as tmp:
        for one in fetched:
            os.makedirs(os.path.join(tmp, one.uid))
            what = f"retrieving series {one.uid} of study {study_uid} (WADO-RS)"
            instances = call(url, what, client.retrieve_series, study_uid, one.uid)
            for ds in instances:
                ds.save_as(os.path.join(tmp, one.uid, f"{ds.SOPInstanceUID}.dcm"),
                           enforce_file_format=True)
            missing = set(one.files) - {str(ds.SOPInstanceUID) for ds in instances}
            if missing:
                raise DicomWebError(f"{url}: {what}: {len(missing)} of its {len(one.files)} "
                                    "instances did not come")
    return FetchedStudy(study_uid, target, tuple(listed), tuple(fetched), why)


def _is_report(ds):
    return ds.get("Modality") == "SR" or str(ds.get("SOPClassUID", "")).startswith(
        SR_CLASS_PREFIX)


def _result_files(url, folder):
    """[(file, dataset)] of every .dcm below ``folder``, the SRs last; their study UID."""
    import pydicom
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [os.path.join(root, n) for n in sorted(files) if n.lower().endswith(".dcm")]
    if not found:
        raise DicomWebError(f"{url}: {folder} holds no .dcm file to store")
    items = [(path, pydicom.dcmread(path)) for path in found]
    studies = sorted({str(ds.get("StudyInstanceUID", "")) for _, ds in items})
    if len(studies) != 1 or not studies[0]:
        raise DicomWebError(f"{url}: the files of {folder} belong to studies "
                            f"{', '.join(studies) or '(none)'}, not to one; nothing stored")
    return sorted(items, key=lambda item: _is_report(item[1])), studies[0]


def _store_one(client, url, study_uid, path, ds):
    """Stores one instance and finds it again with QIDO-RS; returns the failure, or None."""
    what = f"storing {os.path.basename(path)} in study {study_uid} (STOW-RS)"
    answer = call(url, what, client.store_instances, [ds], study_instance_uid=study_uid)
    uid = str(ds.SOPInstanceUID)
    for failed in answer.get("FailedSOPSequence", []):
        if str(failed.get("ReferencedSOPInstanceUID", "")) == uid:
            return f"rejected by the server (failure reason {failed.get('FailureReason')})"
    found = call(url, f"finding {uid} again (QIDO-RS)", client.search_for_instances,
                 study_uid, search_filters={"SOPInstanceUID": uid})
    if not any(_value(item, "SOPInstanceUID") == uid for item in found):
        return "accepted but not found again by QIDO-RS (the server dropped it)"
    return None


def store_results(url, folder):
    """Stores every ``.dcm`` file below ``folder`` with STOW-RS, the SR last, each one
    checked with QIDO-RS after storing (see the module docstring).

    Returns:
        A ``StoredResults``.

    Raises:
        DicomWebError: no files, files of several studies (nothing stored), or a request
            or check that failed: the message names the file, and which files were stored
            and which not (an SR is never stored after a failure).
    """
    items, study_uid = _result_files(url, folder)
    client = connect(url)
    stored = []
    for n, (path, ds) in enumerate(items):
        try:
            failure = _store_one(client, url, study_uid, path, ds)
        except DicomWebError as error:
            failure = str(error)
        if failure:
            names = [os.path.relpath(p, folder) for p, _ in items]
            reports = [os.path.relpath(p, folder) for p, d in items[n:] if _is_report(d)]
            raise DicomWebError(
                f"{url}: storing {names[n]} of {folder} in study {study_uid} failed: "
                f"{failure}; stored: {', '.join(names[:n]) or 'none'}; not stored: "
                f"{', '.join(names[n:])}"
                + (f" (so the report {', '.join(reports)} does not claim complete results)"
                   if reports and not _is_report(ds) else ""))
        stored.append((path, str(ds.SOPInstanceUID)))
    return StoredResults(study_uid, tuple(stored))


def _store_entry(url, folder):
    """The ``stored`` record of one study's ``--store``."""
    if not os.path.isdir(folder):
        return {"status": "failed", "reason": f"{folder}: no DICOM results to store (this "
                "predict writes none there); nothing stored"}
    try:
        stored = store_results(url, folder)
    except DicomWebError as error:
        return {"status": "failed", "reason": str(error)}
    return {"status": "done", "instances": [uid for _, uid in stored.instances]}


def grade_studies(url, study_uids, predictor, out_dir, series=None, store=False, log=None,
                  **settings):
    """Fetches, grades and (``store``) stores back studies of a DICOMweb server.

    Each study is fetched to ``out_dir/.dicomweb/<StudyInstanceUID>/`` (kept, so that
    ``grades.json`` and the DICOM results point at files that exist; a rerun fetches it
    again) and graded by ``app.predict.run`` as the job named after its
    StudyInstanceUID, so its outputs are ``out_dir/<StudyInstanceUID>/``. A study that
    cannot be fetched is recorded as failed with its one-line reason and the others go on.

    Args:
        url: the DICOMweb root.
        study_uids: StudyInstanceUIDs (a repeated one is graded once).
        predictor: an ``app.predictors`` predictor.
        out_dir: the output folder.
        series: ``--series`` (number, UID or description), else each study's sagittal T2.
        store: store each graded study's ``<name>/dicom/*.dcm`` back (``store_results``).
        log: called with a line per study fetched or failed (e.g. ``print``), or None.
        **settings: ``app.predict.run``'s ``tta``, ``hotspots``, ``augmentations``,
            ``seed``, ``progress``, ``detector``.

    Returns:
        The summary (``summary.json``) with every study in the order given, each with
        ``study_uid`` and ``dicomweb``, the fetched ones ``fetched`` (the series fetched
        and why, which the grades' ``series`` repeats); with
        ``store``, the done ones have ``stored``: ``status`` and the SOPInstanceUIDs
        stored, or the reason.
    """
    from spine_tf.app import predict, render
    from spine_tf.app.scans import ScanJob
    from spine_tf.io.atomic import write_json, write_text
    log = log or (lambda line: None)
    study_uids = list(dict.fromkeys(study_uids))
    entries, fetches, jobs = {}, {}, []
    for uid in study_uids:
        try:
            fetched = fetch_study(url, uid, os.path.join(out_dir, CACHE_NAME), series=series)
        except SpineTFError as error:
            entries[uid] = {"name": uid, "scan": f"{url.rstrip('/')}/studies/{uid}",
                            "status": "failed", "reason": str(error)}
            continue
        log(f"  fetched {uid}: " + "; ".join(s.label() for s in fetched.fetched))
        fetches[uid] = {"series": [s.label() for s in fetched.fetched], "why": fetched.why}
        jobs.append(ScanJob(uid, fetched.folder, series=series, series_why=fetched.why))
    summary = predict.run(jobs, predictor, out_dir, **settings)
    for entry in summary["scans"]:
        entries[entry["name"]] = entry
    summary["scans"] = [dict(entries[uid], study_uid=uid, dicomweb=url,
                             **({"fetched": fetches[uid]} if uid in fetches else {}))
                        for uid in study_uids]
    for entry in summary["scans"]:
        if store and entry["status"] == "done":
            entry["stored"] = _store_entry(url, os.path.join(out_dir, entry["name"],
                                                             render.DICOM_FOLDER))
            log(f"  stored {entry['name']}: {len(entry['stored']['instances'])} instances"
                if entry["stored"]["status"] == "done"
                else f"  not stored: {entry['stored']['reason']}")
    write_json(os.path.join(out_dir, predict.SUMMARY_NAME), summary)
    write_text(os.path.join(out_dir, predict.INDEX_NAME), render.index_page(summary))
    return summary


__all__ = ["BACKOFF_S", "CACHE_NAME", "DicomWebError", "FetchedStudy",
           "RETRIES", "StoredResults", "call", "connect", "fetch_study", "find_study",
           "grade_studies", "remote_series", "store_results"]
