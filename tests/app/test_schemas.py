"""JSON Schema export and the backward-compatibility check of the event contract."""

from __future__ import annotations

import json
from pathlib import Path
from types import GenericAlias
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field, StrictInt, StringConstraints, create_model

from supplyflow.app.schemas import (
    ENVELOPE,
    SchemaExportError,
    check_directory,
    compatibility_problems,
    current_schemas,
    export_schemas,
    model_schema,
    render_schema,
)
from supplyflow.codecs import events
from supplyflow.codecs.events import EVENT_TYPES, Id, Text

SCHEMAS_DIR = Path(__file__).parents[2] / "schemas"
EXPORT_HINT = "run `supplyflow schemas export`"


# --- the committed contract ------------------------------------------------------------


def test_committed_schemas_are_compatible_with_the_models() -> None:
    problems = check_directory(SCHEMAS_DIR)

    assert problems == [], (
        f"The event models no longer match the committed JSON Schemas in {SCHEMAS_DIR}:\n  "
        + "\n  ".join(problems)
        + "\nEither keep the change backward compatible (add optional fields, widen types "
        "and limits), or, for a deliberate breaking change, bump SCHEMA_VERSION in "
        "supplyflow/codecs/events.py; in both cases re-export with `supplyflow schemas "
        "export` and commit the schemas/ folder."
    )


# --- current_schemas / export_schemas --------------------------------------------------


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_current_schemas_cover_every_event_type_and_the_envelope() -> None:
    schemas = current_schemas()

    assert sorted(schemas) == sorted([*EVENT_TYPES, ENVELOPE])
    for name, schema in schemas.items():
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"] == f"supplyflow/v1/{name}.json"
        assert name in schema["title"]
        assert schema["type"] == "object"
    assert schemas["po.created"]["properties"]["type"]["const"] == "po.created"
    assert "const" not in schemas[ENVELOPE]["properties"]["type"]


@pytest.mark.parametrize("name", sorted([*EVENT_TYPES, ENVELOPE]))
def test_each_schema_is_self_contained_and_compatible_with_itself(name: str) -> None:
    schema = current_schemas()[name]

    for ref in _refs(schema):
        assert ref.startswith("#/$defs/")
        assert ref.removeprefix("#/$defs/") in schema["$defs"]
    assert compatibility_problems(schema, schema) == []
    assert current_schemas()[name] == schema  # deterministic


