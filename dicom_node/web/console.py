"""The admin console: queue, recent jobs and destinations as JSON and as server-rendered
HTML (inline CSS, no scripts)."""

from __future__ import annotations

import html
import time
from typing import Any

from dicom_node import __version__
from dicom_node.config import Settings

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2433;background:#f6f7f9}
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:22px 0 8px}
.sub{color:#5b6477}table{border-collapse:collapse;background:#fff;width:100%}
th,td{border:1px solid #d9dde5;padding:4px 8px;text-align:left;vertical-align:top;
max-width:34em;overflow-wrap:anywhere}
th{background:#eceff4}.tiles{display:flex;gap:8px;flex-wrap:wrap}
.tile{background:#fff;border:1px solid #d9dde5;padding:8px 14px;min-width:80px}
.tile b{display:block;font-size:20px}.failed{color:#b3261e}.done{color:#1e7b34}
code{font-size:12px}
"""


def _fmt_time(t: float | None) -> str:
    if not t:
        return "-"
    dt = time.time() - float(t)
    return f"{dt:.0f} s ago" if dt >= 0 else f"in {-dt:.0f} s"


def _status_data(settings: Settings, db: Any, limit: int = 20) -> dict[str, Any]:
    out: dict[str, Any] = {"version": __version__, "ae_title": settings.node.ae_title}
    out["destinations"] = [
        {
            "name": d.name,
            "kind": d.kind,
            "address": d.address,
            "tls": d.tls,
        }
        for d in settings.destinations
    ]
    if db is None:
        out.update(queue={}, jobs=[], exports=[])
        return out
    out["queue"] = db.queue_counts()
    out["jobs"] = db.recent_jobs(limit)
    exports = db.export_rows(only_open=False)[:limit]
    for e in exports:
        e.pop("pending", None)
    out["exports"] = exports
    return out


def render_console(data: dict[str, Any]) -> str:
    e = html.escape
    tiles = (
        "".join(
            f'<div class="tile"><b>{n}</b>{e(state)}</div>' for state, n in data["queue"].items()
        )
        or '<div class="tile">no database</div>'
    )
    dest_rows = (
        "".join(
            f"<tr><td>{e(d['name'])}</td><td>{e(d['kind'])}</td><td><code>{e(str(d['address']))}"
            f"</code></td><td>{'yes' if d['tls'] else 'no'}</td></tr>"
            for d in data["destinations"]
        )
        or '<tr><td colspan="4">none configured</td></tr>'
    )
    job_rows = (
        "".join(
            f'<tr><td>{j["id"]}</td><td class="{e(str(j["state"]))}">{e(str(j["state"]))}</td>'
            f"<td>{e(str(j.get('modality') or '-'))}</td><td><code>{e(str(j['series_uid']))}</code>"
            f"</td><td>{e(str(j.get('route') or '-'))}</td><td>{j.get('attempts', 0)}</td>"
            f"<td>{j.get('derived_count') or 0}</td><td>{_fmt_time(j.get('updated_at'))}</td>"
            f"<td>{e(str(j.get('last_error') or j.get('reason') or ''))[:200]}</td></tr>"
            for j in data["jobs"]
        )
        or '<tr><td colspan="9">no jobs yet</td></tr>'
    )
    export_rows = (
        "".join(
            f"<tr><td>{x['job_id']}</td><td>{e(str(x['destination']))}</td>"
            f'<td class="{e(str(x["state"]))}">{e(str(x["state"]))}</td><td>{x["attempts"]}</td>'
            f"<td>{x.get('sent_count') or 0}</td><td>{_fmt_time(x.get('next_attempt_at'))}</td>"
            f"<td>{e(str(x.get('last_error') or ''))[:200]}</td></tr>"
            for x in data["exports"]
        )
        or '<tr><td colspan="7">no exports yet</td></tr>'
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>srnode {e(data["ae_title"])}</title>
<style>{_CSS}</style></head><body>
<h1>srnode {e(data["ae_title"])}</h1>
<div class="sub">version {e(data["version"])} &middot; <a href="/api/status">JSON</a>
&middot; <a href="/metrics">metrics</a></div>
<h2>Queue</h2><div class="tiles">{tiles}</div>
<h2>Destinations</h2><table><tr><th>name</th><th>kind</th><th>address</th><th>TLS</th></tr>
{dest_rows}</table>
<h2>Recent jobs</h2><table><tr><th>id</th><th>state</th><th>modality</th><th>series</th>
<th>route</th><th>attempts</th><th>derived</th><th>updated</th><th>reason / last error</th></tr>
{job_rows}</table>
<h2>Exports</h2><table><tr><th>job</th><th>destination</th><th>state</th><th>attempts</th>
<th>sent</th><th>next attempt</th><th>last error</th></tr>{export_rows}</table>
</body></html>"""


# --- the app ----------------------------------------------------------------------------------
