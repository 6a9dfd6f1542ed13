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
    # change the path or the method on a reverse proxy in front of n8n
    ({"X-Original-URL": "/admin"}, "/parameters/headers/X-Original-URL"),
    ({"X-Rewrite-URL": "/admin"}, "/parameters/headers/X-Rewrite-URL"),
    ({"X-Override-URL": "/admin"}, "/parameters/headers/X-Override-URL"),
    ({"X-HTTP-Method-Override": "DELETE"}, "/parameters/headers/X-HTTP-Method-Override"),
    ({"X-HTTP-Method": "DELETE"}, "/parameters/headers/X-HTTP-Method"),
    ({"X-Method-Override": "DELETE"}, "/parameters/headers/X-Method-Override"),
    ({"Max-Forwards": "0"}, "/parameters/headers/Max-Forwards"),
    ({"X-Forwarded-Prefix": "/x"}, "/parameters/headers/X-Forwarded-Prefix"),
    ({"X-Original-Host": "admin"}, "/parameters/headers/X-Original-Host"),
    ({"X-Host": "admin"}, "/parameters/headers/X-Host"),
    ({"X-Envoy-Original-Path": "/admin"}, "/parameters/headers/X-Envoy-Original-Path"),
    ({"X-Original-URI": "/admin"}, "/parameters/headers/X-Original-URI"),
    ({"X-Original-Method": "DELETE"}, "/parameters/headers/X-Original-Method"),
    ({"X-Middleware-Subrequest": "middleware"}, "/parameters/headers/X-Middleware-Subrequest"),
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


# Refused by rule, not by list: names whose words say client address, forwarding, origin,
# override or rewrite (a server may trust them), in any spelling — `_` and `.` are read as `-`
# by CGI-style servers (X_Forwarded_For is HTTP_X_FORWARDED_FOR).
ADDRESS_OR_OVERRIDE_HEADERS = [
    "X-Cluster-Client-IP",
    "Fastly-Client-IP",
    "Client-IP",
    "X-ProxyUser-Ip",
    "X-Originating-IP",
    "X-Remote-IP",
    "X-Remote-Addr",
    "X-Forwarded",
    "Forwarded-For",
    "X-Original-Forwarded-For",
    "X-HTTP-Host-Override",
    "X-Custom-IP-Authorization",
    "X_Forwarded_For",
    "X.Real.IP",
    "X-ClientIP",
    "X-Client-IPv6",
    "X-Real-Port",
    "Remote-User",
    "X-Remote-User",
    "X-Backend-Host",
    "X-Forwarded-Host",
    "X-Original-Anything",
    "X-Rewrite-Path",
    "X-Url-Scheme",
    "Front-End-Https",
    "True-Client-Host",
    "CF-Connecting-IPv6",
    "X-Azure-ClientIP",
    "X-Client-Address",
    "X-Source-Addr",
    "Content-Language",
    "Content-Range",
    # the client address a cloud front end asserts
    "X-Azure-SocketIP",
    "Cf-IPCountry",
    # the scheme, host, port, path or method a proxy or framework serves
    "X-Scheme",
    "X-Https",
    "Https",
    "X-ARR-SSL",
    "X-Proto",
    "X-Protocol",
    "X-Forwarded-Proto",
    "X-Script-Name",
    "X-Ingress-Path",
    "X-Request-URI",
    "X-Invoke-Path",
    "X-Now-Route-Matches",
    "X-Routing-Key",
    "X-Hostname",
    "X-Port",
    "X-Server-Port",
    "X-Server-Name",
    "X-Method",
    "X_Request_Url",
    "X-Vercel-Deployment-Url",
    "X-Nginx-Proxy",
    "Fly-Client-IP",
    "X-AppEngine-Country",
    # the identity an authenticating proxy asserts
    "X-Auth-Request-User",
    "X-Auth-Request-Email",
    "X-WEBAUTH-USER",
    "X-Authenticated-User",
    "X-Authenticated-Userid",
    "X-Amzn-Oidc-Identity",
    "X-Amzn-Oidc-Data",
    "X-Amzn-Trace-Id",
    "Cf-Access-Jwt-Assertion",
    "Cf-Access-Authenticated-User-Email",
    "X-Goog-Authenticated-User-Email",
    "X-Ms-Client-Principal-Name",
    "X-MS-CLIENT-PRINCIPAL",
    "X-User",
    "X-Email",
    "X-Forwarded-User",
    "X-Principal",
    "X-Identity",
    # the client certificate a TLS-terminating proxy verified
    "X-SSL-Client-Verify",
    "X-SSL-Client-Cert",
    "X-Client-Cert",
    "Ssl-Client-Verify",
    "X-TLS-Client-Cert",
    "X-Client-Verify",
]


