"""JSON Schema export of the event contract, and a backward-compatibility check.

:func:`export_schemas` writes one self-contained JSON Schema (draft 2020-12) per event
type, plus the bare envelope, to ``schemas/`` (``supplyflow schemas export``). These
committed files are the published contract: :func:`check_directory` lists every model
change that would reject a record they accept (removed property or event type, newly
required property, narrowed type or value set, tightened constraint); widening is fine.
A deliberate break needs a new ``SCHEMA_VERSION`` and a re-export. The comparison follows
``type``, ``anyOf``/``oneOf``, local ``$ref``, ``const``/``enum``, object and array
keywords, bounds, ``pattern`` and ``format``; ``allOf``, ``not``, ``if``... are ignored.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel

from supplyflow.app.exceptions import AppError
from supplyflow.codecs.events import EVENT_TYPES, SCHEMA_VERSION, Envelope

__all__ = [
    "ENVELOPE",
    "SchemaExportError",
    "check_directory",
    "compatibility_problems",
    "current_schemas",
    "export_schemas",
    "model_schema",
    "render_schema",
]

log = logging.getLogger(__name__)

_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
ENVELOPE: Final = "envelope"  #: name and file stem of the bare envelope's schema
_EXPORT_HINT: Final = "run `supplyflow schemas export`"
_ID: Final = re.compile(r"^supplyflow/v(?P<version>\d+)/(?P<name>[^/]+)\.json$")
_ALL_TYPES: Final = ("null", "boolean", "integer", "number", "string", "array", "object")
_FAMILY: Final = {"integer": "number"}  # for bounds and values an integer is a number
_FEW: Final[dict[str, list[object]]] = {"null": [None], "boolean": [False, True]}
_ANNOTATIONS: Final = {"$comment", "$defs", "$id", "$schema", "default", "description", "title"}
#: Per JSON type: (inclusive keyword, exclusive keyword or None, is an upper bound).
_BOUNDS: Final[dict[str, tuple[tuple[str, str | None, bool], ...]]] = {
    "string": (("maxLength", None, True), ("minLength", None, False)),
    "number": (("maximum", "exclusiveMaximum", True), ("minimum", "exclusiveMinimum", False)),
    "array": (("maxItems", None, True), ("minItems", None, False)),
    "object": (("maxProperties", None, True), ("minProperties", None, False)),
}

JsonSchema = dict[str, Any]


class SchemaExportError(AppError):
    """The JSON Schemas could not be written; the message names the directory."""


# --- export ----------------------------------------------------------------------------


def model_schema(name: str, model: type[BaseModel]) -> JsonSchema:
    """The published JSON Schema of ``model`` under ``name`` (its ``$defs`` inside)."""
    what = "event envelope" if name == ENVELOPE else f"{name!r} event"
    return {
        **model.model_json_schema(mode="validation"),
        "$schema": _DIALECT,
        "$id": f"supplyflow/v{SCHEMA_VERSION}/{name}.json",
        "title": f"supplyflow {what} (schema v{SCHEMA_VERSION})",
    }


def current_schemas() -> dict[str, JsonSchema]:
    """One JSON Schema per event type (keyed by type name), plus ``"envelope"``."""
    schemas = {name: model_schema(name, model) for name, model in sorted(EVENT_TYPES.items())}
    schemas[ENVELOPE] = model_schema(ENVELOPE, Envelope)
    return schemas


def render_schema(schema: Mapping[str, Any]) -> str:
    """The file content of ``schema``: sorted keys, indent 2, trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def export_schemas(directory: Path) -> list[Path]:
    """Write ``<directory>/<name>.json`` per schema, remove stale ``*.json`` files.

    Returns the written paths, sorted; raises :class:`SchemaExportError` on I/O errors.
    """
    schemas = current_schemas()
    written: list[Path] = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name in sorted(schemas):
            target = directory / f"{name}.json"
            target.write_text(render_schema(schemas[name]), encoding="utf-8", newline="\n")
            written.append(target)
        for stale in sorted(directory.glob("*.json")):
            if stale.stem not in schemas:
                stale.unlink()
                log.info("removed stale schema %s", stale)
    except OSError as exc:
        raise SchemaExportError(f"cannot export the JSON Schemas to {directory}: {exc}") from exc
    log.info("exported %d JSON Schemas to %s", len(written), directory)
    return written


