"""`email_send`: one e-mail per item over SMTP, for bulk sends to thousands of contacts.

Each item is a message: its json may set `from`, `to`, `cc`, `bcc`, `reply_to`, `subject`, `text`,
`html` and `headers`, over the request's parameters of the same names; its n8n binary data are the
attachments. Messages go out over pooled, reused connections (BRIDGE_SMTP_*), paced by the rate
limit. One result per item: message id, accepted and refused recipients.

Idempotency: an item with an idempotency key (its `idempotency_key` field, or the request's key
plus the item's index) is claimed in the ledger before it is sent and marked sent after the server
accepted it, so it is never sent twice — not on a retried request, not after a restart. A send whose
outcome is unknown (the bridge died mid-send) is not tried again: it is reported instead.
"""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Awaitable
from dataclasses import dataclass
from email import encoders
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from typing import Any, Literal

import aiosmtplib
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from bridge.errors import IntegrationFailed, Internal, ValidationFailed
from bridge.items import Item
from bridge.processors import email_headers
from bridge.processors.registry import Context, processor
from bridge.services import Services
from bridge.settings import Settings
from bridge.stores.base import LedgerEntry

Addresses = str | list[str] | None
ADDRESS_FIELDS = ("to", "cc", "bcc", "reply_to")
_CHARSET = Charset("utf-8")
_CHARSET.body_encoding = QP  # readable bodies, not base64
# The fields with a count of their own: (at most, what the error says).
_LIMITS = {
    "from": (1, "give one sender"),
    "reply_to": (
        email_headers.MAX_REPLY_TO,
        f"a message has at most {email_headers.MAX_REPLY_TO} reply-to addresses",
    ),
}


class EmailParams(BaseModel):
    """Defaults for every item's message. Each field that ends up in a header is checked here
    too, so a bad one is a 422 pointing at it instead of an error on every item."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    sender: str | None = Field(None, alias="from", description="From; else BRIDGE_SMTP_FROM")
    to: Addresses = None
    cc: Addresses = None
    bcc: Addresses = None
    reply_to: Addresses = None
    subject: str | None = None
    text: str | None = Field(None, description="plain-text body")
    html: str | None = Field(None, description="HTML body")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="extra headers (not From, To, Cc, Bcc, Sender, Reply-To, Subject, Date, "
        "Message-ID, MIME-Version, Return-Path, Content-* or Resent-*)",
    )
    attachments: Literal["all", "none"] | list[str] = Field(
        "all", description="which of the item's binary fields to attach"
    )
    dry_run: bool = Field(False, description="build and check every message, send none")
    idempotency_field: str = Field(
        "idempotency_key", description="the item field holding its idempotency key"
    )
    result_field: str = Field("email", min_length=1)

    @field_validator("sender", *ADDRESS_FIELDS)
    @classmethod
    def _addresses(cls, value: Addresses, info: ValidationInfo) -> Addresses:
        """to, cc and bcc are counted against BRIDGE_SMTP_MAX_RECIPIENTS per item, together."""
        name = "from" if info.field_name in (None, "sender") else str(info.field_name)
        email_headers.addresses(value, name, *_LIMITS.get(name, (None, "")))
        return value

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str | None) -> str | None:
        return None if value is None else email_headers.header_text(value, "subject")

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        email_headers.custom_headers(value)
        return value


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A built message and its SMTP envelope, given to the server as such: the envelope is never
    read back from headers (aiosmtplib would honour Sender and Resent-* there)."""

    message: Message
    sender: str
    recipients: list[str]


def _field(item: Item, params: EmailParams, name: str) -> Any:
    default = params.sender if name == "from" else getattr(params, name)
    return item.json.get(name, default)


def _formatted(found: list[tuple[str, str]]) -> list[str]:
    return [email.utils.formataddr(pair, charset="utf-8") for pair in found]


def _header(value: str) -> str:
    """Non-ASCII text RFC 2047 encoded; the caller checked it for control characters."""
    return value if value.isascii() else Header(value, "utf-8").encode()


def _text(content: Any, subtype: str) -> Message:
    part = MIMENonMultipart("text", subtype)
    part.set_payload(str(content), _CHARSET)
    return part


def _body(text: Any, html: Any) -> Message:
    if text and html:
        alternative = MIMEMultipart("alternative")
        alternative.attach(_text(text, "plain"))
        alternative.attach(_text(html, "html"))
        return alternative
    return _text(html, "html") if html else _text(text or "", "plain")


