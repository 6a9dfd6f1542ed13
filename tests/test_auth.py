"""JWT and API-key authentication, scopes, and the attacks they must refuse."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from bridge.auth import Authenticator, Principal, authorize, mint_token
from bridge.errors import AuthenticationFailed, Forbidden
from bridge.settings import ConfigError, Settings
from tests.conftest import API_KEY, SECRET, ClientFactory

PRIVATE_KEYS: dict[str, Any] = {
    "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ES256": ec.generate_private_key(ec.SECP256R1()),
    "EdDSA": ed25519.Ed25519PrivateKey.generate(),
}


def pem(private: Any) -> str:
    return (
        private.public_key()
        .public_bytes(  # type: ignore[no-any-return]
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        .decode()
    )


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values = {
        "iss": "n8n-bridge",
        "aud": "n8n-bridge",
        "iat": now,
        "exp": now + 60,
        "sub": "test",
        "scope": "execute status",
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


@pytest.fixture
def authenticator(make_settings: Callable[..., Settings]) -> Authenticator:
    keys = [
        {"kid": f"k-{alg}", "alg": alg, "public_key": pem(key)} for alg, key in PRIVATE_KEYS.items()
    ]
    keys.append(
        {"kid": "old-hmac", "alg": "HS256", "secret": "another-secret-of-32-bytes-or-more!!"}
    )
    return Authenticator(make_settings(jwt_keys=keys))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def reject(
    authenticator: Authenticator, headers: dict[str, str], reason: str
) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as caught:
        authenticator.authenticate(headers)
    assert reason in caught.value.message
    assert CHALLENGE(caught.value.headers["WWW-Authenticate"])
    return caught.value


# RFC 6750 3: error_description holds no `"`, `\\` or byte beyond printable ASCII, whatever the
# token quoted in the message (a kid, a scope name).
CHALLENGE = re.compile(
    r'Bearer realm="n8n-bridge"(, error="[a-z_]+", error_description="[\x20\x21\x23-\x5b\x5d-\x7e]*")?'
).fullmatch


@pytest.mark.parametrize("alg", sorted(PRIVATE_KEYS))
def test_asymmetric_keys_verify_by_kid(authenticator: Authenticator, alg: str) -> None:
    token = jwt.encode(claims(), PRIVATE_KEYS[alg], algorithm=alg, headers={"kid": f"k-{alg}"})
    principal = authenticator.authenticate(bearer(token))
    assert principal == Principal("test", frozenset({"execute", "status"}), "jwt")


def test_keys_rotate_by_kid(authenticator: Authenticator) -> None:
    old = jwt.encode(
        claims(),
        "another-secret-of-32-bytes-or-more!!",
        algorithm="HS256",
        headers={"kid": "old-hmac"},
    )
    new = jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "default"})
    assert authenticator.authenticate(bearer(old)).subject == "test"
    assert authenticator.authenticate(bearer(new)).subject == "test"


def test_cli_token_verifies(settings: Settings) -> None:
    token = mint_token(settings, ["execute", "admin"], 60)
    principal = Authenticator(settings).authenticate(bearer(token))
    assert principal.scopes == {"execute", "admin"}


def test_alg_none_is_refused(authenticator: Authenticator) -> None:
    token = jwt.encode(claims(), None, algorithm="none", headers={"kid": "default"})
    reject(authenticator, bearer(token), "only verifies HS256")


def test_hmac_signed_with_the_public_key_is_refused(authenticator: Authenticator) -> None:
    """Algorithm confusion: an HS256 token keyed with the RSA public key's PEM."""
    header = {"alg": "HS256", "typ": "JWT", "kid": "k-RS256"}
    segments = [
        base64.urlsafe_b64encode(json.dumps(p).encode()).rstrip(b"=") for p in (header, claims())
    ]
    signing_input = b".".join(segments)
    import hashlib
    import hmac

    signature = hmac.new(
        pem(PRIVATE_KEYS["RS256"]).encode(), signing_input, hashlib.sha256
    ).digest()
    token = (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()
    reject(authenticator, bearer(token), "only verifies RS256")


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"iat": int(time.time()) + 3600}, "not valid yet"),
        ({"nbf": int(time.time()) + 3600}, "not valid yet"),
        ({"aud": "someone-else"}, "audience"),
        ({"iss": "mallory"}, "issuer"),
        ({"exp": None}, "'exp'"),
        ({"iat": None}, "'iat'"),
        ({"aud": None}, "'aud'"),
        ({"iss": None}, "'iss'"),
    ],
)
def test_bad_claims_are_refused(
    authenticator: Authenticator, overrides: dict[str, Any], reason: str
) -> None:
    token = jwt.encode(claims(**overrides), SECRET, algorithm="HS256", headers={"kid": "default"})
    reject(authenticator, bearer(token), reason)


