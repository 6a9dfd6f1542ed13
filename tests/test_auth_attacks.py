"""Attacks on authentication, each sent over HTTP to a protected endpoint of a real app: every
one is refused with 401 or 403 and the shared error body, and changes nothing (the job it
tried to submit does not exist afterwards). tests/test_auth.py checks the same verifier piece
by piece; this file proves the HTTP answer."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient

from bridge import auth as auth_module
from bridge.api.routes import ROUTES
from bridge.auth import Authenticator
from bridge.errors import AuthenticationFailed
from bridge.settings import Settings
from tests.conftest import API_KEY, SECRET, ClientFactory, token
from tests.test_api_errors import error_of
from tests.test_auth import PRIVATE_KEYS, claims, pem

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
        {"admin": True},
        ["execute", ["admin"]],
        "execute\tadmin-ish",
    ],
)
async def test_a_made_up_scope_claim_grants_no_admin(
    app_client: TestClient, scope_claim: Any
) -> None:
    """A token the bridge signed (say, minted for a workflow) whose scope claim is odd: only
    known scope names count, so none of these reaches an admin endpoint."""
    forged = signed(claims(scope=scope_claim))
    response = await app_client.get("/admin/status", headers={"Authorization": f"Bearer {forged}"})
    await shared_error(response, 403, "forbidden")


async def test_an_api_key_has_only_the_scopes_configured_for_keys(
    app_client: TestClient,
) -> None:
    response = await app_client.post("/admin/drain", headers={"X-API-Key": API_KEY})
    error = await shared_error(response, 403, "forbidden")
    assert error["description"] == "granted: execute, status"
    assert (await app_client.get("/ready")).status == 200  # not drained