def test_export_writes_one_sorted_file_per_schema_and_removes_stale_ones(
    tmp_path: Path,
) -> None:
    (tmp_path / "po.retired.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "README.md").write_text("not a schema\n", encoding="utf-8")

    written = export_schemas(tmp_path)

    expected = sorted(f"{name}.json" for name in [*EVENT_TYPES, ENVELOPE])
    assert [path.name for path in written] == expected
    assert sorted(path.name for path in tmp_path.glob("*.json")) == expected
    assert not (tmp_path / "po.retired.json").exists()
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == "not a schema\n"
    schemas = current_schemas()
    for path in written:
        text = path.read_text(encoding="utf-8")
        assert text.endswith("}\n")
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
        assert text == render_schema(schemas[path.stem])
    assert check_directory(tmp_path) == []


def test_export_is_deterministic(tmp_path: Path) -> None:
    first = {p.name: p.read_bytes() for p in export_schemas(tmp_path / "a")}
    second = {p.name: p.read_bytes() for p in export_schemas(tmp_path / "b")}

    assert first == second


def test_export_into_an_unwritable_place_raises_an_app_error(tmp_path: Path) -> None:
    blocker = tmp_path / "schemas"
    blocker.write_text("a file, not a directory", encoding="utf-8")

    with pytest.raises(SchemaExportError, match="cannot export the JSON Schemas to"):
        export_schemas(blocker)


# --- check_directory -------------------------------------------------------------------


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    export_schemas(tmp_path)
    return tmp_path


def _edit(path: Path, schema: dict[str, Any]) -> None:
    path.write_text(render_schema(schema), encoding="utf-8")


def test_check_reports_a_type_without_a_committed_file(exported: Path) -> None:
    (exported / "po.created.json").unlink()

    assert check_directory(exported) == [f"not exported: po.created ({EXPORT_HINT})"]


def test_check_reports_a_committed_type_that_no_longer_exists(exported: Path) -> None:
    retired = dict(current_schemas()["po.cancelled"], **{"$id": "supplyflow/v1/po.voided.json"})
    _edit(exported / "po.voided.json", retired)

    problems = check_directory(exported)

    assert len(problems) == 1
    assert problems[0].startswith("po.voided: event type removed:")


def test_check_reports_an_incompatible_committed_schema(exported: Path) -> None:
    committed = current_schemas()["order.cancelled"]
    committed["$defs"]["OrderCancelledData"]["properties"]["reason"] = {"type": "string"}
    _edit(exported / "order.cancelled.json", committed)

    assert check_directory(exported) == ["order.cancelled: data.reason: property removed"]


def test_check_reports_unreadable_files(exported: Path) -> None:
    (exported / "po.updated.json").write_text("{not json", encoding="utf-8")
    (exported / "po.created.json").write_text("[]", encoding="utf-8")

    problems = check_directory(exported)

    assert len(problems) == 2
    assert problems[0].startswith("po.created: ")
    assert "does not hold a JSON Schema object" in problems[0]
    assert problems[1].startswith("po.updated: cannot read ")


def test_check_asks_for_a_reexport_after_a_schema_version_bump(exported: Path) -> None:
    committed = current_schemas()["order.placed"]
    committed["$id"] = "supplyflow/v0/order.placed.json"
    del committed["properties"]["data"]  # breaking, but allowed by the version bump
    _edit(exported / "order.placed.json", committed)

    problems = check_directory(exported)

    assert len(problems) == 1
    assert problems[0].startswith("order.placed: ")
    assert "v0" in problems[0]
    assert problems[0].endswith(EXPORT_HINT)


def test_check_of_a_missing_directory_asks_to_export_everything(tmp_path: Path) -> None:
    problems = check_directory(tmp_path / "nowhere")

    assert problems == sorted(
        f"not exported: {name} ({EXPORT_HINT})" for name in [*EVENT_TYPES, ENVELOPE]
    )


# --- compatibility_problems on hand-made schemas ---------------------------------------


def _obj(required: tuple[str, ...] = (), **properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required)}


STR: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
NUM: dict[str, Any] = {"type": "number"}
NULL: dict[str, Any] = {"type": "null"}
TREE_DEFS: dict[str, Any] = {
    "Tree": _obj(("name",), name=STR, kids={"type": "array", "items": {"$ref": "#/$defs/Tree"}})
}

