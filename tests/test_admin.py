"""The live configuration (dicom_node.admin): seeding from the config, changes applied to
the running settings, audit rows with who/before/after, TOML export read back, users."""

from __future__ import annotations

import json

import pytest

from dicom_node.admin import users
from dicom_node.admin.dry_run import dry_run
from dicom_node.admin.errors import Actor, Conflict, Invalid, NotFound
from dicom_node.admin.live_config import LiveConfig
from dicom_node.admin.passwords import hash_password, verify_password
from dicom_node.admin.toml_export import to_toml
from dicom_node.config import Settings, load_settings
from dicom_node.store import audit
from dicom_node.store.database import Database

ADMIN = Actor("alice", "admin", "127.0.0.1")


def _settings(tmp_path, **extra) -> Settings:
    raw = {
        "node": {"data_dir": str(tmp_path / "data")},
        "allow": [{"ae_title": "PACS", "host": "127.0.0.1"}],
        "destinations": [
            {"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242}
        ],
        "routes": [{"name": "ct", "modality": ["CT"], "destinations": ["pacs"]}],
    }
    raw.update(extra)
    return Settings.model_validate(raw)


@pytest.fixture(params=["sqlite", "postgresql"])
def live(request, tmp_path):
    s = _settings(tmp_path)
    drop = None
    if request.param == "postgresql":
        from tests.node_helpers import pg_database

        url, drop = pg_database()
        if url is None:
            pytest.skip(drop)
        s = _settings(tmp_path, database={"url": url})
    db = Database.from_settings(s)
    db.create_or_migrate()
    lc = LiveConfig(db, s)
    lc.seed(s)
    yield lc
    db.close()
    if request.param == "postgresql":
        drop()


def test_seed_fills_the_store_once_and_audits_it_as_config(live, tmp_path):
    assert [a["ae_title"] for a in live.list_aes()] == ["PACS"]
    assert [d["name"] for d in live.list_destinations()] == ["pacs"]
    assert [r["name"] for r in live.list_routes()] == ["ct"]
    _, rows = audit.query(live.engine)
    assert {r["kind"] for r in rows} == {"ae.added", "destination.added", "route.added"}
    assert {r["user"] for r in rows} == {"config"}
    assert live.seed(live.settings) == 0  # same file: nothing written again


def test_a_deleted_entry_stays_deleted_until_the_file_changes_it(live, tmp_path):
    live.delete_route(ADMIN, "ct")
    live.seed(_settings(tmp_path))
    assert live.list_routes() == []
    changed = _settings(tmp_path, routes=[{"name": "ct", "modality": ["CT", "MR"]}])
    live.seed(changed)
    assert live.get_route("ct")["modality"] == ["CT", "MR"]


def test_changes_reach_the_running_settings_at_once(live):
    s = live.settings
    live.add_destination(ADMIN, {"name": "web", "kind": "stow", "url": "http://127.0.0.1:1/dw"})
    assert [d.name for d in s.destinations] == ["pacs", "web"]
    live.update_route(ADMIN, "ct", {"name": "ct", "modality": ["CT"], "destinations": ["web"]})
    assert s.routes[0].destinations == ["web"]
    live.add_ae(ADMIN, "MODALITY", None)
    assert ("MODALITY", "") in live.allowed_aes()


def test_another_process_change_is_seen_after_the_refresh(live):
    other = LiveConfig(live.db)  # e.g. `srnode aet add` in another process
    other.add_ae(ADMIN, "LATE", "10.0.0.1")
    live._checked = 0.0  # the refresh interval has passed
    assert ("LATE", "10.0.0.1") in live.allowed_aes()


def test_every_change_is_audited_with_before_and_after(live):
    live.update_destination(
        ADMIN, "pacs", {"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4343}
    )
    _, rows = audit.query(live.engine, kind="destination.updated")
    assert rows[0]["user"] == "alice" and rows[0]["host"] == "127.0.0.1"
    assert rows[0]["before"]["port"] == 4242 and rows[0]["after"]["port"] == 4343
    live.delete_ae(ADMIN, "PACS")
    _, rows = audit.query(live.engine, kind="ae", user="alice")
    assert rows[0]["kind"] == "ae.removed" and rows[0]["before"]["host"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "kind": "dimse", "host": "h", "port": 1}, "ae_title: required"),
        ({"name": "x", "kind": "dimse", "ae_title": "A", "host": "h", "port": 70000}, "port"),
        ({"name": "x", "kind": "stow", "url": "ftp://nope"}, "url"),
        ({"name": "", "kind": "stow", "url": "http://a"}, "name"),
        ({"name": "x" * 65, "kind": "stow", "url": "http://a"}, "name"),
        ({"name": "x", "kind": "dimse", "ae_title": "A\\B", "host": "h", "port": 1}, "ae_title"),
        ({"name": "x", "kind": "stow", "url": "http://a", "color": "red"}, "color"),
    ],
)
def test_bad_destinations_are_refused_naming_the_field(live, data, message):
    with pytest.raises(Invalid, match=message):
        live.add_destination(ADMIN, data)
    assert [d["name"] for d in live.list_destinations()] == ["pacs"]


