"""Hot path: decode → map → encode of the reference CRM order (3 lines) to ORDERS05 XML.

One core, one process, no I/O: the CPU cost per record that every route pays
before delivery. Printed beside ``xmltodict.unparse`` encoding the same
mapped object alone, the baseline the issue names.

Issue 11: the route as the peer comparison runs it (bench/peers: no JSON
Schemas, the XML target only) through ``map_bytes``, with the generated XML
writer (``mapping/xmlgen.py``) and with it switched off (the general path:
build the dict, then encode), on the same records.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import xmltodict

from syncbus.mapping.loader import load_mapping

ROOT = Path(__file__).resolve().parents[1]


def rate(fn: Callable[[], object], seconds: float = 2.0) -> float:
    """Records per CPU-second of this process, best of three (process_time: neighbours do not count)."""
    n = 1000
    while True:  # calibrate to ~0.2 s per batch
        t = time.process_time()
        for _ in range(n):
            fn()
        if time.process_time() - t > 0.2:
            break
        n *= 2
    best = 0.0
    for _ in range(3):
        t = time.process_time()
        count = 0
        while time.process_time() - t < seconds / 3:
            for _ in range(n):
                fn()
            count += n
        best = max(best, count / (time.process_time() - t))
    return best


def main() -> dict[str, float]:
    mapping = load_mapping(ROOT / "mappings" / "crm-order-to-erp.yaml")
    raw = (ROOT / "mappings" / "tests" / "data" / "crm_order.json").read_bytes()
    result = mapping.map_bytes(raw, "application/json")
    payload = result.outputs[0].payload
    assert xmltodict.parse(result.outputs[0].body) == xmltodict.parse(xmltodict.unparse({"ORDERS05": payload}))

    no_schema = load_mapping(ROOT / "mappings" / "crm-order-to-erp.yaml")
    no_schema.input_schema = None
    for t in no_schema.targets:
        t.schema = None
    target = no_schema.targets[0]
    build, decode, encode = no_schema.build, no_schema.decoder("application/json").decode, target.codec.encode

    peer = load_mapping(ROOT / "mappings" / "crm-order-to-erp.yaml")
    peer.input_schema = None
    peer.targets = peer.targets[:1]
    peer.targets[0].schema = None
    peer.targets[0].when = None
    writers = peer.writers[:1]
    peer.writers = writers
    assert writers and writers[0] is not None, "no generated XML writer for the reference mapping"
    fast_body = peer.map_bytes(raw, "application/json").outputs[0].body
    peer.writers = ()
    assert peer.map_bytes(raw, "application/json").outputs[0].body == fast_body

    def peer_map(use_writer: bool) -> Callable[[], object]:
        def run() -> object:
            peer.writers = writers if use_writer else ()
            return peer.map_bytes(raw, "application/json")
        return run

    results = {
        "peer route: map_bytes, no schemas, XML only, generated writer": rate(peer_map(True)),
        "peer route: map_bytes, no schemas, XML only, general path": rate(peer_map(False)),
        "generated XML writer only (map + encode, no dict)":
            rate(lambda: writers[0](obj)) if (obj := decode(raw)) else 0.0,
        "full route (decode, input schema, when, map, output schema, encode, 2 targets)":
            rate(lambda: mapping.map_bytes(raw, "application/json")),
        "decode → map → encode XML (no schemas)": rate(lambda: encode(build(d := decode(raw), d))),
        "map only": rate(lambda: build(obj, obj)) if (obj := decode(raw)) else 0.0,
        "encode XML only (syncbus)": rate(lambda: encode(payload)),
        "encode XML only (xmltodict.unparse)": rate(lambda: xmltodict.unparse({"ORDERS05": payload})),
        "decode JSON only": rate(lambda: decode(raw)),
    }
    width = max(map(len, results))
    print("mapping hot path, one core (records/s):")
    for name, value in results.items():
        print(f"  {name:<{width}}  {value:>10,.0f}")
    return results


if __name__ == "__main__":
    out = main()
    Path(ROOT / "var").mkdir(exist_ok=True)
    (ROOT / "var" / "bench-mapping.json").write_text(json.dumps(out, indent=2))
