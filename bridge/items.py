"""n8n items ⇄ Python records.

On the wire an n8n item is `{"json": {...}, "binary": {key: {data, mimeType, fileName, ...}},
"pairedItem": ...}` with binary data in base64. Processors see `Item` records with decoded bytes,
and return outputs (see `outputs_of`); every output item goes back with `pairedItem` pointing at
the input it came from, so one input may give zero, one or many outputs.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Required

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    InstanceOf,
    PlainValidator,
    WithJsonSchema,
    with_config,
)
from typing_extensions import TypedDict

from bridge.errors import ValidationFailed, json_pointer

# n8n's binary modes other than "default" keep the bytes outside the item; `data` holds a marker.
_EXTERNAL_BINARY_MARKERS = frozenset({"filesystem", "filesystem-v2", "s3"})

# orjson writes at most this many levels of nesting (its parser reads deeper JSON).
MAX_JSON_DEPTH = 254


def _refuse_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a number, not true or false")
    return value


# pydantic's lax mode reads JSON true/false as 1/0 where a number is expected; the API does not.
NOT_BOOL = BeforeValidator(_refuse_bool)
JsonInt = Annotated[int, NOT_BOOL]
# A constrained number in an `X | None` field: `Annotated[int, Field(ge=0), NOT_BOOL] | None`.
# (Constraints after NOT_BOOL would still be checked but written into the JSON Schema under
# pydantic's own names, `gt`/`ge`, which no client understands.)


@with_config(ConfigDict(extra="ignore"))
class N8nBinary(TypedDict, total=False):
    """n8n's IBinaryData: base64 `data` plus metadata. A TypedDict, not a model, as N8nItem."""

    data: Required[Annotated[str, Field(description="base64-encoded content")]]
    mimeType: str
    fileName: str | None
    fileExtension: str | None
    id: Annotated[str | None, Field(description="set by n8n when the bytes live outside the item")]


class PairedItemRef(BaseModel):
    model_config = ConfigDict(extra="ignore")

    item: JsonInt = Field(ge=0)
    input: Annotated[int, Field(ge=0), NOT_BOOL] | None = None


def _check_index(value: Any, where: str) -> None:
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected a number, not true or false")
    if not (type(value) is int or (type(value) is float and value.is_integer())) or value < 0:
        raise ValueError(f"{where}: expected an item index (an integer, 0 or more)")


def _check_ref(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise ValueError(f'{where}: expected {{"item": n, "input": n}}')
    _check_index(value.get("item"), f"{where}.item")
    if value.get("input") is not None:
        _check_index(value["input"], f"{where}.input")


def _check_paired_item(value: Any) -> None:
    """n8n's pairedItem is checked, then dropped: outputs are paired by position. Checked by
    hand: a model per reference would cost ~700 bytes for 11 bytes of body."""
    if value is None:
        return
    if isinstance(value, list):
        for index, ref in enumerate(value):
            _check_ref(ref, f"pairedItem[{index}]")
    elif isinstance(value, dict):
        _check_ref(value, "pairedItem")
    else:
        _check_index(value, "pairedItem")


_INDEX_SCHEMA = {"type": "integer", "minimum": 0}
_REF_SCHEMA = {
    "type": "object",
    "properties": {"item": _INDEX_SCHEMA, "input": {"anyOf": [_INDEX_SCHEMA, {"type": "null"}]}},
    "required": ["item"],
}
PairedItem = Annotated[
    Any,
    PlainValidator(_check_paired_item),
    WithJsonSchema(
        {
            "anyOf": [
                _REF_SCHEMA,
                {"type": "array", "items": _REF_SCHEMA},
                _INDEX_SCHEMA,
                {"type": "null"},
            ]
        }
    ),
]


# A JSON object as parsed (orjson: only str keys): checked to be one, not copied. Validating it
# as `dict[str, Any]` would rebuild every item's json, two thirds of validating 10,000 items.
JsonObject = InstanceOf[dict[str, Any]]


@with_config(ConfigDict(extra="ignore"))
class N8nItem(TypedDict, total=False):
    """One n8n item (INodeExecutionData). A TypedDict, not a model: requests carry thousands of
    items, and validating into plain dicts is ~30 % cheaper than building a model per item."""

    json: JsonObject
    binary: dict[str, N8nBinary] | None
    pairedItem: PairedItem


@dataclass(slots=True)
class Binary:
    data: bytes
    mime_type: str = "application/octet-stream"
    file_name: str | None = None
    file_extension: str | None = None


@dataclass(slots=True)
class Item:
    """What a processor sees and may return: JSON, decoded binaries, and its input's index."""

    json: dict[str, Any]
    binary: dict[str, Binary] = field(default_factory=dict)
    index: int = 0


@dataclass(slots=True, frozen=True)
class ItemError:
    index: int
    code: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "code": self.code, "message": self.message}


