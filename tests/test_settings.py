"""Settings from environment and config file, and the one-line errors."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from bridge.settings import (
    FIELD_NAMES,
    TOOLING_NAMES,
    ConfigError,
    env_name,
    hash_api_key,
    load_settings,
    prepare,
)

ROOT = Path(__file__).resolve().parent.parent

SECRET = "x" * 32


def test_defaults_are_the_embedded_mode() -> None:
    settings = load_settings(environ={})
    assert (settings.host, settings.port, settings.redis_url) == ("127.0.0.1", 8080, None)
    assert settings.data_dir == Path("data")
    assert settings.max_body_bytes == 16 * 1024 * 1024
    assert settings.env == "dev"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text('port = 9000\nhost = "0.0.0.0"\nprocessors = ["a.b"]\n')
    settings = load_settings(config, {"BRIDGE_PORT": "9100", "BRIDGE_PROCESSORS": "x, y.z"})
    assert (settings.host, settings.port, settings.processors) == ("0.0.0.0", 9100, ("x", "y.z"))


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"BRIDGE_PORT": "70000"}, "BRIDGE_PORT: Input should be less than or equal to 65535"),
        ({"BRIDGE_COLOR": "red"}, "BRIDGE_COLOR: Input should be 'blue' or 'green' (got 'red')"),
        (
            {"BRIDGE_JWT_SECRET": "short"},
            "BRIDGE_JWT_SECRET: an HS256 secret needs at least 32 bytes",
        ),
        ({"BRIDGE_API_KEYS": "tiny"}, "BRIDGE_API_KEYS: an API key needs at least 16 characters"),
        ({"BRIDGE_CALLBACK_SECRET": "nope"}, "BRIDGE_CALLBACK_SECRET: expected 'whsec_'"),
        ({"BRIDGE_JWT_KEYS": "[{"}, "BRIDGE_JWT_KEYS: expected a JSON list"),
        ({"BRIDGE_JWT_KEYS": '[{"kid": "a", "alg": "none"}]'}, "BRIDGE_JWT_KEYS: Input should be"),
        (
            {"BRIDGE_JWT_KEYS": '[{"kid": "a", "alg": "HS256", "public_key": "x"}]'},
            "BRIDGE_JWT_KEYS: key 'a': HS256 takes `secret` only",
        ),
        ({"BRIDGE_API_KEY_SCOPES": "execute,root"}, "BRIDGE_API_KEY_SCOPES: Input should be"),
        ({"BRIDGE_PORTT": "1"}, "BRIDGE_PORTT: unknown setting"),
        ({"BRIDGE_REDIS_URL": "localhost:6379"}, "BRIDGE_REDIS_URL: expected redis://"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_secrets_never_appear_in_errors_or_display() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"BRIDGE_JWT_SECRET": "secret-but-short"})
    assert "secret-but-short" not in str(caught.value)
    shown = load_settings(
        environ={"BRIDGE_JWT_SECRET": SECRET, "BRIDGE_API_KEYS": "k" * 20}
    ).masked()
    assert SECRET not in str(shown) and "k" * 20 not in str(shown)


def test_a_bad_file_value_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text("port = 'x'\n")
    with pytest.raises(ConfigError, match=r"^port in .*bridge.toml: "):
        load_settings(config, {})
    config.write_text("port = \n")
    with pytest.raises(ConfigError, match=r"^--config .*bridge.toml: "):
        load_settings(config, {})


def test_api_keys_are_hashed_on_load() -> None:
    settings = load_settings(
        environ={"BRIDGE_API_KEYS": "first-key-0123456789, " + hash_api_key("z" * 16)}
    )
    assert settings.api_keys == (hash_api_key("first-key-0123456789"), hash_api_key("z" * 16))


@pytest.mark.parametrize(
    "key", ["schlüssel-0123456789", "key with space 0123", "tab\tkey-0123456789"]
)
def test_an_api_key_no_client_could_send_stops_start_up(key: str) -> None:
    """X-API-Key must be printable ASCII without spaces: any other key could never match."""
    with pytest.raises(ConfigError, match=r"^BRIDGE_API_KEYS: .*printable ASCII") as refused:
        load_settings(environ={"BRIDGE_API_KEYS": key})
    assert key not in str(refused.value)


def test_callback_secret_in_standard_webhooks_format() -> None:
    key = "whsec_" + base64.b64encode(b"k" * 32).decode()
    assert load_settings(environ={"BRIDGE_CALLBACK_SECRET": key}).callback_secret is not None


def test_kid_default_is_reserved_for_the_jwt_secret() -> None:
    keys = '[{"kid": "default", "alg": "HS256", "secret": "' + "y" * 32 + '"}]'
    with pytest.raises(ConfigError, match="BRIDGE_JWT_KEYS: kid 'default'"):
        load_settings(environ={"BRIDGE_JWT_SECRET": SECRET, "BRIDGE_JWT_KEYS": keys})


def test_prepare_needs_auth_in_production_and_generates_it_in_dev(tmp_path: Path) -> None:
    production = load_settings(
        environ={"BRIDGE_ENV": "production", "BRIDGE_DATA_DIR": str(tmp_path)}
    )
    with pytest.raises(ConfigError, match="production needs authentication"):
        prepare(production)
    dev = load_settings(environ={"BRIDGE_DATA_DIR": str(tmp_path)})
    ready, notice = prepare(dev)
    assert ready.jwt_secret is not None and len(ready.jwt_secret.get_secret_value()) >= 32
    assert notice is not None and "generated" in notice
    again, notice = prepare(dev)
    assert again.jwt_secret == ready.jwt_secret
    assert notice is not None and "using" in notice
    configured = load_settings(environ={"BRIDGE_ENV": "production", "BRIDGE_API_KEYS": "k" * 16})
    assert prepare(configured) == (configured, None)


@pytest.mark.parametrize("name", [env_name(field) for field in FIELD_NAMES])
@pytest.mark.parametrize("blank", ["", "  ", ",", " , ,"])
def test_an_empty_variable_means_unset(name: str, blank: str) -> None:
    """Compose passes `${VAR:-}` as an empty string: that is the default, never an error; a
    list of nothing but separators is no value either (`,` emptied the deny list)."""
    assert load_settings(environ={name: blank}) == load_settings(environ={})


def test_an_empty_variable_leaves_the_file_value(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text('port = 9000\ncallback_secret = ""\n')
    settings = load_settings(config, {"BRIDGE_PORT": "", "BRIDGE_CALLBACK_SECRET": ""})
    assert (settings.port, settings.callback_secret) == (9000, None)


def test_an_empty_deny_list_is_the_default_and_only_the_file_can_empty_it(tmp_path: Path) -> None:
    default = load_settings(environ={}).outbound_deny
    assert default and load_settings(environ={"BRIDGE_OUTBOUND_DENY": ""}).outbound_deny == default
    config = tmp_path / "bridge.toml"
    config.write_text("outbound_deny = []\n")
    assert load_settings(config, {}).outbound_deny == ()


def test_an_empty_unknown_name_is_still_a_typo(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^BRIDGE_PORTT: unknown setting"):
        load_settings(environ={"BRIDGE_PORTT": ""})
    config = tmp_path / "bridge.toml"
    config.write_text('portt = ""\n')
    with pytest.raises(ConfigError, match=r"^portt in .*bridge\.toml: Extra inputs"):
        load_settings(config, {})


# Where the project itself names variables: scripts, compose files, Dockerfiles, docs, examples,
# CI. tests/ is left out: it spells names wrong on purpose (BRIDGE_PORTT).
NAME_SOURCES = ("scripts", "deploy", "docs", "examples", "bench", "haproxy", "workflows", ".ci")
NAME_FILES = ("README.md", "n8n-nodes/README.md", "Dockerfile", ".dockerignore")
# A whole name: not the prefix of a wildcard (`BRIDGE_SMTP_*`) nor the bare prefix.
BRIDGE_NAME = re.compile(r"\bBRIDGE_[A-Z0-9_]*[A-Z0-9]\b(?![_*])")


def names_the_project_uses() -> dict[str, str]:
    """Every `BRIDGE_*` name in the project's own files, with one file that names it."""
    files = [ROOT / name for name in NAME_FILES] + sorted(ROOT.glob("docker-compose*.yml"))
    for folder in NAME_SOURCES:
        files += [p for p in sorted((ROOT / folder).rglob("*")) if p.is_file()]
    found: dict[str, str] = {}
    for path in files:
        if any(part in {"node_modules", "__pycache__", "results"} for part in path.parts):
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, FileNotFoundError):
            continue
        for name in BRIDGE_NAME.findall(text):
            found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def test_the_name_scan_finds_the_tooling_names() -> None:
    found = names_the_project_uses()
    assert {"BRIDGE_ADMIN_API_KEY", "BRIDGE_VERSION", "BRIDGE_PUBLIC_PORT"} <= set(found)
    assert "BRIDGE_JWT_SECRET" in found and "BRIDGE_SMTP" not in found


