"""A sandbox of the target systems for ``make run``: a local ERP, finance and HR.

* ERP: ``POST /erp/orders`` takes the ORDERS05 XML with an OAuth2 bearer token
  from ``POST /oauth/token`` (client credentials), drops duplicates by
  ``Idempotency-Key`` and keeps each order as a file; ``GET /erp/orders`` lists them.
* Finance: ``POST /finance/prereview`` takes large orders as JSON; the
  voucher database is a SQLite file with a ``vouchers`` table.
* HR and OA exchange CSV files (DESIGN §9, OA ↔ HR): the OA drops its GBK
  exports into ``oa-outbox/`` and HR its changes into ``hr-outbox/`` (syncbus's
  ``file_drop`` sources read them and move them to ``processed/`` or
  ``failed/``); syncbus writes HR's files into ``hr-drop/`` and OA's into
  ``oa-inbox/``. ``samples/`` beside this file holds one export of each side.

It is a stand-in for real systems on a developer's machine, not a test double:
the end-to-end tests start their own targets.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import secrets
import sqlite3
import time
from pathlib import Path
from urllib.parse import parse_qs

import uvicorn
import xmltodict
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

log = logging.getLogger("sandbox")


def create_sandbox(root: Path, client_id: str, client_secret: str) -> FastAPI:
    orders_dir = root / "erp-orders"
    prereview_dir = root / "finance-prereview"
    for d in (orders_dir, prereview_dir, *(root / f for f in ("hr-drop", "oa-outbox", "hr-outbox", "oa-inbox"))):
        d.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(root / "finance.db") as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS vouchers (voucher_no TEXT PRIMARY KEY, company TEXT, fiscal_year TEXT,"
            " document TEXT, line TEXT, date TEXT, account TEXT, amount TEXT, currency TEXT, text TEXT,"
            " idempotency_key TEXT)"
        )
    tokens: dict[str, float] = {}
    seen: dict[str, str] = {}
    app = FastAPI(title="syncbus sandbox: ERP, finance, HR")

    @app.post("/oauth/token")
    async def token(request: Request) -> JSONResponse:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        cid, secret = form.get("client_id"), form.get("client_secret")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            cid, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        if form.get("grant_type") != "client_credentials" or cid != client_id or secret != client_secret:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        value = secrets.token_urlsafe(24)
        tokens[value] = time.time() + 3600
        return JSONResponse({"access_token": value, "token_type": "Bearer", "expires_in": 3600})

    def authorized(request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        value = auth[7:] if auth.lower().startswith("bearer ") else ""
        return tokens.get(value, 0) > time.time()

    @app.post("/erp/orders")
    async def erp_order(request: Request) -> Response:
        if not authorized(request):
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        body = await request.body()
        try:
            doc = xmltodict.parse(body)
        except Exception as exc:
            return JSONResponse({"error": f"not XML: {exc}"}, status_code=400)
        key = request.headers.get("idempotency-key", "")
        if key and key in seen:
            return JSONResponse({"status": "duplicate", "document": seen[key]}, status_code=200)
        vbeln = doc.get("ORDERS05", {}).get("IDOC", {}).get("E1EDK01", {}).get("VBELN", "unknown")
        docnum = f"{len(seen) + 1:016d}"
        seen[key] = docnum
        (orders_dir / f"{docnum}-{vbeln}.xml").write_bytes(body)
        log.info("ERP received order %s as IDoc %s (route %s v%s)", vbeln, docnum,
                 request.headers.get("x-syncbus-route"), request.headers.get("x-syncbus-mapping-version"))
        return JSONResponse({"status": "created", "document": docnum, "VBELN": vbeln}, status_code=201)

    @app.get("/erp/orders")
    async def erp_orders() -> JSONResponse:
        files = sorted(orders_dir.glob("*.xml"))
        return JSONResponse([{"file": f.name, "xml": f.read_text("utf-8")} for f in files])

    @app.post("/finance/prereview")
    async def prereview(request: Request) -> JSONResponse:
        body = await request.body()
        key = request.headers.get("idempotency-key", "x").replace(":", "_").replace("/", "_")
        (prereview_dir / f"{key}.json").write_bytes(body)
        log.info("finance pre-review received %s", json.loads(body).get("IDOC", {}).get("E1EDK01", {}).get("VBELN"))
        return JSONResponse({"status": "queued"}, status_code=202)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="var/sandbox")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--client-id", default="syncbus")
    parser.add_argument("--client-secret", default="sandbox-secret")
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s sandbox: %(message)s")
    app = create_sandbox(Path(args.root), args.client_id, args.client_secret)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
