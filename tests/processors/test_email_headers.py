"""email_send: nothing a workflow author sends can add a header or a recipient. Checked on what a
real SMTP server (aiosmtpd on loopback) received: the raw DATA and the envelope."""

from __future__ import annotations

import base64
import sys
from typing import Any

import pytest

from bridge.processors.email_headers import (
    MAX_CUSTOM_HEADER_BYTES,
    MAX_CUSTOM_HEADERS,
    MAX_HEADER_VALUE,
    MAX_REPLY_TO,
    header_text,
)
from tests.processors.conftest import send
from tests.smtp_server import Sink

INJECTED = "Reply-To : attacker@evil.example"
# Every boundary of str.splitlines() — where Python's e-mail package starts a new header line —
# and other controls: NUL, tab, escape, DEL, a C1 control.
BREAKS = [
    "\n",
    "\r",
    "\r\n",
    "\v",
    "\f",
    "\x1c",
    "\x1d",
    "\x1e",
    "\x85",
    "\u2028",
    "\u2029",
    "\x00",
    "\t",
    "\x1b",
    "\x7f",
    "\x9b",
]


def _blob(**extra: str) -> dict[str, str]:
    return {"data": base64.b64encode(b"hello").decode(), "mimeType": "text/plain", **extra}


def poisoned_items(brk: str) -> list[tuple[str, dict[str, Any]]]:
    """(the field named in the error, an item carrying the line break in that field)."""
    to = {"to": "you@example.org"}
    evil = f"{brk}{INJECTED}"
    return [
        ("subject", {**to, "subject": f"Hello{evil}"}),
        ("from", {**to, "from": f"Me{evil} <me@example.com>"}),
        ("to", {"to": f"You{evil} <you@example.org>"}),
        ("cc", {**to, "cc": [f"Boss{evil} <boss@example.org>"]}),
        ("bcc", {**to, "bcc": f"archive@example.org{evil}"}),
        ("reply_to", {**to, "reply_to": f"Help{evil} <help@example.org>"}),
        ("headers", {**to, "headers": {"X-Campaign": f"spring{evil}"}}),
        ("headers", {**to, "headers": {f"X-Campaign{evil}": "spring"}}),
    ]


def poisoned_binaries(brk: str) -> list[tuple[str, dict[str, Any]]]:
    evil = f"{brk}{INJECTED}"
    to = {"to": "you@example.org"}
    return [
        ("file name", {"json": to, "binary": {"doc": _blob(fileName=f"a{evil}.txt")}}),
        ("MIME type", {"json": to, "binary": {"doc": _blob(mimeType=f"text/plain{evil}")}}),
        ("file name", {"json": to, "binary": {f"doc{evil}": _blob()}}),  # the key names it
    ]


def assert_nothing_injected(sink: Sink) -> None:
    for raw in sink.raw:
        assert b"attacker" not in raw, raw.decode(errors="replace")
    for sender, recipients in sink.envelopes:
        assert "attacker" not in sender and not any("attacker" in r for r in recipients)


@pytest.mark.parametrize("brk", BREAKS, ids=[f"U+{ord(b[0]):04X}" for b in BREAKS])
async def test_a_control_character_in_any_header_field_fails_its_item(
    client_for_sink: Any, sink: Sink, brk: str
) -> None:
    client, headers = await client_for_sink(sink)
    cases = [(field, {"json": item}) for field, item in poisoned_items(brk)]
    cases += poisoned_binaries(brk)
    items = [item for _, item in cases] + [{"json": {"to": "fine@example.org"}}]
    answer = await (await send(client, headers, items, text="t")).json()
    assert [i["pairedItem"]["item"] for i in answer["items"]] == [len(cases)]
    assert [e["index"] for e in answer["errors"]] == list(range(len(cases)))
    for (field, _), error in zip(cases, answer["errors"], strict=True):
        assert error["code"] == "validation"
        assert field in error["message"], error
        assert f"U+{ord(brk[0]):04X}" in error["message"], error
    assert len(sink.raw) == 1
    assert_nothing_injected(sink)


