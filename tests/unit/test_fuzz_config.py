"""The config loader against random documents and files (hypothesis).

Whatever an operator (or a broken template) puts in the file, the loader answers with a
Config or with a ConfigError whose every line says where the problem is (STYLE.md 6):
`path: message`, `(top level): ...`, `(file): ...` or `line L, column C: ...`. Never
another exception, which the CLI would print as a traceback instead of the list.
"""

from __future__ import annotations

import copy
import re
import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, reject
from hypothesis import strategies as st

from hacluster.config import Config, ConfigError, load_config, parse_config
from tests.unit.fuzz_strategies import FLOATS, INTS, LONG_TEXT, fuzz_settings
from tests.unit.test_config import SERVICE, doc

# A name as config keys are spelled, so that error paths stay recognisable.
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
PATH = re.compile(rf"^(\(top level\)|\(file\)|line \d+, column \d+|{_IDENT}(\[\d+\]|\.{_IDENT})*): .*\S")

# A config using every section, valid as it stands.
FULL = doc(checks=[{"name": "web", "kind": "http", "port": 8080, "body_match": "^ok"},
                   {"name": "pacs", "kind": "dicom", "called_ae": "PACS"},
                   {"name": "run", "kind": "exec", "command": ["/bin/true"]}],
           services=[SERVICE, {**SERVICE, "name": "dicom", "port": 104, "check": "pacs",
                               "fallback": {"address": "10.0.0.60"}, "algorithm": "maglev"}],
           timing={"heartbeat_ms": 50, "lease_ms": 200}, gossip={"probe_interval_ms": 500},
           health={"settle_ms": 100}, dataplane="proxy", log_level="debug")

KEYS = st.one_of(st.sampled_from(sorted({*FULL, "members", "id", "address", "port", "ports",
                                         "kind", "name", "backends", "node", "weight", "vip",
                                         "prefix", "interface", "raft_port", "grpc_port"})),
                 st.builds(str.__add__, st.sampled_from(string.ascii_letters + "_"),
                           st.text(string.ascii_letters + string.digits + "_", max_size=12)))
SCALARS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, st.text(max_size=30), LONG_TEXT,
                    st.binary(max_size=16), st.sampled_from(["n1", "10.0.0.100", "eth0", "web", "http",
                                                             "", " ", "\x00", "\n", "é", "\U0001f600"]))
# Any key YAML (or a caller) could give a mapping: not only strings.
ANY_KEYS = st.one_of(st.text(max_size=20), st.integers(), st.none(), st.booleans(), st.floats(), KEYS)


def documents(keys: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5)
                        | st.dictionaries(keys, inner, max_size=6), max_leaves=25)


def assert_clean(e: ConfigError, strict: bool) -> None:
    """Every line a non-empty str naming where; with `strict`, a path as config keys are
    spelled (the document's own keys were identifiers)."""
    assert e.errors and isinstance(e.errors, list)
    for line in e.errors:
        assert isinstance(line, str) and line.strip(), e.errors
        assert "Traceback" not in line, line
        if strict:
            assert PATH.match(line), f"no path in {line[:300]!r}"
        else:
            head, sep, rest = line.partition(": ")
            assert head and sep and rest.strip(), f"no 'where: what' in {line[:300]!r}"
    assert str(e).startswith(f"{e.source}: {len(e.errors)} error(s)")


def outcome(d: Any, strict: bool) -> Config | None:
    try:
        return parse_config(d)
    except ConfigError as e:
        assert_clean(e, strict)
        return None


def test_the_full_document_is_valid() -> None:
    assert isinstance(parse_config(FULL), Config)


@fuzz_settings(200)
@given(documents(ANY_KEYS))
def test_any_document_is_a_config_or_a_clean_error(d: Any) -> None:
    outcome(d, strict=False)


@fuzz_settings(100)
@given(st.dictionaries(KEYS, documents(KEYS), max_size=6))
def test_a_mapping_of_garbage_has_every_error_at_a_path(d: dict[str, Any]) -> None:
    outcome(d, strict=True)


# Values a field of the wrong kind, or out of its range, is likely to meet.
GARBAGE = st.one_of(SCALARS, documents(KEYS),
                    st.sampled_from([0, -1, 65536, 2**63, 1.5, True, [], {}, [[]], {"kind": None}, "x" * 64]))


