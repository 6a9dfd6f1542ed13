"""Authentication (JWT bearer tokens, API keys) and scope checks.

JWT: each key is pinned to one algorithm — HS256 with a secret of 32 bytes or more, or RS256, ES256,
EdDSA with a public key — and chosen by the token's `kid` (rotation: several keys at once). A token
must carry `exp`, `iat`, `aud` and `iss`; `none` and algorithm confusion are impossible because the
algorithm comes from the key, never from the token. API keys (`X-API-Key`) are kept as SHA-256
hashes and compared in constant time. Scopes: `execute`, `status`, `admin` (admin grants all).
A JWT may be limited to workflow ids by its `workflows` claim (`bridge.workflow_limit`); the
handlers filter what such a principal reads and writes, and the routes that act across
workflows refuse it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.utils import base64url_decode
from multidict import MultiMapping

from bridge.errors import AuthenticationFailed, Forbidden
from bridge.settings import API_KEY_HASH_PREFIX, SCOPES, ConfigError, JwtKey, Settings
from bridge.workflow_limit import CLAIM, WorkflowLimit

DEFAULT_KID = "default"
REALM = "n8n-bridge"
MIN_RSA_BITS = 2048
REQUIRED_CLAIMS = ["exp", "iat", "aud", "iss"]
# RFC 8725 §2.1/§3.11: no claim or header field is reinterpreted or ignored. Time claims are JSON
# numbers of seconds (not a string, a boolean, NaN or infinity: PyJWT would take "1795999999"
# and read `true` as 1), from 1970 to the year 9999.
TIME_CLAIMS = ("exp", "iat", "nbf")
MAX_TIME = 253402300800
# Header fields: the key is chosen by `kid` and configuration alone, so fields that carry or
# point at a key (`jwk`, `jku`, `x5u`, `x5c` — never fetched nor used), that change how the
# token is read (`crit`, `b64`, `zip`, a nested `cty`) or that make it a JWE are refused; the
# certificate thumbprints some identity providers add (`x5t`, Azure AD) only name a key, and
# are not used either.
HEADER_FIELDS = frozenset({"alg", "kid", "typ", "x5t", "x5t#S256"})
# The credential headers: a request carries at most one of each (a proxy that reads the last of
# two must never see another caller than the bridge, which would read the first).
CREDENTIAL_HEADERS = ("Authorization", "X-API-Key")
# `typ`, compared as a media type (RFC 7515 §4.1.9): a JWT, or an RFC 9068 access token.
TOKEN_TYPES = frozenset({"jwt", "at+jwt"})
# Verified tokens are remembered by their exact text until they expire, so a client that reuses
# its token (a static bearer token, a node reusing one per execution) pays for one verification.
TOKEN_CACHE_SIZE = 4096
# What a credential header may hold. aiohttp decodes a header with `surrogateescape`: a byte
# that is not ASCII arrives as a lone surrogate, which no encoder (PyJWT's, hashlib's) takes.
# A JWT is base64url and dots, an API key is configured as text: printable ASCII, both.
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*").fullmatch
# RFC 6750 3: what error_description may hold; a kid or scope name a token chose may hold more.
_NOT_IN_DESCRIPTION = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+").fullmatch  # RFC 6749 3.3


class NoSigningKey(ConfigError):
    """No HS256 secret to sign a token with: the bridge only verifies (API keys, public keys)."""


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    scopes: frozenset[str]
    method: Literal["jwt", "api_key"]
    workflows: WorkflowLimit | None = None  # None: every workflow

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


@dataclass(frozen=True, slots=True)
class _Verified:
    principal: Principal
    not_before: float
    expires: float


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str
    alg: str
    key: Any


def _load_key(spec: JwtKey) -> _Key:
    if spec.alg == "HS256":
        assert spec.secret is not None  # JwtKey guarantees it
        return _Key(spec.kid, "HS256", spec.secret.get_secret_value().encode())
    try:
        public = load_pem_public_key(spec.public_pem().encode())
    except (ValueError, OSError) as exc:
        raise ConfigError(
            f"BRIDGE_JWT_KEYS: key {spec.kid!r}: not a PEM public key ({exc})"
        ) from None
    expected = {
        "RS256": (rsa.RSAPublicKey,),
        "ES256": (ec.EllipticCurvePublicKey,),
        "EdDSA": (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey),
    }[spec.alg]
    if not isinstance(public, expected):
        raise ConfigError(
            f"BRIDGE_JWT_KEYS: key {spec.kid!r}: a {type(public).__name__} cannot verify {spec.alg}"
        )
    if isinstance(public, rsa.RSAPublicKey) and public.key_size < MIN_RSA_BITS:
        raise ConfigError(f"BRIDGE_JWT_KEYS: key {spec.kid!r}: RSA keys need {MIN_RSA_BITS} bits")
    if isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name != "secp256r1":
        raise ConfigError(f"BRIDGE_JWT_KEYS: key {spec.kid!r}: ES256 needs a P-256 key")
    return _Key(spec.kid, spec.alg, public)


def challenge(error: str | None = None, description: str | None = None) -> dict[str, str]:
    """The WWW-Authenticate header of a 401."""
    value = f'Bearer realm="{REALM}"'
    if error:
        shown = _NOT_IN_DESCRIPTION.sub("?", description or "")
        value += f', error="{error}", error_description="{shown}"'
    return {"WWW-Authenticate": value}


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        keys = [_load_key(spec) for spec in settings.jwt_keys]
        if settings.jwt_secret is not None:
            secret = settings.jwt_secret.get_secret_value().encode()
            keys.append(_Key(DEFAULT_KID, "HS256", secret))
        self._keys = {key.kid: key for key in keys}
        self._api_key_hashes = tuple(
            bytes.fromhex(h.removeprefix(API_KEY_HASH_PREFIX)) for h in settings.api_keys
        )
        self._api_key_scopes = frozenset(settings.api_key_scopes)
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._leeway = settings.jwt_leeway_s
        self._verified: OrderedDict[str, _Verified] = OrderedDict()

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        if isinstance(headers, MultiMapping):  # a request's headers (tests pass plain dicts)
            for name in CREDENTIAL_HEADERS:
                if len(headers.getall(name, ())) > 1:
                    raise self._invalid(f"the {name} header is sent twice; send it once")
        authorization = headers.get("Authorization")
        if authorization is not None:
            if not _PRINTABLE_ASCII(authorization):
                raise self._invalid(
                    "the Authorization header holds a byte that is not printable ASCII"
                )
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise self._invalid("the Authorization header must be 'Bearer <token>'")
            return self._verify_jwt(token.strip())
        api_key = headers.get("X-API-Key")
        if api_key is not None:
            if not _PRINTABLE_ASCII(api_key):
                raise self._invalid("the API key is not valid")
            return self._verify_api_key(api_key)
        raise AuthenticationFailed(
            "authentication required",
            description="send 'Authorization: Bearer <JWT>' or 'X-API-Key: <key>'",
            headers=challenge(),
        )

    def _invalid(self, message: str) -> AuthenticationFailed:
        return AuthenticationFailed(
            message,
            description="check the credentials of the Python Bridge API in n8n",
            headers=challenge("invalid_token", message),
        )

    def _verify_jwt(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None:
            now = time.time()
            if cached.not_before - self._leeway <= now < cached.expires + self._leeway:
                self._verified.move_to_end(token)
                return cached.principal
            del self._verified[token]
        claims = self._decode(token)
        try:
            scopes = _scopes_of(claims)
        except ValueError as exc:
            raise self._invalid(f"the token's scope claim is invalid: {exc}") from None
        principal = Principal(str(claims.get("sub", "")), scopes, "jwt", self._workflows_of(claims))
        self._verified[token] = _Verified(
            principal,
            not_before=max(float(claims["iat"]), float(claims.get("nbf", claims["iat"]))),
            expires=float(claims["exp"]),
        )
        if len(self._verified) > TOKEN_CACHE_SIZE:
            self._verified.popitem(last=False)
        return principal

    def _decode(self, token: str) -> dict[str, Any]:
        """Full verification with PyJWT: signature with the kid's pinned algorithm, then claims."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:  # not only DecodeError: a `kid` that is no string
            raise self._invalid(f"the token is not a well-formed JWT ({exc})") from None
        try:
            _no_member_twice(token)
        except ValueError as exc:
            raise self._invalid(str(exc)) from None
        self._check_header(header)
        key = self._select_key(header.get("kid"))
        if header.get("alg") != key.alg:
            raise self._invalid(f"key {key.kid!r} only verifies {key.alg} tokens")
        try:
            # Time claims are checked before PyJWT reads them (it converts them with int()):
            # a token with a wrong one is refused whatever its signature.
            _check_times(jwt.decode(token, options={"verify_signature": False}))
        except jwt.InvalidTokenError as exc:
            raise self._invalid(f"the token is not a well-formed JWT ({exc})") from None
        except ValueError as exc:
            raise self._invalid(str(exc)) from None
        try:
            return jwt.decode(
                token,
                key.key,
                algorithms=[key.alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise self._invalid("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise self._invalid("the token is not valid yet (iat or nbf in the future)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise self._invalid(f"the token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidAudienceError:
            raise self._invalid(f"the token's audience is not {self._audience!r}") from None
        except jwt.InvalidIssuerError:
            raise self._invalid(f"the token's issuer is not {self._issuer!r}") from None
        except jwt.InvalidSignatureError:
            raise self._invalid("the token's signature does not verify") from None
        except jwt.InvalidTokenError as exc:
            raise self._invalid(f"the token is invalid: {exc}") from None

    def _check_header(self, header: Mapping[str, Any]) -> None:
        unknown = sorted(str(name) for name in header if name not in HEADER_FIELDS)
        if unknown:
            raise self._invalid(
                f"the token's header field {unknown[0][:32]!r} is not accepted (accepted: "
                f"{', '.join(sorted(HEADER_FIELDS))})"
            )
        for name, value in header.items():
            if not isinstance(value, str):
                raise self._invalid(f"the token's header field {name!r} must be a string")
        kind = header.get("typ")
        if kind is not None and (
            not isinstance(kind, str)
            or kind.lower().removeprefix("application/") not in TOKEN_TYPES
        ):
            raise self._invalid("the token's typ must be JWT or at+jwt, when given")

    def _workflows_of(self, claims: Mapping[str, Any]) -> WorkflowLimit | None:
        if CLAIM not in claims:
            return None
        try:
            return WorkflowLimit.parse(claims[CLAIM])
        except ValueError as exc:
            raise self._invalid(f"the token's {CLAIM!r} claim is invalid: {exc}") from None

    def _select_key(self, kid: Any) -> _Key:
        if kid is None:
            if len(self._keys) == 1:
                return next(iter(self._keys.values()))
            if not self._keys:
                raise self._invalid("this bridge accepts no JWTs (no keys configured)")
            raise self._invalid("the token has no 'kid' and several keys are configured")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise self._invalid(f"unknown key id (kid) {str(kid)[:64]!r}")
        return key

    def _verify_api_key(self, presented: str) -> Principal:
        digest = hashlib.sha256(presented.encode()).digest()
        matched = False
        for known in self._api_key_hashes:  # every hash, always: time does not tell which matched
            matched |= hmac.compare_digest(digest, known)
        if not matched:
            raise self._invalid("the API key is not valid")
        return Principal("api-key:" + digest.hex()[:12], self._api_key_scopes, "api_key")


class _MemberTwice(Exception):
    """A JSON object of the token names a member twice."""


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, value in pairs:
        if name in found:
            raise _MemberTwice(f"the token names {name[:32]!r} twice in one JSON object")
        found[name] = value
    return found


def _no_member_twice(token: str) -> None:
    """ValueError when the JOSE header or the claims name a member twice, at any depth.

    PyJWT's JSON decoding keeps the last one; RFC 7519 §4 allows that or refusing, and RFC 8725
    asks for no reinterpretation: `{"exp":"x","exp":1}` is refused, whichever member a reader
    would take. Segments that are not base64url JSON are left to PyJWT, which says what is wrong.
    """
    for segment in token.split(".")[:2]:
        try:
            json.loads(base64url_decode(segment), object_pairs_hook=_unique)
        except _MemberTwice as exc:
            raise ValueError(str(exc)) from None
        except ValueError:  # binascii.Error and UnicodeDecodeError among them
            pass


def _check_times(claims: Mapping[str, Any]) -> None:
    """ValueError unless every time claim present is a JSON number within range."""
    for name in TIME_CLAIMS:
        if name not in claims:
            continue
        value = claims[name]
        if type(value) not in (int, float) or not 0 <= value <= MAX_TIME:  # NaN fails too
            raise ValueError(
                f"the token's {name!r} claim must be a JSON number of seconds since 1970 "
                f"(0 to {MAX_TIME}), not {type(value).__name__} {str(value)[:24]!r}"
            )


def _scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """The bridge's scopes a token grants; ValueError when its scope claims are malformed.

    `scope` is scope names separated by single spaces (RFC 8693 4.2), `scopes` a list of names;
    each name a scope-token of RFC 6749 3.3. No other shape or separator is reinterpreted, and
    both claims, when present, must name the same scopes (RFC 8725). Names the bridge does not
    know are ignored: a token of an identity provider may carry other services' scopes."""
    named: list[set[str]] = []
    if "scope" in claims:
        value = claims["scope"]
        if not isinstance(value, str):
            raise ValueError("'scope' must be a string of scope names separated by single spaces")
        named.append(set(value.split(" ")) if value else set())
    if "scopes" in claims:
        value = claims["scopes"]
        if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
            raise ValueError("'scopes' must be a list of strings")
        named.append(set(value))
    for name in set().union(*named):
        if not _SCOPE_TOKEN(name):
            raise ValueError(f"{name[:40]!r} is not a scope name (RFC 6749 3.3)")
    if len(named) == 2 and named[0] != named[1]:
        raise ValueError("'scope' and 'scopes' name different scopes")
    return frozenset(set().union(*named) & set(SCOPES))


def authorize(principal: Principal, scope: str) -> None:
    if not principal.allows(scope):
        raise Forbidden(
            f"this credential lacks the {scope!r} scope",
            description=f"granted: {', '.join(sorted(principal.scopes)) or 'none'}",
        )


def mint_token(
    settings: Settings,
    scopes: list[str],
    ttl_s: float,
    subject: str = "n8n-bridge-cli",
    workflows: list[str] | None = None,
) -> str:
    """A JWT signed with BRIDGE_JWT_SECRET, else with the first HS256 key of BRIDGE_JWT_KEYS;
    with `workflows`, limited to those workflow ids (a trailing `*`: a prefix)."""
    if settings.jwt_secret is not None:
        kid, secret = DEFAULT_KID, settings.jwt_secret.get_secret_value()
    else:
        hmac_keys = [key for key in settings.jwt_keys if key.alg == "HS256" and key.secret]
        if not hmac_keys:
            raise NoSigningKey(
                "BRIDGE_JWT_SECRET: no HS256 secret to sign with (public keys only verify)"
            )
        kid, secret = hmac_keys[0].kid, hmac_keys[0].secret.get_secret_value()  # type: ignore[union-attr]
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ConfigError(
            f"--scope: unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}"
        )
    if workflows is not None:
        try:
            WorkflowLimit.parse(workflows)
        except ValueError as exc:
            raise ConfigError(f"--workflow: {exc}") from None
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": subject,
        "iat": now,
        "exp": now + int(ttl_s),
        "jti": secrets.token_hex(8),
        "scope": " ".join(scopes),
    }
    if workflows is not None:
        claims[CLAIM] = workflows
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid})