@pytest.mark.parametrize("brk", BREAKS, ids=[f"U+{ord(b[0]):04X}" for b in BREAKS])
async def test_a_control_character_in_the_parameters_is_422_with_pointers(
    client_for_sink: Any, sink: Sink, brk: str
) -> None:
    client, headers = await client_for_sink(sink)
    evil = f"{brk}{INJECTED}"
    params = {
        "subject": f"Hello{evil}",
        "from": f"Me{evil} <me@example.com>",
        "to": f"You{evil} <you@example.org>",
        "cc": [f"boss@example.org{evil}"],
        "bcc": f"Archive{evil} <archive@example.org>",
        "reply_to": f"help@example.org{evil}",
        "headers": {"X-Campaign": f"spring{evil}"},
    }
    response = await send(client, headers, [{"json": {"to": "a@example.org"}}], **params)
    assert response.status == 422
    error = (await response.json())["error"]
    pointers = {d["pointer"] for d in error["details"]}
    assert pointers == {f"/parameters/{name}" for name in params}
    assert all(f"U+{ord(brk[0]):04X}" in d["message"] for d in error["details"])
    assert sink.raw == []


def test_every_line_boundary_python_knows_is_refused() -> None:
    """The class, not a list: every code point at which str.splitlines() splits."""
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        if len(f"a{char}b".splitlines()) > 1 or code < 0x20 or 0x7F <= code <= 0x9F:
            with pytest.raises(ValueError, match=f"U\\+{code:04X}"):
                header_text(f"a{char}b", "subject")
    assert header_text("Grüße ☀ aus Köln", "subject") == "Grüße ☀ aus Köln"


@pytest.mark.parametrize(
    "name",
    [
        "From",
        "to",
        "CC",
        "Bcc",
        "Sender",
        "reply-to",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Resent-To",
        "Resent-Date",
        "Return-Path",
    ],
)
async def test_custom_headers_may_not_set_the_headers_the_bridge_writes(
    client_for_sink: Any, sink: Sink, name: str
) -> None:
    client, headers = await client_for_sink(sink)
    item = {"json": {"to": "a@example.org", "headers": {name: "attacker@evil.example"}}}
    answer = await (await send(client, headers, [item], text="t")).json()
    (error,) = answer["errors"]
    assert f"{name!r}" in error["message"] and "may not be set" in error["message"]
    response = await send(
        client, headers, [{"json": {"to": "a@example.org"}}], headers={name: "x@example.org"}
    )
    assert response.status == 422
    (detail,) = (await response.json())["error"]["details"]
    assert detail["pointer"] == "/parameters/headers"
    assert sink.raw == []


@pytest.mark.parametrize(
    ("custom", "message"),
    [
        ({"Reply-To ": "attacker@evil.example"}, "is not a header name"),
        ({" Reply-To": "attacker@evil.example"}, "is not a header name"),
        ({"Reply-To:": "attacker@evil.example"}, "is not a header name"),
        ({"": "x"}, "is not a header name"),
        ({"In-Reply-To": "<a@example.org>", "in-reply-to": "<b@example.org>"}, "twice"),
        ({"X-Tag": "a", "x-TAG": "b"}, "twice"),
    ],
)
async def test_header_names_are_rfc_5322_and_set_once(
    client_for_sink: Any, sink: Sink, custom: dict[str, str], message: str
) -> None:
    client, headers = await client_for_sink(sink)
    item = {"json": {"to": "a@example.org", "headers": custom}}
    answer = await (await send(client, headers, [item], text="t")).json()
    (error,) = answer["errors"]
    assert message in error["message"]
    response = await send(client, headers, [{"json": {"to": "a@example.org"}}], headers=custom)
    assert response.status == 422
    assert sink.raw == []


async def test_an_items_header_replaces_the_parameters_one_whatever_its_case(
    client_for_sink: Any, sink: Sink
) -> None:
    client, headers = await client_for_sink(sink)
    item = {"json": {"to": "a@example.org", "headers": {"in-reply-to": "<2@example.org>"}}}
    answer = await (
        await send(client, headers, [item], text="t", headers={"In-Reply-To": "<1@example.org>"})
    ).json()
    assert answer["errors"] == []
    (message,) = sink.messages
    assert message.get_all("In-Reply-To") == ["<2@example.org>"]