BREAKING: list[tuple[str, dict[str, Any], dict[str, Any], list[str]]] = [
    ("removed property", _obj(a=STR, b=INT), _obj(a=STR), ["b: property removed"]),
    ("new required", _obj(a=STR), _obj(("c",), a=STR, c=STR), ["c: new required property"]),
    ("required only", _obj(a=STR), _obj(("c",), a=STR), ["c: new required property"]),
    ("became required", _obj(a=STR), _obj(("a",), a=STR), ["a: became required"]),
    (
        "anyOf narrowed",
        _obj(qty={"anyOf": [NUM, STR]}),
        _obj(qty=STR),
        ["qty: type narrowed: number|string -> string"],
    ),
    (
        "nullable dropped",
        _obj(a={"anyOf": [STR, NULL], "default": None}),
        _obj(a=STR),
        ["a: type narrowed: null|string -> string"],
    ),
    (
        "oneOf narrowed",
        _obj(a={"oneOf": [STR, INT]}),
        _obj(a={"oneOf": [INT]}),
        ["a: type narrowed: integer|string -> integer"],
    ),
    (
        "type list",
        _obj(a={"type": ["string", "integer"]}),
        _obj(a=STR),
        ["a: type narrowed: integer|string -> string"],
    ),
    ("number to integer", NUM, INT, ["(root): type narrowed: number -> integer"]),
    ("any to string", {}, STR, ["(root): type narrowed: any -> string"]),
    ("false schema", _obj(a=STR), _obj(a=False), ["a: no value is accepted any more"]),
    (
        "enum shrinks",
        {"enum": ["accepted", "rejected"], "type": "string"},
        {"enum": ["accepted"], "type": "string"},
        ['(root): values narrowed: "accepted"|"rejected" -> "accepted"'],
    ),
    (
        "const added",
        _obj(type=STR),
        _obj(type={"type": "string", "const": "po.created"}),
        ['type: values narrowed: any string -> "po.created"'],
    ),
    (
        "boolean to const",
        {"type": "boolean"},
        {"const": True},
        ["(root): values narrowed: false|true -> true"],
    ),
    (
        "enum loses null",
        {"enum": ["a", None]},
        {"anyOf": [{"const": "a"}, {"const": "b"}]},
        ["(root): type narrowed: null|string -> string"],
    ),
    (
        "through $ref",
        {**_obj(d={"$ref": "#/$defs/D"}), "$defs": {"D": _obj(x={**STR, "maxLength": 10})}},
        {**_obj(d={"$ref": "#/$defs/E"}), "$defs": {"E": _obj(x={**STR, "maxLength": 5})}},
        ["d.x: maxLength tightened: <= 10 -> <= 5"],
    ),
    (
        "array items",
        _obj(tags={"type": "array", "items": {"anyOf": [STR, NULL]}}),
        _obj(tags={"type": "array", "items": STR}),
        ["tags[]: type narrowed: null|string -> string"],
    ),
    (
        "prefixItems",
        {"type": "array", "prefixItems": [STR, INT]},
        {"type": "array", "prefixItems": [STR, STR]},
        ["(root)[1]: type narrowed: integer -> string"],
    ),
    (
        "items closed",
        {"type": "array", "prefixItems": [STR]},
        {"type": "array", "prefixItems": [STR], "items": False},
        ["(root)[]: no value is accepted any more"],
    ),
    (
        "tuple longer",
        {"type": "array", "items": STR},
        {"type": "array", "prefixItems": [STR, {**STR, "minLength": 2}], "items": STR},
        ["(root)[1]: minLength added: >= 2"],
    ),
    ("maxLength added", STR, {**STR, "maxLength": 9}, ["(root): maxLength added: <= 9"]),
    (
        "minLength up",
        {**STR, "minLength": 1},
        {**STR, "minLength": 2},
        ["(root): minLength tightened: >= 1 -> >= 2"],
    ),
    (
        "maxItems down",
        {"type": "array", "maxItems": 10},
        {"type": "array", "maxItems": 3},
        ["(root): maxItems tightened: <= 10 -> <= 3"],
    ),
    (
        "minItems added",
        {"type": "array"},
        {"type": "array", "minItems": 1},
        ["(root): minItems added: >= 1"],
    ),
    (
        "maximum down",
        {**NUM, "maximum": 10},
        {**NUM, "maximum": 5.5},
        ["(root): maximum tightened: <= 10 -> <= 5.5"],
    ),
    (
        "maximum made exclusive",
        {**INT, "maximum": 10},
        {**INT, "exclusiveMaximum": 10},
        ["(root): exclusiveMaximum tightened: <= 10 -> < 10"],
    ),
    (
        "exclusiveMaximum added",
        NUM,
        {**NUM, "exclusiveMaximum": 10**12},
        ["(root): exclusiveMaximum added: < 1000000000000"],
    ),
    (
        "minimum up",
        {**INT, "minimum": 0},
        {**INT, "minimum": 1},
        ["(root): minimum tightened: >= 0 -> >= 1"],
    ),
    (
        "exclusiveMinimum up",
        {**NUM, "exclusiveMinimum": -5},
        {**NUM, "exclusiveMinimum": 0},
        ["(root): exclusiveMinimum tightened: > -5 -> > 0"],
    ),
    ("pattern added", STR, {**STR, "pattern": "^a"}, ["(root): pattern added: ^a"]),
    (
        "pattern changed",
        {**STR, "pattern": "^a"},
        {**STR, "pattern": "^b"},
        ["(root): pattern changed: ^a -> ^b"],
    ),
    ("format added", STR, {**STR, "format": "date-time"}, ["(root): format added: date-time"]),
    (
        "constraint in one alternative",
        {"anyOf": [{**NUM, "maximum": 5}, {**STR, "maxLength": 5}]},
        {"anyOf": [{**NUM, "maximum": 5}, {**STR, "maxLength": 4}]},
        ["(root) (string alternative): maxLength tightened: <= 5 -> <= 4"],
    ),
    (
        "extra properties forbidden",
        _obj(a=STR),
        {**_obj(a=STR), "additionalProperties": False},
        ["(root): additional properties no longer allowed"],
    ),
    (
        "recursive",
        {"$ref": "#/$defs/Tree", "$defs": TREE_DEFS},
        {
            "$ref": "#/$defs/Tree",
            "$defs": {"Tree": {**TREE_DEFS["Tree"], "maxProperties": 5}},
        },
        ["(root): maxProperties added: <= 5"],
    ),
    (
        "dangling $ref",
        _obj(a=STR),
        _obj(a={"$ref": "#/$defs/Missing"}),
        ["a: $ref '#/$defs/Missing' points nowhere"],
    ),
]

