"""email_send against a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.settings import Settings
from tests import smtp_server
from tests.conftest import ClientFactory, token
from tests.processors.conftest import EXECUTE, send, smtp
from tests.smtp_server import PASSWORD, USER, Sink


@pytest.fixture
def auth_sink() -> Iterator[Sink]:
    sink = Sink()
    controller = smtp_server.start(sink, require_auth=True)
    sink.port = controller.port  # type: ignore[attr-defined]
    yield sink
    controller.stop()


def contacts(count: int, **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "json": {
                "to": f"person{n}@example.org",
                "name": f"P{n}",
                **extra,
                "idempotency_key": f"campaign-1:{n}",
            }
        }
        for n in range(count)
    ]


async def test_a_batch_is_sent_one_message_per_item(
    make_client: ClientFactory, settings: Settings, sink: Sink
) -> None:
    client = await make_client(**smtp(sink))
    headers = {"Authorization": f"Bearer {token(settings)}"}
    attachment = {
        "data": base64.b64encode(b"id,amount\n1,9.90\n").decode(),
        "mimeType": "text/csv",
        "fileName": "invoice.csv",
    }
    items = contacts(5)
    items[0]["binary"] = {"invoice": attachment}
    items[1]["json"].update(
        cc="boss@example.org",
        bcc="archive@example.org",
        html="<p>Hi</p>",
        headers={"X-Campaign": "spring"},
    )
    response = await send(
        client,
        headers,
        items,
        subject="Spring news",
        text="Hello there",
        reply_to="support@example.com",
    )
    assert response.status == 200
    answer = await response.json()
    assert answer["errors"] == []
    results = [i["json"]["email"] for i in answer["items"]]
    assert all(r["sent"] and not r["duplicate"] for r in results)
    assert results[0]["accepted"] == ["person0@example.org"]
    assert sorted(results[1]["accepted"]) == sorted(
        ["person1@example.org", "boss@example.org", "archive@example.org"]
    )
    assert len(sink.messages) == 5
    first = sink.with_header("Message-ID", results[0]["message_id"])[0]
    assert first["Subject"] == "Spring news"
    assert first["From"] == "News <news@example.com>"
    assert first["Reply-To"] == "support@example.com"
    parts = {part.get_filename(): part for part in first.iter_attachments()}
    assert parts["invoice.csv"].get_content() == "id,amount\n1,9.90\n"
    second = sink.with_header("Message-ID", results[1]["message_id"])[0]
    assert second["Bcc"] is None  # Bcc reaches its recipient but not the headers
    assert "archive@example.org" in second["X-Envelope-To"]
    assert second["X-Campaign"] == "spring"
    assert second.get_body(("html",)).get_content().strip() == "<p>Hi</p>"


async def test_a_refused_recipient_is_reported(
    make_client: ClientFactory, settings: Settings, sink: Sink
) -> None:
    client = await make_client(**smtp(sink))
    headers = {"Authorization": f"Bearer {token(settings)}"}
    items = [
        {"json": {"to": ["ok@example.org", "refuse-me@example.org"]}},
        {"json": {"to": "refuse-all@example.org"}},
    ]
    answer = await (await send(client, headers, items, subject="s", text="t")).json()
    (partial,) = answer["items"]
    assert partial["json"]["email"]["accepted"] == ["ok@example.org"]
    assert partial["json"]["email"]["refused"] == {
        "refuse-me@example.org": "550 5.1.1 no such user here"
    }
    assert answer["errors"] == [
        {
            "index": 1,
            "code": "integration",
            "message": "every recipient was refused: refuse-all@example.org: 550 5.1.1 no such user here",
        }
    ]
    assert len(sink.messages) == 1


async def test_a_dropped_connection_mid_batch_is_replaced_without_duplicates(
    make_client: ClientFactory, settings: Settings, sink: Sink
) -> None:
    sink.drop_data_at = {3, 7}
    client = await make_client(**smtp(sink, smtp_connections=1))
    headers = {"Authorization": f"Bearer {token(settings)}"}
    answer = await (await send(client, headers, contacts(10), subject="s", text="t")).json()
    delivered = sorted(m["To"] for m in sink.messages)
    print(
        f"\nSMTP dropping connections ({len(sink.drop_data_at)} drops): messages accepted 10, "
        f"sent {len(set(delivered))}, sent twice {len(delivered) - len(set(delivered))}, "
        f"failed {len(answer['errors'])}, lost {10 - len(set(delivered)) - len(answer['errors'])}"
    )
    assert answer["errors"] == []
    assert delivered == sorted(f"person{n}@example.org" for n in range(10))  # each exactly once


async def test_a_refused_login_fails_the_job_and_sends_nothing(
    make_client: ClientFactory, settings: Settings, auth_sink: Sink
) -> None:
    client = await make_client(**smtp(auth_sink, smtp_username=USER, smtp_password="wrong"))
    headers = {"Authorization": f"Bearer {token(settings)}"}
    response = await send(client, headers, contacts(3), subject="s", text="t")
    assert response.status == 502
    error = (await response.json())["error"]
    assert error["code"] == "integration"
    assert error["retryable"] is False
    assert "refused the login" in error["message"]
    assert "BRIDGE_SMTP_PASSWORD" in error["description"]
    assert auth_sink.messages == []


async def test_the_right_login_sends(
    make_client: ClientFactory, settings: Settings, auth_sink: Sink
) -> None:
    client = await make_client(**smtp(auth_sink, smtp_username=USER, smtp_password=PASSWORD))
    headers = {"Authorization": f"Bearer {token(settings)}"}
    answer = await (await send(client, headers, contacts(2), subject="s", text="t")).json()
    assert answer["errors"] == []
    assert len(auth_sink.messages) == 2


async def test_a_retried_request_sends_nothing_twice_even_after_a_restart(
    make_client: ClientFactory, settings: Settings, sink: Sink
) -> None:
    headers = {"Authorization": f"Bearer {token(settings)}"}
    first = await make_client(**smtp(sink))
    items = contacts(4)
    await send(first, headers, items[:2], subject="s", text="t")  # a first, partial attempt
    await first.close()
    restarted = await make_client(**smtp(sink))  # the same data dir: a restarted bridge
    answer = await (await send(restarted, headers, items, subject="s", text="t")).json()
    results = [i["json"]["email"] for i in answer["items"]]
    assert [r["duplicate"] for r in results] == [True, True, False, False]
    assert [r["sent"] for r in results] == [False, False, True, True]
    assert results[0]["message_id"] == sink.messages[0]["Message-ID"]
    assert len(sink.messages) == 4


async def test_items_of_one_request_with_the_same_key_are_sent_once(
    make_client: ClientFactory, settings: Settings, sink: Sink
) -> None:
    """A list that holds one contact twice (the same key: "Ada@…" and "ada@…" under a key of the
    lower-cased address): the first is sent, the other answered as its duplicate — not failed
    as a send "of unknown outcome" that the first was still making."""
    headers = {"Authorization": f"Bearer {token(settings)}"}
    client = await make_client(**smtp(sink))
    items = contacts(3)
    items[2]["json"]["idempotency_key"] = items[0]["json"]["idempotency_key"]
    answer = await (await send(client, headers, items, subject="s", text="t")).json()
    assert answer["errors"] == []
    results = [i["json"]["email"] for i in answer["items"]]
    assert [(r["sent"], r["duplicate"]) for r in results] == [
        (True, False),
        (True, False),
        (False, True),
    ]
    assert results[2]["message_id"] == results[0]["message_id"]
    assert len(sink.messages) == 2


async def test_the_requests_idempotency_key_covers_items_without_their_own(
    client_for_sink: Any, sink: Sink
) -> None:
    client, headers = await client_for_sink(sink)
    body = {
        "processing_type": "email_send",
        "idempotency_key": "exec-77",
        "items": [{"json": {"to": "a@example.org"}}],
        "parameters": {"text": "t"},
    }
    for _ in range(2):
        await client.post(EXECUTE, json=body, headers=headers)
    assert len(sink.messages) == 1


async def test_dry_run_sends_nothing(client_for_sink: Any, sink: Sink) -> None:
    client, headers = await client_for_sink(sink)
    answer = await (await send(client, headers, contacts(3), text="t", dry_run=True)).json()
    assert [i["json"]["email"]["dry_run"] for i in answer["items"]] == [True] * 3
    assert sink.messages == []


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"to": "a@example.org", "subject": "hi\r\nBcc: victim@example.org"}, "line break"),
        ({"to": "not an address"}, "is not an e-mail address"),
        ({"subject": "no one"}, "no recipient"),
        ({"to": "a@example.org", "headers": {"X-Evil": "a\nb"}}, "line break"),
        ({"to": "a@example.org\r\nBcc: victim@example.org"}, "`to` may not contain"),
        (
            {"to": "a@example.org", "cc": ["b@example.org\nBcc: v@example.org"]},
            "`cc` may not contain",
        ),
        ({"to": "a@example.org", "reply_to": "r@example.org\r\nX: y"}, "line break"),
        ({"to": "a@example.org", "headers": {"Bad Name:": "x"}}, "is not a header name"),
    ],
)
async def test_bad_messages_fail_their_item_only(
    client_for_sink: Any, sink: Sink, item: dict[str, Any], message: str
) -> None:
    client, headers = await client_for_sink(sink)
    items = [{"json": item}, {"json": {"to": "fine@example.org"}}]
    answer = await (await send(client, headers, items, text="t")).json()
    assert [i["pairedItem"]["item"] for i in answer["items"]] == [1]
    assert answer["errors"][0]["index"] == 0
    assert message in answer["errors"][0]["message"]
    assert [m["To"] for m in sink.messages] == ["fine@example.org"]


async def test_an_unreachable_server_fails_the_job(
    make_client: ClientFactory, settings: Settings
) -> None:
    client = await make_client(
        smtp_host="127.0.0.1",
        smtp_port=smtp_server.free_port(),
        smtp_tls="none",
        smtp_from="a@example.com",
    )
    headers = {"Authorization": f"Bearer {token(settings)}"}
    response = await send(client, headers, contacts(1), text="t")
    assert response.status == 502
    assert "cannot reach the SMTP server" in (await response.json())["error"]["message"]


async def test_non_ascii_names_subjects_and_bodies_arrive_intact(
    client_for_sink: Any, sink: Sink
) -> None:
    client, headers = await client_for_sink(sink)
    item = {
        "to": "Jürgen Groß <j@example.org>",
        "subject": "Grüße aus Köln",
        "text": "Schön, dich zu sehen ☀",
    }
    answer = await (
        await send(client, headers, [{"json": item}], **{"from": "Zoë <z@example.com>"})
    ).json()
    assert answer["errors"] == []
    (message,) = sink.messages
    assert message["Subject"] == "Grüße aus Köln"
    assert message["To"] == "Jürgen Groß <j@example.org>"
    assert message["From"] == "Zoë <z@example.com>"
    assert message.get_content().strip() == "Schön, dich zu sehen ☀"


@pytest.fixture
def certificate(tmp_path: Any) -> tuple[str, str]:
    return smtp_server.self_signed(tmp_path)


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_tls_with_a_trusted_certificate(
    make_client: ClientFactory, settings: Settings, certificate: tuple[str, str], mode: str
) -> None:
    sink = Sink()
    controller = smtp_server.start(sink, tls=certificate, implicit_tls=mode == "tls")
    try:
        client = await make_client(
            smtp_host="127.0.0.1",
            smtp_port=controller.port,
            smtp_tls=mode,
            smtp_ca_file=certificate[0],
            smtp_from="a@example.com",
        )
        headers = {"Authorization": f"Bearer {token(settings)}"}
        answer = await (await send(client, headers, contacts(2), text="t")).json()
        await client.close()  # its pooled connections, before the server goes
    finally:
        controller.stop()
    assert answer["errors"] == []
    assert len(sink.messages) == 2


async def test_an_untrusted_certificate_is_refused(
    make_client: ClientFactory, settings: Settings, certificate: tuple[str, str]
) -> None:
    sink = Sink()
    controller = smtp_server.start(sink, tls=certificate)
    try:
        client = await make_client(
            smtp_host="127.0.0.1",
            smtp_port=controller.port,
            smtp_tls="starttls",
            smtp_from="a@example.com",
        )
        headers = {"Authorization": f"Bearer {token(settings)}"}
        response = await send(client, headers, contacts(1), text="t")
        error = (await response.json())["error"]
        await client.close()
    finally:
        controller.stop()
    assert response.status == 502
    assert "certificate" in error["message"].lower()
    assert "BRIDGE_SMTP_CA_FILE" in error["description"]
    assert sink.messages == []


async def test_the_rate_limit_spaces_messages(
    make_client: ClientFactory, settings: Settings, sink: Sink
) -> None:
    """A lower bound only: at 40 messages/s, 5 messages take at least 4 intervals."""
    import time

    client = await make_client(**smtp(sink, smtp_rate_per_s=40, smtp_connections=4))
    headers = {"Authorization": f"Bearer {token(settings)}"}
    started = time.monotonic()
    answer = await (await send(client, headers, contacts(5), text="t")).json()
    assert answer["errors"] == []
    assert sink.arrived_at[-1] - started >= 4 / 40


async def test_items_that_never_left_are_sent_by_a_retry_after_a_timeout(
    make_client: ClientFactory, settings: Settings, sink: Sink
) -> None:
    """A paced batch times out: items still waiting for their turn were never claimed, so the
    retry sends them; only a message in flight at the timeout may be reported as unknown."""
    headers = {"Authorization": f"Bearer {token(settings)}"}
    slow = await make_client(**smtp(sink, smtp_rate_per_s=10, smtp_connections=1))
    body = {
        "processing_type": "email_send",
        "items": contacts(20),
        "parameters": {"text": "t"},
        "timeout_s": 0.5,
    }
    timed_out = await slow.post(EXECUTE, json=body, headers=headers)
    assert timed_out.status == 504
    await slow.close()
    sent_first = len(sink.messages)
    assert sent_first < 20

    retry = await make_client(**smtp(sink))
    answer = await (await send(retry, headers, contacts(20), text="t")).json()
    unknown = [e for e in answer["errors"] if "outcome is unknown" in e["message"]]
    assert len(unknown) <= 1  # at most the one message in flight on the single connection
    assert len(answer["errors"]) == len(unknown)
    delivered = [m["To"] for m in sink.messages]
    assert len(delivered) == len(set(delivered))  # nothing twice
    assert len(delivered) + len(unknown) == 20  # everything else arrived
