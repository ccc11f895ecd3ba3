"""The schema's migrations on SQLite and PostgreSQL: a database made by srnode 0.1.0 (before
the migrations), with rows in every table, is upgraded in place and keeps them; a new one gets
the schema the models describe; a database this srnode cannot run on is refused in one line."""

from __future__ import annotations

import json

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, inspect, select, text

from dicom_node.store import audit, migrate
from dicom_node.store.database import Database, default_url
from dicom_node.store.jobs import Jobs
from dicom_node.store.migrate import SchemaError
from dicom_node.store.schema import Base, Series
from dicom_node.store.states import JobState, SeriesState
from tests import release_0_1_0_schema as old
from tests.node_helpers import pg_database

REFUSAL = "calling AE title not allowed"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield default_url(tmp_path)
        return
    u, drop = pg_database()
    if u is None:
        pytest.skip(drop)
    yield u
    drop()


def _make_0_1_0(url: str, schema_version: int = 3) -> None:
    """A database as srnode 0.1.0 left it: its tables, and rows in each of them. With an
    older ``schema_version``, without the columns that later versions added."""
    d = Database(url)
    with d.engine.begin() as c:
        old.Base.metadata.create_all(c)
        if schema_version < 3:
            c.execute(text("ALTER TABLE exports DROP COLUMN first_failed_at"))
        if schema_version < 2:
            c.execute(text("ALTER TABLE series DROP COLUMN routing"))
        t = old.Base.metadata.tables
        c.execute(insert(t["srnode_meta"]).values(key="schema_version", value=str(schema_version)))
        c.execute(insert(t["srnode_meta"]).values(key="web_secret", value="ab" * 32))
        c.execute(insert(t["studies"]).values(id=1, study_uid="1.2.9", created_at=1.0))
        series = dict(study_id=1, derived_by_srnode=False, first_received=1.0, modality="CT")
        if schema_version >= 2:
            series["routing"] = '{"modality": "CT"}'
        c.execute(
            insert(t["series"]),
            [
                dict(id=1, series_uid="1.2.9.1", instance_count=2, last_received=2.0, **series)
                | dict(state="complete", completed_at=3.0),
                dict(id=2, series_uid="1.2.9.2", instance_count=1, last_received=4.0, **series)
                | dict(state="receiving", completed_at=None),
            ],
        )
        c.execute(
            insert(t["instances"]),
            [
                dict(sop_uid=f"1.2.9.{s}.{i}", series_id=s, path=f"/spool/{s}/{i}.dcm", size=100)
                | dict(received_at=float(i), removed=False, instance_number=i)
                for s, i in ((1, 1), (1, 2), (2, 1))
            ],
        )
        job = dict(series_id=1, destinations='["PACS"]', attempts=1, instance_count=2)
        job |= dict(derived_count=2, created_at=3.0, updated_at=5.0)
        c.execute(
            insert(t["jobs"]),
            [
                dict(id=1, state="done", last_error=None, finished_at=5.0, **job),
                dict(id=2, state="failed", last_error="D: refused", finished_at=5.0, **job),
                dict(id=3, state="queued", last_error=None, finished_at=None, **job),
            ],
        )
        export = dict(destination="PACS", sent_count=2, updated_at=5.0)
        if schema_version >= 3:
            export["first_failed_at"] = 4.0
        c.execute(
            insert(t["exports"]),
            [
                dict(job_id=1, state="done", attempts=1, pending="[]", **export),
                dict(job_id=2, state="failed", attempts=3, pending='["/d/1.dcm"]', **export),
            ],
        )
        c.execute(insert(t["ae_titles"]).values(ae_title="CT1", host="10.0.0.5", created_at=1.0))
        console = {"user": "alice", "target": "PACS", "before": None, "after": {"port": 104}}
        c.execute(
            insert(t["audit_events"]),
            [
                dict(at=1.0, kind="association_rejected", ae_title="EVIL", detail=REFUSAL)
                | dict(host="10.0.0.66"),
                dict(at=2.0, kind="destination.added", ae_title=None, detail=json.dumps(console))
                | dict(host="10.0.0.7"),
            ],
        )
        body = dict(body='{"name": "PACS"}', updated_at=1.0, position=0)
        c.execute(insert(t["live_destinations"]).values(name="PACS", **body))
        c.execute(insert(t["live_routes"]).values(name="ct", **body))
        c.execute(insert(t["config_seeds"]).values(kind="route", key="ct", digest="0" * 64))
        c.execute(
            insert(t["console_users"]).values(
                name="alice", role="admin", password_hash="scrypt$x", created_at=1.0, updated_at=1.0
            )
        )
        c.execute(
            insert(t["series_catalog"]).values(series_id=1, study_date="20240101", series_number=3)
        )
    d.close()


def _rows(d: Database, columns: dict[str, set[str]] | None = None) -> dict[str, list[dict]]:
    """Every row of every table (of ``columns``: only those), in primary-key order."""
    with d.engine.connect() as c:
        out = {}
        for name, table in Base.metadata.tables.items():
            have = {col["name"] for col in inspect(c).get_columns(name)}
            want = have if columns is None else columns[name]
            cols = [col for col in table.columns if col.name in want]
            rows = c.execute(select(*cols).order_by(*table.primary_key))
            out[name] = [dict(r._mapping) for r in rows]
        return out