def check_directory(directory: Path) -> list[str]:
    """Unreadable files, removed types, incompatibilities and ``"not exported: ..."`` types.

    Compares the committed ``<directory>/*.json`` with :func:`current_schemas`; a file of
    another ``SCHEMA_VERSION`` (a deliberate break) just asks for a re-export.
    """
    current = current_schemas()
    committed = sorted(directory.glob("*.json")) if directory.is_dir() else []
    problems: list[str] = []
    for path in committed:
        name = path.stem
        try:
            old: object = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.append(f"{name}: cannot read {path}: {exc}")
            continue
        if not isinstance(old, dict):
            problems.append(f"{name}: {path} does not hold a JSON Schema object")
        elif (version := _id_part(old, "version")) not in (None, str(SCHEMA_VERSION)):
            problems.append(
                f"{name}: exported v{version}, models v{SCHEMA_VERSION}: {_EXPORT_HINT}"
            )
        elif name not in current:
            problems.append(f"{name}: event type removed: {path} has no model any more")
        else:
            problems.extend(compatibility_problems(old, current[name], name=name))
    missing = current.keys() - {path.stem for path in committed}
    return [*problems, *(f"not exported: {name} ({_EXPORT_HINT})" for name in sorted(missing))]


# --- compatibility ---------------------------------------------------------------------


class _SchemaError(ValueError):
    """A schema the comparison cannot follow (a bad ``$ref``, a non-schema value)."""


@dataclass(frozen=True)
class _Ctx:
    old_root: Mapping[str, Any]
    new_root: Mapping[str, Any]
    refs: frozenset[tuple[object, object]] = frozenset()  # $ref pairs compared further up


def compatibility_problems(
    old: Mapping[str, Any], new: Mapping[str, Any], *, name: str | None = None
) -> list[str]:
    """Changes from ``old`` to ``new`` that make ``new`` reject what ``old`` accepted.

    Each problem reads ``"<name>: <path>: <what>"``, e.g. ``"po.created: data.lines[].qty:
    type narrowed: number|string -> string"``; ``name`` defaults to the ``$id`` stem. An
    empty list means ``new`` is backward compatible with ``old``.
    """
    label = name or _id_part(new, "name") or _id_part(old, "name")
    found = _compare(old, new, "", _Ctx(old, new))
    return [f"{label}: {problem}" if label else problem for problem in found]


def _id_part(schema: Mapping[str, Any], part: str) -> str | None:
    schema_id = schema.get("$id")
    match = _ID.match(schema_id) if isinstance(schema_id, str) else None
    return match[part] if match else None


def _at(path: str, what: str) -> str:
    return f"{path if path[:1] not in ('', ' ', '[') else '(root)' + path}: {what}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _normalise(node: object, root: Mapping[str, Any]) -> JsonSchema | None:
    """``node`` with its local ``$ref`` chain merged in; ``None`` for a false schema."""
    seen: set[str] = set()
    while isinstance(node, dict) and isinstance(ref := node.get("$ref"), str):
        if ref in seen or not ref.startswith("#"):
            raise _SchemaError(f"cannot follow $ref {ref!r}")
        seen.add(ref)
        target: object = root
        for raw in ref[1:].split("/")[1:]:
            part = raw.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                raise _SchemaError(f"$ref {ref!r} points nowhere")
            target = target[part]
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        if isinstance(target, dict):
            node = {**target, **siblings}  # the target's own $ref is followed next
        else:
            node = siblings if target is True else target
    if isinstance(node, bool):
        return {} if node else None
    if not isinstance(node, dict):
        raise _SchemaError(f"not a schema: {node!r}")
    return node


def _branches(node: JsonSchema, root: Mapping[str, Any]) -> list[JsonSchema]:
    """The alternatives of ``node``: ``anyOf``/``oneOf`` flattened, outer keywords merged."""
    alternatives = node.get("anyOf", node.get("oneOf"))
    if not isinstance(alternatives, list):
        return [node]
    outer = {key: value for key, value in node.items() if key not in ("anyOf", "oneOf")}
    flat: list[JsonSchema] = []
    for alternative in alternatives:
        if (resolved := _normalise(alternative, root)) is not None:
            flat.extend(_branches({**outer, **resolved}, root))
    return flat


