"""Fixtures: settings, a running app on each backend (a real SQLite file; a real Redis), tokens."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bridge.app import create_app
from bridge.auth import mint_token
from bridge.keys import RUNNER
from bridge.settings import Settings
from tests.canary import canary, raw_server  # noqa: F401 (fixtures for every test module)
from tests.redis_server import redis_server, redis_url  # noqa: F401 (fixtures for every module)
from tests.webhook_target import target  # noqa: F401 (a fixture for every test module)

SECRET = "a-test-secret-that-is-long-enough-0123456789"
API_KEY = "test-api-key-0123456789"
PLUGINS = "tests.plugins.sample"

ClientFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture(params=["embedded", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    """Every test that builds settings runs on both backends: the same behaviour is expected."""
    return str(request.param)


@pytest.fixture
def make_settings(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> Callable[..., Settings]:
    redis = request.getfixturevalue("redis_url") if backend == "redis" else None

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "redis_url": redis,
            "jwt_secret": SECRET,
            "api_keys": [API_KEY],
            "processors": [PLUGINS],
            "cpu_executor": "thread",
            "access_log": False,
        }
        values.update(overrides)
        return Settings.model_validate(values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def make_client(aiohttp_client: Any, make_settings: Callable[..., Settings]) -> ClientFactory:
    async def make(**overrides: Any) -> TestClient:
        return await aiohttp_client(create_app(make_settings(**overrides)))  # type: ignore[no-any-return]

    return make


@pytest.fixture
async def client(make_client: ClientFactory) -> TestClient:
    return await make_client()


def token(settings: Settings, scopes: str = "execute,status", ttl: float = 300) -> str:
    return mint_token(settings, scopes.split(","), ttl)


@pytest.fixture
def auth(settings: Settings) -> dict[str, str]:
    """Headers of a JWT with the execute and status scopes."""
    return {"Authorization": f"Bearer {token(settings)}"}


async def pool_calls_end(client: TestClient, bound_s: float = 10) -> bool:
    """Whether every processor call in the app's pools has ended within `bound_s` — after a
    timeout, a thread goes on until the processor returns."""
    runner = client.app[RUNNER]
    deadline = time.monotonic() + bound_s  # by the clock: a busy thread can slow the loop down
    while runner.busy and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return runner.busy == 0