def _places(node: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _places(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _places(v, (*at, i))
    return out


def _text(value: Any) -> str:
    try:
        return str(value)
    except ValueError:  # an int of more than 4300 digits: as YAML would write it
        return "9" * 5000


def _get(node: Any, at: tuple[Any, ...]) -> Any:
    for part in at:
        node = node[part]
    return node


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """FULL with one to five changes: keys dropped, values replaced by garbage or by values
    of another type, unknown keys added, list entries duplicated or removed."""
    d = copy.deepcopy(FULL)
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.sampled_from(_places(d)))
        node = _get(d, at)
        op = draw(st.sampled_from(["drop", "replace", "retype", "add", "duplicate", "empty"]))
        if op == "add" and isinstance(node, dict):
            node[draw(KEYS)] = draw(GARBAGE)
        elif op == "duplicate" and isinstance(node, list) and node:
            node.append(copy.deepcopy(draw(st.sampled_from(node))))
        elif op == "empty" and isinstance(node, dict | list):
            node.clear()
        elif at:
            parent, key = _get(d, at[:-1]), at[-1]
            if op == "drop":
                del parent[key]
            elif op == "retype":
                kind = draw(st.sampled_from(["list", "dict", "str", "none"]))
                parent[key] = {"list": [node], "dict": {"value": node}, "str": _text(node)}.get(kind)
            else:
                parent[key] = draw(GARBAGE)
    return d


@fuzz_settings(200)
@given(mutated())
def test_a_damaged_valid_document_has_every_error_at_a_path(d: dict[str, Any]) -> None:
    outcome(d, strict=True)


def _deep(depth: int, leaf: Any) -> Any:
    for i in range(depth):
        leaf = [leaf] if i % 2 else {"a": leaf}
    return leaf


@pytest.mark.parametrize("depth", [10, 100, 400])
def test_deeply_nested_values_are_clean_errors(depth: int) -> None:
    for key in ("cluster", "members", "checks", "services", "timing"):
        outcome(doc(**{key: _deep(depth, 1)}), strict=True)


@pytest.mark.parametrize("pattern", ["a{4294967296}", "(" * 1000 + ")" * 1000])
def test_a_body_match_python_cannot_compile_is_a_clean_error(pattern: str) -> None:
    outcome(doc(checks=[{"name": "web", "kind": "http", "body_match": pattern}]), strict=True)


# Files: YAML text made from documents, then damaged bytewise, or bytes of any kind.
_YAML_VALUES = st.sampled_from([
    "!!int ''", "!!int '0x'", "!!int '_'", "!!float '.'", "!!bool maybe", "!!timestamp x",
    "2001-13-14", "2001-02-30 25:61:61", "!!binary '%%%'", "!!set {a}", "!!omap [1]", "!!null x",
    "!!python/name:os.system", "*nope", "&a [*a]", "{<<: 1}", "'unterminated", '"\\ud800"', '"a\\0b"',
    "1" * 5000, "1" + ":59" * 2000, "1e99999", ".nan", "0o777777777777777777777777",
    "\t", "|\n  block", "? [a]\n: 1",
])


@st.composite
def yaml_files(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["dumped", "damaged", "value", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=400))
    if kind == "value":
        base = yaml.safe_dump(copy.deepcopy(FULL), sort_keys=False)
        key = draw(st.sampled_from(["cluster", "node_id", "data_dir", "log_level"]))
        line = f"{key}: {draw(_YAML_VALUES)}"
        text = re.sub(rf"^{key}: .*$", lambda _: line, base, flags=re.M)
        return text.encode()
    try:
        data = yaml.safe_dump(draw(st.one_of(mutated(), documents(KEYS))), allow_unicode=True).encode()
    except ValueError:  # PyYAML cannot write an int of more than 4300 digits either
        reject()
    if kind == "dumped":
        return data
    raw = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not raw:
            break
        i = draw(st.integers(0, len(raw) - 1))
        raw[i:i + 1] = draw(st.binary(min_size=0, max_size=3))
    return bytes(raw)


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "hacluster.yaml"


@fuzz_settings(150)
@given(data=yaml_files())
def test_any_file_is_a_config_or_a_clean_error(config_path: Path, data: bytes) -> None:
    config_path.write_bytes(data)
    try:
        load_config(config_path)
    except ConfigError as e:
        assert_clean(e, strict=False)
        assert e.source == str(config_path)


@pytest.mark.parametrize("depth", [50, 400, 1000])
@pytest.mark.parametrize("opener, closer", [("[", "]"), ("{a: ", "}")])
def test_a_deeply_nested_file_is_a_clean_error(tmp_path: Path, depth: int, opener: str, closer: str) -> None:
    # Deep enough for PyYAML's recursive composer to hit Python's recursion limit.
    path = tmp_path / "hacluster.yaml"
    path.write_text(f"cluster: {opener * depth}{closer * depth}\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert_clean(e.value, strict=True)
