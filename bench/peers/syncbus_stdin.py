"""syncbus's side of the peer mapping path: JSON lines on stdin -> ORDERS05 XML bodies on stdout.

What `benthos -c mapping.yaml` (stdin -> Bloblang -> stdout) and the Camel
application's stdin mode do, done with syncbus's own mapping engine:
``load_mapping`` compiles the reference mapping (XML target only, no JSON
Schemas: bench/peers/reference.py) and ``CompiledMapping.map_bytes`` decodes,
applies ``when``, maps and encodes each line. Each body is written as the HTTP
sink would send it (XML declaration, newline, the document) and followed by a
newline. Records filtered out by ``when`` write nothing; a record that fails
to map is reported on stderr and makes the exit status 1.

    python bench/peers/syncbus_stdin.py [--mapping FILE] < corpus.jsonl > out.xml
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference import write_bench_mapping

from syncbus.mapping.loader import load_mapping


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mapping", help="mapping file (default: the reference mapping, XML only, no schemas)")
    args = parser.parse_args(argv)
    if args.mapping:
        mapping = load_mapping(args.mapping)
    else:
        with tempfile.TemporaryDirectory(prefix="syncbus-peers-") as tmp:
            mapping = load_mapping(write_bench_mapping(Path(tmp)))
    map_bytes = mapping.map_bytes
    out = sys.stdout.buffer
    write = out.write
    failed = 0
    for n, line in enumerate(sys.stdin.buffer, 1):
        if not line.strip():
            continue
        try:
            result = map_bytes(line, "application/json")
        except Exception as exc:  # a mapping error: report it, go on (like a dead letter)
            failed += 1
            print(f"line {n}: {exc}", file=sys.stderr)
            continue
        for output in result.outputs:
            write(output.body)
            write(b"\n")
    out.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