def _attachments(item: Item, params: EmailParams) -> list[Message]:
    keys = (
        []
        if params.attachments == "none"
        else (list(item.binary) if params.attachments == "all" else params.attachments)
    )
    parts: list[Message] = []
    for key in keys:
        blob = item.binary.get(key)
        if blob is None:
            raise ValueError(f"no binary field {key!r} to attach")
        where = f"binary {key!r}"
        maintype, subtype = email_headers.mime_type(blob.mime_type, f"{where}: MIME type")
        part = MIMEBase(maintype, subtype)
        part.set_payload(blob.data)
        encoders.encode_base64(part)
        field = f"{where}: file name"
        name = email_headers.file_name(blob.file_name or key, field)
        part.add_header(
            "Content-Disposition",
            "attachment",
            filename=name if name.isascii() else ("utf-8", "", name),
        )
        email_headers.on_the_wire("Content-Disposition", part["Content-Disposition"], field)
        parts.append(part)
    return parts


def _headers(item: Item, params: EmailParams) -> list[tuple[str, str]]:
    """The request's extra headers, then the item's, which replace those of the same name
    whatever its case."""
    merged = email_headers.custom_headers(params.headers)
    own = item.json.get("headers")
    if own is not None:
        merged.update(email_headers.custom_headers(own))
        size = sum(len(f"{name}{value}".encode()) for name, value in merged.values())
        email_headers.bounded(len(merged), size)
    return list(merged.values())


