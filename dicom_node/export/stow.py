"""The DICOMweb exporter: STOW-RS with dicomweb-client, in batches of bounded size.

The response's ReferencedSOPSequence / FailedSOPSequence (PS3.18 10.5.3) decides per
instance, so a 409 with some instances stored is a partial success, not a failed batch.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable

from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_node.config_routing import StowDestination
from dicom_node.derive.encoding import encode
from dicom_node.error_text import describe
from dicom_node.export.result import SendResult

#: STOW-RS request size (bytes of DICOM) before starting a new request.
STOW_BATCH_BYTES = 64 * 1024 * 1024


def _batches(files: Iterable[str], max_bytes: int) -> Iterable[list[str]]:
    batch: list[str] = []
    size = 0
    for f in files:
        try:
            n = os.path.getsize(f)
        except OSError:
            n = 0
        if batch and size + n > max_bytes:
            yield batch
            batch, size = [], 0
        batch.append(f)
        size += n
    if batch:
        yield batch


def _stow_response(resp: object) -> Dataset | None:
    """The STOW response dataset of a ``requests`` response, if its body has one."""
    try:
        ctype = resp.headers.get("Content-Type", "")  # type: ignore[attr-defined]
        if resp.content and "json" in ctype:  # type: ignore[attr-defined]
            return Dataset.from_json(resp.json())  # type: ignore[attr-defined]
    except Exception:
        return None
    return None


def _apply_stow_response(
    result: SendResult, uid_to_path: dict[str, str], resp: Dataset | None, http: str
) -> None:
    """Mark each instance of the request stored or failed from the response dataset."""
    pending = dict(uid_to_path)
    if resp is not None:
        for item in resp.get("ReferencedSOPSequence", None) or []:
            path = pending.pop(str(item.get("ReferencedSOPInstanceUID", "")), None)
            if path is not None:
                result.ok.append(path)
        for item in resp.get("FailedSOPSequence", None) or []:
            path = pending.pop(str(item.get("ReferencedSOPInstanceUID", "")), None)
            if path is not None:
                reason = item.get("FailureReason", None)
                text = f"{http}, FailureReason 0x{int(reason):04X}" if reason is not None else http
                # 0xA7xx out of resources and 0x0110 processing failure may pass later.
                permanent = reason is not None and not (
                    0xA700 <= int(reason) <= 0xA7FF or int(reason) == 0x0110
                )
                result.fail(path, text, permanent=permanent)
    for path in pending.values():
        result.fail(path, f"{http}, instance not acknowledged")


def _http_failure(e: Exception) -> str:
    """A failed request in words: connection refused, timeout, or the exception's type."""
    import requests

    text = str(e)
    if isinstance(e, requests.Timeout):
        return "timeout"
    if "Connection refused" in text or isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, requests.ConnectionError):
        return "cannot connect (ConnectionError)"
    return describe(e)


def send(
    dest: StowDestination,
    files: list[str],
    calling_ae: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float | None = None,
) -> SendResult:
    """STOW-RS requests of at most :data:`STOW_BATCH_BYTES`; per-instance outcome.
    Instances go in the destination's ``transfer_syntax`` (re-encoded where they are
    stored in another); ``timeout`` defaults to the destination's."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    result = SendResult()
    if not dest.url:
        for f in files:
            result.fail(f, f"destination {dest.name}: url is required for kind = stow")
        return result
    timeout = dest.timeout if timeout is None else timeout
    client = DICOMwebClient(url=dest.url.rstrip("/"), timeout=(dest.connect_timeout, timeout))
    client.set_http_retry_params(retry=False)  # the worker owns retries and backoff
    for batch in _batches(files, STOW_BATCH_BYTES):
        datasets: list[Dataset] = []
        uid_to_path: dict[str, str] = {}
        for f in batch:
            try:
                ds = dcmread(f)
                if dest.transfer_syntax:
                    encode(ds, dest.transfer_syntax)
                uid_to_path[str(ds.SOPInstanceUID)] = f
                datasets.append(ds)
            except Exception as e:
                result.fail(f, f"cannot read: {describe(e)}", permanent=True)
        if not datasets:
            continue
        try:
            resp_ds = client.store_instances(datasets)
            if len(resp_ds):
                _apply_stow_response(result, uid_to_path, resp_ds, "HTTP 200")
            else:  # 200 without a body: PS3.18 says every instance was stored
                result.ok.extend(uid_to_path.values())
        except requests.HTTPError as e:
            r = e.response
            code = r.status_code if r is not None else 0
            resp = _stow_response(r) if r is not None else None
            if resp is not None and (
                "ReferencedSOPSequence" in resp or "FailedSOPSequence" in resp
            ):
                _apply_stow_response(result, uid_to_path, resp, f"HTTP {code}")
            else:
                permanent = 400 <= code < 500 and code not in (408, 409, 429)
                for path in uid_to_path.values():
                    result.fail(path, f"HTTP {code}", permanent=permanent)
        except (requests.RequestException, OSError) as e:
            for path in uid_to_path.values():
                result.fail(path, f"cannot reach {dest.url}: {_http_failure(e)}")
    return result
