"""What keeps bad input and broken clients from turning into 500s and log floods
(an ASGI middleware around the whole app):

- request bodies are read with an idle timeout (``408``) and a size limit (``413``); a
  client that goes away mid-body is logged as one line;
- warnings logged while one request is served are collected and logged once at its end
  ("2000 warnings while serving POST /dicom-web/studies, first: …");
- an unexpected exception gives ``500`` with an error id, logged as one line (the traceback
  only at DEBUG), never a traceback per request at WARNING or above.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_collector: contextvars.ContextVar[list[logging.LogRecord] | None] = contextvars.ContextVar(
    "srnode_request_warnings", default=None
)


class _Collect(logging.Filter):
    """On the root handlers: WARNING records of a request in progress are held back."""

    def filter(self, record: logging.LogRecord) -> bool:
        held = _collector.get()
        if held is None or record.levelno != logging.WARNING or record.name == __name__:
            return True
        if not held or held[-1] is not record:  # each handler asks about the same record
            held.append(record)
        return False


_FILTER = _Collect()


def _install_filter() -> None:
    for h in logging.getLogger().handlers:
        if _FILTER not in h.filters:
            h.addFilter(_FILTER)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int, what: str) -> None:
        super().__init__(413, f"request body over {what} ({limit} bytes)")


class BodyTimeout(HTTPException):
    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"request body not received within {seconds:.0f} s")


def mark_logged(exc: BaseException) -> None:
    """Said by the app's 500 handler, which logged ``exc`` once already."""
    exc._srnode_logged = True  # type: ignore[attr-defined]


class RequestGuard:
    """ASGI middleware; ``limit_for(path)`` is the body limit of a path in bytes, and what
    sets it (for the message)."""

    def __init__(
        self, app: Any, limit_for: Callable[[str], tuple[int, str]], read_timeout: float = 30.0
    ) -> None:
        self.app = app
        self.limit_for = limit_for
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        _install_filter()
        method, path = scope.get("method", "?"), scope.get("path", "?")
        limit, what = self.limit_for(path)
        for k, v in scope.get("headers", []):
            if k == b"content-length" and (not v.isdigit() or int(v) > limit):
                await _answer(send, 413, f"request body over {what} ({limit} bytes)")
                return
        received = 0
        started = False

        async def guarded_receive() -> Message:
            nonlocal received
            try:
                msg = await asyncio.wait_for(receive(), self.read_timeout)
            except TimeoutError:
                log.warning(
                    "web: %s %s: request body not received within %.0f s",
                    method,
                    path,
                    self.read_timeout,
                )
                raise BodyTimeout(self.read_timeout) from None
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, what)
            return msg

        async def tracked_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        held: list[logging.LogRecord] = []
        token = _collector.set(held)
        try:
            await self.app(scope, guarded_receive, tracked_send)
        except HTTPException as e:
            if not started:
                await _answer(send, e.status_code, str(e.detail))
        except Exception as e:
            if getattr(e, "_srnode_logged", False):
                return
            if isinstance(e, ClientDisconnect | OSError):
                log.info("web: %s %s: client went away before the request was read", method, path)
                return
            error_id = secrets.token_hex(6)
            log.error(
                "web: %s %s failed: %s (error id %s)", method, path, type(e).__name__, error_id
            )
            log.debug("error id %s", error_id, exc_info=True)
            if not started:
                await _answer(send, 500, "internal error", error_id=error_id)
        finally:
            _collector.reset(token)
            _flush(held, method, path)


def _flush(held: list[logging.LogRecord], method: str, path: str) -> None:
    if not held:
        return
    if len(held) == 1:
        logging.getLogger(held[0].name).handle(held[0])
        return
    first = held[0].getMessage()
    log.warning("%d warnings while serving %s %s; the first: %s", len(held), method, path, first)


async def _answer(send: Send, status: int, message: str, **extra: str) -> None:
    body = json.dumps({"error": message, **extra}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