def build(item: Item, params: EmailParams, settings: Settings) -> Outgoing:
    """The message for one item; a ValueError says what is wrong with it.

    Built with the email package's classic API: its modern one parses every header through the
    header registry, 15 times slower here (1.2 ms a message against 80 µs). Every value that
    goes into a header is checked by `email_headers` instead.
    """
    senders = email_headers.addresses(
        _field(item, params, "from") or settings.smtp_from, "from", *_LIMITS["from"]
    )
    if len(senders) != 1:
        raise ValueError("give one sender: `from`, or set BRIDGE_SMTP_FROM")
    recipients_cap = settings.smtp_max_recipients
    per_message = f"more than BRIDGE_SMTP_MAX_RECIPIENTS ({recipients_cap}) per message"
    to, cc, bcc, reply_to = (
        email_headers.addresses(
            _field(item, params, f), f, *_LIMITS.get(f, (recipients_cap, per_message))
        )
        for f in ADDRESS_FIELDS
    )
    recipients = [address for _, address in (*to, *cc, *bcc)]
    if not recipients:
        raise ValueError("no recipient: give `to`, `cc` or `bcc`")
    if len(recipients) > settings.smtp_max_recipients:
        raise ValueError(
            f"{len(recipients)} recipients (to, cc and bcc) is more than "
            f"BRIDGE_SMTP_MAX_RECIPIENTS ({settings.smtp_max_recipients})"
        )
    subject = email_headers.header_text(str(_field(item, params, "subject") or ""), "subject")
    extra = _headers(item, params)
    body = _body(_field(item, params, "text"), _field(item, params, "html"))
    attachments = _attachments(item, params)
    message = body
    if attachments:
        message = MIMEMultipart("mixed")
        message.attach(body)
        for part in attachments:
            message.attach(part)
    written = [("From", _formatted(senders)[0], "from")]
    for header, found, field in (
        ("To", to, "to"),
        ("Cc", cc, "cc"),
        ("Reply-To", reply_to, "reply_to"),
    ):
        if found:
            written.append((header, ", ".join(_formatted(found)), field))
    written.append(("Subject", _header(subject), "subject"))
    written += [(name, _header(value), f"headers: {name}") for name, value in extra]
    for header, value, field in written:  # each as it will go on the wire
        message[header] = email_headers.on_the_wire(header, value, field)
    message["Date"] = email.utils.formatdate(localtime=False)
    sender = senders[0][1]
    message["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2])
    return Outgoing(message, sender, recipients)


def _key(item: Item, params: EmailParams, ctx: Context) -> str | None:
    own = item.json.get(params.idempotency_field)
    if own is not None:
        return f"email:{own}"
    return f"email:{ctx.idempotency_key}:{item.index}" if ctx.idempotency_key else None


async def _transmit(
    services: Services, outgoing: Outgoing, key: str | None
) -> dict[str, Any] | LedgerEntry:
    """Send over a pooled connection, claiming `key` only once a connection and a turn under the
    rate limit are ours: an item still waiting when the job is cancelled was never claimed, so a
    retry sends it. A connection that dropped is replaced and the message sent once more (the
    server had not accepted it). Returns the result, or the entry another request claimed first.
    """
    claimed = False
    try:
        for attempt in range(2):
            await services.smtp.pace()
            try:
                async with services.smtp.connection() as client:
                    if key is not None and not claimed:
                        entry = await services.ledger.claim(key)
                        if entry is not None:
                            return entry
                        claimed = True
                    refused, _ = await client.send_message(
                        outgoing.message,
                        sender=outgoing.sender,
                        recipients=outgoing.recipients,
                    )
            except aiosmtplib.SMTPServerDisconnected:
                if attempt:
                    raise
                continue
            return {
                "message_id": outgoing.message["Message-ID"],
                "accepted": [r for r in outgoing.recipients if r not in refused],
                "refused": {r: f"{reply.code} {reply.message}" for r, reply in refused.items()},
            }
        raise AssertionError("unreachable")
    except (aiosmtplib.SMTPException, IntegrationFailed, OSError):
        if claimed and key is not None:  # the server did not take it: a retry may send it
            await services.ledger.release(key)
        raise


def _refusal(exc: Exception) -> IntegrationFailed:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        reasons = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        return IntegrationFailed(f"every recipient was refused: {reasons}", retryable=False)
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return IntegrationFailed(f"the SMTP server dropped the connection twice: {exc}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return IntegrationFailed(
            f"the SMTP server refused the message: {exc.code} {exc.message}",
            retryable=exc.code < 500,
        )
    return IntegrationFailed(f"sending failed: {exc}")


def _known(item: Item, params: EmailParams, key: str, entry: LedgerEntry) -> Any:
    """The answer for a key the ledger already has: the earlier result, or why not again."""
    if entry.state == "sent":
        result = {**(entry.result or {}), "sent": False, "duplicate": True}
        return {**item.json, params.result_field: result}
    return IntegrationFailed(
        f"a send with idempotency key {key.removeprefix('email:')!r} started earlier and "
        "its outcome is unknown; it is not sent again",
        retryable=False,
    )


async def _send(
    item: Item,
    params: EmailParams,
    ctx: Context,
    services: Services,
    known: dict[str, LedgerEntry],
) -> Any:
    """One item's result, or the exception that fails it (never raised: the others go on)."""
    try:
        outgoing = build(item, params, ctx.settings)
    except ValueError as exc:
        return ValidationFailed(str(exc))
    if params.dry_run:
        result = {"message_id": outgoing.message["Message-ID"], "sent": False, "dry_run": True}
        return {**item.json, params.result_field: result}
    key = _key(item, params, ctx)
    if key is not None and key in known:  # answered at once, without waiting for a turn
        ctx.log.info("item %d: %s already %s", item.index, key, known[key].state)
        return _known(item, params, key, known[key])
    try:
        outcome = await _transmit(services, outgoing, key)
    except (aiosmtplib.SMTPException, IntegrationFailed, OSError) as exc:
        return exc if isinstance(exc, IntegrationFailed) else _refusal(exc)
    if isinstance(outcome, LedgerEntry):
        assert key is not None  # only a keyed send can meet an entry
        return _known(item, params, key, outcome)
    if key is not None:
        await services.ledger.settle(key, outcome)
    return {**item.json, params.result_field: {**outcome, "sent": True, "duplicate": False}}


@processor("email_send", params=EmailParams, batch=True)
async def email_send(items: list[Item], params: EmailParams, ctx: Context) -> list[Any]:
    """Sends one e-mail per item over SMTP, with idempotency keys, pooled connections and a
    rate limit."""
    services = ctx.services
    if services is None:
        raise Internal("email_send needs the bridge's services (it cannot run in a process pool)")
    if not params.dry_run:
        # One login first: an unreachable server or a refused login fails the whole job at once,
        # before any key is claimed.
        async with services.smtp.connection():
            pass
    keys = [key for item in items if (key := _key(item, params, ctx)) is not None]
    known = await services.ledger.lookup(keys) if keys and not params.dry_run else {}
    # An item whose key an earlier item of this request has is that item's duplicate: it waits
    # for it (claiming the key itself, it would meet a send of "unknown outcome" still going on).
    firsts: dict[str, asyncio.Future[Any]] = {}

    def start(item: Item) -> Awaitable[Any]:
        key = _key(item, params, ctx)
        if key is None or params.dry_run:
            return _send(item, params, ctx, services, known)
        if key in firsts:
            return _same_as(item, params, firsts[key])
        firsts[key] = asyncio.ensure_future(_send(item, params, ctx, services, known))
        return firsts[key]

    return list(await asyncio.gather(*(start(item) for item in items)))


async def _same_as(item: Item, params: EmailParams, first: asyncio.Future[Any]) -> Any:
    """The answer for an item with the key of an earlier item of the same request: the earlier
    one's result, as a duplicate (or its failure)."""
    outcome = await first
    if isinstance(outcome, BaseException):
        return outcome
    result = outcome[params.result_field]
    return {**item.json, params.result_field: {**result, "sent": False, "duplicate": True}}
