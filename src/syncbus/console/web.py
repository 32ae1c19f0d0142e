"""What every console page shares: templates, security headers, cookies, sessions, CSRF, forms.

Pages are Jinja2 templates with autoescaping always on, so user data (record
payloads, errors, audit reasons: all of it written by other systems or
people) is escaped wherever it lands. The Content-Security-Policy allows
scripts and styles only from this server's own ``/console/assets``, so even
an escaping mistake could not run a script. Every POST needs a live session
and that session's CSRF token (or, for the login form, the token of the
login cookie); cookies are HttpOnly and SameSite=Strict.

Sessions live in the app's state store, shared by every worker and node
(``sessions.py``). A request's session is read once (off the event loop,
like every store call of the console) and kept on the request; every
console route is a :class:`ConsoleRoute`, which writes the session's flash
messages back before the response leaves -- so the page after a redirect
finds them whichever worker serves it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from .. import __version__
from ..ingress.security import principal_named
from ..ingress.security.shared_buckets import node_buckets
from ..state.db import Database
from ..state.sessions import StoredSessions
from .metrics_view import RateTracker
from .sessions import LoginThrottle, Session, SessionStore

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).parent
SESSION_COOKIE = "syncbus_console"
LOGIN_COOKIE = "syncbus_console_login"
MAX_FORM_BYTES = 4 * 1024 * 1024     # an edited payload (1 MiB) form-encoded, with room
MAX_FORM_FIELDS = 2_000
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",   # no-referrer would make browsers send Origin: null
    "Cache-Control": "no-store",
}

_UNREAD = object()   # request.state has no session read yet (None means: read, and there is none)

templates = Environment(loader=FileSystemLoader(PACKAGE / "templates"), autoescape=True,
                        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


class FormError(Exception):
    """A console form that cannot be read (wrong type, too large, not UTF-8); the status says which."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


@dataclass
class ConsoleState:
    """The console's per-app state: sessions, login throttle, delivery-rate samples."""

    sessions: SessionStore
    throttle: LoginThrottle
    rates: RateTracker


def state(request: Request) -> ConsoleState:
    """Created on first use, on the app: one console per app (and so per runtime).

    Sessions go to the runtime's state store -- the one every worker and node
    shares; only an app without one (a unit test's stub) keeps them in memory.
    """
    app_state = request.app.state
    found = getattr(app_state, "console", None)
    if found is None:
        store = getattr(getattr(app_state, "runtime", None), "store", None)
        backend = StoredSessions(store) if isinstance(store, Database) else None
        if backend is None:
            log.warning("the console keeps sessions in this process only: the app has no state store")
        found = ConsoleState(SessionStore(backend=backend), LoginThrottle(table=node_buckets(os.environ)),
                             RateTracker())
        app_state.console = found
    return found


CONSOLE_SCOPE = "dlq:read"   # every console page shows dead letters, traces or the ledger: what dlq:read opens


def base(request: Request) -> str:
    """``/console`` below whatever root path the app is mounted at."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/") + "/console"


def runtime(request: Request) -> Any:
    return request.app.state.runtime


def admin_keys(request: Request) -> dict[str, str]:
    return dict(getattr(runtime(request), "admin_keys", {}) or {})


def client_id(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def current_session(request: Request) -> Session | None:
    """The live session of this request's cookie, or None (expired, logged out, key removed).

    Read from the store once per request and kept on it, so later calls (and
    :class:`ConsoleRoute`, which saves it) see the same object.
    """
    found = getattr(request.state, "console_session", _UNREAD)
    if found is None or isinstance(found, Session):
        return found
    session_id = request.cookies.get(SESSION_COOKIE)
    session = None
    if session_id:
        session = await asyncio.to_thread(state(request).sessions.get, session_id, admin_keys(request))
        if session is not None and not principal_named(request, session.name).allows(CONSOLE_SCOPE):
            session = None  # the login refuses such keys; every page refuses their sessions as well
    request.state.console_session = session
    return session


async def start_session(request: Request, name: str, key: str) -> Session:
    """A new session for the admin key ``name``, stored; it is this request's session from here on."""
    session = await asyncio.to_thread(state(request).sessions.create, name, key)
    request.state.console_session = session
    return session


