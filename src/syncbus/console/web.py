"""What every console page shares: templates, security headers, cookies, sessions, CSRF, forms.

Pages are Jinja2 templates with autoescaping always on, so user data (record
payloads, errors, audit reasons: all of it written by other systems or
people) is escaped wherever it lands. The Content-Security-Policy allows
scripts and styles only from this server's own ``/console/assets``, so even
an escaping mistake could not run a script. Every POST needs a live session
and that session's CSRF token (or, for the login form, the token of the
login cookie); cookies are HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from .. import __version__
from .metrics_view import RateTracker
from .sessions import LoginThrottle, Session, SessionStore

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
    """Created on first use, on the app: one console per app (and so per runtime)."""
    app_state = request.app.state
    found = getattr(app_state, "console", None)
    if found is None:
        found = ConsoleState(SessionStore(), LoginThrottle(), RateTracker())
        app_state.console = found
    return found


def base(request: Request) -> str:
    """``/console`` below whatever root path the app is mounted at."""
    return request.scope.get("root_path", "").rstrip("/") + "/console"


def runtime(request: Request) -> Any:
    return request.app.state.runtime


def admin_keys(request: Request) -> dict[str, str]:
    return dict(getattr(runtime(request), "admin_keys", {}) or {})


def client_id(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def current_session(request: Request) -> Session | None:
    """The live session of this request's cookie, or None (expired, logged out, key removed)."""
    return state(request).sessions.get(request.cookies.get(SESSION_COOKIE), admin_keys(request))


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


def error_page(request: Request, status: int, message: str, session: Session | None = None) -> HTMLResponse:
    """An HTML error (the console is for people); the JSON error bodies are for the API."""
    return render(request, "error.html", status=status, session=session, status_code=status, message=message)
