"""The admin console in Debian's headless chromium, on a real `srnode serve` between dcmtk's
storescu (the modality) and storescp (the archive): log in, allow a calling AE (then C-ECHO
from it works without a restart), add a destination and test it, send a real CT series,
open its job and see the before/after images, read the audit entries of those changes.

No patient name or ID shows up in the node's log, the pages or the API.

With ``SRNODE_SCREENSHOTS=<folder>`` the dashboard and the job page are saved there as PNG
(the README's pictures come from ``SRNODE_SCREENSHOTS=docs/images``)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.node_helpers import (
    ECHOSCU,
    SRNODE,
    STORESCP,
    STORESCU,
    free_port,
    nodelay_env,
    received,
    start_node,
    start_storescp,
    storescu,
    wait_for,
    wait_port,
)

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CRANIUM = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
PASSWORD = "console test password"
PATIENT_NAME, PATIENT_ID = "Probe^Secret", "PID-7731-SECRET"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not all(shutil.which(p) for p in (STORESCU, STORESCP, ECHOSCU, CHROMIUM, CHROMEDRIVER)),
        reason="dcmtk or Debian's chromium / chromium-driver missing",
    ),
    pytest.mark.skipif(not CRANIUM.is_file(), reason="invesalius-examples missing"),
]


def cranium_series(folder: Path, slices: range) -> list[Path]:
    """Slices of the InVesalius head CT (held-out slab of the bundled CT model) as a CT
    series with fresh UIDs and a test patient."""
    from training.data.readers import read_inv3

    vol = read_inv3(CRANIUM)
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    dz, dy, dx = vol.spacing
    out = []
    for n, k in enumerate(slices):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        pix = np.ascontiguousarray(vol.array[k])
        ds.Rows, ds.Columns = pix.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pix.astype(np.uint16).tobytes()
        for kw in ("SmallestImagePixelValue", "LargestImagePixelValue", "ImageComments"):
            if kw in ds:
                del ds[kw]
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelSpacing = [dy, dx]
        ds.SliceThickness = dz
        ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.StudyDate, ds.AccessionNumber = "20261127", "ACC-CONSOLE-1"
        ds.StudyDescription, ds.SeriesDescription = "CT head", "Head 1.5 axial"
        ds.BodyPartExamined = "HEAD"
        ds.InstanceNumber = n + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-122.5, -122.5, k * dz]
        p = folder / f"ct{n:03d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        out.append(p)
    return out


def echo(port: int, aet: str) -> int:
    return subprocess.run(
        [ECHOSCU, "-aet", aet, "-aec", "SRNODE", "127.0.0.1", str(port)],
        env=nodelay_env(),
        capture_output=True,
        timeout=60,
    ).returncode


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    t = tmp_path_factory.mktemp("console")
    port, web_port, dest_port = free_port(), free_port(), free_port()
    cfg = t / "srnode.toml"
    cfg.write_text(
        "\n".join(
            [
                "[node]",
                'ae_title = "SRNODE"',
                'host = "127.0.0.1"',
                f"port = {port}",
                f'data_dir = "{t / "data"}"',
                "drain_timeout = 5",
                "[scheduler]",
                "stable_age = 1.0",
                "tick = 0.25",
                "[engine]",
                'backend = "onnxruntime"',
                "threads = 2",
                "[web]",
                "enabled = true",
                'host = "127.0.0.1"',
                f"port = {web_port}",
                "[[allow]]",
                'ae_title = "PACS"',
                'host = "127.0.0.1"',
            ]
        )
        + "\n"
    )
    r = subprocess.run(
        [
            SRNODE,
            "admin",
            "set-password",
            "--user",
            "admin",
            "--password-stdin",
            "--config",
            str(cfg),
        ],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    scp = start_storescp(t / "archive", dest_port, t / "storescp.log")
    proc = start_node(t / "node.log", "--config", str(cfg))
    wait_port(web_port, 60, proc)
    yield {
        "t": t,
        "port": port,
        "web": f"http://127.0.0.1:{web_port}",
        "dest_port": dest_port,
        "proc": proc,
    }
    proc.close()
    scp.close()


@pytest.fixture(scope="module")
def browser(node):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1360,1000",
        f"--user-data-dir={node['t'] / 'chromium-profile'}",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def api(node, path: str):
    req = urllib.request.Request(node["web"] + path)
    req.add_header(
        "Authorization", "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def screenshot(driver, name: str) -> None:
    """The whole page as PNG (Chrome DevTools' capture beyond the viewport)."""
    folder = os.environ.get("SRNODE_SCREENSHOTS")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1360, "height": int(size["height"]), "deviceScaleFactor": 1, "mobile": False},
    )
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    (Path(folder) / name).write_bytes(base64.b64decode(shot["data"]))


