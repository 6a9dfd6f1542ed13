"""An error answer's HTTP reason phrase is its message: clients that show only the status line —
n8n's credential *Test* shows nothing else of a failed request — still say what went wrong."""

from __future__ import annotations

from bridge.auth import mint_token
from bridge.settings import Settings
from tests.conftest import ClientFactory


async def test_an_error_s_reason_phrase_is_its_message(
    make_client: ClientFactory, settings: Settings
) -> None:
    client = await make_client()
    wrong = Settings.model_validate({"jwt_secret": "another-secret-that-is-long-enough-0123456789"})
    token = mint_token(wrong, ["status"], 60)
    refused = await client.get("/api/v1/processors", headers={"Authorization": f"Bearer {token}"})
    assert refused.status == 401
    assert refused.reason == "the token's signature does not verify"
    assert (await refused.json())["error"]["message"] == refused.reason

    lacking = mint_token(settings, ["execute"], 60)
    forbidden = await client.get(
        "/api/v1/processors", headers={"Authorization": f"Bearer {lacking}"}
    )
    assert (forbidden.status, forbidden.reason) == (403, "this credential lacks the 'status' scope")


async def test_a_reason_phrase_holds_only_printable_ascii_on_one_short_line(
    make_client: ClientFactory, settings: Settings
) -> None:
    client = await make_client()
    token = mint_token(settings, ["status"], 60)
    name = "ünïcode\r\nX-Injected: 1" + "x" * 500
    answer = await client.get(
        f"/api/v1/workflow/status/{name}", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status >= 400
    assert "X-Injected" not in answer.headers
    assert answer.reason.isascii() and answer.reason.isprintable()
    assert 0 < len(answer.reason) <= 200
