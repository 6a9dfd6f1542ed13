"""Hostile payloads over HTTP: each gets a clear 4xx or a per-item error, and the bridge goes on
serving. (Template escapes and exhaustion: tests/processors/test_template_render.py; header
injection in e-mail fields: tests/processors/test_email_headers.py; callback URLs at metadata
addresses: tests/test_outbound.py.)"""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import ClientFactory
from tests.test_api_errors import error_of

pytestmark = pytest.mark.parametrize("backend", ["embedded"])  # the door, not the store

EXECUTE = "/api/v1/workflow/execute"


async def post_raw(client: TestClient, auth: dict[str, str], raw: bytes) -> Any:
    return await client.post(  # a file object: aiohttp warns about large bytes
        EXECUTE, data=io.BytesIO(raw), headers={**auth, "Content-Type": "application/json"}
    )


async def still_serving(client: TestClient, auth: dict[str, str]) -> None:
    assert (await client.get("/health")).status == 200
    body = {"processing_type": "echo", "items": [{"json": {"ok": True}}]}
    answer = await (await client.post(EXECUTE, json=body, headers=auth)).json()
    assert answer["items"][0]["json"] == {"ok": True}


def nested(depth: int) -> bytes:
    inner = b"[" * depth + b"]" * depth
    return b'{"processing_type": "echo", "items": [{"json": {"deep": ' + inner + b"}}]}"


async def test_json_nested_beyond_the_parser_limit_is_400(
    client: TestClient, auth: dict[str, str]
) -> None:
    for depth in (5_000, 1_000_000):
        error = await error_of(await post_raw(client, auth, nested(depth)), 400, "validation")
        assert "not valid JSON" in error["message"] and "depth" in error["message"]
    await still_serving(client, auth)


async def test_json_nested_too_deep_to_answer_fails_its_item(
    client: TestClient, auth: dict[str, str]
) -> None:
    response = await post_raw(client, auth, nested(600))
    assert response.status == 200
    answer = await response.json()
    assert answer["items"] == []
    assert "nested deeper than 254 levels" in answer["errors"][0]["message"]
    await still_serving(client, auth)


async def test_a_huge_string_within_the_limit_is_served_and_one_over_it_is_413(
    make_client: ClientFactory, auth: dict[str, str]
) -> None:
    client = await make_client(max_body_bytes=4 * 1024 * 1024)
    text = "x" * (3 * 1024 * 1024)
    body = {"processing_type": "echo", "items": [{"json": {"s": text}}]}
    answer = await (await post_raw(client, auth, orjson.dumps(body))).json()
    assert len(answer["items"][0]["json"]["s"]) == len(text)
    over = {"processing_type": "echo", "items": [{"json": {"s": text + "x" * 1024 * 1024}}]}
    error = await error_of(
        await post_raw(client, auth, orjson.dumps(over)), 413, "payload_too_large"
    )
    assert "BRIDGE_MAX_BODY_BYTES" in error["message"]
    await still_serving(client, auth)


async def test_100k_items_are_served_and_one_more_is_413(
    client: TestClient, auth: dict[str, str]
) -> None:
    items = [{"json": {"i": i}} for i in range(100_000)]
    response = await post_raw(
        client, auth, orjson.dumps({"processing_type": "echo", "items": items})
    )
    assert response.status == 200
    assert len((await response.json())["items"]) == 100_000
    items.append({"json": {"i": 100_000}})
    response = await post_raw(
        client, auth, orjson.dumps({"processing_type": "echo", "items": items})
    )
    error = await error_of(response, 413, "payload_too_large")
    assert "100000" in error["message"].replace(",", "")
    await still_serving(client, auth)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"processing_type": "echo", "items": [{"json": {"s": "\xff\xfe"}}]}',  # not UTF-8
        b'{"processing_type": "echo", "items": [{"json": {"\xc3\x28": 1}}]}',  # in a key
        b'{"processing_type": "echo", "items": [{"json": {"s": "\\ud800"}}]}',  # lone surrogate
        b'{"processing_type": "echo", "items": [{"json": {"n": 1e400}}]}',  # not a double
        b'{"processing_type": "echo", "items": [{"json": {"n": NaN}}]}',
    ],
)
async def test_text_and_numbers_json_cannot_carry_are_400(
    client: TestClient, auth: dict[str, str], raw: bytes
) -> None:
    error = await error_of(await post_raw(client, auth, raw), 400, "validation")
    assert error["message"].startswith("the body is not valid JSON")
    await still_serving(client, auth)


@pytest.mark.parametrize("data", ["not base64!", "QUJD\u00e9", "QUJ", "QU JD\n@@"])
async def test_binary_data_that_is_not_base64_is_422_with_its_pointer(
    client: TestClient, auth: dict[str, str], data: str
) -> None:
    body = {
        "processing_type": "echo",
        "items": [{"json": {}}, {"json": {}, "binary": {"file": {"data": data}}}],
    }
    error = await error_of(await client.post(EXECUTE, json=body, headers=auth), 422, "validation")
    assert error["details"][0]["pointer"].startswith("/items/1/binary/file")
    await still_serving(client, auth)


async def test_a_header_longer_than_8_kib_is_400_before_any_handler(
    client: TestClient, auth: dict[str, str]
) -> None:
    response = await client.post(
        EXECUTE, json={"processing_type": "echo", "items": []}, headers={"X-Junk": "a" * 10_000}
    )
    assert response.status == 400
    await still_serving(client, auth)
