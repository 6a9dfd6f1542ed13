"""Settings: `BRIDGE_*` environment over an optional TOML config file over defaults.

One frozen, validated `Settings` object is built at start-up and passed down explicitly. A bad value
stops start-up with one line naming the variable (`ConfigError`).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import secrets
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from redis.connection import parse_url as parse_redis_url

from bridge.datadir import FILE_MODE, private_dir, private_file
from bridge.outbound import DEFAULT_DENY, Policy, parse_entry
from bridge.redact import MASK, redact_url
from bridge.router import QueueConfig, RouteRule, check_config

ENV_PREFIX = "BRIDGE_"
Scope = Literal["execute", "status", "admin"]
SCOPES: tuple[Scope, ...] = ("execute", "status", "admin")
MIN_HMAC_BYTES = 32
MIN_API_KEY_CHARS = 16
API_KEY_HASH_PREFIX = "sha256:"
DEV_SECRET_FILE = "jwt_secret"
SECRET_FIELDS = frozenset(
    {"jwt_secret", "jwt_keys", "api_keys", "callback_secret", "smtp_password"}
)


class ConfigError(Exception):
    """A setting is missing or wrong; the message is one line naming the variable."""


def os_reason(exc: OSError) -> str:
    """What the OS said, as the end of a ConfigError line: "address already in use". The
    errno's own words: uvloop puts its whole message in `strerror`; a resolver error
    (negative errno) has only its `strerror`."""
    text = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


class JwtKey(BaseModel):
    """One verification key, pinned to exactly one algorithm (never `none`, never mixed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kid: str = Field(min_length=1, max_length=128)
    alg: Literal["HS256", "RS256", "ES256", "EdDSA"]
    secret: SecretStr | None = None
    public_key: str | None = None
    public_key_file: Path | None = None

    @model_validator(mode="after")
    def _key_matches_alg(self) -> JwtKey:
        if self.alg == "HS256":
            if self.secret is None or self.public_key or self.public_key_file:
                raise ValueError(f"key {self.kid!r}: HS256 takes `secret` only")
            _check_hmac_secret(self.secret.get_secret_value())
        elif self.secret is not None or (self.public_key is None) == (self.public_key_file is None):
            raise ValueError(
                f"key {self.kid!r}: {self.alg} takes exactly one of `public_key` (PEM) "
                "or `public_key_file`"
            )
        return self

    def public_pem(self) -> str:
        if self.public_key_file is not None:
            return self.public_key_file.read_text()
        assert self.public_key is not None  # guaranteed by _key_matches_alg
        return self.public_key


def _check_hmac_secret(value: str) -> None:
    if len(value.encode()) < MIN_HMAC_BYTES:
        raise ValueError(f"an HS256 secret needs at least {MIN_HMAC_BYTES} bytes")


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def dns_server(entry: str) -> tuple[str, int]:
    """`ADDRESS[:PORT]` (an IPv6 address with a port in brackets) as (address, port)."""
    host, port = entry, "53"
    if entry.startswith("["):
        host, _, port = entry[1:].partition("]:")
    elif entry.count(":") == 1:
        host, _, port = entry.partition(":")
    try:
        address = ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ValueError(f"{entry!r} is not a DNS server's IP address[:port]") from None
    if not 0 < number < 65536:
        raise ValueError(f"{entry!r} is not a DNS server's IP address[:port]")
    return str(address), number


def hash_api_key(key: str) -> str:
    return API_KEY_HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    env: Literal["dev", "production"] = "dev"
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    data_dir: Path = Path("data")
    redis_url: str | None = None
    redis_claim_idle_s: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="a job whose instance stopped renewing it for this long is taken over",
    )
    color: Literal["blue", "green"] | None = None

    log_format: Literal["json", "console"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    access_log: bool = True

    jwt_secret: SecretStr | None = None
    jwt_keys: tuple[JwtKey, ...] = ()
    jwt_audience: str = "n8n-bridge"
    jwt_issuer: str = "n8n-bridge"
    jwt_leeway_s: int = Field(30, ge=0, le=300)
    api_keys: tuple[str, ...] = Field(default=(), description="sha256 hashes of accepted API keys")
    api_key_scopes: tuple[Scope, ...] = ("execute", "status")
    callback_secret: SecretStr | None = None
    outbound_allow: tuple[str, ...] = Field(
        default=(), description="networks and host names requests may go to (empty: any)"
    )
    outbound_deny: tuple[str, ...] = Field(
        default=DEFAULT_DENY, description="networks and host names requests never go to"
    )
    outbound_policy: Policy = Field(
        "private-allowed",
        description="private-denied: addresses that are not globally reachable (loopback, "
        "private, special-purpose) and names local by definition (localhost, .local, "
        ".internal, one label, ...) are refused unless BRIDGE_OUTBOUND_ALLOW lists them (the "
        "default with BRIDGE_ENV=production); "
        "private-allowed: they may be called (the default in dev)",
    )
    outbound_max_response_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="the most of a remote answer the bridge reads; more is an error",
    )

    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    # Slow clients: each bound closes the connection or answers 408
    header_timeout_s: float = Field(
        10.0, gt=0, le=300, description="a request head must arrive whole within this time"
    )
    body_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="a request body must arrive whole within this time"
    )
    keepalive_timeout_s: float = Field(
        75.0, gt=0, le=3600, description="an idle connection is closed after this time"
    )
    max_binary_bytes: int = Field(16 * 1024 * 1024, ge=1)
    max_items: int = Field(100_000, ge=1)
    processors: tuple[str, ...] = ()
    templates_dir: Path | None = None
    template_budget_chars: int = Field(
        32_000_000,
        ge=10_000_000,
        description="characters the templates of one request (or job) may build in all, "
        "transient text and every item's output included",
    )

    smtp_host: str | None = None
    smtp_port: int | None = Field(None, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: Literal["starttls", "tls", "none"] = "starttls"
    smtp_validate_certs: bool = True
    smtp_ca_file: Path | None = None
    smtp_timeout_s: float = Field(30.0, gt=0)
    smtp_from: str | None = None
    smtp_connections: int = Field(4, ge=1, le=100)
    smtp_rate_per_s: float = Field(0.0, ge=0, description="0: no limit")
    email_dns_servers: tuple[str, ...] = Field(
        (), description="DNS servers (ADDRESS[:PORT]) of `validation`'s deliverability checks"
    )
    email_dns_timeout_s: float = Field(
        5.0, gt=0, le=60, description="the most one deliverability DNS query may take"
    )
    smtp_max_recipients: int = Field(
        100, ge=1, le=10_000, description="recipients (to, cc and bcc) of one message at most"
    )

    sync_timeout_s: float = Field(300.0, gt=0)
    thread_workers: int | None = Field(None, ge=1, le=512)
    max_abandoned_threads: int = Field(
        16,
        ge=0,
        le=1024,
        description="threads still running past their deadline that are replaced in the pool "
        "(0: never; a runaway call then keeps its thread)",
    )
    cpu_executor: Literal["process", "thread"] = "process"
    process_workers: int | None = Field(None, ge=1, le=256)

    job_retention_s: int = Field(7 * 24 * 3600, ge=60)
    sync_job_retention_s: int = Field(24 * 3600, ge=60)
    shutdown_timeout_s: float = Field(30.0, gt=0)
    # Background jobs
    queues: tuple[QueueConfig, ...] = Field((), description="JSON list; `default` is implied")
    routes: tuple[RouteRule, ...] = Field((), description="JSON list, first match wins")
    queue_aging_s: float = Field(30.0, gt=0, description="waiting this long raises one priority")
    job_timeout_s: float = Field(3600.0, gt=0, description="background jobs' default bound")
    job_max_attempts: int = Field(3, ge=1, le=100, description="runs of a retryable failure")
    retry_base_s: float = Field(1.0, gt=0)
    retry_max_s: float = Field(300.0, gt=0)
    # Callbacks and event webhooks
    callback_timeout_s: float = Field(10.0, gt=0)
    callback_max_attempts: int = Field(12, ge=1, le=100)
    callback_retry_max_s: float = Field(300.0, gt=0)
    callback_concurrency: int = Field(64, ge=1, le=4096)
    breaker_failures: int = Field(
        5, ge=1, description="failures in a row that open a host's breaker"
    )
    breaker_reset_s: float = Field(30.0, gt=0, description="an open breaker tries again after")
    # n8n, for the n8n_trigger processor
    n8n_url: str | None = Field(None, description="n8n's base URL, for relative webhook paths")
    n8n_timeout_s: float = Field(30.0, gt=0)
    n8n_max_attempts: int = Field(3, ge=1, le=20)
    events_retention_s: int = Field(7 * 24 * 3600, ge=60)
    events_max: int = Field(1_000_000, ge=1000)
    # What events may cost: each is kept for days and handed to every stream
    max_report_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="the most a callback report's `data`, and its `error`, may each take as JSON",
    )
    sse_buffer_bytes: int = Field(
        1024 * 1024,
        ge=64 * 1024,
        le=64 * 1024 * 1024,
        description="the most of events waiting for one slow event stream; past it the stream "
        "ends and its client resumes with Last-Event-ID",
    )
    sse_max_streams: int = Field(
        100, ge=1, le=10_000, description="event streams open at once, on this process"
    )
    dead_letter_retention_s: int = Field(30 * 24 * 3600, ge=60)
    console: bool = Field(True, description="serve the operator console at /admin/ui/")
    console_session_ttl_s: int = Field(
        3600,
        ge=60,
        le=12 * 3600,
        description="how long a console sign-in lasts (never past its token's expiry)",
    )

    @model_validator(mode="before")
    @classmethod
    def _policy_follows_env(cls, values: Any) -> Any:
        """Production refuses private destinations unless told otherwise."""
        if isinstance(values, dict) and values.get("outbound_policy") is None:
            production = values.get("env") == "production"
            policy = "private-denied" if production else "private-allowed"
            return {**values, "outbound_policy": policy}
        return values

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("processors", "api_key_scopes", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("outbound_allow", "outbound_deny", mode="before")
    @classmethod
    def _outbound(cls, value: Any) -> Any:
        entries = _split_list(value) or ()
        for entry in entries:
            parse_entry(str(entry))  # ValueError names the bad entry
        return entries

    @field_validator("email_dns_servers", mode="before")
    @classmethod
    def _dns_servers(cls, value: Any) -> Any:
        entries = _split_list(value) or ()
        for entry in entries:
            dns_server(str(entry))  # ValueError names the bad entry
        return entries

    @field_validator("jwt_keys", "queues", "routes", mode="before")
    @classmethod
    def _json_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"expected a JSON list ({exc})") from None
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _hmac_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _check_hmac_secret(value.get_secret_value())
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _hash_api_keys(cls, value: Any) -> Any:
        """Keep only hashes: a plain key is hashed here and never stored."""
        hashed = []
        for key in _split_list(value) or ():
            if key.startswith(API_KEY_HASH_PREFIX):
                digest = key.removeprefix(API_KEY_HASH_PREFIX)
                if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                    raise ValueError("a hashed key is 'sha256:' and 64 lowercase hex digits")
                hashed.append(key)
            elif len(key) < MIN_API_KEY_CHARS:
                raise ValueError(f"an API key needs at least {MIN_API_KEY_CHARS} characters")
            elif not all("\x21" <= c <= "\x7e" for c in key):  # what X-API-Key can carry
                raise ValueError("an API key is printable ASCII without spaces")
            else:
                hashed.append(hash_api_key(key))
        return tuple(hashed)

    @field_validator("callback_secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            raw = value.get_secret_value()
            try:
                key = base64.b64decode(raw.removeprefix("whsec_"), validate=True)
            except ValueError:
                key = b""
            if not raw.startswith("whsec_") or len(key) < 24:
                raise ValueError("expected 'whsec_' followed by a base64 key of 24 bytes or more")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            valid = urlsplit(value).scheme in ("redis", "rediss", "unix")
            parse_redis_url(value)  # type: ignore[no-untyped-call]
        except ValueError:  # its text may quote part of the URL: a password, even
            valid = False
        if not valid:
            raise ValueError(
                "expected redis://[user:password@]host:port/db, rediss://… (TLS) or unix://path"
            )
        return value

    @field_validator("n8n_url")
    @classmethod
    def _n8n_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            parts = urlsplit(value)
            # Webhook paths are joined under it: a query or a fragment would be lost in the join.
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
            valid = valid and not (parts.query or parts.fragment or value[-1] in "?#")
        except ValueError:
            valid = False
        if not valid:
            raise ValueError("expected http(s)://host[:port][/path], without a query or fragment")
        return value

    @field_validator("jwt_keys")
    @classmethod
    def _unique_kids(cls, keys: tuple[JwtKey, ...], info: ValidationInfo) -> tuple[JwtKey, ...]:
        kids = [key.kid for key in keys]
        if len(kids) != len(set(kids)):
            raise ValueError("key ids (kid) must be unique")
        if info.data.get("jwt_secret") is not None and "default" in kids:
            raise ValueError("kid 'default' is BRIDGE_JWT_SECRET's; give the key another kid")
        return keys

    @model_validator(mode="after")
    def _queues_fit(self) -> Settings:
        try:
            check_config(self.queues, self.routes)
        except ValueError as exc:
            raise ValueError(f"BRIDGE_QUEUES / BRIDGE_ROUTES: {exc}") from None
        return self

    @property
    def auth_configured(self) -> bool:
        return bool(self.jwt_secret or self.jwt_keys or self.api_keys)

    def masked(self) -> dict[str, Any]:
        """The effective settings for display: every secret masked (pydantic's SecretStr),
        API keys shown by the start of their hash, every URL without userinfo and query."""
        data = self.model_dump(mode="json")
        data["api_keys"] = [key[:15] + "…" for key in self.api_keys]
        masked: dict[str, Any] = _without_credentials(data)
        return masked


def _without_credentials(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_credentials(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_credentials(item) for item in value]
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    return value


def _shown_value(text: str) -> str | None:
    """A bad value as an error may quote it: a URL without its credentials, or None where a
    URL is too broken to tell where its credentials end."""
    if "://" not in text and "@" not in text:
        return text[:60]
    shown = redact_url(text)
    return shown[:60] if "@" not in shown.replace(f"{MASK}@", "") else None


FIELD_NAMES = tuple(Settings.model_fields)
# BRIDGE_* names of the project's tooling, not of the daemon: exported in the same shell as the
# daemon's settings, they must not stop it; any other unknown BRIDGE_* name is a typo and does.
# tests/test_settings.py finds every name the scripts, compose files and docs use in this list
# or among the settings, and each name of this list used there.
TOOLING_NAMES = frozenset(
    {
        "BRIDGE_ADMIN_API_KEY",  # scripts/blue-green-switch.sh: its admin credential...
        "BRIDGE_ADMIN_TOKEN",  # ... or a JWT with the admin scope
        "BRIDGE_VERSION",  # docker-compose.{blue,green}.yml: the image's tag
        "BRIDGE_PUBLIC_PORT",  # docker-compose.shared.yml: HAProxy's port on the host
        "BRIDGE_UPDATE_SCREENSHOTS",  # tests/browser.py: the console's pictures into docs/images
    }
)


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def load_settings(
    config_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build settings from defaults, then the TOML file, then `BRIDGE_*` variables.

    An empty (or blank, or only commas) value is no value: the setting keeps what a lower layer
    gave it, as when it is not set at all. Compose passes an unset `${VAR:-}` on as "".
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if config_file is not None:
        try:
            file_values = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"--config {config_file}: {exc}") from None
        for key, value in file_values.items():
            if key in FIELD_NAMES and _blank(value):
                continue
            values[key] = value
            origin[key] = f"{key} in {config_file}"
    known = {env_name(field): field for field in FIELD_NAMES}
    for name, value in environ.items():
        if name in known:
            if _blank(value):
                continue
            values[known[name]] = value
            origin[known[name]] = name
        elif name.startswith(ENV_PREFIX) and name not in TOOLING_NAMES:
            raise ConfigError(f"{name}: unknown setting (known: {', '.join(sorted(known))})")
        elif name.upper().startswith(ENV_PREFIX) and name != name.upper():
            raise ConfigError(f"{name}: settings are named in upper case ({name.upper()})")
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, origin)) from None