def _schema_differences(d: Database) -> list:
    with d.engine.connect() as c:
        return compare_metadata(MigrationContext.configure(c), Base.metadata)


@pytest.mark.parametrize("schema_version", [3, 1])
def test_a_0_1_0_database_is_upgraded_in_place_with_its_rows(url, schema_version):
    _make_0_1_0(url, schema_version)
    d = Database(url)
    before = _rows(d)
    assert sum(len(rows) for rows in before.values()) == 21

    assert d.create_or_migrate() == migrate.head()

    # every row is there, unchanged, but for the audit format and the schema version
    after = _rows(d, {name: set(rows[0]) for name, rows in before.items()})
    assert {n for n in before if before[n] != after[n]} == {"srnode_meta", "audit_events"}
    assert [r["id"] for r in _rows(d)["audit_events"]] == [1, 2]
    with d.engine.connect() as c:
        meta = dict(c.execute(text("SELECT key, value FROM srnode_meta")).all())
        assert meta == {"schema_version": "4", "web_secret": "ab" * 32}
        assert c.execute(select(Series.routing).where(Series.id == 1)).scalar() == (
            '{"modality": "CT"}' if schema_version >= 2 else None
        )
    # one audit format: the plain-text refusal reads like the console's change
    _, rows = audit.query(d.engine)
    assert [(r["kind"], r["user"], r["target"], r["host"], r["detail"]) for r in rows] == [
        ("destination.added", "alice", "PACS", "10.0.0.7", None),
        ("association_rejected", None, "EVIL", "10.0.0.66", REFUSAL),
    ]
    assert rows[0]["after"] == {"port": 104}
    assert _schema_differences(d) == []

    # the node runs on it: the queued job is claimed, a late instance reopens its series
    jobs = Jobs(d)
    c = jobs.claim("w1", lease=60)
    assert (c.id, c.state, c.attempts) == (3, JobState.PROCESSING, 2)
    assert jobs.retry(2, expect=JobState.FAILED)
    kw = dict(sop_class_uid=None, transfer_syntax=None, instance_number=3, size=1)
    assert d.record_instance(
        series_id=1, sop_uid="1.2.9.1.3", path="/p", calling_ae=None, via="dimse", **kw
    )
    with d.session() as s:
        assert (s.get(Series, 1).state, s.get(Series, 1).instance_count) == (
            SeriesState.RECEIVING,
            3,
        )
    assert d.create_or_migrate() == migrate.head()  # the next start: nothing to do
    d.close()


def test_a_new_database_gets_the_schema_of_the_models(url):
    d = Database(url)
    assert d.create_or_migrate() == migrate.head()
    assert _schema_differences(d) == []
    with d.engine.connect() as c:
        assert migrate.current(c) == migrate.head()
        assert c.execute(text("SELECT value FROM srnode_meta")).scalar() == "4"
    d.close()


def test_a_database_newer_than_this_srnode_is_refused_in_one_line(url):
    d = Database(url)
    d.create_or_migrate()
    with d.engine.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaError) as e:
        d.create_or_migrate()
    assert "9999 is newer than this srnode" in str(e.value) and "\n" not in str(e.value)
    d.close()


def test_a_database_of_another_program_is_refused(url):
    d = Database(url)
    with d.engine.begin() as c:
        c.execute(text("CREATE TABLE invoices (id INTEGER PRIMARY KEY)"))
    with pytest.raises(SchemaError, match="not srnode's"):
        d.create_or_migrate()
    with d.engine.connect() as c:
        assert set(inspect(c).get_table_names()) == {"invoices"}  # nothing was written
    d.close()


def test_processes_starting_together_upgrade_once(url):
    """Several starters on one new database: one creates the schema, the others wait for it
    (PostgreSQL: an advisory lock; SQLite: the write lock) and find it done."""
    import threading

    dbs = [Database(url) for _ in range(3)]
    start = threading.Barrier(len(dbs))
    results: list[object] = []

    def starter(d: Database) -> None:
        start.wait()
        try:
            results.append(d.create_or_migrate())
        except Exception as e:  # reported below
            results.append(e)

    threads = [threading.Thread(target=starter, args=(d,)) for d in dbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == [migrate.head()] * len(dbs)
    with dbs[0].engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
        assert c.execute(text("SELECT count(*) FROM srnode_meta")).scalar() == 1
    for d in dbs:
        d.close()


@pytest.mark.integration
def test_srnode_on_a_0_1_0_data_dir_upgrades_it_and_shows_its_jobs(tmp_path):
    """What an operator does after installing the new release over the old one: the first
    command on the old data dir upgrades its database in place."""
    import subprocess

    from tests.node_helpers import SRNODE

    data = tmp_path / "data"
    _make_0_1_0(default_url(data))
    r = subprocess.run(
        [SRNODE, "status", "--data-dir", str(data), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    assert status["queue"] == {str(s): 0 for s in JobState} | {"done": 1, "failed": 1, "queued": 1}
    assert sorted(j["series_uid"] for j in status["jobs"]) == ["1.2.9.1"] * 3
    assert [e["state"] for e in status["exports"]] == ["failed", "done"]
    d = Database(default_url(data))
    with d.engine.connect() as c:
        assert migrate.current(c) == migrate.head()
    d.close()