def _json_type(value: object) -> str:
    if value is None or isinstance(value, bool):
        return "null" if value is None else "boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return "integer"
    kinds = ((float, "number"), (str, "string"), (list, "array"))
    return next((kind for cls, kind in kinds if isinstance(value, cls)), "object")


def _covers(types: frozenset[str] | None, json_type: str) -> bool:
    return types is None or json_type in types or (json_type == "integer" and "number" in types)


def _accepts(branch: JsonSchema) -> tuple[frozenset[str] | None, list[object] | None]:
    """The JSON types and the ``const``/``enum`` values a branch accepts (``None``: any)."""
    declared: object = branch.get("type")
    types: frozenset[str] | None = None
    if isinstance(declared, str | list):
        types = frozenset([declared] if isinstance(declared, str) else declared)
    if "const" not in branch and not isinstance(branch.get("enum"), list):
        return types, None
    listed = [branch["const"]] if "const" in branch else branch["enum"]
    values = [value for value in listed if _covers(types, _json_type(value))]
    return frozenset(map(_json_type, values)), values


def _union(branches: list[JsonSchema]) -> frozenset[str] | None:
    types = [_accepts(branch)[0] for branch in branches]
    return None if None in types else frozenset(t for found in types for t in found or ())


def _value_sets(branches: list[JsonSchema]) -> dict[str, set[str] | None]:
    """Per type family (integer is a number), the accepted values as JSON; ``None``: any."""
    sets: dict[str, set[str] | None] = {}
    for branch in branches:
        types, values = _accepts(branch)
        if values is None:  # any value of its types, but null and boolean have few values
            sets.update({_FAMILY.get(t, t): None for t in types or _ALL_TYPES if t not in _FEW})
            values = [v for t, few in _FEW.items() if _covers(types, t) for v in few]
        for value in values:
            known = sets.setdefault(_FAMILY.get(_json_type(value), _json_type(value)), set())
            if known is not None:
                known.add(json.dumps(value, sort_keys=True))
    return sets


def _value_problems(old: list[JsonSchema], new: list[JsonSchema], path: str) -> list[str]:
    problems: list[str] = []
    new_sets = _value_sets(new)
    for family, was in _value_sets(old).items():
        now = new_sets.get(family)  # None: any value, or a lost type (a narrowed type)
        if now is not None and (was is None or was - now):
            before = f"any {family}" if was is None else "|".join(sorted(was))
            problems.append(_at(path, f"values narrowed: {before} -> {'|'.join(sorted(now))}"))
    return problems


def _compare(old: object, new: object, path: str, ctx: _Ctx) -> list[str]:
    """Problems of accepting with ``new`` what ``old`` accepted, at ``path``."""
    refs = tuple(node.get("$ref") if isinstance(node, dict) else None for node in (old, new))
    if refs != (None, None):
        if refs in ctx.refs:
            return []  # a recursive schema: this pair is already being compared
        ctx = _Ctx(ctx.old_root, ctx.new_root, ctx.refs | {(refs[0], refs[1])})
    try:
        old_node, new_node = _normalise(old, ctx.old_root), _normalise(new, ctx.new_root)
        if old_node is None:
            return []  # nothing was accepted before
        if new_node is None:
            return [_at(path, "no value is accepted any more")]
        if not new_node.keys() - _ANNOTATIONS:
            return []  # anything is accepted now
        old_branches = _branches(old_node, ctx.old_root)
        new_branches = _branches(new_node, ctx.new_root)
    except _SchemaError as exc:
        return [_at(path, str(exc))]
    problems: list[str] = []
    old_types, new_types = _union(old_branches), _union(new_branches)
    if any(not _covers(new_types, json_type) for json_type in old_types or _ALL_TYPES):
        shown = ["any" if t is None else "|".join(sorted(t)) for t in (old_types, new_types)]
        problems.append(_at(path, f"type narrowed: {shown[0]} -> {shown[1]}"))
    problems.extend(_value_problems(old_branches, new_branches, path))
    for old_branch in old_branches:
        for json_type in sorted(_accepts(old_branch)[0] or _ALL_TYPES):
            note = f" ({json_type} alternative)" if len(old_branches) > 1 else ""
            results = [
                _compare_branch(old_branch, branch, json_type, path, ctx, note=note)
                for branch in new_branches
                if _covers(_accepts(branch)[0], json_type)
            ]
            best: list[str] = min(results, key=len) if results else []
            problems.extend(best)
    return list(dict.fromkeys(problems))