def test_every_bridge_name_the_project_uses_is_accepted() -> None:
    """A name the project's scripts, compose files or docs use is a setting or declared as the
    tooling's (TOOLING_NAMES): exported in the same shell, it never stops the daemon."""
    settings = {env_name(field) for field in FIELD_NAMES}
    undeclared = {
        name: where
        for name, where in names_the_project_uses().items()
        if name not in settings and name not in TOOLING_NAMES
    }
    assert not undeclared, f"add to bridge.settings.TOOLING_NAMES, or fix the name: {undeclared}"
    assert set(names_the_project_uses()) >= TOOLING_NAMES  # no name declared that none uses
    tooling = dict.fromkeys(TOOLING_NAMES, "anything")
    assert load_settings(environ=tooling) == load_settings(environ={})
    documented = (ROOT / "docs" / "configuration.md").read_text()
    assert all(f"`{name}`" in documented for name in TOOLING_NAMES)


@pytest.mark.parametrize(
    "typo",
    ["BRIDGE_ADMIN_TOKENS", "BRIDGE_JWT_SECRETS", "BRIDGE_CALBACK_SECRET", "BRIDGE_VERSIONS"],
)
def test_a_typo_of_a_name_still_stops_start_up(typo: str) -> None:
    with pytest.raises(ConfigError, match=f"^{typo}: unknown setting"):
        load_settings(environ={typo: "x"})


