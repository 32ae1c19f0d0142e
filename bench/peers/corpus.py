"""A deterministic corpus of CRM orders for `make bench-peers`: one JSON object per line.

Every order is a valid input of the reference mapping (mappings/crm-order-to-erp.yaml)
and varies what its transforms have to get right, so that the equality check of
the three tools means something:

* Chinese company names with ideographic and doubled spaces, leading and trailing
  blanks, full-width Latin letters, digits and brackets (NFKC), zero-width spaces,
  the long form 有限责任公司 / 有限責任公司, and ``&``, ``<``, ``>`` and quotes (XML escaping);
* amounts, quantities and prices as JSON integers, JSON decimals and numeric text,
  with more places than the target keeps (half-up rounding, ties included:
  ``1.005 -> 1.01``, ``0.125 -> 0.13``), and numbers with trailing zeros;
* ISO 8601 dates with offsets, ``Z``, no offset, a space instead of ``T``,
  fractions of a second, and bare dates;
* optional fields left out (currency, region, phone, name, uom, price,
  created_at), regions outside the mapping's table, customer codes to pad or
  already longer than 10 characters, and about 2 % of orders not APPROVED (the
  route's ``when`` filter drops them: every tool must write nothing for them).

What the corpus leaves out on purpose (each tool would need a different guess):
negative numbers, exponent notation, JSON ``null`` values, phone numbers with
separators or country codes, and newlines inside values.

    python bench/peers/corpus.py --count 20000 --seed 11 --out var/peers/corpus.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

CITIES = ["上海", "北京", "深圳", "广州", "杭州", "成都", "苏州", "南京", "武汉", "重庆", "天津", "西安"]
WORDS = ["星辰", "华夏", "远航", "锦绣", "长城", "东方", "恒通", "瑞丰", "新纪元", "蓝海", "金桥", "万象"]
TRADES = ["贸易", "科技", "物流", "电子", "机械", "食品", "医药", "材料", "信息技术", "国际贸易"]
FORMS = ["有限责任公司", "有限公司", "股份有限公司", "有限責任公司", "集团有限公司"]
LATIN = ["ACME", "Sino-Euro", "Bright&Sons", "\"Quote\" Co", "A<B>C", "O'Neil", "ＡＢＣ", "ＸＹＺ１２３"]
SKUS = ["mat-{:03d}", "MAT-{:03d}", " mat-{:03d} ", "Sku{:05d}", "p-{:04d}-x"]
UOMS = ["EA", "KG", "M", "PC", "L", "BOX"]
REGIONS = ["east"] * 4 + ["south"] * 3 + ["north"] * 2 + ["west", "", "EAST"]
CURRENCIES = ["CNY"] * 6 + ["USD", "EUR", "JPY"]
STATUSES_OTHER = ["DRAFT", "PENDING", "REJECTED"]


def _name(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.08:
        core = f"{rng.choice(LATIN)} ({rng.choice(CITIES)}) {rng.choice(TRADES)}"
    elif roll < 0.14:
        core = f"{rng.choice(CITIES)}{rng.choice(WORDS)}（集团）{rng.choice(TRADES)}"  # full-width brackets
    else:
        sep = rng.choice(["", "", " ", "  ", "\u3000"])  # none, space, two spaces, ideographic space
        gap = rng.choice(["", " ", "\u3000"])
        core = f"{rng.choice(CITIES)}{sep}{rng.choice(WORDS)}{gap}{rng.choice(TRADES)}"
    name = core + rng.choice(FORMS)
    if rng.random() < 0.03:
        i = rng.randrange(1, len(name))
        name = name[:i] + "\u200b" + name[i:]  # zero-width space pasted from a web form
    pad = rng.random()
    if pad < 0.15:
        name = " " + name + " "
    elif pad < 0.2:
        name = "\u3000" + name + "\t"
    return name


def _decimal_text(rng: random.Random, whole_max: int, places: int) -> str:
    whole = rng.randrange(0, whole_max)
    if places == 0:
        return str(whole)
    frac = "".join(rng.choice("0123456789") for _ in range(places))
    return f"{whole}.{frac}"


TIES = ["1.005", "0.125", "2.675", "1234.565", "0.015", "99999.995", "10.0050", "0.5", "100.10", "7.0"]


def _number(rng: random.Random, whole_max: int, keep: int) -> Any:
    """A JSON number or numeric text; sometimes with more places than ``keep`` (rounding), sometimes a tie."""
    roll = rng.random()
    if roll < 0.05:
        text = rng.choice(TIES)
    elif roll < 0.25:
        text = str(rng.randrange(1, whole_max))
    elif roll < 0.80:
        text = _decimal_text(rng, whole_max, rng.randint(1, keep))
    else:
        text = _decimal_text(rng, whole_max, rng.randint(keep + 1, keep + 3))
    as_text = rng.random() < 0.2
    if as_text:
        return text
    return _JsonNumber(text)


class _JsonNumber(str):
    """Numeric text written into the JSON line as a bare number, exactly as generated."""


def _created_at(rng: random.Random) -> str:
    y, mo, d = rng.choice([2025, 2026, 2027]), rng.randint(1, 12), rng.randint(1, 28)
    h, mi, s = rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)
    kind = rng.randrange(6)
    if kind == 0:
        return f"{y:04d}-{mo:02d}-{d:02d}"
    if kind == 1:
        return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}Z"
    if kind == 2:
        return f"{y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}"
    if kind == 3:
        return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{rng.randrange(1000):03d}+08:00"
    if kind == 4:
        return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}-05:00"
    return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}+08:00"


def _cust_code(rng: random.Random, i: int) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        return f"c{i % 10000:04d}"
    if kind == 1:
        return f" c{i % 100000} "
    if kind == 2:
        return f"CUST-{i % 1000}"
    if kind == 3:
        return f"k{rng.randrange(100)}"
    return f"customer-{i:08d}"  # longer than 10: zfill leaves it alone


def _phone(rng: random.Random) -> str:
    if rng.random() < 0.8:
        return rng.choice(["13", "15", "18", "17"]) + "".join(rng.choice("0123456789") for _ in range(9))
    area = rng.choice(["021", "010", "0755", "020"])
    return area + "".join(rng.choice("0123456789") for _ in range(8))


def order(rng: random.Random, i: int) -> dict[str, Any]:
    o: dict[str, Any] = {"order_id": f"SO-{2026 + i % 2}-{i:07d}",
                         "status": "APPROVED" if rng.random() >= 0.02 else rng.choice(STATUSES_OTHER)}
    if rng.random() >= 0.01:
        o["created_at"] = _created_at(rng)
    o["cust_code"] = _cust_code(rng, i)
    customer: dict[str, Any] = {}
    if rng.random() >= 0.03:
        customer["name"] = _name(rng)
    if rng.random() >= 0.1:
        customer["phone"] = _phone(rng)
    o["customer"] = customer
    o["amount"] = _number(rng, 250_000 if rng.random() < 0.1 else 20_000, 2)
    if rng.random() >= 0.1:
        o["currency"] = rng.choice(CURRENCIES)
    if rng.random() >= 0.08:
        o["region"] = rng.choice(REGIONS)
    lines = []
    for n in range(1, rng.choice([1, 1, 2, 3, 3, 3, 4, 5, 8]) + 1):
        line: dict[str, Any] = {"line_no": n * 10, "sku": rng.choice(SKUS).format(rng.randrange(1, 1000))}
        line["qty"] = _number(rng, 100, 3)
        if rng.random() >= 0.15:
            line["uom"] = rng.choice(UOMS)
        if rng.random() >= 0.05:
            line["unit_price"] = _number(rng, 5000, 2)
        lines.append(line)
    o["lines"] = lines
    return o


def _encode(value: Any) -> str:
    """JSON with non-ASCII text as is (UTF-8) and _JsonNumber written bare."""
    if isinstance(value, _JsonNumber):
        return str.__str__(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {_encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_encode(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def lines(count: int, seed: int = 11) -> list[bytes]:
    """``count`` orders as JSON lines (UTF-8, no trailing newline), the same for the same seed."""
    rng = random.Random(seed)
    return [_encode(order(rng, i)).encode("utf-8") for i in range(count)]


def approved(line: bytes) -> bool:
    return bool(json.loads(line).get("status") == "APPROVED")


def write(path: Path, count: int, seed: int = 11) -> int:
    """Write the corpus to ``path`` (one order per line); returns the number of APPROVED orders."""
    data = lines(count, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(data) + b"\n")
    return sum(approved(x) for x in data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", default="-", help="file to write, - for stdout")
    args = parser.parse_args(argv)
    if args.out == "-":
        sys.stdout.buffer.write(b"\n".join(lines(args.count, args.seed)) + b"\n")
    else:
        n = write(Path(args.out), args.count, args.seed)
        print(f"{args.count} orders ({n} APPROVED) -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