def test_conflicts_and_missing_entries(live):
    with pytest.raises(Conflict):
        live.add_ae(ADMIN, "PACS", "127.0.0.1")
    with pytest.raises(Conflict, match="route"):
        live.delete_destination(ADMIN, "pacs")  # the route "ct" names it
    with pytest.raises(NotFound):
        live.delete_route(ADMIN, "nope")
    with pytest.raises(Invalid, match="no destination named"):
        live.add_route(ADMIN, {"name": "r", "destinations": ["nowhere"]})
    with pytest.raises(Invalid, match="regular expression"):
        live.add_route(ADMIN, {"name": "r", "series_description": "("})


def test_dry_run_uses_the_live_routes(live):
    d = dry_run(live, {"modality": "CT"})
    assert (d["action"], d["route"], d["destinations"]) == ("enhance", "ct", ["pacs"])
    assert dry_run(live, {"modality": "MR"})["action"] == "skip"
    live.add_route(ADMIN, {"name": "mr", "modality": ["MR"], "action": "ignore"}, position=0)
    assert dry_run(live, {"modality": "MR"})["route"] == "mr"
    assert [r["name"] for r in live.list_routes()] == ["mr", "ct"]


def test_export_reads_back_as_the_same_configuration(live, tmp_path):
    live.add_ae(ADMIN, "CT1", None)
    live.add_destination(ADMIN, {"name": "web", "kind": "stow", "url": "http://127.0.0.1:9/dw"})
    text = to_toml(live.settings, live.snapshot())
    path = tmp_path / "exported.toml"
    path.write_text(text)
    back = load_settings(path, env={})
    assert [(a.ae_title, a.host) for a in back.allow] == [("CT1", None), ("PACS", "127.0.0.1")]
    assert [d.name for d in back.destinations] == ["pacs", "web"]
    assert back.routes[0].name == "ct" and back.node.data_dir == live.settings.node.data_dir


def test_passwords_are_scrypt_hashes_and_never_audited(live):
    assert users.set_password(live.engine, ADMIN, "bob", "correct horse battery", "read-only")
    assert users.check(live.engine, "bob", "correct horse battery") == "read-only"
    assert users.check(live.engine, "bob", "wrong password!") is None
    assert users.check(live.engine, "nobody", "correct horse battery") is None
    with pytest.raises(Invalid, match="at least"):
        users.set_password(live.engine, ADMIN, "bob", "short")
    h = hash_password("correct horse battery")
    assert h.startswith("scrypt$") and verify_password("correct horse battery", h)
    _, rows = audit.query(live.engine, kind="user")
    assert "correct horse" not in json.dumps(rows) and "scrypt" not in json.dumps(rows)


@pytest.mark.slow
def test_cli_aet_and_config_export_share_the_store(tmp_path):
    """`srnode aet add` and `srnode config export` go through the same store as the API."""
    import subprocess

    from tests.node_helpers import SRNODE

    cfg = tmp_path / "srnode.toml"
    cfg.write_text(
        f'[node]\ndata_dir = "{tmp_path / "data"}"\n'
        '[[destinations]]\nname = "pacs"\nae_title = "ORTHANC"\nhost = "127.0.0.1"\nport = 4242\n'
    )

    def srnode(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [SRNODE, *args, "--config", str(cfg)], capture_output=True, text=True, timeout=120
        )

    # the admin commands work on a node's database; they never create an empty one
    assert srnode("aet", "add", "CT_SCANNER@10.0.0.5").returncode == 2
    first = Database.from_settings(
        Settings.model_validate({"node": {"data_dir": str(tmp_path / "data")}})
    )
    first.create_or_migrate()
    first.close()
    assert srnode("aet", "add", "CT_SCANNER@10.0.0.5").returncode == 0
    assert srnode("aet", "add", "BAD\\AE").returncode == 2
    out = tmp_path / "live.toml"
    assert srnode("config", "export", "--out", str(out)).returncode == 0
    back = load_settings(out, env={})
    assert [(a.ae_title, a.host) for a in back.allow] == [("CT_SCANNER", "10.0.0.5")]
    assert [d.name for d in back.destinations] == ["pacs"]
    s = Settings.model_validate({"node": {"data_dir": str(tmp_path / "data")}})
    db = Database.from_settings(s)
    try:
        _, rows = audit.query(db.engine, kind="ae.added")
        assert rows[0]["user"].startswith("cli:") and rows[0]["target"] == "CT_SCANNER"
    finally:
        db.close()


def test_a_stored_field_this_version_does_not_know_is_ignored(live, caplog):
    from sqlalchemy import update

    from dicom_node.store.schema import LiveDestination

    body = {**live.get_destination("pacs"), "retired_option": 3}
    with live.engine.begin() as conn:
        conn.execute(update(LiveDestination).values(body=json.dumps(body)))
    live.reload()
    assert [d.name for d in live.settings.destinations] == ["pacs"]
    assert "retired_option" in caplog.text


def test_a_new_default_does_not_reseed_an_entry_changed_at_run_time(live, tmp_path):
    live.update_route(ADMIN, "ct", {"name": "ct", "modality": ["CT", "MR"]})
    same_file = _settings(tmp_path)  # the file as before: its digest is unchanged
    assert live.seed(same_file) == 0
    assert live.get_route("ct")["modality"] == ["CT", "MR"]