@pytest.mark.parametrize("name", ADDRESS_OR_OVERRIDE_HEADERS)
async def test_address_and_override_headers_are_refused_by_rule(
    client: TestClient, auth: dict[str, str], target: Target, name: str
) -> None:
    body = trigger(target.url(), [{}], headers={name: "127.0.0.1"})
    response = await client.post(EXECUTE, json=body, headers=auth)
    assert response.status == 422, name
    details = (await response.json())["error"]["details"]
    assert f"/parameters/headers/{name}" in [detail["pointer"] for detail in details]
    assert target.received == []


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


# Webhooks the HTTP client would not call as given, or whose path would leave BRIDGE_N8N_URL:
# each is refused when the request is made (422 pointing at it), and nothing is called.
BAD_WEBHOOKS = [
    "ftp://127.0.0.1:23401/x24",  # urljoin returns another scheme's URL as it is
    "FTP://127.0.0.1/x",
    "javascript:alert(1)",
    "http://0127.0.0.1:23401/x",  # not a canonical address: aiohttp refuses it
    "http://127.1/x",
    "http:evil.example/x",  # a scheme and no host
    "https:/evil.example/x",
    "http://",
    "//evil.example/webhook/x",  # relative to the scheme: another host
    " //evil.example/webhook/x",  # urlsplit strips the leading space
    "\t//evil.example/webhook/x",
    "\\\\evil.example/webhook/x",
    "/\\evil.example/webhook/x",
    "webhook/../../admin",
    "webhook/%2e%2e/%2E%2E/admin",
    "webhook/%252e%252e/admin",  # decoded twice by a proxy and n8n
    "webhook/..;/admin",
    "webhook/%2e./admin",
    "webhook/x\ny",
    "webhook/x y",
    "webhook/..%3F/admin",  # a decoded `?` or `#` ends the segment
    "webhook/..%23/admin",
    "webhook/..%00/admin",  # NUL, controls, trailing spaces and dots are trimmed by some
    "webhook/%2e%2e%00/admin",
    "webhook/..%20/admin",
    "webhook/..%09/admin",
    "webhook/..%2500/admin",
    "webhook/...../admin",
    "webhook/%U002E%U002E/admin",  # re-encoded by the client: not the URL given
    "webhook/%ef%bc%8e%ef%bc%8e/admin",  # NFKC: ..
    "webhook/%e3%80%82%e3%80%82/admin",  # ideographic full stops
    "webhook/x%u2215..%u2215admin",  # a division slash for a separator
    "webhook/x%e2%88%95..%e2%88%95admin",
]


@pytest.mark.parametrize("webhook", BAD_WEBHOOKS)
async def test_a_webhook_the_client_would_not_call_as_given_is_refused(
    make_client: ClientFactory, auth: dict[str, str], target: Target, webhook: str
) -> None:
    client = await make_client(n8n_url=target.url("/n8n/"))
    body = {**trigger(webhook, [{}]), "mode": "async"}
    response = await client.post(EXECUTE, json=body, headers=auth)
    answer = await response.json()
    assert response.status == 422, answer
    assert answer["error"]["details"][0]["pointer"] == "/parameters/webhook", answer
    assert target.received == []


async def test_a_path_stays_under_the_n8n_url(
    make_client: ClientFactory, auth: dict[str, str], target: Target
) -> None:
    client = await make_client(n8n_url=target.url("/n8n/"))
    for webhook in ("webhook/a", "/webhook/b", "webhook/c;v=1", "webhook/%C3%A9"):
        response = await client.post(EXECUTE, json=trigger(webhook, [{}]), headers=auth)
        assert response.status == 200, await response.text()
    paths = sorted(call.path for call in target.received)
    assert paths == ["/n8n/webhook/a", "/n8n/webhook/b", "/n8n/webhook/c;v=1", "/n8n/webhook/é"]


async def test_ordinary_headers_go_out(
    client: TestClient, auth: dict[str, str], target: Target
) -> None:
    headers = {
        "Authorization": "Bearer abc",
        "X-Api-Key": "k",
        "Cookie": "a=b",
        "Accept": "*/*",
        "Accept-Language": "fr",
        "User-Agent": "wf",
        "X-Request-ID": "r1",
        "X-N8N-API-KEY": "k2",
        "X-Zip-Code": "75001",
        "X-Tenant": "t",
        "If-Match": '"e"',
        "If-None-Match": '"f"',
        "X-Correlation-Id": "c1",
        "Accept-Encoding": "identity",
        "X-Customer-Id": "42",
        "X-Signature": "sig",
        "X-Hub-Signature-256": "sha256=x",
    }
    body = trigger(target.url(), [{}], headers=headers)
    assert (await client.post(EXECUTE, json=body, headers=auth)).status == 200
    [call] = target.received
    received = {name.lower(): value for name, value in call.headers.items()}
    assert {name: received.get(name.lower()) for name in headers} == headers
