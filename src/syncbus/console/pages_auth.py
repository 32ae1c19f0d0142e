"""Logging in and out of the console, the console's own assets, and the POST guard every action uses.

The login form posts an admin key once; from then on the browser holds only
a session cookie. The login form itself is protected against CSRF with a
token in a short-lived cookie (double submit), because there is no session
yet to keep a token in.
"""

from __future__ import annotations

import logging
from functools import cache

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..ingress.security import principal_named
from .sessions import MAX_AGE_SECONDS, Session, match_key
from .web import (
    CONSOLE_SCOPE,
    LOGIN_COOKIE,
    PACKAGE,
    SESSION_COOKIE,
    ConsoleRoute,
    FormError,
    admin_keys,
    clear_cookie,
    client_id,
    current_session,
    end_session,
    error_page,
    field,
    new_token,
    origin_ok,
    read_form,
    redirect,
    render,
    safe_next,
    same_token,
    see_other,
    set_cookie,
    start_session,
    state,
    to_login,
)

log = logging.getLogger(__name__)
router = APIRouter(route_class=ConsoleRoute)

LOGIN_TOKEN_SECONDS = 3600
ASSETS: dict[str, str] = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}


@cache
def _asset(name: str) -> bytes:
    return (PACKAGE / "static" / name).read_bytes()


def session_allows(request: Request, session: Session, scope: str) -> bool:
    """The session's admin key holds ``scope`` (SYNCBUS_KEY_SCOPES; a key listed nowhere is ``admin``)."""
    return bool(principal_named(request, session.name).allows(scope))


async def guarded_post(request: Request, scope: str | None = "dlq:write",
                       ) -> tuple[Session, dict[str, list[str]]] | Response:
    """The session and form of an action POST, or the response refusing it.

    No session: back to the login page (nothing is done). A key without
    ``scope`` (None: any session may, e.g. log itself out), a foreign Origin,
    or a missing or wrong CSRF token: 403.
    """
    session = await current_session(request)
    if session is None:
        return to_login(request)
    if scope is not None and not session_allows(request, session, scope):
        return error_page(request, 403, f"the key {session.name!r} does not hold the scope {scope!r}", session)
    if not origin_ok(request):
        return error_page(request, 403, "this form was not sent from this console", session)
    try:
        form = await read_form(request)
    except FormError as exc:
        return error_page(request, exc.status, str(exc), session)
    if not session.csrf_ok(field(form, "csrf") or None):
        return error_page(request, 403, "the form's CSRF token is missing or wrong: reload the page and try again",
                          session)
    return session, form


@router.get("/")
async def index(request: Request) -> Response:
    """``/console``: the routes page for a session, else the login."""
    if await current_session(request) is None:
        return to_login(request)
    return redirect(request, "/routes")


@router.get("/assets/{name}")
async def asset(name: str) -> Response:
    """The console's own CSS and script, from the package: no other host, works offline."""
    if name not in ASSETS:
        return Response("not found", status_code=404, media_type="text/plain")
    return Response(_asset(name), media_type=ASSETS[name],
                    headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})


def _login_page(request: Request, status: int = 200, error: str = "", next_path: str = "") -> Response:
    """The form with a fresh double-submit token cookie (kept across re-renders so a retry works)."""
    token = request.cookies.get(LOGIN_COOKIE) or new_token()
    response = render(request, "login.html", status=status, error=error, login_token=token,
                      next=safe_next(request, next_path or None), disabled=not admin_keys(request))
    set_cookie(request, response, LOGIN_COOKIE, token, LOGIN_TOKEN_SECONDS)
    return response


@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> Response:
    """The login form; someone already logged in goes straight on."""
    state(request)  # the console exists from here on (rates get a first sample)
    if await current_session(request) is not None:
        return see_other(safe_next(request, next))
    return _login_page(request, next_path=next or "")


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the posted key (constant time, throttled per client) and start a session named after it."""
    try:
        form = await read_form(request)
    except FormError as exc:
        return error_page(request, exc.status, str(exc))
    if not origin_ok(request) or not same_token(field(form, "csrf"), request.cookies.get(LOGIN_COOKIE)):
        return error_page(request, 403, "the login form expired or was not sent from this console: reload it")
    keys = admin_keys(request)
    if not keys:
        return _login_page(request, 403)
    throttle = state(request).throttle
    client = client_id(request)
    if throttle.blocked(client):
        log.warning("console login refused for %s: too many failures", client)
        return _login_page(request, 429, "too many failed logins from here: wait a few minutes")
    name = match_key(keys, field(form, "key").strip())
    if name is None:
        throttle.failed(client)
        log.warning("console login with an unknown key from %s", client)
        return _login_page(request, 403, "this key is not accepted", field(form, "next"))
    if not principal_named(request, name).allows(CONSOLE_SCOPE):  # e.g. a key only for posting to a source
        log.warning("console login refused for %s from %s: the key lacks %s", name, client, CONSOLE_SCOPE)
        return _login_page(request, 403, f"this key does not open the console (it needs the scope {CONSOLE_SCOPE})",
                           field(form, "next"))
    # A success does not wipe the failures before it: whoever holds one key could otherwise guess others
    # without limit, logging in with their own after every few guesses.
    session = await start_session(request, name, keys[name])
    session.flash("ok", f"signed in as {name}")   # saved with the session by ConsoleRoute
    log.info("console login: %s from %s", name, client)
    response = see_other(safe_next(request, field(form, "next")))
    set_cookie(request, response, SESSION_COOKIE, session.id, MAX_AGE_SECONDS)
    clear_cookie(request, response, LOGIN_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session on the server (the cookie alone would not be enough) and drop the cookie."""
    guarded = await guarded_post(request, scope=None)  # a read-only key must be able to end its session
    if isinstance(guarded, Response):
        return guarded
    session, _form = guarded
    await end_session(request, session)
    log.info("console logout: %s", session.name)
    response = redirect(request, "/login")
    clear_cookie(request, response, SESSION_COOKIE)
    return response
