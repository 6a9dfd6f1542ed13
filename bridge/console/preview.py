"""What the console shows of a job's data: the first PREVIEW_ITEMS items of its request and of its
result, each item's json pretty-printed and cut at PREVIEW_CHARS, its binaries by key, type,
file name and size only — never their bytes. The stored data is the request as accepted (n8n
items, or records for the hybrid API) and the result as answered (n8n items, base64 binaries):
`bridge.api.execute.decode_job_request` and `bridge.api.status` read the same."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from bridge.jobs import JobRecord

PREVIEW_ITEMS = 20
PREVIEW_CHARS = 2048


@dataclass(frozen=True, slots=True)
class Text:
    """JSON as shown: at most a bound of characters, and how many were left out."""

    text: str
    cut: int = 0


@dataclass(frozen=True, slots=True)
class BinaryShown:
    key: str
    mime_type: str
    file_name: str | None
    size: int | None  # bytes, from the base64 text's length


@dataclass(frozen=True, slots=True)
class ItemShown:
    index: int
    json: Text
    binaries: list[BinaryShown]
    paired: int | None = None  # an output's input


@dataclass(frozen=True, slots=True)
class Preview:
    """The first items, and how many there are in all; `kept` false when the store no longer
    has (or never had: sync jobs) the data."""

    items: list[ItemShown]
    total: int
    kept: bool = True


NOT_KEPT = Preview([], 0, kept=False)


def as_json(value: Any, limit: int = PREVIEW_CHARS, *, indent: bool = True) -> Text:
    """`value` as JSON, cut after `limit` characters."""
    try:
        text = orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0).decode()
    except orjson.JSONEncodeError as exc:  # deeper than orjson writes: the parser read it
        return Text(f"(not shown: {exc})")
    if len(text) <= limit:
        return Text(text)
    return Text(text[:limit], len(text) - limit)


def preview(job: JobRecord, raw: bytes | None, which: str) -> Preview:
    """The preview of a job's stored `which` ("request" or "result")."""
    if raw is None:
        return NOT_KEPT
    body = orjson.loads(raw)
    if which == "request" and job.api == "data":
        wires = [{"json": record} for record in body["data"][:PREVIEW_ITEMS]]
        total = len(body["data"])
    else:
        wires = body["items"][:PREVIEW_ITEMS]
        total = len(body["items"])
    return Preview([_item(index, wire) for index, wire in enumerate(wires)], total)


def _item(index: int, wire: dict[str, Any]) -> ItemShown:
    blobs = wire.get("binary") or {}
    paired = wire.get("pairedItem")
    return ItemShown(
        index,
        as_json(wire.get("json", {})),
        [
            BinaryShown(
                key,
                str(blob.get("mimeType") or "application/octet-stream"),
                blob.get("fileName"),
                _size(blob.get("data")),
            )
            for key, blob in blobs.items()
        ],
        paired["item"] if isinstance(paired, dict) else None,
    )


def _size(data: object) -> int | None:
    """The size of base64 data, without decoding it."""
    if not isinstance(data, str):
        return None
    return len(data) * 3 // 4 - data[-2:].count("=")