COMPATIBLE: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("new optional property", _obj(("a",), a=STR), _obj(("a",), a=STR, b=INT)),
    ("required dropped", _obj(("a",), a=STR), _obj(a=STR)),
    ("more types", _obj(a=STR), _obj(a={"anyOf": [STR, INT, NULL]})),
    ("integer to number", INT, NUM),
    ("enum grows", {"enum": ["a"]}, {"enum": ["a", "b"], "type": "string"}),
    ("const dropped", {"const": "a", "type": "string"}, STR),
    ("enum split into consts", {"enum": ["a", "b"]}, {"anyOf": [{"const": "a"}, {"const": "b"}]}),
    ("booleans", {"enum": [True, False]}, {"type": "boolean"}),
    ("looser lengths", {**STR, "maxLength": 5, "minLength": 2}, {**STR, "maxLength": 6}),
    ("looser items", {"type": "array", "maxItems": 5, "minItems": 2}, {"type": "array"}),
    ("maximum up", {**NUM, "maximum": 10}, {**NUM, "exclusiveMaximum": 10.5}),
    ("minimum down", {**INT, "exclusiveMinimum": 0}, {**INT, "minimum": 0}),
    ("exclusive to inclusive", {**NUM, "exclusiveMaximum": 3}, {**NUM, "maximum": 3}),
    ("pattern dropped", {**STR, "pattern": "^a"}, STR),
    ("unconstrained", {"title": "x"}, {"description": "y"}),
    ("false to anything", _obj(a=False), _obj(a=STR)),
    (
        "renamed $defs",
        {"$ref": "#/$defs/A", "$defs": {"A": STR}},
        {"$ref": "#/$defs/B", "$defs": {"B": STR}},
    ),
    ("anyOf reordered", {"anyOf": [NUM, STR]}, {"anyOf": [STR, NUM]}),
    (
        "recursive unchanged",
        {"$ref": "#/$defs/Tree", "$defs": TREE_DEFS},
        {"$ref": "#/$defs/Tree", "$defs": TREE_DEFS},
    ),
    ("extra properties allowed", {**_obj(a=STR), "additionalProperties": False}, _obj(a=STR)),
]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [pytest.param(old, new, expected, id=case) for case, old, new, expected in BREAKING],
)
def test_breaking_changes_are_reported(
    old: dict[str, Any], new: dict[str, Any], expected: list[str]
) -> None:
    assert compatibility_problems(old, new, name="t") == [f"t: {p}" for p in expected]


@pytest.mark.parametrize(
    ("old", "new"), [pytest.param(old, new, id=case) for case, old, new in COMPATIBLE]
)
def test_widening_changes_are_compatible(old: dict[str, Any], new: dict[str, Any]) -> None:
    assert compatibility_problems(old, new, name="t") == []


def test_problems_are_named_after_the_schema_id_by_default() -> None:
    old = {"$id": "supplyflow/v1/po.created.json", **_obj(a=STR)}
    new = {"$id": "supplyflow/v1/po.created.json", **_obj()}

    assert compatibility_problems(old, new) == ["po.created: a: property removed"]
    assert compatibility_problems(_obj(a=STR), _obj()) == ["a: property removed"]


