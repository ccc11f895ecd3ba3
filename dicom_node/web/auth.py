"""Who is asking, and may they: console users (``srnode admin set-password``; admin or
read-only), the node's ``web.token`` (admin; Bearer, or HTTP Basic with the token as the
password), and signed session cookies from the login form.

With neither a user nor a token configured there is nothing to log in with: the console
then binds to loopback only (:func:`bind_host`) and a loopback client is the admin
``local``. A read-only user may only read (GET/HEAD). Forms carry a CSRF token bound to a
cookie of the browser (:func:`csrf_token`); the session cookie is ``SameSite=Strict``, and a
change through the API with only a cookie must come from the console's own origin.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import threading
import time
from typing import Any

from dicom_node.admin import users
from dicom_node.admin.errors import Actor
from dicom_node.config import Settings

log = logging.getLogger(__name__)

SESSION_COOKIE = "srnode_session"
CSRF_COOKIE = "srnode_csrf"
SESSION_SECONDS = 12 * 3600
SECRET_KEY = "web_session_secret"
PUBLIC_PATHS = ("/healthz", "/readyz", "/login", "/static/", "/favicon.ico")


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_matches(header: str, token: str) -> bool:
    """``Bearer <token>``, or ``Basic`` with any user name and the token as password."""
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "basic":
        user_pass = _basic(value)
        if user_pass is None:
            return False
        value = user_pass[1]
    elif scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.encode(), token.encode())


def _basic(value: str) -> tuple[str, str] | None:
    try:
        user, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return user, password


class Auth:
    """The authentication state of one app: the token, the users table, the cookie secret."""

    def __init__(self, settings: Settings, db: Any) -> None:
        self.token = settings.web.token
        self.db = db
        self._users_seen = (0.0, 0)
        self._keys: dict[str, tuple[float, tuple[str, str] | None]] = {}
        self._lock = threading.Lock()
        self._secret: bytes | None = None if db is not None else secrets.token_bytes(32)

    # ------------------------------------------------------------------ configuration
    def user_count(self) -> int:
        if self.db is None:
            return 0
        at, n = self._users_seen
        if time.monotonic() - at > 2.0:
            n = users.count(self.db.engine)
            self._users_seen = (time.monotonic(), n)
        return n

    def configured(self) -> bool:
        """True when someone can log in (a token or a console user)."""
        return bool(self.token) or self.user_count() > 0

    @property
    def secret(self) -> bytes:
        if self._secret is None:
            with self._lock:
                if self._secret is None:
                    self._secret = _load_secret(self.db)
        return self._secret

    # ------------------------------------------------------------------ who
    def from_header(self, header: str, address: str | None) -> Actor | None:
        if not header:
            return None
        if self.token and token_matches(header, self.token):
            return Actor("token", "admin", address)
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() == "basic" and self.db is not None:
            up = _basic(value.strip())
            if up is not None and up[0]:
                role = users.check(self.db.engine, up[0], up[1])
                if role is not None:
                    return Actor(up[0], role, address)
        return None

    def login(self, name: str, password: str, address: str | None) -> Actor | None:
        if self.db is not None and name:
            role = users.check(self.db.engine, name, password)
            if role is not None:
                return Actor(name, role, address)
        if self.token and hmac.compare_digest(password.encode(), self.token.encode()):
            return Actor("token", "admin", address)
        return None

    def _session_key(self, user: str, fresh: bool = False) -> tuple[str, str] | None:
        """(key, role) a session of ``user`` must carry: derived from the user's password
        hash (or the token), so a changed password or a removed user ends its sessions."""
        at, hit = self._keys.get(user, (0.0, None))
        if fresh or time.monotonic() - at > 2.0:
            if user == "token":
                hit = (self._sign("token:" + self.token), "admin") if self.token else None
            else:
                cred = users.credentials(self.db.engine, user) if self.db is not None else None
                hit = None if cred is None else (self._sign("user:" + cred[1])[:32], cred[0])
            self._keys[user] = (time.monotonic(), hit)
        return hit

    def session_cookie(self, actor: Actor) -> str:
        key = self._session_key(actor.user, fresh=True)
        payload = json.dumps(
            {"u": actor.user, "k": key[0] if key else "", "e": int(time.time()) + SESSION_SECONDS},
            separators=(",", ":"),
        ).encode()
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{body}.{self._sign(body)}"

    def from_cookie(self, value: str | None, address: str | None) -> Actor | None:
        if not value or "." not in value or len(value) > 1024:
            return None
        body, _, sig = value.rpartition(".")
        if not hmac.compare_digest(sig, self._sign(body)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            if int(data["e"]) < time.time():
                return None
            key = self._session_key(str(data["u"]))
            if key is None or not hmac.compare_digest(str(data["k"]), key[0]):
                return None
            return Actor(str(data["u"]), key[1], address)
        except (ValueError, KeyError, TypeError):
            return None

    def _sign(self, body: str) -> str:
        return hmac.new(self.secret, body.encode(), hashlib.sha256).hexdigest()

    # ------------------------------------------------------------------ CSRF
    def csrf_token(self, cookie: str) -> str:
        return hmac.new(self.secret, b"csrf:" + cookie.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, cookie: str | None, token: str | None) -> bool:
        if not cookie or not token:
            return False
        return hmac.compare_digest(self.csrf_token(cookie), token)


def _load_secret(db: Any) -> bytes:
    """The cookie-signing key, shared by every process on the database (made once)."""
    return bytes.fromhex(db.meta_value(SECRET_KEY, lambda: secrets.token_hex(32)))


def bind_host(settings: Settings, db: Any) -> str:
    """``web.host``, unless nobody can log in: then loopback only (said once in the log)."""
    host = settings.web.host
    if is_loopback(host):
        return host
    n = users.count(db.engine) if db is not None else 0
    if settings.web.token or n:
        return host
    log.warning(
        "web: no console user and no web.token: the console listens on 127.0.0.1 only, "
        "not %s (add a user with 'srnode admin set-password')",
        host,
    )
    return "127.0.0.1"
