"""Orthanc Python plugin: send each original series to srnode once it is stable.

Runs inside Orthanc, on Debian's system Python (not the project's venv): standard library
and the ``orthanc`` module only.

Configured by the ``SrnodeAutoroute`` section of orthanc.json:

    "SrnodeAutoroute": {
      "Enable": true,
      "Modality": "SRNODE",          # a key of DicomModalities
      "Level": "Series",             # "Series": on STABLE_SERIES; "Study": on STABLE_STUDY
      "Modalities": ["CT", "MR"],    # DICOM Modality values that are sent; [] = all
      "SkipRemoteAets": ["SRNODE"],  # instances received from these AEs are never sent
      "DerivedManufacturer": "srnode",
      "RetryAttempts": 10,           # a failed send job is resubmitted this many times,
      "RetryDelay": 5,               # after 5 s, then doubling,
      "RetryMaxDelay": 300           # up to 5 min (srnode down or restarting)
    }

A series srnode derived is never sent back (no loops): it is recognised by its
ContributingEquipmentSequence (Manufacturer = DerivedManufacturer), by ImageType DERIVED
with a DerivationDescription naming srnode, or by the AE title it came from. The send is
an asynchronous Orthanc job; when it fails (srnode down, restarting), the plugin
resubmits it with exponential backoff, and after the last attempt it stays failed in
/jobs (POST /jobs/ID/resubmit sends it again).
"""

import json
import threading

import orthanc

_DEFAULTS = {
    "Enable": True,
    "Modality": "SRNODE",
    "Level": "Series",
    "Modalities": ["CT", "MR", "CR", "DX", "MG", "XA", "OT"],
    "SkipRemoteAets": ["SRNODE"],
    "DerivedManufacturer": "srnode",
    "RetryAttempts": 10,
    "RetryDelay": 5,
    "RetryMaxDelay": 300,
}


def _load_settings():
    settings = dict(_DEFAULTS)
    try:
        section = json.loads(orthanc.GetConfiguration()).get("SrnodeAutoroute", {})
    except Exception as e:  # malformed configuration: keep the defaults, say so
        orthanc.LogError(f"srnode autoroute: cannot read SrnodeAutoroute ({e})")
        section = {}
    settings.update(section)
    settings["Modalities"] = [str(m).upper() for m in settings["Modalities"]]
    settings["SkipRemoteAets"] = [str(a).strip() for a in settings["SkipRemoteAets"]]
    settings["DerivedManufacturer"] = str(settings["DerivedManufacturer"]).strip().lower()
    return settings


SETTINGS = _load_settings()

_our_jobs = {}  # job ID -> retries so far, for the send jobs this plugin created
_jobs_lock = threading.Lock()


def _get_json(uri):
    return json.loads(orthanc.RestApiGet(uri))


def _first(value):
    if isinstance(value, list):
        return value[0] if value else ""
    return value if value is not None else ""


def is_srnode_derived(tags, manufacturer):
    """``tags`` as returned by /instances/ID/tags?short (keys like "0008,0008")."""
    for item in tags.get("0018,a001") or []:  # ContributingEquipmentSequence
        if isinstance(item, dict):
            maker = str(item.get("0008,0070") or "").strip().lower()
            if maker == manufacturer:
                return True
    image_type = str(tags.get("0008,0008") or "")
    if image_type.split("\\")[0].strip().upper() != "DERIVED":
        return False
    description = str(tags.get("0008,2111") or "").lower()  # DerivationDescription
    return manufacturer in description


def _remote_aet(instance_id):
    try:
        return orthanc.RestApiGet(f"/instances/{instance_id}/metadata/RemoteAET").decode()
    except Exception:  # no such metadata (e.g. uploaded over REST or STOW-RS)
        return ""


def should_send(series_id):
    """(True, "") or (False, reason) for one Orthanc series."""
    series = _get_json(f"/series/{series_id}")
    modality = str(series.get("MainDicomTags", {}).get("Modality", "")).upper()
    if SETTINGS["Modalities"] and modality not in SETTINGS["Modalities"]:
        return False, "modality %s is not routed" % (modality or "-")
    instances = series.get("Instances") or []
    if not instances:
        return False, "no instances"
    first = instances[0]
    remote = _remote_aet(first).strip()
    if remote and remote in SETTINGS["SkipRemoteAets"]:
        return False, f"received from {remote}"
    tags = _get_json(f"/instances/{first}/tags?short")
    if is_srnode_derived(tags, SETTINGS["DerivedManufacturer"]):
        return False, "derived by srnode"
    return True, ""


def send_series(series_id):
    ok, reason = should_send(series_id)
    if not ok:
        orthanc.LogInfo(f"srnode autoroute: series {series_id} not sent: {reason}")
        return None
    body = json.dumps({"Resources": [series_id], "Asynchronous": True})
    job = json.loads(orthanc.RestApiPost("/modalities/{}/store".format(SETTINGS["Modality"]), body))
    with _jobs_lock:
        _our_jobs[job.get("ID")] = 0
    orthanc.LogWarning(
        "srnode autoroute: series {} -> {} (job {})".format(
            series_id, SETTINGS["Modality"], job.get("ID", "?")
        )
    )
    return job.get("ID")


def _resubmit(job_id):
    try:
        orthanc.RestApiPost(f"/jobs/{job_id}/resubmit", "")
    except Exception as e:
        orthanc.LogError(f"srnode autoroute: cannot resubmit job {job_id}: {e}")


def on_job_failure(job_id):
    """Resubmit a failed send job of ours after an exponential delay, a bounded number of
    times."""
    with _jobs_lock:
        if job_id not in _our_jobs:
            return
        attempt = _our_jobs[job_id] + 1
        if attempt > int(SETTINGS["RetryAttempts"]):
            del _our_jobs[job_id]
            orthanc.LogError(
                f"srnode autoroute: job {job_id} failed {attempt} times, left failed in /jobs"
            )
            return
        _our_jobs[job_id] = attempt
    delay = min(
        float(SETTINGS["RetryMaxDelay"]), float(SETTINGS["RetryDelay"]) * 2 ** (attempt - 1)
    )
    orthanc.LogWarning(f"srnode autoroute: job {job_id} failed, retry {attempt} in {delay:.0f} s")
    timer = threading.Timer(delay, _resubmit, args=(job_id,))
    timer.daemon = True
    timer.start()


def OnChange(change_type, level, resource_id):
    if not SETTINGS["Enable"]:
        return
    try:
        if change_type == orthanc.ChangeType.JOB_FAILURE:
            on_job_failure(resource_id)
            return
        if change_type == orthanc.ChangeType.JOB_SUCCESS:
            with _jobs_lock:
                _our_jobs.pop(resource_id, None)
            return
        by_study = str(SETTINGS["Level"]).lower() == "study"
        if change_type == orthanc.ChangeType.STABLE_SERIES and not by_study:
            send_series(resource_id)
        elif change_type == orthanc.ChangeType.STABLE_STUDY and by_study:
            for series_id in _get_json(f"/studies/{resource_id}").get("Series", []):
                send_series(series_id)
    except Exception as e:  # never let an exception escape into Orthanc
        orthanc.LogError(f"srnode autoroute: {level} {resource_id}: {e}")


orthanc.RegisterOnChangeCallback(OnChange)