async def end_session(request: Request, session: Session) -> None:
    """End the session for every worker and node (the cookie alone would not be enough)."""
    await asyncio.to_thread(state(request).sessions.end, session.id)
    request.state.console_session = None


async def save_session(request: Request) -> None:
    """Write back what the request changed in its session (flash messages shown or added), if anything."""
    session = getattr(request.state, "console_session", None)
    if isinstance(session, Session) and session.changed:
        await asyncio.to_thread(state(request).sessions.save, session)


class ConsoleRoute(APIRoute):
    """Every console route: the session is saved after the handler and before the response is sent.

    Before, not after: the browser follows a redirect at once, maybe to
    another worker, and that page must find the message the action flashed.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            response = await handler(request)
            await save_session(request)
            return response

        return handle


def safe_next(request: Request, target: str | None) -> str:
    """Only a console path of this server: a login link must never send someone elsewhere."""
    home = base(request) + "/routes"
    if not target:
        return home
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(base(request) + "/") or "\\" in target:
        return home
    return parts.path + (f"?{parts.query}" if parts.query else "")


def to_login(request: Request) -> RedirectResponse:
    """To the login page, coming back here afterwards (for a page; an action is not repeated)."""
    if request.method != "GET":
        return RedirectResponse(f"{base(request)}/login", status_code=303, headers=SECURITY_HEADERS)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{base(request)}/login?{urlencode({'next': here})}", status_code=303,
                            headers=SECURITY_HEADERS)


def see_other(location: str) -> RedirectResponse:
    """303: after a POST the browser GETs the result page (reloading it repeats nothing)."""
    return RedirectResponse(location, status_code=303, headers=SECURITY_HEADERS)


def redirect(request: Request, path: str, **query: str) -> RedirectResponse:
    suffix = f"?{urlencode(query)}" if query else ""
    return see_other(f"{base(request)}{path}{suffix}")


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    """HttpOnly, SameSite=Strict, only under /console, Secure on HTTPS."""
    response.set_cookie(name, value, max_age=max_age, path=base(request), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(name, path=base(request), httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two tokens, false if either is missing."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


def origin_ok(request: Request) -> bool:
    """A browser's Origin, when sent, must be this server: a second line behind the CSRF token."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    parts = urlsplit(origin)
    return parts.netloc == request.headers.get("host", "")


async def read_form(request: Request) -> dict[str, list[str]]:
    """An ``application/x-www-form-urlencoded`` body (all the console's forms send), bounded."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise FormError(415, "the console accepts form posts only")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM_BYTES):
        raise FormError(413, f"the form is larger than {MAX_FORM_BYTES // (1024 * 1024)} MiB")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            raise FormError(413, f"the form is larger than {MAX_FORM_BYTES // (1024 * 1024)} MiB")
        chunks.append(chunk)
    try:
        text = b"".join(chunks).decode("utf-8")
        return parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise FormError(400, "the form is not valid UTF-8 form data") from None


def field(form: dict[str, list[str]], name: str) -> str:
    """The first value of a form field, empty when absent (forms omit unticked boxes)."""
    values = form.get(name) or [""]
    return values[0]


def render(request: Request, template: str, status: int = 200, session: Session | None = None,
           **context: Any) -> HTMLResponse:
    """A page, escaped, with the security headers and the session's pending messages."""
    page = templates.get_template(template).render(
        base=base(request), session=session, csrf=session.csrf if session else "",
        flashes=session.take_flashes() if session else [], version=__version__, **context)
    return HTMLResponse(page, status_code=status, headers=SECURITY_HEADERS)


def error_page(request: Request, status: int, message: str, session: Session | None = None,
               headers: dict[str, str] | None = None) -> HTMLResponse:
    """An HTML error (the console is for people); the JSON error bodies are for the API."""
    page = render(request, "error.html", status=status, session=session, status_code=status, message=message)
    page.headers.update(headers or {})
    return page


def is_console(request: Request) -> bool:
    """A request for a console page: errors the app answers for it are pages too (a store outage, a 404)."""
    path: str = request.scope.get("path", "")
    console = base(request)
    return path == console or path.startswith(console + "/")
