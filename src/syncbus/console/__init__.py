"""The web console at ``/console`` (DESIGN §7): routes, dead letters, audit, trace, catalogue, ledger.

Pages are rendered on the server and work without JavaScript; nothing is
loaded from another host. The app mounts it with one line,
``app.include_router(console.router)``; all state (sessions, rate samples)
hangs off the app (sessions in its state store, shared by every worker), and
the data comes from the app's ``Runtime``.
"""

from __future__ import annotations

from fastapi import APIRouter

from . import pages_auth, pages_dlq, pages_info, web

router = APIRouter(prefix="/console", include_in_schema=False, route_class=web.ConsoleRoute)
router.include_router(pages_auth.router)
router.include_router(pages_dlq.router)
router.include_router(pages_info.router)
router.add_api_route("", pages_auth.index, methods=["GET"])   # /console itself, as well as /console/

__all__ = ["router"]
