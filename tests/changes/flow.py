"""The reference CRM -> ERP flow in a temporary config dir, for change-management tests.

The mapping is the shipped ``mappings/crm-order-to-erp.yaml`` (with its
schemas), unchanged; only the connectors differ: the ingress source is named
``crm`` (the e2e harness posts to ``/ingress/crm``) and both sinks deliver
to a local ``TargetServer``. A shadow is the live file with a field rule
changed, a new name, ``shadow_of:`` and a version 5 changelog entry -- what a
person writing a candidate would do.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LIVE = "crm-order-to-erp"
SHADOW = "crm-order-to-erp-next"
REGIONS = ("east", "south", "north", "west")


def write_flow(root: Path, target_url: str) -> Path:
    (root / "mappings").mkdir(parents=True, exist_ok=True)
    (root / "connectors").mkdir(exist_ok=True)
    shutil.copy(ROOT / "mappings" / f"{LIVE}.yaml", root / "mappings" / f"{LIVE}.yaml")
    shutil.copytree(ROOT / "mappings" / "schemas", root / "mappings" / "schemas", dirs_exist_ok=True)
    (root / "connectors" / "crm.yaml").write_text(textwrap.dedent(f"""\
        sources:
          - name: crm
            type: http_ingress
            topic: crm.orders
            key: order_id
            auth: {{api_keys_env: E2E_KEYS}}
        sinks:
          - name: erp-orders
            type: http
            url: {target_url}/erp/orders
            retry: {{attempts: 4, initial: 20ms, max: 100ms}}
            timeout: 5s
          - name: finance-prereview
            type: http
            url: {target_url}/finance/prereview
            retry: {{attempts: 4, initial: 20ms, max: 100ms}}
            timeout: 5s
        """), encoding="utf-8")
    return root


def live_text() -> str:
    return (ROOT / "mappings" / f"{LIVE}.yaml").read_text("utf-8")


def shadow_text(north: str = "3500", version: int = 5, approved_by: str | None = "liu (sales-ops)") -> str:
    """The live file as a shadow whose only rule change is the sales organisation of region north."""
    text = live_text()
    assert 'north: "3000"' in text and "version: 4\n" in text and f"mapping: {LIVE}\n" in text
    text = text.replace(f"mapping: {LIVE}\n", f"mapping: {SHADOW}\nshadow_of: {LIVE}\n")
    text = text.replace("version: 4\n", f"version: {version}\n", 1)
    text = text.replace('north: "3000"', f'north: "{north}"')
    entry = f"  - {{version: {version}, date: 2026-12-10, by: wang, reason: north moves to sales org {north}"
    entry += f", approved_by: {approved_by}}}\n" if approved_by else "}\n"
    return text.replace("source:\n  topic:", entry + "source:\n  topic:", 1)


def crm_order(i: int, **extra: Any) -> dict[str, Any]:
    """A valid CRM order; ``region`` cycles so exactly every fourth order is in the north."""
    return {"order_id": f"SO-{i:06d}", "status": "APPROVED", "created_at": "2026-11-20T10:15:00+08:00",
            "cust_code": f"c{i % 997:04d}", "customer": {"name": "上海 星辰 贸易有限责任公司", "phone": "13812345678"},
            "amount": 100 + i, "currency": "CNY", "region": REGIONS[i % 4],
            "lines": [{"line_no": 10, "sku": f"mat-{i % 7}", "qty": 1 + i % 3, "unit_price": 10}], **extra}
