"""The nearest key for a typo in the config file: `nodeid: ...` gets "did you mean `node_id`?".

pydantic reports an unknown key (extra="forbid") as `extra_forbidden` at its path, e.g.
('members', 0, 'votr'). did_you_mean() walks the schema (config_spec.ConfigSpec) along that
path, next to the document itself (a check's model depends on its `kind`), to find the keys
allowed at that level, and picks the nearest with difflib. A key that exists one level down
(`heartbeat_ms` at the top, which belongs under `timing`) is suggested with its path.

Pure: no I/O. A path the walk cannot follow gives no hint rather than a wrong one.
"""

from __future__ import annotations

import difflib
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from hacluster.config_spec import ConfigSpec

# Keys a model takes besides its fields (a `mode="before"` validator rewrites them)
_ALSO_ACCEPTED: dict[str, tuple[str, ...]] = {"ServiceSpec": ("port",)}
# difflib's ratio: `nodeid`/`node_id` 0.92, `hots`/`host` 0.75, `lease`/`lease_ms` 0.77; and
# `colour`/`cluster` 0.62, a guess that would only mislead
_CUTOFF = 0.7


def did_you_mean(doc: Any, loc: tuple[Any, ...]) -> str:
    """`did you mean `node_id`?` for the unknown key at the end of loc, or "" when nothing
    allowed there is near enough (or the path leaves the schema)."""
    if not loc or not isinstance(loc[-1], str):
        return ""
    key = loc[-1]
    model = _model_at(doc, loc[:-1])
    if model is None:
        return ""
    allowed = keys_of(model)
    near = _nearest(key, allowed)
    if near is None:
        near = _one_level_down(key, model)
    return f"did you mean `{near}`?" if near else ""


def keys_of(model: type[BaseModel]) -> list[str]:
    """The keys a mapping of this model may hold."""
    return [*model.model_fields, *_ALSO_ACCEPTED.get(model.__name__, ())]


def _nearest(key: str, allowed: list[str]) -> str | None:
    folded = key.strip().lower().replace("-", "_").replace(" ", "_")
    for name in allowed:  # `Node-ID`, `node id`: the same key written another way
        if name == folded or name.replace("_", "") == folded.replace("_", ""):
            return name
    longer = [name for name in allowed if name.startswith(folded + "_")]
    if len(longer) == 1:  # `ca` -> `ca_file`, `lease` -> `lease_ms`
        return longer[0]
    close = difflib.get_close_matches(folded, allowed, n=1, cutoff=_CUTOFF)
    return close[0] if close else None


def _one_level_down(key: str, model: type[BaseModel]) -> str | None:
    """`timing.heartbeat_ms` for `heartbeat_ms` written at the top level: a key that exists,
    as written, in exactly one block nested (not listed) in this model."""
    found = [f"{name}.{key}" for name, field in model.model_fields.items()
             if (sub := _model_of(field.annotation, None)) is not None
             and get_origin(_unwrap(field.annotation)) is not list and key in keys_of(sub)]
    return found[0] if len(found) == 1 else None


def _model_at(doc: Any, path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model whose mapping sits at `path` in doc (ints index lists), or None."""
    tp: Any = ConfigSpec
    value = doc
    for part in path:
        if isinstance(part, int):
            tp = _unwrap(tp)
            if get_origin(tp) is not list:
                return None
            tp = get_args(tp)[0]
            value = value[part] if isinstance(value, list) and -len(value) <= part < len(value) else None
        else:
            model = _model_of(tp, value)
            if model is None or part not in model.model_fields:
                return None
            tp = model.model_fields[part].annotation
            value = value.get(part) if isinstance(value, dict) else None
    return _model_of(tp, value)


def _unwrap(tp: Any) -> Any:
    """Annotated[X, ...] -> X; X | None -> X (repeatedly)."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif _is_union(tp) and len(args := [a for a in get_args(tp) if a is not type(None)]) == 1:
            tp = args[0]
        else:
            return tp


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _model_of(tp: Any, value: Any) -> type[BaseModel] | None:
    """The model tp stands for; of a union of models (the checks), the one whose `kind`
    literal is the document's `kind`."""
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    if not _is_union(tp):
        return None
    models = [a for a in get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)]
    kind = value.get("kind") if isinstance(value, dict) else None
    for m in models:
        tag = m.model_fields.get("kind")
        if tag is not None and get_origin(tag.annotation) is Literal and kind in get_args(tag.annotation):
            return m
    return None
