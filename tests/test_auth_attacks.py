"""Attacks on authentication, each sent over HTTP to a protected endpoint of a real app: every
one is refused with 401 or 403 and the shared error body, and changes nothing (the job it
tried to submit does not exist afterwards). tests/test_auth.py checks the same verifier piece
by piece; this file proves the HTTP answer."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict
from standardwebhooks.webhooks import Webhook

from bridge import auth as auth_module
from bridge.api.routes import ROUTES
from bridge.auth import Authenticator
from bridge.errors import AuthenticationFailed
from bridge.logs import JsonFormatter
from bridge.settings import Settings
from tests.conftest import API_KEY, SECRET, ClientFactory, token
from tests.daemon import Daemon
from tests.test_api_errors import error_of
from tests.test_auth import PRIVATE_KEYS, claims, pem
from tests.test_edge import address, daemon_env, parse_answer
from tests.test_events import SECRET as CALLBACK_SECRET

# Authentication does not depend on the backend: the embedded one is enough.
pytestmark = pytest.mark.parametrize("backend", ["embedded"])

EXECUTE = "/api/v1/workflow/execute"
NOW = int(time.time())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(payload: dict[str, Any], **header: Any) -> str:
    return jwt.encode(payload, SECRET, algorithm="HS256", headers={"kid": "default", **header})


def with_header(header: dict[str, Any]) -> str:
    """Signed with the right secret, but with a header PyJWT itself would not write."""
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", **header}).encode())
    body = b64(json.dumps(claims()).encode())
    signature = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def with_claims(raw: str) -> str:
    """Signed with the right secret, with claims as raw JSON (numbers no encoder writes)."""
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "default"}).encode())
    body = b64(raw.encode())
    signature = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def raw_claims(**raw: str) -> str:
    """claims() with some values given as raw JSON text."""
    return with_claims(raw_claims_text(**raw))


def raw_claims_text(**raw: str) -> str:
    """claims() as JSON text, some values given as raw JSON text (which may name a member again)."""
    values = {k: json.dumps(v) for k, v in claims().items()} | raw
    return "{" + ",".join(f'"{k}":{v}' for k, v in values.items()) + "}"


def raw_header(raw: str) -> str:
    """Signed with the right secret, with the header as raw JSON text."""
    head = b64(raw.encode())
    body = b64(json.dumps(claims()).encode())
    signature = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def alg_none() -> str:
    return jwt.encode(claims(), None, algorithm="none", headers={"kid": "default"})


def hmac_with_the_rsa_public_key() -> str:
    """Algorithm confusion: HS256, keyed with the PEM of the RSA key the bridge trusts."""
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k-RS256"}).encode())
    body = b64(json.dumps(claims()).encode())
    key = pem(PRIVATE_KEYS["RS256"]).encode()
    signature = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def tampered() -> str:
    """A valid token whose payload is swapped for one granting admin."""
    head, _, signature = signed(claims()).split(".")
    return f"{head}.{b64(json.dumps(claims(scope='admin')).encode())}.{signature}"


ATTACKS: dict[str, tuple[Callable[[], str], str]] = {
    "alg none": (alg_none, "only verifies HS256"),
    "HS256 signed with the RSA public key": (hmac_with_the_rsa_public_key, "only verifies RS256"),
    "expired": (lambda: signed(claims(exp=NOW - 3600, iat=NOW - 7200)), "expired"),
    "not yet valid (iat)": (lambda: signed(claims(iat=NOW + 3600)), "not valid yet"),
    "not yet valid (nbf)": (lambda: signed(claims(nbf=NOW + 3600)), "not valid yet"),
    "wrong audience": (lambda: signed(claims(aud="another-service")), "audience"),
    "wrong issuer": (lambda: signed(claims(iss="mallory")), "issuer"),
    "tampered signature": (tampered, "signature"),
    "missing exp": (lambda: signed(claims(exp=None)), "'exp'"),
    "missing iat": (lambda: signed(claims(iat=None)), "'iat'"),
    "missing aud": (lambda: signed(claims(aud=None)), "'aud'"),
    "missing iss": (lambda: signed(claims(iss=None)), "'iss'"),
    "unknown kid": (lambda: signed(claims(), kid="not-ours"), "unknown key id"),
    # Found by this test: PyJWT raises a different error for it, which once gave a 500.
    "kid that is not a string": (
        lambda: with_header({"kid": ["default"]}),
        "not a well-formed JWT",
    ),
    "signed with another secret": (
        lambda: jwt.encode(claims(), "x" * 40, algorithm="HS256", headers={"kid": "default"}),
        "signature",
    ),
    "not a JWT": (lambda: "eyJhbGciOi.garbage", "not a well-formed JWT"),
    # RFC 8725: time claims are JSON numbers, never reinterpreted from another type
    "exp as a string": (lambda: signed(claims(exp=str(NOW + 3600))), "'exp' claim must be"),
    "exp as a padded string": (lambda: signed(claims(exp=" 99999999999")), "'exp' claim must be"),
    "iat as a string": (lambda: signed(claims(iat=str(NOW))), "'iat' claim must be"),
    "nbf as a string": (lambda: signed(claims(nbf=str(NOW))), "'nbf' claim must be"),
    "exp true": (lambda: signed(claims(exp=True)), "'exp' claim must be"),
    "nbf true": (lambda: signed(claims(nbf=True)), "'nbf' claim must be"),
    "iat false": (lambda: signed(claims(iat=False)), "'iat' claim must be"),
    "exp as a list": (lambda: signed(claims(exp=[NOW + 3600])), "'exp' claim must be"),
    "exp infinite": (lambda: raw_claims(exp="1e400"), "'exp' claim must be"),
    "exp NaN": (lambda: raw_claims(exp="NaN"), "'exp' claim must be"),
    "exp beyond year 9999": (lambda: raw_claims(exp="1" + "0" * 40), "'exp' claim must be"),
    "iat negative": (lambda: raw_claims(iat="-1"), "'iat' claim must be"),
    # RFC 7515/8725: header fields the bridge does not use are refused, not ignored — above all
    # those that carry or point at a key (the key comes from kid and configuration only)
    "jwk in the header": (lambda: with_header({"kid": "default", "jwk": {"kty": "oct"}}), "'jwk'"),
    "jku in the header": (
        lambda: with_header({"kid": "default", "jku": "http://127.0.0.1:9/k"}),
        "'jku'",
    ),
    "x5u in the header": (
        lambda: with_header({"kid": "default", "x5u": "http://127.0.0.1:9/c"}),
        "'x5u'",
    ),
    "x5c in the header": (lambda: with_header({"kid": "default", "x5c": ["MIIB"]}), "'x5c'"),
    "zip in the header": (lambda: with_header({"kid": "default", "zip": "DEF"}), "'zip'"),
    "crit in the header": (lambda: with_header({"kid": "default", "crit": ["exp"]}), "critical"),
    "b64 in the header": (lambda: with_header({"kid": "default", "b64": False}), "'b64'"),
    "cty JWT (nested)": (lambda: with_header({"kid": "default", "cty": "JWT"}), "'cty'"),
    "typ JWE": (lambda: with_header({"kid": "default", "typ": "JWE"}), "typ"),
    "typ of another kind": (lambda: with_header({"kid": "default", "typ": "dpop+jwt"}), "typ"),
    # RFC 7519 §4 / RFC 8725: a member named twice is refused, never "the last one wins"
    "exp twice": (
        lambda: with_claims(raw_claims_text(exp=f'"x","exp":{NOW + 3600}')),
        "'exp' twice",
    ),
    "scope twice": (
        lambda: with_claims(raw_claims_text(scope='"status","scope":"admin"')),
        "'scope' twice",
    ),
    "a nested member twice": (
        lambda: with_claims(raw_claims_text(extra='{"a":1,"a":2}')),
        "'a' twice",
    ),
    "kid twice in the header": (
        lambda: raw_header('{"alg":"HS256","kid":"other","kid":"default"}'),
        "'kid' twice",
    ),
    "alg twice in the header": (
        lambda: raw_header('{"alg":"none","alg":"HS256","kid":"default"}'),
        "'alg' twice",
    ),
    # header fields the bridge allows are strings, of no other type
    "x5t holding an object": (
        lambda: with_header({"kid": "default", "x5t": {"a": 1}}),
        "'x5t' must be a string",
    ),
    "x5t#S256 holding a list": (
        lambda: with_header({"kid": "default", "x5t#S256": ["a"]}),
        "'x5t#S256' must be a string",
    ),
    "typ holding a number": (lambda: with_header({"kid": "default", "typ": 1}), "'typ'"),
}


@pytest.fixture
async def app_client(make_client: ClientFactory) -> TestClient:
    keys = [{"kid": "k-RS256", "alg": "RS256", "public_key": pem(PRIVATE_KEYS["RS256"])}]
    return await make_client(jwt_keys=keys)


async def shared_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The body every error has (tests/test_api_errors.py), not retryable."""
    error = await error_of(response, status, code)
    assert error["retryable"] is False
    return error


