"""Settings from environment and config file, and the one-line errors."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from bridge.settings import ConfigError, hash_api_key, load_settings, prepare

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
