"""Console authentication: loopback-only when nothing is configured, users with admin and
read-only roles (scrypt passwords), the web token, signed session cookies, CSRF-checked
forms, and every change audited with the user who made it."""

from __future__ import annotations

import base64
import re

import pytest
from fastapi.testclient import TestClient

from dicom_node.admin import users
from dicom_node.admin.errors import Actor
from dicom_node.config import Settings
from dicom_node.store.database import Database
from dicom_node.web.app import create_app
from dicom_node.web.auth import bind_host

CLI = Actor("cli:test", "admin", None)
PASSWORD = "a long admin password"
READER_PASSWORD = "a long reader password"


@pytest.fixture
def setup(tmp_path):
    settings = Settings.model_validate({"node": {"data_dir": str(tmp_path / "data")}})
    db = Database.from_settings(settings)
    db.create_or_migrate()
    app = create_app(settings, lambda *a, **k: 0, db)
    yield settings, db, app
    db.close()


def _client(app, host: str = "127.0.0.1") -> TestClient:
    return TestClient(app, client=(host, 40000), base_url="http://127.0.0.1:8080")


def _csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)


def _login(c: TestClient, user: str, password: str):
    token = _csrf(c.get("/login").text)
    return c.post(
        "/login",
        data={"user": user, "password": password, "csrf": token, "next": "/"},
        follow_redirects=False,
    )


def test_nothing_configured_means_loopback_only(setup):
    settings, db, app = setup
    assert _client(app).get("/api/aets").status_code == 200  # the local admin
    assert _client(app, "192.0.2.7").get("/api/aets").status_code == 401
    settings.web.host = "0.0.0.0"
    assert bind_host(settings, db) == "127.0.0.1"
    users.set_password(db.engine, CLI, "admin", PASSWORD)
    assert bind_host(settings, db) == "0.0.0.0"


def test_with_a_user_everything_but_health_needs_a_login(setup):
    _, db, app = setup
    users.set_password(db.engine, CLI, "admin", PASSWORD)
    c = _client(app)
    assert c.get("/api/aets").status_code == 401
    page = c.get("/jobs", headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
    assert _login(c, "admin", "not the password").status_code == 401
    r = _login(c, "admin", PASSWORD)
    assert r.status_code == 303 and "srnode_session" in r.cookies
    assert c.get("/aets").status_code == 200
    basic = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    fresh = _client(app)
    assert fresh.get("/api/aets", headers={"Authorization": f"Basic {basic}"}).status_code == 200


def test_forms_need_their_csrf_token_and_changes_carry_the_user(setup):
    _, db, app = setup
    users.set_password(db.engine, CLI, "admin", PASSWORD)
    c = _client(app)
    _login(c, "admin", PASSWORD)
    r = c.post("/aets", data={"ae_title": "MOD1", "csrf": "0" * 64})
    assert r.status_code == 403
    token = _csrf(c.get("/aets").text)
    r = c.post("/aets", data={"ae_title": "MOD1", "host": "", "csrf": token})
    assert r.status_code == 200 and "MOD1 is allowed from any host" in r.text
    r = c.post("/aets", data={"ae_title": "WAY_TOO_LONG_AE_TITLE", "csrf": token})
    assert r.status_code == 422 and "ae_title" in r.text and "WAY_TOO_LONG_AE_TITLE" in r.text
    audit = c.get("/api/audit?kind=ae").json()["items"]
    assert audit[0]["user"] == "admin" and audit[0]["after"] == {"ae_title": "MOD1", "host": None}
    # a change through the API with only the cookie must come from the console's origin
    assert c.post("/api/aets", json={"ae_title": "MOD2"}).status_code == 403
    ok = c.post("/api/aets", json={"ae_title": "MOD2"}, headers={"Origin": "http://127.0.0.1:8080"})
    assert ok.status_code == 201


def test_read_only_users_read_and_cannot_change(setup):
    _, db, app = setup
    users.set_password(db.engine, CLI, "reader", READER_PASSWORD, "read-only")
    c = _client(app)
    _login(c, "reader", READER_PASSWORD)
    assert c.get("/destinations").status_code == 200
    assert "Add a destination" not in c.get("/destinations").text
    token = _csrf(c.get("/aets").text)
    assert c.post("/aets", data={"ae_title": "X", "csrf": token}).status_code == 403
    basic = base64.b64encode(f"reader:{READER_PASSWORD}".encode()).decode()
    r = _client(app).post(
        "/api/aets", json={"ae_title": "X"}, headers={"Authorization": f"Basic {basic}"}
    )
    assert r.status_code == 403


def test_the_web_token_is_an_admin(tmp_path):
    settings = Settings.model_validate(
        {"node": {"data_dir": str(tmp_path / "d")}, "web": {"token": "t0k3n-long-enough"}}
    )
    db = Database.from_settings(settings)
    db.create_or_migrate()
    try:
        app = create_app(settings, lambda *a, **k: 0, db)
        c = _client(app)
        assert c.get("/api/aets").status_code == 401
        bearer = {"Authorization": "Bearer t0k3n-long-enough"}
        assert c.post("/api/aets", json={"ae_title": "TOK"}, headers=bearer).status_code == 201
        assert c.get("/api/audit", headers=bearer).json()["items"][0]["user"] == "token"
        assert _login(c, "anyone", "t0k3n-long-enough").status_code == 303
    finally:
        db.close()


def test_a_forged_session_cookie_is_refused(setup):
    _, db, app = setup
    users.set_password(db.engine, CLI, "admin", PASSWORD)
    c = _client(app)
    forged = base64.urlsafe_b64encode(b'{"u":"x","r":"admin","e":9999999999}').decode()
    c.cookies.set("srnode_session", forged.rstrip("=") + ".deadbeef")
    assert c.get("/api/aets").status_code == 401


@pytest.mark.slow
def test_a_new_password_or_a_removed_user_ends_its_sessions(setup):
    _, db, app = setup
    users.set_password(db.engine, CLI, "admin", PASSWORD)
    users.set_password(db.engine, CLI, "other", READER_PASSWORD, "read-only")
    c = _client(app)
    _login(c, "admin", PASSWORD)
    assert c.get("/api/aets").status_code == 200
    users.set_password(db.engine, CLI, "admin", "a brand new password")
    app.state.console.auth._keys.clear()  # past the 2 s cache
    assert c.get("/api/aets").status_code == 401
    r = _client(app)
    _login(r, "other", READER_PASSWORD)
    assert r.get("/api/aets").status_code == 200
    users.remove(db.engine, CLI, "other")
    app.state.console.auth._keys.clear()
    assert r.get("/api/aets").status_code == 401