async def nothing_submitted(client: TestClient, settings: Settings, workflow_id: str) -> None:
    good = {"Authorization": f"Bearer {token(settings, 'status')}"}
    answer = await client.get(f"/api/v1/status/{workflow_id}", headers=good)
    assert (await answer.json())["jobs"] == []


@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_a_forged_or_invalid_token_is_refused_with_401(
    app_client: TestClient, settings: Settings, attack: str
) -> None:
    make, reason = ATTACKS[attack]
    job = {
        "processing_type": "echo",
        "mode": "async",
        "workflow_id": "wf-attack",
        "items": [{"json": {}}],
    }
    response = await app_client.post(
        EXECUTE, json=job, headers={"Authorization": f"Bearer {make()}"}
    )
    error = await shared_error(response, 401, "auth")
    assert reason in error["message"]
    assert response.headers["WWW-Authenticate"].startswith(
        'Bearer realm="n8n-bridge", error="invalid_token"'
    )
    await nothing_submitted(app_client, settings, "wf-attack")


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("Authorization", ["good", "good"]),
        ("Authorization", ["good", "Bearer not-a-token"]),
        ("Authorization", ["Bearer not-a-token", "good"]),
        ("X-API-Key", [API_KEY, API_KEY]),
        ("X-API-Key", [API_KEY, "wrong"]),
        ("X-API-Key", ["wrong", API_KEY]),
        ("x-api-key", [API_KEY, API_KEY]),
    ],
)
async def test_a_credential_header_sent_twice_is_refused_with_401(
    app_client: TestClient, settings: Settings, name: str, values: list[str]
) -> None:
    """A proxy in front may read the last of two headers, the bridge the first: a request that
    carries two is refused, so the two can never disagree on who is calling."""
    good = f"Bearer {token(settings)}"
    headers = CIMultiDict((name, good if value == "good" else value) for value in values)
    job = {"processing_type": "echo", "mode": "async", "workflow_id": "wf-twice", "items": []}
    response = await app_client.post(EXECUTE, json=job, headers=headers)
    error = await shared_error(response, 401, "auth")
    assert "twice" in error["message"], error
    await nothing_submitted(app_client, settings, "wf-twice")


