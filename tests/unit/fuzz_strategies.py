"""Hypothesis strategies and settings shared by the fuzz tests (test_fuzz_*.py).

Settings: no example database. Hypothesis would otherwise write `.hypothesis/` into the
working tree (not ignored by git) and replay old failures first, so two CI runs of the same
commit would not test the same inputs for a reason nobody can see. Without it each run
explores fresh random inputs (more ground over time than `derandomize=True`, which tests the
same few hundred inputs forever), and a failure prints its minimal input and an
`@reproduce_failure` blob, which is what makes it reproducible. HACLUSTER_FUZZ_EXAMPLES
scales every fuzz test up for a longer run, e.g. HACLUSTER_FUZZ_EXAMPLES=5000.
"""

from __future__ import annotations

import os
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


def fuzz_settings(examples: int) -> settings:
    """`examples` by default; HACLUSTER_FUZZ_EXAMPLES overrides it for a longer run."""
    return settings(max_examples=int(os.environ.get("HACLUSTER_FUZZ_EXAMPLES", examples)),
                    deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def repeated_text(sizes: list[int]) -> st.SearchStrategy[str]:
    """Strings of exactly one of `sizes` characters: a few drawn characters repeated, since
    drawing a million characters one by one is far beyond what hypothesis can do."""
    return st.builds(lambda unit, n: (unit * (n // len(unit) + 1))[:n],
                     st.text(min_size=1, max_size=4), st.sampled_from(sizes))


# Just below, at and just above the limits wire.py, config.py and the servers enforce
# (63-character ids, 256/1024-character texts, 300-character addresses), and far above.
LONG_TEXT = repeated_text([62, 63, 64, 255, 256, 257, 300, 301, 1023, 1024, 1025, 5000, 70_000])

# Beyond 4300 digits Python refuses str(int): drawn by exponent, so that no strategy's repr
# holds one (hypothesis prints strategies).
HUGE_INTS = st.one_of(
    st.sampled_from([2**31, 2**32, 2**62, 2**62 + 1, 2**63, 2**64, 2**64 + 1, -(2**63) - 1, 10**100]),
    st.sampled_from([4299, 4300, 5000]).map(lambda digits: 10**digits),
    st.sampled_from([4300, 5000]).map(lambda digits: -(10**digits)))
INTS = st.one_of(st.integers(), st.integers(-1, 70_000), HUGE_INTS)
FLOATS = st.one_of(st.floats(), st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0,
                                                 1e308, 5e-324]))

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1), FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1), FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _bounded_ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = sorted({v for v in (lo, hi, 0, 1, hi - 1, 2**62, 2**62 + 1, 1000, 1001, 65535, 65536)
                    if lo <= v <= hi})
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


def _scalar(field: FieldDescriptor, strings: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return strings
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_DOUBLE:
        return FLOATS
    if t == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32)
    if t == FieldDescriptor.TYPE_ENUM:  # proto3 enums are open: any int32 is on the wire
        return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]),
                         _bounded_ints(-(2**31), 2**31 - 1))
    if t in _INT_RANGES:
        return _bounded_ints(*_INT_RANGES[t])
    raise NotImplementedError(f"no strategy for {field.full_name} (type {t})")


def is_repeated(field: FieldDescriptor) -> bool:
    # protobuf >= 5 has is_repeated; older versions only label
    rep = getattr(field, "is_repeated", None)
    return bool(rep) if rep is not None else field.label == FieldDescriptor.LABEL_REPEATED


# Repeated fields: usually a few entries; sometimes right at or past the count limits
# (64 checks, 512 records) or far past them, as copies of one drawn entry. Such an entry
# has short strings and no long lists inside, or one message could take gigabytes.
_MANY = st.sampled_from([64, 65, 512, 513, 3000])
SHORT_TEXT = st.text(max_size=12)


def messages(cls: type[Message], strings: st.SearchStrategy[str], depth: int = 3,
             many: bool = True) -> st.SearchStrategy[Message]:
    """Instances of the generated class `cls` with any value in any field (each field set or
    left unset, so optional fields are present or absent), nested messages down to `depth`.
    many: repeated fields may hold hundreds or thousands of (small) entries."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for f in cls.DESCRIPTOR.fields:
        if f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type.GetOptions().map_entry:
            key, value = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            if value.type == FieldDescriptor.TYPE_MESSAGE:
                continue  # no map of messages in our protos
            fields[f.name] = st.one_of(st.none(), st.dictionaries(_scalar(key, SHORT_TEXT),
                                                                  _scalar(value, strings), max_size=4))
            continue
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            if depth <= 0:
                continue
            sub = _field_class(cls, f)
            item = messages(sub, strings, depth - 1, many=False)
            small = messages(sub, SHORT_TEXT, depth - 1, many=False)
        else:
            item = _scalar(f, strings)
            small = _scalar(f, SHORT_TEXT)
        if is_repeated(f):
            item = st.lists(item, max_size=4)
            if many:
                item = st.one_of(item, st.tuples(small, _MANY).map(lambda t: [t[0]] * t[1]))
        fields[f.name] = st.one_of(st.none(), item)  # None: leave the field unset
    return st.fixed_dictionaries(fields).map(lambda values: _build(cls, values))


def _field_class(cls: type[Message], f: FieldDescriptor) -> type[Message]:
    value = getattr(cls(), f.name)
    return type(value.add()) if is_repeated(f) else type(value)


def _build(cls: type[Message], values: dict[str, Any]) -> Message:
    m = cls()
    for name, v in values.items():
        if v is None:
            continue
        target = getattr(m, name)
        if isinstance(v, dict):  # a map field
            target.update(v)
        elif isinstance(v, list):
            target.extend(v)
        elif isinstance(v, Message):
            target.CopyFrom(v)
        else:
            setattr(m, name, v)
    return m


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def with_unknown_field(payload: bytes, size: int, number: int = 1000) -> bytes:
    """`payload` plus a length-delimited field nobody knows, making the message `size` bytes
    long (or a little more, when `size` is too small): every message type can be oversized."""
    tag = varint(number << 3 | 2)
    body = max(0, size - len(payload) - len(tag) - len(varint(size)))
    return payload + tag + varint(body) + b"\x00" * body
