"""Lookup table files: YAML and CSV formats, and every way they can be wrong."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from syncbus.errors import Location, SyncbusError
from syncbus.mapping.lookups import LookupSpecError, LookupTables
from syncbus.mapping.transforms import TransformSpecError, compile_chain


def write(directory: Path, name: str, content: str | bytes) -> Path:
    path = directory / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def load_error(directory: Path, table: str) -> LookupSpecError:
    with pytest.raises(LookupSpecError) as info:
        LookupTables(directory).get(table)
    err = info.value
    assert isinstance(err, TransformSpecError) and isinstance(err, SyncbusError)
    return err


# --------------------------------------------------------------------------- YAML


def test_yaml_flat_mapping_keeps_scalars_as_written(tmp_path: Path) -> None:
    write(tmp_path, "t.yaml",
          "Sales: S01\n销售部: S02\nNO: Norway\n010: octal?\n1.50: x\ntrue: yes\n'': empty\nk: ''\n")
    assert LookupTables(tmp_path).get("t") == {
        "Sales": "S01",
        "销售部": "S02",
        "NO": "Norway",  # not False
        "010": "octal?",  # not 8
        "1.50": "x",  # not 1.5
        "true": "yes",
        "": "empty",
        "k": "",
    }


def test_yaml_list_of_key_value_entries(tmp_path: Path) -> None:
    write(tmp_path, "t.yml", "# departments\n- {key: Sales, value: S01}\n- key: 10\n  value: 0010\n")
    assert LookupTables(tmp_path).get("t") == {"Sales": "S01", "10": "0010"}


def test_yaml_empty_collections_are_empty_tables(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "{}\n")
    write(tmp_path, "b.yaml", "[]\n")
    tables = LookupTables(tmp_path)
    assert tables.get("a") == {} and tables.get("b") == {}


@pytest.mark.parametrize(
    ("content", "where", "message"),
    [
        ("a: [1\n", ":2:1", "invalid YAML: expected ',' or ']', but got '<stream end>'"),
        ("a: b\n c: d: e\n", ":2:3", "invalid YAML: mapping values are not allowed here"),
        ("a: 1\n---\nb: 2\n", ":2:1", "invalid YAML: expected a single document in the stream, but found"),
        ("a: 1\nb: 2\na: 3\n", ":3:1", "duplicate key 'a' (first at line 1)"),
        ("a: 1\n'a': 2\n", ":2:1", "duplicate key 'a' (first at line 1)"),
        ("a: [1, 2]\n", ":1:4", "the value of 'a' must be text, got a list"),
        ("a:\n  b: c\n", ":2:3", "the value of 'a' must be text, got an object"),
        ("[x]: 1\n", ":1:1", "a key must be text, got a list"),
        ("a:\n", ":1:3", "the value of 'a' is empty/null; quote it ('') if the empty text is meant"),
        ("a: ~\n", ":1:4", "the value of 'a' is empty/null"),
        ("a: null\n", ":1:4", "the value of 'a' is empty/null"),
        ("~: x\n", ":1:1", "a key is empty/null"),
        ("base: &b {x: 1}\n<<: *b\n", ":1:7", "the value of 'base' must be text, got an object"),
        ("<<: {x: 1}\n", ":1:1", "merge keys (<<) are not supported in lookup tables"),
        ("just text\n", ":1:1", "expected a mapping 'key: value' or a list of {key, value} entries"),
        ("- a\n", ":1:3", "entry 1: expected {key: ..., value: ...}"),
        ("- {key: a, value: 1}\n- {key: b}\n", ":2:3", "entry 2: expected exactly the fields key and value"),
        ("- {key: a, value: 1, note: x}\n", ":1:3", "entry 1: expected exactly the fields key and"),
        ("- {key: a, value: 1}\n- {key: a, value: 2}\n", ":2:9", "duplicate key 'a' (first at line 1)"),
        ("- {key: a, value: [1]}\n", ":1:19", "the value of 'a' must be text, got a list"),
        ("a: !!binary aGk=\nb: \"\\xZZ\"\n", ":2:7", "invalid YAML: expected escape sequence"),
    ],
)
def test_yaml_errors_point_into_the_file(tmp_path: Path, content: str, where: str, message: str) -> None:
    path = write(tmp_path, "t.yaml", content)
    err = load_error(tmp_path, "t")
    assert str(err).startswith(f"{path}{where}: {message}")
    assert err.location is not None and err.location.file == str(path)


def test_empty_yaml_file(tmp_path: Path) -> None:
    path = write(tmp_path, "t.yaml", "# nothing yet\n")
    assert str(load_error(tmp_path, "t")) == (
        f"{path}: empty lookup table file: expected a mapping 'key: value' or a list of {{key, value}}"
    )


def test_yaml_alias_bomb_is_refused_not_expanded(tmp_path: Path) -> None:
    write(tmp_path, "t.yaml", "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
          "c: [*b, *b, *b, *b, *b, *b, *b, *b]\n")
    assert "the value of 'a' must be text, got a list" in str(load_error(tmp_path, "t"))


# --------------------------------------------------------------------------- CSV


def test_csv(tmp_path: Path) -> None:
    write(tmp_path, "t.csv", 'key,value\nSales,S01\n"a,b","say ""hi"""\n\n销售部,S02\nempty,\n')
    expected = {"Sales": "S01", "a,b": 'say "hi"', "销售部": "S02", "empty": ""}
    assert LookupTables(tmp_path).get("t") == expected