def from_n8n(items: list[N8nItem], max_binary_bytes: int, pointer: str = "/items") -> list[Item]:
    """Decode wire items; every bad binary is reported with its JSON pointer, then nothing runs."""
    records: list[Item] = []
    problems: list[dict[str, str]] = []
    for index, wire in enumerate(items):
        binaries: dict[str, Binary] = {}
        blobs = wire.get("binary")
        if blobs:
            for key, blob in blobs.items():
                where = pointer + json_pointer([index, "binary", key, "data"])
                try:
                    binaries[key] = _decode_binary(blob, max_binary_bytes)
                except ValueError as exc:
                    problems.append({"pointer": where, "message": str(exc)})
        records.append(Item(wire.get("json", {}), binaries, index))
    if problems:
        raise ValidationFailed(
            f"{len(problems)} binary field(s) could not be decoded",
            description=problems[0]["message"],
            details=problems,
        )
    return records


def _decode_binary(blob: N8nBinary, limit: int) -> Binary:
    text = blob["data"]
    if text in _EXTERNAL_BINARY_MARKERS or (blob.get("id") and not text):
        raise ValueError(
            "n8n keeps this binary outside the item (binary mode "
            f"{text or 'filesystem'!r}); send the bytes as base64, "
            "as the Python Bridge node does"
        )
    if len(text) // 4 * 3 > limit + 2:
        raise ValueError(f"binary data is larger than BRIDGE_MAX_BINARY_BYTES ({limit} bytes)")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("binary data is not valid base64") from None
    if len(data) > limit:
        raise ValueError(f"binary data is larger than BRIDGE_MAX_BINARY_BYTES ({limit} bytes)")
    return Binary(
        data,
        blob.get("mimeType") or "application/octet-stream",
        blob.get("fileName"),
        blob.get("fileExtension"),
    )


def outputs_of(result: Any) -> list[Item]:
    """Normalise what a processor returned for one input: a dict (the output's json), an Item, a
    list or tuple of those, or None (no output)."""
    if type(result) is dict:  # the common case, once per item: no further checks
        return [Item(result, {})]
    if result is None:
        return []
    if isinstance(result, dict | Item):
        return [_as_item(result)]
    if isinstance(result, list | tuple):
        return [_as_item(value) for value in result]
    raise TypeError(
        f"processor returned {type(result).__name__}; "
        "expected a dict, an Item, a list of them or None"
    )


def _as_item(value: Any) -> Item:
    if isinstance(value, Item):
        if not isinstance(value.json, dict):
            raise TypeError(f"Item.json must be a dict, not {type(value.json).__name__}")
        return value
    if isinstance(value, dict):
        return Item(value, {})
    raise TypeError(f"output item is {type(value).__name__}; expected a dict or an Item")


def to_n8n(item: Item, paired: int) -> dict[str, Any]:
    """One output item on the wire, paired with input `paired`."""
    wire: dict[str, Any] = {"json": item.json, "pairedItem": {"item": paired}}
    if item.binary:
        wire["binary"] = {key: _binary_to_wire(blob) for key, blob in item.binary.items()}
    return wire


def _binary_to_wire(blob: Binary) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "data": base64.b64encode(blob.data).decode("ascii"),
        "mimeType": blob.mime_type,
    }
    if blob.file_name is not None:
        wire["fileName"] = blob.file_name
    if blob.file_extension is not None:
        wire["fileExtension"] = blob.file_extension
    return wire


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset):
        return list(value)
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def dumps(value: Any) -> bytes:
    """JSON for the wire: orjson, keeping int and float apart, with a few common extra types.
    Keys that are not strings are written as strings, as JavaScript does — in a second pass only
    when there are any: orjson's option for them costs a third more on every answer."""
    try:
        return orjson.dumps(value, default=_default, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        options = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
        return orjson.dumps(value, default=_default, option=options)


def encode_outputs(
    outputs: list[tuple[int, Item]], errors: list[ItemError], shape: Any = None
) -> tuple[bytes, list[ItemError]]:
    """Output items (each with its input's index) as one JSON array, encoded once; an output
    that cannot be encoded becomes its input's error instead of failing the whole answer.
    `shape(item, paired)` makes the wire form (default: n8n items)."""
    make = shape or to_n8n
    wires = [make(item, paired) for paired, item in outputs]
    try:
        return dumps(wires), errors
    except TypeError:
        pairs = [(paired, wire) for (paired, _), wire in zip(outputs, wires, strict=True)]
        good, bad = split_serialisable(pairs)
        return dumps(good), sorted([*errors, *bad], key=lambda e: e.index)


def split_serialisable(pairs: Iterable[tuple[int, Any]]) -> tuple[list[Any], list[ItemError]]:
    """Keep the (input index, output) pairs whose output encodes as JSON; each that does not
    becomes an error of its input. Used only when encoding a whole answer failed, to name the
    culprits instead of failing every item."""
    good: list[Any] = []
    errors: list[ItemError] = []
    for paired, wire in pairs:
        try:
            dumps(wire)
        except TypeError as exc:
            errors.append(ItemError(paired, "processor_error", _unencodable(exc)))
        else:
            good.append(wire)
    return good, errors


def _unencodable(exc: TypeError) -> str:
    if "Recursion limit" in str(exc):
        return (
            f"output: nested deeper than {MAX_JSON_DEPTH} levels, more than JSON is written "
            "here; flatten it"
        )
    return f"output: {exc}"