def test_console_end_to_end(node, browser):
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    d, web = browser, node["web"]
    seen_pages: list[str] = []

    def find(css: str):
        return d.find_element(By.CSS_SELECTOR, css)

    def click_and_wait(element) -> None:
        """Click and wait for the next page to load.

        The old page carries a marker in its window object; the new page does not. (Selenium's
        staleness_of races with chromedriver here: asking about a node of a page being torn down
        can answer "Node with given id does not belong to the document" instead of "stale".)
        """
        d.execute_script("window.__srnodeOldPage = true")
        element.click()
        WebDriverWait(d, 60, ignored_exceptions=(WebDriverException,)).until(
            lambda drv: drv.execute_script(
                "return !window.__srnodeOldPage && document.readyState === 'complete'"
            )
        )

    def submit(css: str) -> None:
        """Click and wait for the next page (a form post answers with a new page)."""
        click_and_wait(find(css))

    def fill(css: str, value: str) -> None:
        el = find(css)
        el.clear()
        el.send_keys(value)

    # log in (a user exists, so the console asks)
    d.get(web + "/aets")
    assert "/login" in d.current_url
    fill("#user", "admin")
    fill("#password", PASSWORD)
    submit("#login")
    assert d.current_url.endswith("/aets") and "Calling AE titles" in d.page_source

    # a calling AE, live: refused before, accepted at once after
    assert echo(node["port"], "BROWSER") != 0
    fill("#aet-title", "BROWSER")
    fill("#aet-host", "127.0.0.1")
    submit("#aet-add")
    assert "BROWSER is allowed from 127.0.0.1" in find("#msg").text
    assert echo(node["port"], "BROWSER") == 0

    # a destination: a validation message first, then added and tested with C-ECHO
    d.get(web + "/destinations")
    fill("#dest-name", "archive")
    fill("#dest-host", "127.0.0.1")
    fill("#dest-port", str(node["dest_port"]))
    submit("#dest-add")
    assert "ae_title: required for a DIMSE destination" in find("#error").text
    Select(find("#dest-kind")).select_by_value("dimse")
    fill("#dest-ae-title", "DEST")
    submit("#dest-add")
    assert "destination archive added" in find("#msg").text
    submit("#destinations button.plain")  # Test
    assert "C-ECHO succeeded" in find("#msg").text
    seen_pages.append(d.page_source)

    # a real CT series from the new AE: enhanced and delivered
    files = cranium_series(node["t"] / "cranium", range(60, 63))
    assert storescu(node["port"], files, "BROWSER").returncode == 0
    wait_for(lambda: api(node, "/api/jobs?state=done")["total"] >= 1, 300, 1.0, "job done")
    wait_for(lambda: len(received(node["t"] / "archive")) >= 3, 60, 0.5, "3 derived delivered")

    # find it by accession number and open it: both previews load
    d.get(web + "/jobs?accession=ACC-CONSOLE-1&study_date_from=20261101")
    rows = d.find_elements(By.CSS_SELECTOR, "#jobs tr td:first-child a")
    assert len(rows) == 1
    click_and_wait(rows[0])
    assert "Job " in find("h1").text and "done" in find("h1").text
    for img in ("#before", "#after"):
        size = d.execute_script(
            "const i = arguments[0]; return i.complete ? [i.naturalWidth, i.naturalHeight] : null",
            find(img),
        )
        assert size == [512, 512], (img, size)
    assert "DerivationDescription" in find("#provenance").text
    seen_pages.append(d.page_source)
    screenshot(d, "console-job.png")

    # the audit log names who did it
    d.get(web + "/audit")
    audit = find("#audit").text
    assert "ae.added" in audit and "BROWSER" in audit
    assert "destination.added" in audit and "archive" in audit
    rows = [r.text for r in d.find_elements(By.CSS_SELECTOR, "#audit tr")]
    assert any("destination.added" in r and "admin" in r for r in rows)
    seen_pages.append(d.page_source)

    d.get(web + "/")
    assert int(find("#received-hour").text) >= 3 and find("#engine-ms").text != "-"
    seen_pages.append(d.page_source)
    screenshot(d, "console-dashboard.png")

    # no patient name or ID in the log, the pages or the API
    api_text = json.dumps(
        [api(node, "/api/jobs"), api(node, "/api/audit"), api(node, "/api/status")]
    )
    # ("Probe" alone is a word of the destination form: "Probe every")
    for secret in (PATIENT_NAME, PATIENT_ID, "Secret", "7731"):
        assert secret not in node["proc"].text()
        assert secret not in api_text
        assert not any(secret in page for page in seen_pages)
