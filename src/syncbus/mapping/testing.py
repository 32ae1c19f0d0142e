"""Mapping unit tests: ``mappings/tests/*.yaml`` run by ``syncbus test``.

A test file names a mapping and lists cases::

    mapping: crm-order-to-erp        # a mapping name in the config dir, or
    file: ../crm-order-to-erp.yaml   # a mapping file relative to this test file
    cases:
      - name: approved order becomes an IDoc
        input: {order_id: "SO-1", ...}        # or input_file: x.json / x.xml, or input_text: "<xml…>"
        expected: {ORDERS05: {...}}           # the mapped object, compared exactly
        expected_body: "<?xml …"              # optional: the encoded payload, compared exactly
        expected_body_file: data/x.xml         # …or kept in a golden file
        expected_targets: [erp-orders]        # optional: which sinks get it (fan-out)
      - name: missing order id
        input: {...}
        expected_error: "required value is missing"   # substring of the error
      - name: draft orders are skipped
        input: {...}
        expected_skipped: true
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ConfigError, ConfigErrors, SyncbusError
from ..formats import get_codec
from ..yamlfile import load_yaml_file, read_text, validation_errors
from .compiler import CompiledMapping
from .loader import load_mapping, mapping_files


class TestCase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    input: Any = None
    input_file: str | None = None
    input_text: str | None = None
    content_type: str | None = Field(None, description="For input_text: application/json or application/xml.")
    expected: Any = None
    expected_body: str | None = None
    expected_body_file: str | None = None
    expected_targets: list[str] | None = None
    expected_error: str | None = None
    expected_skipped: bool = False

    @model_validator(mode="after")
    def _shape(self) -> TestCase:
        given = self.model_fields_set
        inputs = [k for k in ("input", "input_file", "input_text") if k in given]
        if len(inputs) != 1:
            raise ValueError("give exactly one of input, input_file, input_text")
        outcomes = [k for k in ("expected", "expected_body", "expected_body_file", "expected_targets",
                                      "expected_error", "expected_skipped")
                    if k in given]
        if not outcomes:
            raise ValueError("give expected, expected_body, expected_targets, expected_error or expected_skipped")
        if "expected_error" in given and len(outcomes) > 1:
            raise ValueError("expected_error cannot be combined with other expectations")
        return self


class TestFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mapping: str | None = None
    file: str | None = None
    cases: list[TestCase] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_ref(self) -> TestFile:
        if (self.mapping is None) == (self.file is None):
            raise ValueError("give exactly one of 'mapping' (a name) or 'file' (a path)")
        return self


@dataclass
class CaseResult:
    file: str
    name: str
    ok: bool
    detail: str = ""


@dataclass
class TestReport:
    results: list[CaseResult] = field(default_factory=list)
    errors: list[ConfigError] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(r.ok for r in self.results)

    @property
    def failed(self) -> int:
        return sum(not r.ok for r in self.results)


def test_files(path: Path) -> list[Path]:
    """A test file, a folder of them, or a config dir (its mappings/tests/)."""
    if path.is_file():
        return [path]
    for folder in (path / "mappings" / "tests", path / "tests", path):
        if folder.is_dir():
            found = sorted(p for p in folder.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file())
            if found:
                return found
    return []


def check_test_file(path: Path, mapping_names: dict[str, Path] | None = None) -> list[ConfigError]:
    """Everything wrong with one test file that can be seen without running it, as file:line errors.

    Unknown keys, a mapping that does not exist, input and golden files that
    are missing. ``syncbus validate`` reports these instead of a test file
    being silently skipped; ``mapping_names`` (name -> file) checks ``mapping:``.
    """
    try:
        doc = load_yaml_file(path)
    except ConfigError as exc:
        return [exc]
    if not isinstance(doc.data, dict):
        return [doc.error((), "a mapping test file is a YAML mapping with 'mapping:' (or 'file:') and 'cases:'")]
    try:
        spec = TestFile.model_validate(doc.data)
    except ValidationError as exc:
        return validation_errors(doc, exc).errors
    errors: list[ConfigError] = []
    if spec.file is not None and not (path.parent / spec.file).is_file():
        errors.append(doc.error(("file",), f"mapping file {spec.file!r} not found next to the test file"))
    if spec.mapping is not None and mapping_names is not None and spec.mapping not in mapping_names:
        known = ", ".join(sorted(mapping_names)) or "none"
        errors.append(doc.error(("mapping",), f"no mapping named {spec.mapping!r} (known: {known})"))
    for i, case in enumerate(spec.cases):
        for key in ("input_file", "expected_body_file"):
            ref = getattr(case, key)
            if ref is not None and not (path.parent / ref).is_file():
                errors.append(doc.error(("cases", i, key), f"{key} {ref!r} not found (relative to the test file)"))
    return errors


def mapping_names(config_dir: Path) -> dict[str, Path]:
    """Mapping name -> file for the mappings of a config dir (read, not compiled)."""
    out: dict[str, Path] = {}
    for p in mapping_files(config_dir):
        try:
            data = load_yaml_file(p).data
        except ConfigError:
            continue
        if isinstance(data, dict) and isinstance(data.get("mapping"), str):
            out.setdefault(data["mapping"], p)
    return out


def run_tests(path: Path, config_dir: Path) -> TestReport:
    report = TestReport()
    by_name: dict[str, Path] | None = None
    compiled: dict[Path, CompiledMapping] = {}
    for tf in test_files(path):
        try:
            doc = load_yaml_file(tf)
            try:
                spec = TestFile.model_validate(doc.data)
            except ValidationError as exc:
                raise validation_errors(doc, exc) from None
            if spec.file is not None:
                mpath = (tf.parent / spec.file).resolve()
            else:
                if by_name is None:
                    by_name = _index(config_dir, tf)
                if spec.mapping not in by_name:
                    raise ConfigErrors([doc.error(("mapping",), f"no mapping named {spec.mapping!r} "
                                                               f"in {config_dir / 'mappings'}")])
                mpath = by_name[spec.mapping]
            if mpath not in compiled:
                compiled[mpath] = load_mapping(mpath)
        except ConfigErrors as exc:
            report.errors.extend(exc.errors)
            continue
        except ConfigError as exc:
            report.errors.append(exc)
            continue
        for case in spec.cases:
            report.results.append(_run_case(tf, case, compiled[mpath]))
    return report


def _index(config_dir: Path, test_file: Path) -> dict[str, Path]:
    out = mapping_names(config_dir)
    for name, p in mapping_names(test_file.parent.parent.parent).items():
        out.setdefault(name, p)
    return out


def _run_case(tf: Path, case: TestCase, mapping: CompiledMapping) -> CaseResult:
    name = case.name
    try:
        obj = _case_input(tf, case, mapping)
        result = mapping.map_object(obj)
    except SyncbusError as exc:
        if case.expected_error is not None:
            if case.expected_error in str(exc):
                return CaseResult(str(tf), name, True)
            return CaseResult(str(tf), name, False, f"expected error containing {case.expected_error!r}, "
                                                    f"got: {exc}")
        return CaseResult(str(tf), name, False, f"unexpected error: {exc}")
    if case.expected_error is not None:
        return CaseResult(str(tf), name, False, f"expected error {case.expected_error!r}, but it mapped")
    if case.expected_skipped:
        ok = result.skipped
        return CaseResult(str(tf), name, ok, "" if ok else "expected the record to be skipped by `when`")
    if result.skipped:
        return CaseResult(str(tf), name, False, "the record was skipped by `when`")
    problems: list[str] = []
    payload = result.outputs[0].payload
    if "expected" in case.model_fields_set and _normal(payload) != _normal(case.expected):
        problems.append("mapped object differs:\n" + _diff(case.expected, payload))
    if case.expected_body is not None:
        body = result.outputs[0].body.decode("utf-8", "replace")
        if body.strip() != case.expected_body.strip():
            problems.append(f"body differs:\n  expected: {case.expected_body.strip()}\n  actual:   {body.strip()}")
    if case.expected_body_file is not None:
        golden = tf.parent / case.expected_body_file
        want = golden.read_bytes() if golden.exists() else read_text(golden, "expected body file").encode()
        if result.outputs[0].body.rstrip(b"\n") != want.rstrip(b"\n"):
            problems.append(f"body differs from {case.expected_body_file}:\n  actual: "
                            f"{result.outputs[0].body.decode('utf-8', 'replace')[:2000]}")
    if case.expected_targets is not None:
        sinks = [o.target.sink for o in result.outputs]
        if sinks != case.expected_targets:
            problems.append(f"targets differ: expected {case.expected_targets}, got {sinks}")
    return CaseResult(str(tf), name, not problems, "\n".join(problems))


def _case_input(tf: Path, case: TestCase, mapping: CompiledMapping) -> Any:
    if "input" in case.model_fields_set:
        return case.input
    if case.input_file is not None:
        p = tf.parent / case.input_file
        data = p.read_bytes() if p.exists() else read_text(p, "input file").encode()
        fmt = "xml" if p.suffix.lower() == ".xml" else ("csv" if p.suffix.lower() == ".csv" else "json")
        return get_codec(mapping.source_format or fmt).decode(data)
    text = case.input_text or ""
    ct = case.content_type or ("application/xml" if text.lstrip().startswith("<") else "application/json")
    return mapping.decoder(ct).decode(text.encode("utf-8"))


def _normal(obj: Any) -> Any:
    """Compare as JSON would (YAML dates in expectations vs strings in output aside)."""
    return json.loads(json.dumps(obj, default=str, ensure_ascii=False))


def _diff(expected: Any, actual: Any, path: str = "") -> str:
    lines: list[str] = []
    _walk_diff(_normal(expected), _normal(actual), path, lines)
    return "\n".join(lines[:20]) + ("\n  …" if len(lines) > 20 else "")


def _walk_diff(e: Any, a: Any, path: str, out: list[str]) -> None:
    if isinstance(e, dict) and isinstance(a, dict):
        for k in e:
            if k not in a:
                out.append(f"  {path}/{k}: missing (expected {e[k]!r})")
            else:
                _walk_diff(e[k], a[k], f"{path}/{k}", out)
        out.extend(f"  {path}/{k}: unexpected {a[k]!r}" for k in a if k not in e)
        if not out and list(e) != list(a):
            out.append(f"  {path}: field order differs: expected {list(e)}, got {list(a)}")
    elif isinstance(e, list) and isinstance(a, list) and len(e) == len(a):
        for i, (x, y) in enumerate(zip(e, a, strict=True)):
            _walk_diff(x, y, f"{path}[{i}]", out)
    elif e != a:
        out.append(f"  {path or '/'}: expected {e!r}, got {a!r}")
