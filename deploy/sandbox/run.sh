#!/usr/bin/env bash
# `make run`: the sandbox targets in the background, syncbus in the foreground
# on the embedded bus with the example flows. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
mkdir -p var/sandbox
export SYNCBUS_CRM_KEYS=${SYNCBUS_CRM_KEYS:-dev-crm-key}
export SYNCBUS_ERP_KEYS=${SYNCBUS_ERP_KEYS:-dev-erp-key}
export SYNCBUS_OA_KEYS=${SYNCBUS_OA_KEYS:-dev-oa-key}
export SYNCBUS_ADMIN_KEYS=${SYNCBUS_ADMIN_KEYS:-dev-admin-key}
export ERP_ORDERS_URL=http://127.0.0.1:${SANDBOX_PORT:-8081}/erp/orders
export ERP_TOKEN_URL=http://127.0.0.1:${SANDBOX_PORT:-8081}/oauth/token
export ERP_CLIENT_ID=syncbus ERP_CLIENT_SECRET=sandbox-secret
export FINANCE_PREREVIEW_URL=http://127.0.0.1:${SANDBOX_PORT:-8081}/finance/prereview
# ERP -> finance: the sandbox's SQLite files, unless set (e.g. to databases of `make postgres-up`)
export FINANCE_DB_URL="${FINANCE_DB_URL:-sqlite:///$PWD/var/sandbox/finance.db}"
export ERP_DSN="${ERP_DSN:-sqlite:///$PWD/var/sandbox/erp.db}"
export HR_DROP_DIR="$PWD/var/sandbox/hr-drop"          # OA ↔ HR: syncbus writes HR's files here,
export OA_OUTBOX_DIR="$PWD/var/sandbox/oa-outbox"      # reads the OA's exports from here,
export HR_OUTBOX_DIR="$PWD/var/sandbox/hr-outbox"      # HR's changes from here,
export OA_INBOX_DIR="$PWD/var/sandbox/oa-inbox"        # and writes OA's files here
mkdir -p "$HR_DROP_DIR" "$OA_OUTBOX_DIR" "$HR_OUTBOX_DIR" "$OA_INBOX_DIR"
$PY deploy/sandbox/erp_db.py var/sandbox/erp.db   # the ERP table with two sample documents
$PY deploy/sandbox/sandbox.py --root var/sandbox --port "${SANDBOX_PORT:-8081}" &
SANDBOX=$!
trap 'kill $SANDBOX 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 50); do
  curl -s -o /dev/null "http://127.0.0.1:${SANDBOX_PORT:-8081}/docs" && break
  sleep 0.1
done
echo "sandbox: ERP, finance and HR on http://127.0.0.1:${SANDBOX_PORT:-8081} (files in var/sandbox/)" >&2
echo "sandbox: drop OA exports into var/sandbox/oa-outbox/ (e.g. deploy/sandbox/samples/oa-employees.csv)," \
     "HR changes into var/sandbox/hr-outbox/" >&2
echo "sandbox: ERP postings in var/sandbox/erp.db (book more: $PY deploy/sandbox/erp_db.py var/sandbox/erp.db --post 3;" \
     "load now: ERP_DSN=$ERP_DSN .venv/bin/syncbus sync --full erp-postings)" >&2
.venv/bin/syncbus run --config-dir . --bus "${SYNCBUS_BUS:-embedded://./var/syncbus.db}" --port "${SYNCBUS_PORT:-8080}"