def _compare_branch(
    old: JsonSchema, new: JsonSchema, json_type: str, path: str, ctx: _Ctx, *, note: str
) -> list[str]:
    """Problems within one alternative, for values of ``json_type``."""
    family = _FAMILY.get(json_type, json_type)
    specs = _BOUNDS.get(family, ())
    found = [_at(path + note, problem) for spec in specs for problem in _bound(old, new, *spec)]
    for keyword in ("pattern", "format") if family == "string" else ():
        was, now = old.get(keyword), new.get(keyword)
        if now is not None and now != was:
            change = "added:" if was is None else f"changed: {was} ->"
            found.append(_at(path + note, f"{keyword} {change} {now}"))
    if family == "array":
        found.extend(_compare_items(old, new, path, ctx))
    elif family == "object":
        found.extend(_compare_properties(old, new, path, ctx))
    return found


def _bound(
    old: JsonSchema, new: JsonSchema, inclusive: str, exclusive: str | None, upper: bool
) -> list[str]:
    """A bound added or tightened, e.g. (maximum, exclusiveMaximum) or (minLength, None)."""

    def tightest(schema: JsonSchema) -> tuple[tuple[float, bool], str] | None:
        # (value, flag) sorts tightest first for an upper bound, last for a lower one
        bounds = [
            ((value, (keyword == exclusive) != upper), keyword)
            for keyword in (inclusive, exclusive)
            if keyword and isinstance(value := schema.get(keyword), int | float)
        ]
        return (min(bounds) if upper else max(bounds)) if bounds else None

    def show(bound: tuple[tuple[float, bool], str]) -> str:
        return f"{'<' if upper else '>'}{'' if bound[1] == exclusive else '='} {bound[0][0]}"

    was, now = tightest(old), tightest(new)
    if now is None or (was is not None and (now[0] >= was[0] if upper else now[0] <= was[0])):
        return []
    if was is None:
        return [f"{now[1]} added: {show(now)}"]
    return [f"{now[1]} tightened: {show(was)} -> {show(now)}"]


def _compare_items(old: JsonSchema, new: JsonSchema, path: str, ctx: _Ctx) -> list[str]:
    """Array elements: ``prefixItems`` position by position, then ``items``."""

    def split(schema: JsonSchema) -> tuple[list[object], object]:
        prefix = schema.get("prefixItems")
        return (list(prefix) if isinstance(prefix, list) else []), schema.get("items", True)

    (old_prefix, old_rest), (new_prefix, new_rest) = split(old), split(new)
    problems: list[str] = []
    for index in range(max(len(old_prefix), len(new_prefix))):
        was = old_prefix[index] if index < len(old_prefix) else old_rest
        now = new_prefix[index] if index < len(new_prefix) else new_rest
        problems.extend(_compare(was, now, f"{path}[{index}]", ctx))
    if new.get("uniqueItems") is True and old.get("uniqueItems") is not True:
        problems.append(_at(path, "uniqueItems added"))
    return [*problems, *_compare(old_rest, new_rest, f"{path}[]", ctx)]


def _compare_properties(old: JsonSchema, new: JsonSchema, path: str, ctx: _Ctx) -> list[str]:
    """Object members: removed and newly required properties, then each property."""
    old_props: dict[str, Any] = old.get("properties") or {}
    new_props: dict[str, Any] = new.get("properties") or {}
    problems: list[str] = []
    for key, schema in old_props.items():
        if key in new_props:
            problems.extend(_compare(schema, new_props[key], _join(path, key), ctx))
        else:
            problems.append(_at(_join(path, key), "property removed"))
    for key in new.get("required") or ():
        if key not in (old.get("required") or ()):
            what = "became required" if key in old_props else "new required property"
            problems.append(_at(_join(path, key), what))
    old_extra, new_extra = (schema.get("additionalProperties", True) for schema in (old, new))
    if new_extra is False and old_extra is not False:
        problems.append(_at(path, "additional properties no longer allowed"))
    elif isinstance(new_extra, dict):
        problems.extend(_compare(old_extra, new_extra, _join(path, "*"), ctx))
    return problems
