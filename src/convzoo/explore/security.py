"""The explorer's door: who may talk to it, and the headers every answer carries.

An ASGI middleware in front of the whole application checks, in this order:

1. the ``Host`` header names the address the server is bound to (``hosts``): a web page that
   points its own domain at 127.0.0.1 (DNS rebinding) is refused with 403;
2. an ``Origin`` header, when present, is that address too: another site's page cannot post to it;
3. the per-start secret: ``/?token=SECRET`` (the printed address, as notebook servers do) sets a
   cookie (``HttpOnly``, ``SameSite=Strict``) and redirects to ``/``; every other request carries
   the cookie or the ``X-Explore-Token`` header. Compared with ``hmac.compare_digest``. Wrong or
   missing: 403;
4. a declared body over ``max_body`` bytes: 413 before it is read.

Every answer gets a Content-Security-Policy that allows only the server's own scripts, styles and
connections (no inline script, no other origin), and is never cached or framed.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, MutableSet
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

COOKIE = "convzoo_explore"
HEADER = "x-explore-token"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


def new_token() -> str:
    """A fresh secret for one start of the server (256 random bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def _same(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), token.encode())


async def refuse(send: Send, status: int, reason: str) -> None:
    """Answer ``status`` with ``{"error": reason}``: one line, no traceback."""
    body = json.dumps({"error": reason}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """The checks of the module's docstring around ``app``. ``hosts``: the ``Host`` values allowed
    (``"127.0.0.1:8765"``), a set the server fills once it knows its port."""

    def __init__(self, app: Callable, token: str, hosts: MutableSet[str], max_body: int) -> None:
        self.app, self.token, self.hosts, self.max_body = app, token, hosts, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        for key, value in scope["headers"]:
            headers.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
        host = headers.get("host")
        if host not in self.hosts:
            await refuse(send, 403, f"Host {str(host)[:60]!r} is not this server's address")
            return
        origin = headers.get("origin")
        if origin is not None and origin.removeprefix("http://") not in self.hosts:
            await refuse(send, 403, f"requests from {origin[:60]!r} are refused")
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if scope["path"] == "/" and "token" in query:
            if not _same(query["token"][0], self.token):
                await refuse(send, 403, "wrong token: open the address that 'convzoo explore' printed")
                return
            cookie = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
            await send({"type": "http.response.start", "status": 303, "headers": [
                (b"location", b"/"), (b"set-cookie", cookie.encode()), (b"content-length", b"0"),
                *SECURITY_HEADERS]})
            await send({"type": "http.response.body", "body": b""})
            return
        cookies = SimpleCookie()
        try:
            cookies.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is the same as none
            cookies = SimpleCookie()
        given = headers.get(HEADER) or (cookies[COOKIE].value if COOKIE in cookies else None)
        if not _same(given, self.token):
            await refuse(send, 403, "missing or wrong token: open the address that 'convzoo explore' printed")
            return
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > self.max_body:
            await refuse(send, 413, f"the request body is larger than the limit of {self.max_body:,} bytes")
            return

        async def send_secured(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_secured)
