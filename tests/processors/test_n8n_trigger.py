"""n8n_trigger against a real HTTP server standing in for n8n's webhook endpoint."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import ClientFactory
from tests.webhook_target import Target, json_of

EXECUTE = "/api/v1/workflow/execute"


def trigger(webhook: str, items: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
    return {
        "processing_type": "n8n_trigger",
        "items": [{"json": item} for item in items],
        "parameters": {"webhook": webhook, **params},
    }


async def test_one_call_per_item_with_the_answers(
    client: TestClient, auth: dict[str, str], target: Target
) -> None:
    response = await client.post(
        EXECUTE, json=trigger(target.url("/webhook/orders"), [{"n": 1}, {"n": 2}]), headers=auth
    )
    answer = await response.json()
    assert response.status == 200, answer
    assert sorted(json_of(r)["n"] for r in target.received) == [1, 2]
    assert all(r.headers["X-Bridge-Job-ID"] == answer["job_id"] for r in target.received)
    assert [i["json"]["n8n"]["status"] for i in answer["items"]] == [200, 200]


async def test_one_call_for_the_whole_job_under_the_n8n_url(
    make_client: ClientFactory, auth: dict[str, str], target: Target
) -> None:
    client = await make_client(n8n_url=target.url("/"))
    body = trigger("webhook/bulk", [{"n": 1}, {"n": 2}], per="job")
    answer = await (await client.post(EXECUTE, json=body, headers=auth)).json()
    [call] = target.received
    assert call.path == "/webhook/bulk"
    assert json_of(call)["items"] == [{"n": 1}, {"n": 2}]
    assert len(answer["items"]) == 2


async def test_a_path_without_n8n_url_is_refused(client: TestClient, auth: dict[str, str]) -> None:
    response = await client.post(EXECUTE, json=trigger("webhook/x", [{}]), headers=auth)
    assert response.status == 422
    assert "BRIDGE_N8N_URL" in (await response.json())["error"]["message"]


async def test_errors_retries_and_a_missing_webhook(
    make_client: ClientFactory, auth: dict[str, str], target: Target
) -> None:
    client = await make_client(retry_base_s=0.01)
    target.script = [503, 200, 404]
    first = await (
        await client.post(EXECUTE, json=trigger(target.url(), [{}]), headers=auth)
    ).json()
    assert first["items"][0]["json"]["n8n"]["status"] == 200  # after one retry
    second = await (
        await client.post(EXECUTE, json=trigger(target.url(), [{}]), headers=auth)
    ).json()
    [error] = second["errors"]
    assert "HTTP 404" in error["message"] and "is the workflow active?" in error["message"]


async def test_an_idempotency_key_starts_the_workflow_once(
    client: TestClient, auth: dict[str, str], target: Target
) -> None:
    body = {**trigger(target.url(), [{"n": 1}]), "idempotency_key": "run-1"}
    first = await (await client.post(EXECUTE, json=body, headers=auth)).json()
    again = await (await client.post(EXECUTE, json=body, headers=auth)).json()
    assert len(target.received) == 1
    assert target.received[0].headers["Idempotency-Key"] == "run-1:0"
    assert first["items"][0]["json"]["n8n"]["duplicate"] is False
    assert again["items"][0]["json"]["n8n"]["duplicate"] is True


REFUSED_HEADERS = [
    ({"Host": "internal.example"}, "/parameters/headers/Host"),
    ({"content-length": "0"}, "/parameters/headers/content-length"),
    ({"Transfer-Encoding": "chunked"}, "/parameters/headers/Transfer-Encoding"),
    ({"Connection": "close"}, "/parameters/headers/Connection"),
    ({"Upgrade": "websocket"}, "/parameters/headers/Upgrade"),
    ({"TE": "trailers"}, "/parameters/headers/TE"),
    ({"Trailer": "X"}, "/parameters/headers/Trailer"),
    ({"Keep-Alive": "timeout=5"}, "/parameters/headers/Keep-Alive"),
    ({"Expect": "100-continue"}, "/parameters/headers/Expect"),
    ({"Proxy-Authorization": "Basic eA=="}, "/parameters/headers/Proxy-Authorization"),
    ({"Forwarded": "for=10.0.0.1"}, "/parameters/headers/Forwarded"),
    ({"X-Forwarded-For": "127.0.0.1"}, "/parameters/headers/X-Forwarded-For"),
    ({"X-Real-IP": "127.0.0.1"}, "/parameters/headers/X-Real-IP"),
    ({"Via": "1.1 bridge"}, "/parameters/headers/Via"),
    ({"Content-Type": "text/plain"}, "/parameters/headers/Content-Type"),
    ({"X-Bridge-Job-ID": "forged"}, "/parameters/headers/X-Bridge-Job-ID"),
    ({"webhook-signature": "v1,forged"}, "/parameters/headers/webhook-signature"),
    ({"Idempotency-Key": "x"}, "/parameters/headers/Idempotency-Key"),
    ({"X-A\r\nX-B": "1"}, "/parameters/headers/X-A\r\nX-B"),
    ({"X A": "1"}, "/parameters/headers/X A"),
    ({"": "1"}, "/parameters/headers/"),
    ({"X-A": "1\r\nX-Injected: 2"}, "/parameters/headers/X-A"),
    ({"X-A": "1\nX-Injected: 2"}, "/parameters/headers/X-A"),
    ({"X-A": "a\x00b"}, "/parameters/headers/X-A"),
    ({"X-A": "a\x7fb"}, "/parameters/headers/X-A"),
    ({"X-A": "a\x85b"}, "/parameters/headers/X-A"),
    ({"X-A": "a\u2028b"}, "/parameters/headers/X-A"),
    ({"X-A": "é"}, "/parameters/headers/X-A"),
    ({"X-A": "x" * 4097}, "/parameters/headers/X-A"),
    ({"X-" + "a" * 100: "1"}, "/parameters/headers/X-" + "a" * 100),
    ({f"X-{i}": "1" for i in range(21)}, "/parameters/headers"),
]


@pytest.mark.parametrize(("headers", "pointer"), REFUSED_HEADERS)
async def test_headers_that_control_the_transport_or_impersonate_are_refused(
    client: TestClient, auth: dict[str, str], target: Target, headers: dict[str, str], pointer: str
) -> None:
    response = await client.post(
        EXECUTE, json=trigger(target.url(), [{}], headers=headers), headers=auth
    )
    assert response.status == 422
    error = (await response.json())["error"]
    assert pointer in [detail["pointer"] for detail in error["details"]], error
    assert target.received == []


async def test_ordinary_headers_go_out(
    client: TestClient, auth: dict[str, str], target: Target
) -> None:
    headers = {"Authorization": "Bearer abc", "X-Api-Key": "k", "Cookie": "a=b", "Accept": "*/*"}
    body = trigger(target.url(), [{}], headers=headers)
    assert (await client.post(EXECUTE, json=body, headers=auth)).status == 200
    [call] = target.received
    assert {name: call.headers[name] for name in headers} == headers
