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
export FINANCE_DB_URL="sqlite:///$PWD/var/sandbox/finance.db"
export HR_DROP_DIR="$PWD/var/sandbox/hr-drop"
$PY deploy/sandbox/sandbox.py --root var/sandbox --port "${SANDBOX_PORT:-8081}" &
SANDBOX=$!
trap 'kill $SANDBOX 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 50); do
  curl -s -o /dev/null "http://127.0.0.1:${SANDBOX_PORT:-8081}/docs" && break
  sleep 0.1
done
echo "sandbox: ERP, finance and HR on http://127.0.0.1:${SANDBOX_PORT:-8081} (files in var/sandbox/)" >&2
.venv/bin/syncbus run --config-dir . --bus "${SYNCBUS_BUS:-embedded://./var/syncbus.db}" --port "${SYNCBUS_PORT:-8080}"
