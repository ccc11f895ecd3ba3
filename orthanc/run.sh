#!/usr/bin/env bash
# Run Debian's Orthanc in the foreground as srnode's reference PACS.
#
#   orthanc/run.sh [STORAGE_DIR]
#
# STORAGE_DIR defaults to a fresh temporary directory (removed on exit). Orthanc logs to
# stderr; Ctrl-C or SIGTERM stops it. Overrides from the environment:
#   ORTHANC_HTTP_PORT (8042)  ORTHANC_DICOM_PORT (4242)  ORTHANC_STABLE_AGE (10 s)
#   SRNODE_ADDR (127.0.0.1:11112, srnode's Storage SCP, AE SRNODE)
#   SRNODE_STOW (srnode's DICOMweb root, e.g. http://127.0.0.1:8080/dicom-web/)
#   ORTHANC_AUTOROUTE=0 turns the auto-routing plugin off.
#
# TCP_NODELAY=1 is needed or small DICOM transfers crawl; after
# Orthanc exits it holds its SQLite lock for several seconds, so a restart on the same
# STORAGE_DIR before then fails with "SQLite: database is locked" - this script waits and
# retries in that case.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

cleanup_storage=""
if [ $# -ge 1 ] && [ -n "$1" ]; then
  storage=$1
  mkdir -p "$storage"
else
  storage=$(mktemp -d -t srnode-orthanc.XXXXXX)
  cleanup_storage=$storage
fi
work=$(mktemp -d -t srnode-orthanc-cfg.XXXXXX)
trap 'rm -rf "$work"; [ -z "$cleanup_storage" ] || rm -rf "$cleanup_storage"' EXIT

args=(--storage "$storage")
[ -z "${ORTHANC_HTTP_PORT:-}" ] || args+=(--http-port "$ORTHANC_HTTP_PORT")
[ -z "${ORTHANC_DICOM_PORT:-}" ] || args+=(--dicom-port "$ORTHANC_DICOM_PORT")
[ -z "${ORTHANC_STABLE_AGE:-}" ] || args+=(--stable-age "$ORTHANC_STABLE_AGE")
[ -z "${SRNODE_ADDR:-}" ] || args+=(--srnode "$SRNODE_ADDR")
[ -z "${SRNODE_STOW:-}" ] || args+=(--srnode-stow "$SRNODE_STOW")
[ "${ORTHANC_AUTOROUTE:-1}" != 0 ] || args+=(--no-autoroute)
python3 "$here/configure.py" "${args[@]}" > "$work/orthanc.json"

export TCP_NODELAY=1
echo "orthanc/run.sh: storage $storage, config $work/orthanc.json" >&2

pid=""
stopping=""
stop() { stopping=1; [ -z "$pid" ] || kill -TERM "$pid" 2>/dev/null || true; }
trap stop INT TERM

for try in 1 2 3 4 5 6 7 8; do
  /usr/sbin/Orthanc "$work/orthanc.json" 2> >(tee "$work/log" >&2) &
  pid=$!
  # `wait` returns early (status > 128) when a trapped signal arrives: wait until Orthanc
  # itself has finished, then ask once more for its own exit status.
  wait "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do wait "$pid" 2>/dev/null || true; done
  rc=0
  wait "$pid" 2>/dev/null || rc=$?
  [ -z "$stopping" ] || exit "$rc"
  if [ "$rc" -ne 0 ] && grep -q "database is locked" "$work/log" 2>/dev/null; then
    echo "orthanc/run.sh: storage still locked by a previous Orthanc, retry $try in 2 s" >&2
    sleep 2
    continue
  fi
  exit "$rc"
done
exit 1