@pytest.mark.parametrize(
    "address",
    [
        "a@example.org>\r\nRCPT TO:<attacker@evil.example",
        "a@example.org> NOTIFY=NEVER ORCPT=rfc822;attacker@evil.example",
        "<a@example.org> attacker@evil.example",
        '"a>attacker"@evil.example',
        "a@example.org\x00attacker@evil.example",
        "attacker@evil.example\u2028",
    ],
)
async def test_the_smtp_envelope_cannot_be_injected(
    client_for_sink: Any, sink: Sink, address: str
) -> None:
    client, headers = await client_for_sink(sink)
    items = [
        {"json": {"to": address}},
        {"json": {"to": "a@example.org", "from": address}},
        {"json": {"to": "a@example.org", "headers": {"Sender": "attacker@evil.example"}}},
        {
            "json": {
                "to": "a@example.org",
                "headers": {"Resent-Date": "Mon, 1 Jan 2024", "Resent-To": "attacker@evil.example"},
            }
        },
        {"json": {"to": "fine@example.org"}},
    ]
    answer = await (await send(client, headers, items, text="t")).json()
    assert [e["index"] for e in answer["errors"]] == [0, 1, 2, 3]
    assert sink.envelopes == [("news@example.com", ["fine@example.org"])]
    assert_nothing_injected(sink)


async def test_recipients_per_message_are_capped(client_for_sink: Any, sink: Sink) -> None:
    client, headers = await client_for_sink(sink, smtp_max_recipients=3)
    items = [
        {"json": {"to": ["a@example.org", "b@example.org"], "cc": "c@example.org"}},
        {"json": {"to": "a@example.org, b@example.org", "cc": "c@example.org", "bcc": "d@e.org"}},
        {"json": {"bcc": [f"p{n}@example.org" for n in range(1000)]}},
    ]
    answer = await (await send(client, headers, items, text="t")).json()
    assert [i["pairedItem"]["item"] for i in answer["items"]] == [0]
    assert [e["index"] for e in answer["errors"]] == [1, 2]
    assert "more than BRIDGE_SMTP_MAX_RECIPIENTS (3)" in answer["errors"][0]["message"]
    assert [len(recipients) for _, recipients in sink.envelopes] == [3]


async def test_the_default_cap_is_100_recipients(client_for_sink: Any, sink: Sink) -> None:
    client, headers = await client_for_sink(sink)
    many = [f"p{n}@example.org" for n in range(101)]
    items = [{"json": {"to": many[:100]}}, {"json": {"to": many}}]
    answer = await (await send(client, headers, items, text="t")).json()
    assert [e["index"] for e in answer["errors"]] == [1]
    assert "BRIDGE_SMTP_MAX_RECIPIENTS (100)" in answer["errors"][0]["message"]
    assert [len(recipients) for _, recipients in sink.envelopes] == [100]