def test_small_clock_skew_is_tolerated(authenticator: Authenticator) -> None:
    token = jwt.encode(
        claims(iat=int(time.time()) + 5), SECRET, algorithm="HS256", headers={"kid": "default"}
    )
    assert authenticator.authenticate(bearer(token)).subject == "test"


def test_a_cached_token_is_refused_once_it_expires(make_settings: Callable[..., Settings]) -> None:
    authenticator = Authenticator(make_settings(jwt_leeway_s=0))
    expires = int(time.time()) + 2
    token = jwt.encode(claims(exp=expires), SECRET, algorithm="HS256", headers={"kid": "default"})
    assert authenticator.authenticate(bearer(token)).subject == "test"
    assert authenticator.authenticate(bearer(token)).subject == "test"  # from the cache
    time.sleep(max(0.0, expires - time.time()) + 0.1)
    reject(authenticator, bearer(token), "expired")


def test_tampered_signature_is_refused(authenticator: Authenticator) -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "default"})
    head, _, signature = token.split(".")
    forged = (
        base64.urlsafe_b64encode(json.dumps(claims(scope="admin")).encode()).rstrip(b"=").decode()
    )
    reject(authenticator, bearer(f"{head}.{forged}.{signature}"), "signature")


def test_unknown_kid_and_missing_kid_are_refused(authenticator: Authenticator) -> None:
    reject(
        authenticator,
        bearer(jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "who"})),
        "unknown key id",
    )
    reject(authenticator, bearer(jwt.encode(claims(), SECRET, algorithm="HS256")), "no 'kid'")


def test_a_single_key_needs_no_kid(settings: Settings) -> None:
    only_secret = settings.model_copy(update={"api_keys": ()})
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert Authenticator(only_secret).authenticate(bearer(token)).subject == "test"


def test_garbage_and_wrong_scheme_are_refused(authenticator: Authenticator) -> None:
    reject(authenticator, bearer("not-a-jwt"), "not a well-formed JWT")
    reject(authenticator, {"Authorization": "Basic dXNlcjpwYXNz"}, "Bearer <token>")


def test_missing_credentials_get_a_plain_challenge(authenticator: Authenticator) -> None:
    error = reject(authenticator, {}, "authentication required")
    assert error.headers["WWW-Authenticate"] == 'Bearer realm="n8n-bridge"'


def test_api_keys_are_kept_hashed_and_checked(settings: Settings) -> None:
    assert API_KEY not in settings.model_dump_json()
    authenticator = Authenticator(settings)
    principal = authenticator.authenticate({"X-API-Key": API_KEY})
    assert principal.method == "api_key"
    assert principal.scopes == {"execute", "status"}
    reject(authenticator, {"X-API-Key": API_KEY + "x"}, "API key is not valid")


def test_a_hashed_api_key_is_accepted_as_configuration(
    make_settings: Callable[..., Settings],
) -> None:
    import hashlib

    digest = "sha256:" + hashlib.sha256(b"some-long-api-key-value").hexdigest()
    authenticator = Authenticator(make_settings(api_keys=[digest]))
    assert authenticator.authenticate({"X-API-Key": "some-long-api-key-value"}).method == "api_key"


def test_scopes_are_enforced_and_admin_grants_all() -> None:
    execute_only = Principal("t", frozenset({"execute"}), "jwt")
    authorize(execute_only, "execute")
    with pytest.raises(Forbidden):
        authorize(execute_only, "admin")
    with pytest.raises(Forbidden):
        authorize(execute_only, "status")
    authorize(Principal("t", frozenset({"admin"}), "jwt"), "status")


