"""The SMTP server for the e-mail tests (a real one on loopback) and the client that sends to it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bridge.settings import Settings
from tests import smtp_server
from tests.conftest import ClientFactory, token
from tests.smtp_server import Sink

EXECUTE = "/api/v1/workflow/execute"


@pytest.fixture
def sink() -> Iterator[Sink]:
    sink = Sink()
    controller = smtp_server.start(sink)
    sink.port = controller.port  # type: ignore[attr-defined]
    yield sink
    controller.stop()


def smtp(sink: Sink, **extra: Any) -> dict[str, Any]:
    return {
        "smtp_host": "127.0.0.1",
        "smtp_port": sink.port,  # type: ignore[attr-defined]
        "smtp_tls": "none",
        "smtp_from": "News <news@example.com>",
        **extra,
    }


async def send(
    client: TestClient, auth: dict[str, str], items: list[dict[str, Any]], **params: Any
) -> Any:
    """email_send on `items`; `params` are its parameters (`headers` among them)."""
    body = {"processing_type": "email_send", "items": items, "parameters": params}
    return await client.post(EXECUTE, json=body, headers=auth)


@pytest.fixture
def client_for_sink(make_client: ClientFactory, settings: Settings) -> Any:
    async def make(sink: Sink, **extra: Any) -> tuple[TestClient, dict[str, str]]:
        client = await make_client(**smtp(sink, **extra))
        return client, {"Authorization": f"Bearer {token(settings)}"}

    return make