async def test_custom_headers_are_capped_in_number_and_size(
    client_for_sink: Any, sink: Sink
) -> None:
    client, headers = await client_for_sink(sink)
    many = {f"X-H{n}": "v" for n in range(MAX_CUSTOM_HEADERS + 1)}
    response = await send(client, headers, [{"json": {"to": "a@example.org"}}], headers=many)
    assert response.status == 422
    assert (await response.json())["error"]["details"][0]["pointer"] == "/parameters/headers"
    half = {f"X-P{n}": "v" for n in range(MAX_CUSTOM_HEADERS // 2 + 1)}
    other = {f"X-I{n}": "v" for n in range(MAX_CUSTOM_HEADERS // 2 + 1)}
    big = {f"X-B{n}": "y" * 900 for n in range(20)}  # each small, too large together
    items = [
        {"json": {"to": "a@example.org", "headers": {f"X-H{n}": "v" for n in range(5000)}}},
        {"json": {"to": "a@example.org", "headers": other}},  # with the request's: too many
        {"json": {"to": "a@example.org", "headers": {"X-A": "z" * (MAX_CUSTOM_HEADER_BYTES)}}},
        {"json": {"to": "a@example.org", "headers": big}},
        {"json": {"to": "fine@example.org"}},
    ]
    answer = await (await send(client, headers, items, text="t", headers=half)).json()
    assert [e["index"] for e in answer["errors"]] == [0, 1, 2, 3], answer
    assert all("headers" in e["message"] for e in answer["errors"])
    assert f"more than {MAX_CUSTOM_HEADERS}" in answer["errors"][0]["message"]
    assert f"at most {MAX_HEADER_VALUE} characters" in answer["errors"][2]["message"]
    assert f"{MAX_CUSTOM_HEADER_BYTES} bytes" in answer["errors"][3]["message"]
    assert sink.envelopes == [("news@example.com", ["fine@example.org"])]


async def test_an_internationalized_domain_goes_out_in_its_ascii_form(
    client_for_sink: Any, sink: Sink
) -> None:
    """`ex\u0430mple.com` with a Cyrillic a: sent to its IDNA form, which needs no SMTPUTF8; a
    non-ASCII local part would, and is refused with a clear error."""
    client, headers = await client_for_sink(sink)
    items = [
        {"json": {"to": "Ann <a@ex\u0430mple.com>", "cc": "b@b\u00fccher.example"}},
        {"json": {"to": "j\u00f6rg@example.org"}},
    ]
    answer = await (await send(client, headers, items, text="t")).json()
    [error] = answer["errors"]
    assert error["index"] == 1 and "before the @-sign" in error["message"], error
    assert "SMTPUTF8" in error["message"]
    [(_, recipients)] = sink.envelopes
    assert recipients == ["a@xn--exmple-4nf.com", "b@xn--bcher-kva.example"]
    assert b"To: Ann <a@xn--exmple-4nf.com>" in sink.raw[0]


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "a/b.txt", "..\\..\\boot.ini", "C:\\x.txt", "..", ".", " "]
)
async def test_attachment_file_names_with_paths_are_refused(
    client_for_sink: Any, sink: Sink, name: str
) -> None:
    client, headers = await client_for_sink(sink)
    to = {"to": "you@example.org"}
    items = [
        {"json": to, "binary": {"doc": _blob(fileName=name)}},
        {"json": to, "binary": {"doc": _blob(fileName="report 2025.txt")}},
    ]
    answer = await (await send(client, headers, items, text="t")).json()
    [error] = answer["errors"]
    assert error["index"] == 0 and "file name" in error["message"], error
    assert len(sink.raw) == 1 and b'filename="report 2025.txt"' in sink.raw[0]


async def test_a_header_value_fits_an_smtp_line_or_is_refused(
    client_for_sink: Any, sink: Sink
) -> None:
    """An SMTP line holds 998 characters (RFC 5322 §2.1.1) and a value without spaces cannot
    be folded: a value, subject or display name over MAX_HEADER_VALUE characters fails its item
    with a clear error; one at the cap goes out, every line of it within 998."""
    client, headers = await client_for_sink(sink)
    to = "a@example.org"
    items = [
        {"json": {"to": to, "headers": {"X-Long": "x" * 10_000}}},
        {"json": {"to": to, "subject": "s" * 10_000}},
        {"json": {"to": f"{'n' * 10_000} <{to}>"}},
        {"json": {"to": to, "subject": "t" * MAX_HEADER_VALUE}},
        {"json": {"to": to, "headers": {"X-Max": "m" * MAX_HEADER_VALUE}}},
    ]
    answer = await (await send(client, headers, items, text="t")).json()
    assert [e["index"] for e in answer["errors"]] == [0, 1, 2], answer
    assert all(f"at most {MAX_HEADER_VALUE} characters" in e["message"] for e in answer["errors"])
    assert len(sink.raw) == 2
    for raw in sink.raw:
        assert max(len(line) for line in raw.split(b"\r\n")) <= 998


@pytest.mark.parametrize(
    "format_character",
    ["\u202e", "\u202d", "\u2066", "\u200b", "\u200e", "\ufeff", "\u00ad", "\u061c"],
)
async def test_format_characters_in_file_and_display_names_are_refused(
    client_for_sink: Any, sink: Sink, format_character: str
) -> None:
    """Bidi overrides and other invisible format characters (Unicode category Cf) would show
    `\u202etxt.exe` as `exe.txt`, or a sender's name as another's."""
    client, headers = await client_for_sink(sink)
    to = {"to": "you@example.org"}
    items = [
        {"json": to, "binary": {"doc": _blob(fileName=f"{format_character}txt.exe")}},
        {"json": {"to": f"Bank{format_character} <you@example.org>"}},
        {"json": {**to, "from": f"Ann{format_character} <ann@example.org>"}},
        {"json": to, "binary": {"doc": _blob(fileName="r\u00e9sum\u00e9 \u05d0.txt")}},
    ]
    answer = await (await send(client, headers, items, text="t")).json()
    assert [e["index"] for e in answer["errors"]] == [0, 1, 2], answer
    assert all("format character" in e["message"] for e in answer["errors"]), answer
    assert len(sink.raw) == 1


CJK = "\u4e00"  # 3 octets in UTF-8: 9 characters once percent-encoded (RFC 2231), 4 in base64


async def test_every_header_line_fits_the_smtp_limit_once_encoded(
    client_for_sink: Any, sink: Sink
) -> None:
    """Non-ASCII text is encoded on the wire (RFC 2047 words, RFC 2231 percent-encoding), 3 to
    9 times its length in characters: a value under the character caps can still make a line
    longer than the 998 octets an SMTP server takes. Such an item fails with an error naming
    its field; the others go out, with every line within 998 — no item is refused by the
    server."""
    client, headers = await client_for_sink(sink)
    to = {"to": "you@example.org"}
    long_name = CJK * 250 + ".pdf"  # within 255 and 900 characters: 2,250 octets encoded
    shown = CJK * 600
    items = [
        {"json": to, "binary": {"doc": _blob(fileName=long_name)}},
        {"json": {"to": f"{shown} <you@example.org>"}},
        {"json": {**to, "from": f"{shown} <me@example.com>"}},
        {"json": {**to, "reply_to": f"{shown} <help@example.org>"}},
        {"json": {**to, "cc": [f"{shown} <boss@example.org>"]}},
        # These fold into lines of their own and go out:
        {"json": {**to, "subject": CJK * MAX_HEADER_VALUE}},
        {"json": {**to, "headers": {"X-Note": CJK * MAX_HEADER_VALUE}}},
        {"json": to, "binary": {"doc": _blob(fileName=CJK * 90 + ".pdf")}},
        {"json": {"to": f"{CJK * 150} <you@example.org>"}},
    ]
    answer = await (await send(client, headers, items, text="t")).json()
    errors = {e["index"]: e for e in answer["errors"]}
    assert sorted(errors) == [0, 1, 2, 3, 4], answer
    for index, field in enumerate(["file name", "`to`", "`from`", "`reply_to`", "`cc`"]):
        assert errors[index]["code"] == "validation", errors[index]
        assert field in errors[index]["message"] and "998" in errors[index]["message"]
    assert len(sink.raw) == 4
    for raw in sink.raw:
        assert max(len(line) for line in raw.split(b"\r\n")) <= 998


INVISIBLE = [
    "\u3164",  # Hangul filler (Lo, default ignorable)
    "\u115f",  # Hangul choseong filler
    "\u1160",  # Hangul jungseong filler
    "\uffa0",  # halfwidth Hangul filler
    "\u2800",  # braille pattern blank (So): shows as a blank
    "\u034f",  # combining grapheme joiner (Mn, default ignorable)
    "\u17b4",  # Khmer vowel inherent aq
    "\u180b",  # Mongolian free variation selector
    "\ufe0f",  # variation selector 16
    "\U000e0041",  # tag latin capital A
    "\U000e0100",  # variation selector 17
]


@pytest.mark.parametrize("invisible", INVISIBLE, ids=[f"U+{ord(c):04X}" for c in INVISIBLE])
async def test_invisible_characters_in_file_and_display_names_are_refused(
    client_for_sink: Any, sink: Sink, invisible: str
) -> None:
    """Unicode's default ignorable code points (shown as nothing) and blanks such as the
    braille blank: `ㅤㅤ.exe` would look like `.exe`, `Bank\u034f` like `Bank`."""
    client, headers = await client_for_sink(sink)
    to = {"to": "you@example.org"}
    code = f"U+{ord(invisible):04X}"
    items = [
        {"json": to, "binary": {"doc": _blob(fileName=f"{invisible * 2}.exe")}},
        {"json": to, "binary": {"doc": _blob(fileName=f"invoice{invisible}.pdf")}},
        {"json": {"to": f"Bank{invisible} <you@example.org>"}},
        {"json": {**to, "from": f"{invisible} <ann@example.org>"}},
        {"json": {**to, "reply_to": f"Help{invisible} <help@example.org>"}},
        {"json": to, "binary": {"doc": _blob(fileName="\ud55c\uae00 \u3131.txt")}},  # 한글 ㄱ
    ]
    answer = await (await send(client, headers, items, text="t")).json()
    assert [e["index"] for e in answer["errors"]] == [0, 1, 2, 3, 4], answer
    assert all(code in e["message"] for e in answer["errors"]), answer
    response = await send(client, headers, [{"json": to}], **{"from": f"Ann{invisible} <a@b.org>"})
    assert response.status == 422
    assert len(sink.raw) == 1


@pytest.mark.parametrize("blank", [" ", "\u3000", "\u00a0\u2003", "\u3000 \u3000"])
async def test_a_name_that_is_only_blank_is_refused(
    client_for_sink: Any, sink: Sink, blank: str
) -> None:
    client, headers = await client_for_sink(sink)
    to = {"to": "you@example.org"}
    items = [
        {"json": to, "binary": {"doc": _blob(fileName=blank)}},
        {"json": {"to": f'"{blank}" <you@example.org>'}},
        {"json": {**to, "from": f'"{blank}" <ann@example.org>'}},
        {"json": {"to": "Ann Smith\u00a0Jr <you@example.org>"}},
    ]
    answer = await (await send(client, headers, items, text="t")).json()
    assert [e["index"] for e in answer["errors"]] == [0, 1, 2], answer
    assert all("blank" in e["message"] for e in answer["errors"]), answer
    assert len(sink.raw) == 1


async def test_reply_to_addresses_are_capped(client_for_sink: Any, sink: Sink) -> None:
    """Reply-To names where answers go, not recipients: at most MAX_REPLY_TO addresses, counted
    before any is validated, in the parameters (422) and in an item."""
    client, headers = await client_for_sink(sink)
    to = {"to": "you@example.org"}
    many = [f"help{n}@example.org" for n in range(2000)]
    items = [
        {"json": {**to, "reply_to": many}},
        {"json": {**to, "reply_to": ", ".join(many[: MAX_REPLY_TO + 1])}},
        {"json": {**to, "reply_to": many[:MAX_REPLY_TO]}},
    ]
    answer = await (await send(client, headers, items, text="t")).json()
    assert [e["index"] for e in answer["errors"]] == [0, 1], answer
    assert all(
        f"at most {MAX_REPLY_TO}" in e["message"] and "reply_to" in e["message"]
        for e in answer["errors"]
    )
    response = await send(client, headers, [{"json": to}], reply_to=many)
    assert response.status == 422
    (detail,) = (await response.json())["error"]["details"]
    assert detail["pointer"] == "/parameters/reply_to"
    assert len(sink.raw) == 1


async def test_a_message_has_one_sender(client_for_sink: Any, sink: Sink) -> None:
    client, headers = await client_for_sink(sink)
    to = {"to": "you@example.org"}
    senders = [f"me{n}@example.com" for n in range(2000)]
    items = [{"json": {**to, "from": senders}}, {"json": {**to, "from": "a@example.com, b@c.org"}}]
    answer = await (await send(client, headers, items, text="t")).json()
    assert [e["index"] for e in answer["errors"]] == [0, 1], answer
    assert all("give one sender" in e["message"] for e in answer["errors"])
    response = await send(client, headers, [{"json": to}], **{"from": senders})
    assert response.status == 422
    assert sink.raw == []


async def test_an_address_list_is_counted_before_it_is_parsed(
    client_for_sink: Any, sink: Sink
) -> None:
    """to, cc and bcc of 10,000 addresses each fail at once, without validating them all."""
    client, headers = await client_for_sink(sink, smtp_max_recipients=3)
    many = [f"p{n}@example.org" for n in range(10_000)]
    items = [{"json": {field: many}} for field in ("to", "cc", "bcc")]
    items.append({"json": {"to": ", ".join(many[:4])}})
    answer = await (await send(client, headers, items, text="t")).json()
    assert [e["index"] for e in answer["errors"]] == [0, 1, 2, 3], answer
    assert all("BRIDGE_SMTP_MAX_RECIPIENTS (3)" in e["message"] for e in answer["errors"])
    assert sink.raw == []