async def test_a_wrong_api_key_is_refused_with_401(
    app_client: TestClient, settings: Settings
) -> None:
    for key in (API_KEY + "x", API_KEY[:-1], "", "a" * 4000):
        response = await app_client.post(
            EXECUTE,
            json={"processing_type": "echo", "mode": "async", "workflow_id": "wf-key", "items": []},
            headers={"X-API-Key": key},
        )
        error = await shared_error(response, 401, "auth")
        assert error["message"] == "the API key is not valid"
    await nothing_submitted(app_client, settings, "wf-key")


def test_api_keys_are_compared_in_constant_time(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timing-safe by construction: the presented key is hashed (its length tells nothing),
    and its digest is compared with hmac.compare_digest against every configured hash — also
    after a match, so the time taken does not say which key (or whether one) matched."""
    keys = [f"key-number-{n}-0123456789abcdef" for n in range(3)]
    authenticator = Authenticator(make_settings(api_keys=keys))
    compared: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", counting)
    for presented in (keys[0], keys[2], "wrong", "x" * 5000):
        compared.clear()
        with contextlib.suppress(AuthenticationFailed):
            authenticator.authenticate({"X-API-Key": presented})
        assert compared == [(32, 32)] * len(keys), presented


ADMIN_ROUTES = [(r.method, r.path) for r in ROUTES if r.scope == "admin"]
STATUS_ROUTES = [(r.method, r.path) for r in ROUTES if r.scope == "status"]
EXECUTE_ROUTES = [(r.method, r.path) for r in ROUTES if r.scope == "execute"]


def concrete(path: str) -> str:
    return (
        path.replace("{job_id}", "0" * 32)
        .replace("{workflow_id}", "wf")
        .replace("{subscription_id}", "1" * 32)
        .replace("{letter_id}", "cb_" + "2" * 32)
    )


@pytest.mark.parametrize(
    ("granted", "routes"),
    [
        ("execute", ADMIN_ROUTES + STATUS_ROUTES),
        ("status", ADMIN_ROUTES + EXECUTE_ROUTES),
        ("execute,status", ADMIN_ROUTES),
    ],
)
async def test_no_scope_reaches_beyond_itself(
    app_client: TestClient, settings: Settings, granted: str, routes: list[tuple[str, str]]
) -> None:
    headers = {"Authorization": f"Bearer {token(settings, granted)}"}
    for method, path in routes:
        response = await app_client.request(method, concrete(path), headers=headers, json={})
        error = await shared_error(response, 403, "forbidden")
        assert error["message"].endswith("scope"), (method, path, error)
    assert (await app_client.get("/admin/status", headers=headers)).status == 403


@pytest.mark.parametrize(
    "scope_claim",
    [
        "ADMIN",  # scopes are exact
        "administrator",
        "execute,admin",  # separated by spaces, not commas: one unknown scope
    ],
)
async def test_a_made_up_scope_name_grants_no_admin(
    app_client: TestClient, scope_claim: Any
) -> None:
    """A token the bridge signed (say, minted for a workflow) naming scopes it does not know:
    those names are ignored, so none of these reaches an admin endpoint."""
    forged = signed(claims(scope=scope_claim))
    response = await app_client.get("/admin/status", headers={"Authorization": f"Bearer {forged}"})
    await shared_error(response, 403, "forbidden")


@pytest.mark.parametrize(
    "scope_claims",
    [
        {"scope": ["admin"]},  # a list where a string is expected
        {"scope": "execute\tadmin"},  # a tab is no separator
        {"scope": "execute\u2028admin"},
        {"scope": "execute  admin"},
        {"scope": {"admin": True}},
        {"scope": None, "scopes": ["admin"]},
        {"scopes": "admin"},
        {"scopes": ["execute", ["admin"]]},
        {"scope": "status", "scopes": ["admin"]},
    ],
    ids=repr,
)
async def test_a_malformed_scope_claim_is_refused_with_401(
    app_client: TestClient, scope_claims: dict[str, Any]
) -> None:
    """RFC 8725: a claim that does not parse is not reinterpreted, the token is refused whole."""
    payload = {**{k: v for k, v in claims().items() if k != "scope"}, **scope_claims}
    response = await app_client.get(
        "/admin/status", headers={"Authorization": f"Bearer {signed(payload)}"}
    )
    error = await shared_error(response, 401, "auth")
    assert "scope" in error["message"]
    assert response.headers["WWW-Authenticate"].startswith(
        'Bearer realm="n8n-bridge", error="invalid_token"'
    )


async def test_an_api_key_has_only_the_scopes_configured_for_keys(
    app_client: TestClient,
) -> None:
    response = await app_client.post("/admin/drain", headers={"X-API-Key": API_KEY})
    error = await shared_error(response, 403, "forbidden")
    assert error["description"] == "granted: execute, status"
    assert (await app_client.get("/ready")).status == 200  # not drained


# Every header the API reads, and the path and query, with bytes that are not ASCII: aiohttp
# decodes a request head with `surrogateescape`, so a raw 0xff arrives as the lone surrogate
# "\udcff", which no UTF-8 encoder (PyJWT, hashlib, SQLite, orjson, the JSON log) takes. Each is
# a 4xx in the shared error body (X-Trace-ID: ignored, a new one is made), never a 500 or an
# ERROR line, and every line logged can be written.
NOT_UTF8 = [b"\xff", b"\xe9", b"a.\xe9.b", b"\xffaaaaaaaaaaaaaaaaaaaa"]
NOT_ASCII = [*NOT_UTF8, "\u00e9".encode()]  # é in UTF-8: no header the API reads takes it
CALLBACK = b"/api/v1/callbacks/wf-raw"
REPORT = b'{"status": "success"}'
Build = Callable[[bytes, dict[str, bytes]], bytes]


def _request(method: str, target: bytes, headers: dict[str, bytes], body: bytes = b"") -> bytes:
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: bridge", b"Connection: close"]
    lines += [name.encode() + b": " + value for name, value in headers.items()]
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _report(headers: dict[str, bytes]) -> bytes:
    return _request("POST", CALLBACK, {"Content-Type": b"application/json", **headers}, REPORT)


def _signed(**raw: bytes) -> dict[str, bytes]:
    """The Standard Webhooks headers of REPORT, signed with CALLBACK_SECRET, then `raw`."""
    now = str(int(time.time()))
    signature = Webhook(CALLBACK_SECRET).sign(
        "msg_raw", datetime.fromtimestamp(int(now), UTC), REPORT.decode()
    )
    good = {
        "webhook-id": b"msg_raw",
        "webhook-timestamp": now.encode(),
        "webhook-signature": signature.encode(),
    }
    return {**good, **{k.replace("_", "-"): v for k, v in raw.items()}}


# header → (the request with a raw value in it, the status expected)
HEADER_CASES: dict[str, tuple[Build, int]] = {
    "Authorization": (
        lambda v, ok: _request("GET", b"/api/v1/processors", {"Authorization": b"Bearer " + v}),
        401,
    ),
    "X-API-Key": (lambda v, ok: _request("GET", b"/api/v1/processors", {"X-API-Key": v}), 401),
    "X-Trace-ID": (
        lambda v, ok: _request("GET", b"/api/v1/processors", {**ok, "X-Trace-ID": b"trace-" + v}),
        200,
    ),
    "Last-Event-ID": (
        lambda v, ok: _request("GET", b"/api/v1/events", {**ok, "Last-Event-ID": b"1" + v}),
        422,
    ),
    "Content-Type": (
        lambda v, ok: _request(
            "POST",
            b"/api/v1/workflow/execute",
            {**ok, "Content-Type": b"application/json; charset=" + v},
            b"{}",
        ),
        415,
    ),
    "webhook-id (JWT)": (lambda v, ok: _report({**ok, "webhook-id": b"msg_" + v}), 422),
    "webhook-id (signed)": (lambda v, ok: _report(_signed(webhook_id=b"msg_" + v)), 422),
    "webhook-timestamp": (lambda v, ok: _report(_signed(webhook_timestamp=b"1" + v)), 401),
    "webhook-signature": (lambda v, ok: _report(_signed(webhook_signature=b"v1," + v)), 401),
}
URL_CASES: dict[str, Build] = {
    "path: a workflow id": lambda v, ok: _request("GET", b"/api/v1/status/wf-" + v, ok),
    "path: no route": lambda v, ok: _request("GET", b"/api/v1/nothing-" + v, ok),
    "path: a callback": lambda v, ok: _request("POST", CALLBACK + v, ok, REPORT),
    "path: public": lambda v, ok: _request("GET", b"/health/" + v, {}),
    "query value": lambda v, ok: _request("GET", b"/api/v1/events?workflow_id=wf-" + v, ok),
    "query name": lambda v, ok: _request("GET", b"/api/v1/status/wf?" + v + b"=1", ok),
}
HEADER_RUNS = [(name, value) for name in HEADER_CASES for value in NOT_ASCII]


async def _exchange(host: str, port: int, request: bytes) -> tuple[int, dict[str, str], Any]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        return parse_answer(await asyncio.wait_for(reader.read(), 10))
    finally:
        writer.close()


def _assert_answer(answer: tuple[int, dict[str, str], Any], expected: int, value: bytes) -> None:
    status, headers, body = answer
    assert status == expected, body
    if status == 200:
        assert headers["x-trace-id"] != "trace-" + value.decode("latin-1")
        return
    assert set(body) == {"error"} and body["error"]["http_code"] == status
    assert body["error"]["trace_id"] == headers["x-trace-id"]
    if status == 401:
        assert headers["www-authenticate"].startswith('Bearer realm="n8n-bridge"')


@pytest.mark.parametrize(
    ("case", "value"), HEADER_RUNS, ids=[f"{c}-{v.decode('latin-1')}" for c, v in HEADER_RUNS]
)
async def test_bytes_that_are_not_ascii_in_a_header_are_a_4xx(
    make_client: ClientFactory,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    case: str,
    value: bytes,
) -> None:
    client = await make_client(callback_secret=CALLBACK_SECRET)
    ok = {"Authorization": f"Bearer {token(settings, 'execute,status')}".encode()}
    build, expected = HEADER_CASES[case]
    answer = await _exchange(str(client.host), int(client.port), build(value, ok))
    _assert_answer(answer, expected, value)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors
    for record in caplog.records:
        JsonFormatter(None).format(record)  # each line can be written: orjson takes no surrogate


@pytest.mark.slow
async def test_a_daemon_answers_bytes_that_are_not_ascii_with_a_4xx_and_no_error(
    tmp_path: Path, settings: Settings
) -> None:
    """The same through the daemon's own connection handler and JSON log, with the request
    target too (which its parser refuses: 400)."""
    env = daemon_env(tmp_path, BRIDGE_CALLBACK_SECRET=CALLBACK_SECRET, BRIDGE_API_KEYS=API_KEY)
    async with Daemon(env) as daemon:
        host, port = address(daemon)
        ok = {"Authorization": f"Bearer {token(settings, 'execute,status')}".encode()}
        for build, expected in HEADER_CASES.values():
            answer = await _exchange(host, port, build(b"\xff", ok))
            _assert_answer(answer, expected, b"\xff")
        for build in URL_CASES.values():
            for value in NOT_UTF8:
                answer = await _exchange(host, port, build(value, ok))
                _assert_answer(answer, 400, value)
        await asyncio.sleep(0.3)  # the last lines written
        assert not [r for r in daemon.records() if r["level"] in ("error", "critical")]
        assert all("Traceback" not in line for line in daemon.lines)
        assert all(line.startswith("{") for line in daemon.lines)  # every line was written whole
