"""n8n item conversion: round trips (property tests), binaries, output shapes."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from bridge.errors import ValidationFailed
from bridge.items import Binary, Item, N8nItem, dumps, from_n8n, outputs_of, to_n8n

# What JavaScript (n8n) can send: numbers within 2**53, finite floats, any text.
WIRE_ITEM = TypeAdapter(N8nItem)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=25,
)
json_objects = st.dictionaries(st.text(), json_values, max_size=8)
binaries = st.dictionaries(
    st.text(min_size=1, max_size=10),
    st.fixed_dictionaries(
        {
            "data": st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()),
            "mimeType": st.sampled_from(["text/plain", "image/png", "application/octet-stream"]),
        },
        optional={"fileName": st.text(min_size=1, max_size=20)},
    ),
    max_size=3,
)
wire_items = st.fixed_dictionaries({"json": json_objects}, optional={"binary": binaries})


def same_json(a: Any, b: Any) -> bool:
    """Equal, and ints stay ints and floats stay floats, all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@given(st.lists(wire_items, max_size=5))
def test_items_round_trip_through_the_wire(raw: list[dict[str, Any]]) -> None:
    """JSON bytes → items → Python records → items → JSON bytes keeps everything, typed."""
    parsed = [WIRE_ITEM.validate_python(item) for item in orjson.loads(orjson.dumps(raw))]
    records = from_n8n(parsed, max_binary_bytes=1 << 20)
    back = orjson.loads(dumps([to_n8n(record, record.index) for record in records]))
    for index, (before, after) in enumerate(zip(raw, back, strict=True)):
        assert same_json(before["json"], after["json"])
        assert after["pairedItem"] == {"item": index}
        assert (after.get("binary") or {}).keys() == (before.get("binary") or {}).keys()
        for key, blob in (before.get("binary") or {}).items():
            assert after["binary"][key]["data"] == blob["data"]
            assert after["binary"][key]["mimeType"] == blob["mimeType"]
            assert after["binary"][key].get("fileName") == blob.get("fileName")


@given(json_objects)
def test_int_and_float_are_kept_apart(value: dict[str, Any]) -> None:
    parsed = WIRE_ITEM.validate_json(orjson.dumps({"json": value}))
    assert same_json(parsed["json"], value)


def test_missing_json_and_null_fields() -> None:
    parsed = WIRE_ITEM.validate_python({"pairedItem": 3})
    record = from_n8n([parsed], 10)[0]
    assert record.json == {}
    assert record.binary == {}
    item = WIRE_ITEM.validate_python({"json": {"a": None}})
    assert from_n8n([item], 10)[0].json == {"a": None}


def test_binary_is_decoded_for_processors() -> None:
    wire = WIRE_ITEM.validate_python(
        {
            "json": {},
            "binary": {
                "f": {
                    "data": base64.b64encode(b"abc").decode(),
                    "mimeType": "text/csv",
                    "fileName": "a.csv",
                    "fileExtension": "csv",
                }
            },
        }
    )
    assert from_n8n([wire], 10)[0].binary == {"f": Binary(b"abc", "text/csv", "a.csv", "csv")}


def test_binary_kept_outside_the_item_by_n8n_is_explained() -> None:
    wire = WIRE_ITEM.validate_python(
        {
            "json": {},
            "binary": {
                "f": {"data": "filesystem-v2", "id": "filesystem-v2:abc", "mimeType": "x/y"}
            },
        }
    )
    with pytest.raises(ValidationFailed) as caught:
        from_n8n([wire], 1000)
    assert "outside the item" in caught.value.details[0]["message"]


def test_binary_size_is_checked_before_decoding() -> None:
    big = WIRE_ITEM.validate_python({"json": {}, "binary": {"f": {"data": "A" * 4000}}})
    with pytest.raises(ValidationFailed) as caught:
        from_n8n([big], 100)
    assert "BRIDGE_MAX_BINARY_BYTES (100 bytes)" in caught.value.details[0]["message"]


@pytest.mark.parametrize(
    ("result", "count"),
    [(None, 0), ({"a": 1}, 1), (Item({"a": 1}), 1), ([{"a": 1}, Item({"b": 2})], 2), ((), 0)],
)
def test_outputs_of_accepts_the_documented_shapes(result: Any, count: int) -> None:
    assert len(outputs_of(result)) == count


@pytest.mark.parametrize("result", ["text", 3, [1], Item(json=[])])  # type: ignore[arg-type]
def test_outputs_of_refuses_other_shapes(result: Any) -> None:
    with pytest.raises(TypeError):
        outputs_of(result)


def test_dumps_handles_common_python_types() -> None:
    from decimal import Decimal

    assert orjson.loads(dumps({"d": Decimal("1.5"), "s": {1}, 2: "int key"})) == {
        "d": 1.5,
        "s": [1],
        "2": "int key",
    }