def _blank(value: Any) -> bool:
    """No value: empty, blanks, or a list of nothing but separators (`,` is no deny list)."""
    return isinstance(value, str) and not value.replace(",", "").strip()


def _one_line(exc: ValidationError, origin: dict[str, str]) -> str:
    first = exc.errors()[0]
    loc = first["loc"]
    field = str(loc[0]) if loc else ""
    where = origin.get(field) or (env_name(field) if field else "settings")
    message = first["msg"].removeprefix("Value error, ")
    extra = f" (at {'.'.join(str(p) for p in loc[1:])})" if len(loc) > 1 else ""
    # An unknown key, at the top or within a setting, may be a misspelt secret: never shown.
    shows_input = field not in SECRET_FIELDS and first["type"] != "extra_forbidden"
    if shows_input and isinstance(first.get("input"), str | int | float):
        shown = _shown_value(str(first["input"]))
        if shown is not None:
            extra += f" (got {shown!r})"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {message}{extra}{more}"


def prepare(settings: Settings) -> tuple[Settings, str | None]:
    """Apply the mode's rules: production needs auth; dev gets a generated JWT secret.

    Returns the settings to run with and a notice to log, if any.
    """
    if settings.auth_configured:
        return settings, None
    if settings.env == "production":
        raise ConfigError(
            "BRIDGE_ENV=production needs authentication: set BRIDGE_JWT_SECRET, "
            "BRIDGE_JWT_KEYS or BRIDGE_API_KEYS"
        )
    path = settings.data_dir / DEV_SECRET_FILE
    try:
        created = not path.exists()  # may be refused too: a folder it may not search
        if created:
            # Any warning about a looser existing directory is the database's to give.
            private_dir(settings.data_dir)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
        else:
            private_file(path)  # one an older version left readable to others
        secret = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"BRIDGE_DATA_DIR: cannot keep the dev JWT secret in {path}: {os_reason(exc)}"
        ) from None
    notice = f"dev mode: {'generated' if created else 'using'} the JWT secret in {path}"
    return settings.model_copy(update={"jwt_secret": SecretStr(secret)}), notice