def test_a_public_key_of_the_wrong_type_stops_start_up(
    make_settings: Callable[..., Settings],
) -> None:
    key = {"kid": "k", "alg": "ES256", "public_key": pem(PRIVATE_KEYS["RS256"])}
    with pytest.raises(ConfigError, match="cannot verify ES256"):
        Authenticator(make_settings(jwt_keys=[key]))


def test_small_rsa_keys_are_refused(make_settings: Callable[..., Settings]) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ConfigError, match="2048 bits"):
        Authenticator(
            make_settings(jwt_keys=[{"kid": "k", "alg": "RS256", "public_key": pem(small)}])
        )


async def test_http_answers_401_and_403(make_client: ClientFactory, settings: Settings) -> None:
    client = await make_client()
    body = {"processing_type": "echo", "items": []}
    missing = await client.post("/api/v1/workflow/execute", json=body)
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="n8n-bridge"'
    assert (await missing.json())["error"]["code"] == "auth"

    status_only = mint_token(settings, ["status"], 60)
    forbidden = await client.post(
        "/api/v1/workflow/execute", json=body, headers=bearer(status_only)
    )
    assert forbidden.status == 403
    assert (await forbidden.json())["error"]["code"] == "forbidden"

    with_key = await client.post(
        "/api/v1/workflow/execute", json=body, headers={"X-API-Key": API_KEY}
    )
    assert with_key.status == 200
    assert (await client.get("/health")).status == 200  # public


# ---- the `workflows` claim: a token limited to workflow ids -----------------------------------


def test_a_workflows_claim_limits_the_principal(authenticator: Authenticator) -> None:
    token = jwt.encode(
        claims(workflows=["wf-1", "team-a-*"]),
        SECRET,
        algorithm="HS256",
        headers={"kid": "default"},
    )
    limit = authenticator.authenticate(bearer(token)).workflows
    assert limit is not None
    assert limit.allows("wf-1") and limit.allows("team-a-") and limit.allows("team-a-42")
    assert not limit.allows("wf-10") and not limit.allows("wf-") and not limit.allows("team-b-1")
    assert not limit.allows(None)  # a job or event without a workflow is nobody's
    assert limit.entries() == ["team-a-*", "wf-1"]


def test_without_the_claim_a_token_reaches_every_workflow(authenticator: Authenticator) -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "default"})
    assert authenticator.authenticate(bearer(token)).workflows is None
    assert authenticator.authenticate({"X-API-Key": API_KEY}).workflows is None


def test_an_empty_workflows_claim_reaches_no_workflow(authenticator: Authenticator) -> None:
    token = jwt.encode(claims(workflows=[]), SECRET, algorithm="HS256", headers={"kid": "default"})
    limit = authenticator.authenticate(bearer(token)).workflows
    assert limit is not None and not limit.allows("wf-1") and limit.entries() == []


@pytest.mark.parametrize(
    ("workflows", "reason"),
    [
        ("wf-1", "a list"),
        (None, "a list"),
        ({"wf-1": True}, "a list"),
        ([1], "a string"),
        ([["wf-1"]], "a string"),
        ([""], "empty"),
        (["*"], "every workflow"),
        (["a*b"], "only at the end"),
        (["a**"], "only at the end"),
        (["wf\n1"], "control"),
        (["wf\u20281"], "control"),
        (["x" * 257], "256"),
        ([f"wf-{n}" for n in range(101)], "100"),
    ],
    ids=[
        "string",
        "null",
        "object",
        "number",
        "nested",
        "empty-id",
        "star",
        "inner-star",
        "double-star",
        "newline",
        "line-separator",
        "too-long",
        "too-many",
    ],
)
def test_a_malformed_workflows_claim_is_refused(
    authenticator: Authenticator, workflows: Any, reason: str
) -> None:
    token = jwt.encode(
        {**claims(), "workflows": workflows}, SECRET, algorithm="HS256", headers={"kid": "default"}
    )
    error = reject(authenticator, bearer(token), "'workflows' claim")
    assert reason in error.message


@pytest.mark.parametrize("kid", ['k"1', "k\\1", "cl\u00e9", "k\u2028"])
def test_a_challenge_quotes_nothing_a_token_chose_verbatim(
    authenticator: Authenticator, kid: str
) -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": kid})
    reject(authenticator, bearer(token), "unknown key id")  # the challenge checked there