@pytest.mark.parametrize("name", ["bridge_env", "Bridge_Api_Keys", "bridge_portt"])
def test_a_setting_in_lower_case_stops_start_up(name: str) -> None:
    """Not read (names are upper case), and not silently ignored either: `bridge_env=production`
    started a dev bridge."""
    with pytest.raises(ConfigError, match=f"^{name}: settings are named in upper case"):
        load_settings(environ={name: "production"})


@pytest.mark.parametrize("key", ["jwt_secrett", "admin_api_key", "smtp_pasword"])
def test_an_unknown_key_of_the_file_is_named_without_its_value(tmp_path: Path, key: str) -> None:
    """A misspelt key may hold a secret: the error names it and shows no value."""
    config = tmp_path / "bridge.toml"
    config.write_text(f'{key} = "LEAKYSECRET-0123456789"\n')
    with pytest.raises(ConfigError) as refused:
        load_settings(config, {})
    assert key in str(refused.value) and "LEAKYSECRET" not in str(refused.value)


@pytest.mark.parametrize(
    "environ",
    [
        {"BRIDGE_QUEUES": '[{"name": "q", "password": "LEAKYSECRET-1"}]'},
        {"BRIDGE_ROUTES": '[{"queue": "default", "secret": "LEAKYSECRET-1"}]'},
    ],
)
def test_an_unknown_key_inside_a_setting_is_named_without_its_value(
    environ: dict[str, str],
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(environ=environ)
    assert "Extra inputs are not permitted" in str(refused.value)
    assert "LEAKYSECRET" not in str(refused.value)