# --- compatibility_problems on mutated event models ------------------------------------


def _variant(model: type[BaseModel], *, drop: tuple[str, ...] = (), **fields: Any) -> Any:
    """A copy of ``model`` without ``drop`` and with ``fields`` added or replaced."""
    kept: dict[str, Any] = {
        name: (info.annotation, info)
        for name, info in model.model_fields.items()
        if name not in drop
    }
    return create_model(model.__name__, __config__=model.model_config, **{**kept, **fields})


def _problems(name: str, old: type[BaseModel], new: type[BaseModel]) -> list[str]:
    return compatibility_problems(model_schema(name, old), model_schema(name, new))


def test_the_variant_helper_reproduces_the_real_schema() -> None:
    copy = _variant(events.PoCreated, data=(_variant(events.PoCreatedData), ...))

    assert model_schema("po.created", copy) == current_schemas()["po.created"]


def test_a_removed_field_is_reported() -> None:
    data = _variant(events.PoAcknowledgedData, drop=("reason",))
    changed = _variant(events.PoAcknowledged, data=(data, ...))

    assert _problems("po.acknowledged", events.PoAcknowledged, changed) == [
        "po.acknowledged: data.reason: property removed"
    ]


def test_a_narrowed_quantity_is_reported() -> None:
    line = _variant(events.Line, qty=(str, ...))
    lines = (GenericAlias(tuple, (line, ...)), Field(min_length=1, max_length=10_000))
    data = _variant(events.PoCreatedData, lines=lines)
    changed = _variant(events.PoCreated, data=(data, ...))

    assert _problems("po.created", events.PoCreated, changed) == [
        "po.created: data.lines[].qty: type narrowed: number|string -> string"
    ]


def test_a_str_or_int_field_narrowed_to_str_is_reported() -> None:
    data = _variant(events.OrderInvoicedData, invoice_id=(Id | StrictInt, ...))
    before = _variant(events.OrderInvoiced, data=(data, ...))

    assert _problems("order.invoiced", before, events.OrderInvoiced) == [
        "order.invoiced: data.invoice_id: type narrowed: integer|string -> string"
    ]


def test_a_new_required_field_is_reported() -> None:
    data = _variant(events.PoCancelledData, reason=(Text, ...))
    changed = _variant(events.PoCancelled, data=(data, ...))

    assert _problems("po.cancelled", events.PoCancelled, changed) == [
        "po.cancelled: data.reason: new required property"
    ]


def test_an_optional_field_made_required_is_reported() -> None:
    data = _variant(events.GoodsReceivedData, location=(events.Code | None, ...))
    changed = _variant(events.GoodsReceived, data=(data, ...))

    assert _problems("goods.received", events.GoodsReceived, changed) == [
        "goods.received: data.location: became required"
    ]


def test_a_tightened_max_length_is_reported() -> None:
    short = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=32)]
    data = _variant(events.OrderPlacedData, channel=(short, ...))
    changed = _variant(events.OrderPlaced, data=(data, ...))

    assert _problems("order.placed", events.OrderPlaced, changed) == [
        "order.placed: data.channel: maxLength tightened: <= 64 -> <= 32"
    ]


def test_a_widened_model_is_compatible() -> None:
    printable = rf"^[^{events.NOT_PRINTABLE}]+$"
    longer = Annotated[
        str, StringConstraints(strict=True, min_length=1, max_length=128, pattern=printable)
    ]
    data = _variant(
        events.OrderShippedData,
        carrier=(longer | None, None),
        note=(Text | None, None),
    )
    changed = _variant(events.OrderShipped, data=(data, ...))

    assert _problems("order.shipped", events.OrderShipped, changed) == []
    # and back again is a break: the new field disappears, the limit shrinks
    assert _problems("order.shipped", changed, events.OrderShipped) == [
        "order.shipped: data.carrier (string alternative): maxLength tightened: <= 128 -> <= 64",
        "order.shipped: data.note: property removed",
    ]