def _with(**scope_claims: Any) -> dict[str, Any]:
    """The usual claims, made now (a token made at collection time would expire before a long
    suite reaches it), the scope claims replaced (None stays: a JSON null)."""
    values = {k: v for k, v in claims().items() if k != "scope"}
    return {**values, **scope_claims}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (dict(scope=["admin"]), "'scope' must be a string"),
        (dict(scope=None), "'scope' must be a string"),
        (dict(scope={"admin": True}), "'scope' must be a string"),
        (dict(scope="execute\tadmin"), "not a scope name"),
        (dict(scope="execute\nadmin"), "not a scope name"),
        (dict(scope="execute\u00a0admin"), "not a scope name"),
        (dict(scope="execute  admin"), "not a scope name"),  # single spaces only
        (dict(scope=" admin"), "not a scope name"),
        (dict(scope="admin "), "not a scope name"),
        (dict(scope='ad"min'), "not a scope name"),  # RFC 6749 3.3 leaves out " and \\
        (dict(scopes="admin"), "'scopes' must be a list of strings"),
        (dict(scopes=None), "'scopes' must be a list of strings"),
        (dict(scopes=["execute", ["admin"]]), "'scopes' must be a list of strings"),
        (dict(scopes=["execute admin"]), "not a scope name"),
        (dict(scope=None, scopes=["admin"]), "'scope' must be a string"),
        (dict(scope="status", scopes=["admin"]), "name different scopes"),
    ],
)
def test_a_malformed_scope_claim_is_refused(
    authenticator: Authenticator, payload: dict[str, Any], reason: str
) -> None:
    """RFC 8693 4.2: `scope` is scope names separated by single spaces; `scopes` a list of
    names; no other shape, separator or disagreement is reinterpreted (RFC 8725)."""
    token = jwt.encode(_with(**payload), SECRET, algorithm="HS256", headers={"kid": "default"})
    error = reject(authenticator, bearer(token), "scope")
    assert reason in error.message


@pytest.mark.parametrize(
    ("payload", "granted"),
    [
        (dict(scope="execute status"), {"execute", "status"}),
        (dict(scopes=["status", "admin"]), {"status", "admin"}),
        (dict(scope="status admin", scopes=["admin", "status"]), {"status", "admin"}),
        (dict(scope=""), set()),
        (dict(), set()),
        # Names of other services' scopes (an identity provider's token) are ignored.
        (dict(scope="openid execute ADMIN administrator execute,admin"), {"execute"}),
    ],
)
def test_well_formed_scope_claims_grant_the_known_names(
    authenticator: Authenticator, payload: dict[str, Any], granted: set[str]
) -> None:
    token = jwt.encode(_with(**payload), SECRET, algorithm="HS256", headers={"kid": "default"})
    assert authenticator.authenticate(bearer(token)).scopes == granted


def test_a_limit_covers_only_what_lies_within_it() -> None:
    from bridge.workflow_limit import WorkflowLimit

    team = WorkflowLimit.parse(["team-a-*", "wf-1"])
    assert team.covers(WorkflowLimit.parse(["team-a-x-*", "team-a-1", "wf-1"]))
    assert team.covers(WorkflowLimit.parse([]))
    assert not team.covers(WorkflowLimit.parse(["team-*"]))
    assert not team.covers(WorkflowLimit.parse(["wf-1*"]))
    assert not team.covers(WorkflowLimit.parse(["wf-2"]))


def test_mint_token_writes_the_workflows_claim(settings: Settings) -> None:
    token = mint_token(settings, ["execute"], 60, workflows=["wf-1", "team-*"])
    assert jwt.decode(token, options={"verify_signature": False})["workflows"] == [
        "wf-1",
        "team-*",
    ]
    principal = Authenticator(settings).authenticate(bearer(token))
    assert principal.workflows is not None and principal.workflows.allows("team-9")
    unlimited = mint_token(settings, ["execute"], 60)
    assert "workflows" not in jwt.decode(unlimited, options={"verify_signature": False})
    with pytest.raises(ConfigError, match="--workflow"):
        mint_token(settings, ["execute"], 60, workflows=["a*b"])