def test_csv_from_excel_with_bom_crlf_other_columns_and_header_case(tmp_path: Path) -> None:
    content = "\ufeffComment, Value ,KEY\r\nsales dept,S01,Sales\r\n,S02,\r\n"
    write(tmp_path, "t.csv", content.encode("utf-8"))
    assert LookupTables(tmp_path).get("t") == {"Sales": "S01", "": "S02"}


def test_csv_header_only_is_an_empty_table(tmp_path: Path) -> None:
    write(tmp_path, "t.csv", "key,value\n")
    assert LookupTables(tmp_path).get("t") == {}


def test_csv_quoted_newline_keeps_line_numbers_right(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", 'key,value\n"multi\nline",x\na,1\na,2\n')
    assert str(load_error(tmp_path, "t")) == f"{path}:5:1: duplicate key 'a' (first at line 4)"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", ":1: empty lookup table file: expected a header row 'key,value'"),
        ("\n\n", ":1: empty lookup table file"),
        ("code,name\na,b\n", ":1:1: the header must name 'key' and 'value' once each, got 'code,name'"),
        ("key,key,value\n", ":1:1: the header must name 'key' and 'value' once each"),
        ("key,value\na,1\nb,2,3\n", ":3:1: expected 2 columns like the header, got 3"),
        ("key,value\na\n", ":2:1: expected 2 columns like the header, got 1"),
        ("key,value\na,1\nb,2\na,3\n", ":4:1: duplicate key 'a' (first at line 2)"),
        ('key,value\n"a,1\n', ":2:1: invalid CSV: unexpected end of data"),
        ('key,value\na,"' + "x" * 200_000 + '"\n', ":2:1: invalid CSV: field larger than field limit"),
    ],
)
def test_csv_errors(tmp_path: Path, content: str, message: str) -> None:
    path = write(tmp_path, "t.csv", content)
    err = str(load_error(tmp_path, "t"))
    assert err.startswith(f"{path}{message}".replace(f"{path}:1: ", f"{path}: ")), err


def test_not_utf8_names_the_line_and_suggests_a_fix(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", b"key,value\na,1\n" + "销售部,S01\n".encode("gbk"))
    assert str(load_error(tmp_path, "t")) == (
        f"{path}:3:1: not valid UTF-8 (byte 14); save the table as UTF-8 (Excel: 'CSV UTF-8')"
    )


# --------------------------------------------------------------------------- finding files


def test_missing_table_lists_what_was_looked_for(tmp_path: Path) -> None:
    err = load_error(tmp_path, "departments")
    assert str(err) == (
        f"lookup table 'departments' not found: looked for {tmp_path}/departments.yaml, .yml, .csv"
    )
    assert err.location is None


def test_missing_directory_is_mentioned(tmp_path: Path) -> None:
    missing = tmp_path / "lookups"
    assert str(load_error(missing, "d")).endswith(f"(directory {missing} does not exist)")


def test_relative_directory_in_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert str(load_error(Path("mappings/lookups"), "departments")).startswith(
        "lookup table 'departments' not found: looked for mappings/lookups/departments.yaml, .yml, .csv"
    )


def test_two_files_for_one_table_are_ambiguous(tmp_path: Path) -> None:
    write(tmp_path, "t.yaml", "a: 1\n")
    write(tmp_path, "t.csv", "key,value\na,2\n")
    assert str(load_error(tmp_path, "t")) == f"lookup table 't' is ambiguous: t.yaml and t.csv in {tmp_path}"


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", ".hidden", "", "a b", "-x"])
def test_table_names_cannot_be_paths(tmp_path: Path, name: str) -> None:
    assert str(load_error(tmp_path, name)).startswith(f"invalid lookup table name {name!r}")


def test_symlink_loop_is_a_clean_error(tmp_path: Path) -> None:
    os.symlink(tmp_path / "b.yaml", tmp_path / "a.yaml")
    os.symlink(tmp_path / "a.yaml", tmp_path / "b.yaml")
    os.symlink(tmp_path / "self.csv", tmp_path / "self.csv")
    loop = "cannot read lookup table: symbolic link loop"
    assert str(load_error(tmp_path, "a")) == f"{tmp_path}/a.yaml: {loop}"
    assert str(load_error(tmp_path, "self")) == f"{tmp_path}/self.csv: {loop}"


def test_symlinks_to_real_files_work_and_dangling_ones_are_named(tmp_path: Path) -> None:
    write(tmp_path, "real.yaml", "a: 1\n")
    os.symlink(tmp_path / "real.yaml", tmp_path / "alias.yaml")
    os.symlink(tmp_path / "gone.yaml", tmp_path / "dangling.yaml")
    assert LookupTables(tmp_path).get("alias") == {"a": "1"}
    assert str(load_error(tmp_path, "dangling")).endswith("cannot read lookup table: dangling symbolic link")


def test_directories_and_fifos_are_not_read(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    os.mkfifo(tmp_path / "pipe.csv")  # reading it would block forever
    assert str(load_error(tmp_path, "dir")).endswith("cannot read lookup table: it is a directory")
    assert str(load_error(tmp_path, "pipe")).endswith("cannot read lookup table: it is not a regular file")


def test_unreadable_file(tmp_path: Path) -> None:
    """Root reads any file, so as root the check runs in a child without the capabilities that allow it."""
    path = write(tmp_path, "t.yaml", "a: 1\n")
    path.chmod(0)
    try:
        code = ("import sys; from pathlib import Path; from syncbus.mapping.lookups import LookupTables\n"
                "try:\n    LookupTables(Path(sys.argv[1])).get('t')\nexcept Exception as e:\n    print(e)")
        cmd = [sys.executable, "-c", code, str(tmp_path)]
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            assert setpriv, "setpriv (util-linux) is needed to test permissions as root"
            cmd = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == f"{path}: cannot read lookup table: Permission denied", out.stdout + out.stderr
    finally:
        path.chmod(0o644)


# --------------------------------------------------------------------------- caching and listing


def test_each_table_is_read_once_per_instance(tmp_path: Path) -> None:
    path = write(tmp_path, "t.yaml", "a: 1\n")
    tables = LookupTables(tmp_path)
    first = tables.get("t")
    path.write_text("a: 2\n", encoding="utf-8")
    assert tables.get("t") is first and first == {"a": "1"}
    assert tables.sources == {"t": path}
    assert LookupTables(tmp_path).get("t") == {"a": "2"}  # a reload builds a new instance


def test_a_failed_load_is_not_cached(tmp_path: Path) -> None:
    tables = LookupTables(tmp_path)
    with pytest.raises(LookupSpecError):
        tables.get("t")
    write(tmp_path, "t.csv", "key,value\na,1\n")
    assert tables.get("t") == {"a": "1"}


def test_names(tmp_path: Path) -> None:
    for name in ("b.yaml", "a.csv", "c.yml", "notes.txt", ".hidden.yaml"):
        write(tmp_path, name, "")
    assert LookupTables(tmp_path).names() == ["a", "b", "c"]
    assert LookupTables(tmp_path / "missing").names() == []


def test_location_is_kept_for_the_compiler(tmp_path: Path) -> None:
    path = write(tmp_path, "t.yaml", "a: 1\na: 2\n")
    with pytest.raises(LookupSpecError) as info:
        compile_chain("lookup(t)", lookups=LookupTables(tmp_path))
    assert info.value.location == Location(str(path), 2, 1)
    assert info.value.message == f"{path}:2:1: duplicate key 'a' (first at line 1)"
