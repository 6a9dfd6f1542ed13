"""Memory is bounded by the body limit, not by what the body holds: a real daemon's peak RSS
(VmHWM) grows by at most MULTIPLE x BRIDGE_MAX_BODY_BYTES for a request of any shape within the
limit — a million empty items, nesting, short strings, numbers, pairedItem lists, binaries.

MULTIPLE is 20, from what ordinary requests cost: JSON parsed into Python objects takes 5-12x its
text (a float: 4 bytes of text, 32 of memory), and a sync request holds the body, the parsed
items, their records and the encoded answer at once. Measured here: ordinary records and arrays
of floats ~16x the limit, everything else less. Before the guard, 16.8 MB of empty items raised
VmHWM by ~640 MB (38x) and pairedItem lists by ~1 GB (63x).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from bridge.api.body import STRUCTURE_BYTES_PER_UNIT, check_structure, structure_units
from bridge.errors import PayloadTooLarge
from bridge.execution import BINARY_BYTES, ITEM_BYTES
from tests.daemon import Daemon

MULTIPLE = 20
API_KEY = "memory-test-api-key-0123456789"
HEADERS = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
MIB = 1024 * 1024


def _fill(head: bytes, one: bytes, tail: bytes, limit: int, cap: int | None = None) -> bytes:
    """`head` + as many `one`s as the bridge takes + `tail`: the most within the byte limit,
    the structure budget and `cap` — the worst a client can send of that shape."""
    by_bytes = (limit - len(head) - len(tail) - 64) // (len(one) + 1)
    budget = limit // STRUCTURE_BYTES_PER_UNIT - structure_units(head + tail) - 64
    by_units = budget // structure_units(one + b",")
    count = min(by_bytes, by_units, cap or by_bytes)
    return head + b",".join([one] * count) + tail


def _numbered(head: bytes, one: bytes, tail: bytes, limit: int, cap: int | None = None) -> bytes:
    """As `_fill`, with `one` a pattern of a number (each distinct: object keys)."""
    parts: list[bytes] = []
    size, units = len(head) + len(tail) + 64, structure_units(head + tail) + 64
    while (
        size < limit and units < limit // STRUCTURE_BYTES_PER_UNIT and len(parts) <= (cap or limit)
    ):
        parts.append(one % len(parts))
        size += len(parts[-1]) + 1
        units += structure_units(parts[-1] + b",")
    return head + b",".join(parts[:-1]) + tail


EXECUTE = b'{"processing_type":"echo","items":['
RECORD = b'{"json":{"name":"Alice Smith","email":"alice@example.com","age":31,"active":true}}'
SHAPES: dict[str, Callable[[int], bytes]] = {
    "empty items": lambda n: _fill(EXECUTE, b'{"json":{}}', b"]}", n),
    "empty items, as many as allowed": lambda n: _fill(
        EXECUTE, b'{"json":{}}', b"]}", n, min(100_000, n // ITEM_BYTES)
    ),
    "items without json": lambda n: _fill(EXECUTE, b"{}", b"]}", n),
    "hybrid records": lambda n: _fill(b'{"processing_type":"echo","data":[', b"{}", b"]}", n),
    "pairedItem lists": lambda n: _fill(
        EXECUTE + b'{"json":{},"pairedItem":[', b'{"item":1}', b"]}]}", n
    ),
    "binaries": lambda n: _numbered(
        EXECUTE + b'{"json":{},"binary":{', b'"%d":{"data":""}', b"}}]}", n
    ),
    "binaries, as many as allowed": lambda n: _numbered(
        EXECUTE + b'{"json":{},"binary":{', b'"%d":{"data":""}', b"}}]}", n, n // BINARY_BYTES
    ),
    "nested arrays in json": lambda n: _fill(EXECUTE + b'{"json":{"a":[', b"[]", b"]}}]}", n),
    "arrays in parameters": lambda n: _fill(
        b'{"processing_type":"echo","items":[],"parameters":{"a":[', b"[]", b"]}}", n
    ),
    "short strings": lambda n: _fill(EXECUTE + b'{"json":{"a":[', b'"ab"', b"]}}]}", n),
    "small numbers": lambda n: _fill(EXECUTE + b'{"json":{"a":[', b"1.5", b"]}}]}", n),
    "ordinary records": lambda n: _fill(EXECUTE, RECORD, b"]}", n),
}


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("limit", [2 * MIB, 16 * MIB], ids=["2MiB", "16MiB"])
@pytest.mark.parametrize("shape", SHAPES)
async def test_rss_growth_of_a_request_is_bounded_by_the_body_limit(
    tmp_path: Path, shape: str, limit: int
) -> None:
    body = SHAPES[shape](limit)
    assert len(body) <= limit
    env = {
        "BRIDGE_DATA_DIR": str(tmp_path / "data"),
        "BRIDGE_JWT_SECRET": "a-test-secret-that-is-long-enough-0123456789",
        "BRIDGE_API_KEYS": API_KEY,
        "BRIDGE_MAX_BODY_BYTES": str(limit),
        "BRIDGE_ACCESS_LOG": "false",
    }
    async with Daemon(env) as daemon, aiohttp.ClientSession() as session:
        assert daemon.process is not None
        url = warm_url = f"{daemon.url}/api/v1/workflow/execute"
        if b'"data":[' in body[:40]:
            url = f"{daemon.url}/api/v1/hybrid-processing"
        warm = b'{"processing_type":"echo","items":[{"json":{"a":1}}]}'
        async with session.post(warm_url, data=warm, headers=HEADERS) as response:
            assert response.status == 200  # imports and first-use caches are not the request's
        before = _peak_mb(daemon.process.pid)
        async with session.post(url, data=io.BytesIO(body), headers=HEADERS) as response:
            status = response.status
            answer = await response.read()
        growth = _peak_mb(daemon.process.pid) - before
        print(f"\n{shape}, {len(body) / MIB:.1f} MiB: {status}, VmHWM +{growth:.0f} MB")
        assert status in (200, 413, 422), answer[:300]  # 422: echo takes no parameters
        if status == 413:
            assert b"payload_too_large" in answer
        assert growth <= MULTIPLE * limit / MIB, f"{shape}: +{growth:.0f} MB"
        assert not [r for r in daemon.records() if r.get("level") == "error"]


async def test_ordinary_records_up_to_the_item_limit_are_accepted(tmp_path: Path) -> None:
    """The guard refuses shapes, not sizes: 100,000 ordinary records (8.8 MB) still run."""
    body = EXECUTE + b",".join([RECORD] * 100_000) + b"]}"
    env = {
        "BRIDGE_DATA_DIR": str(tmp_path / "data"),
        "BRIDGE_JWT_SECRET": "a-test-secret-that-is-long-enough-0123456789",
        "BRIDGE_API_KEYS": API_KEY,
        "BRIDGE_ACCESS_LOG": "false",
    }
    async with Daemon(env) as daemon, aiohttp.ClientSession() as session:
        url = f"{daemon.url}/api/v1/workflow/execute"
        async with session.post(url, data=io.BytesIO(body), headers=HEADERS) as response:
            assert response.status == 200, (await response.read())[:300]
            assert len((await response.json())["items"]) == 100_000


def _five_counts(raw: bytes) -> int:
    return (
        8 * raw.count(b"{")
        + 3 * raw.count(b"[")
        + raw.count(b'"')
        + raw.count(b",")
        + raw.count(b":")
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        RECORD,
        b'{"items":[' + b",".join([RECORD] * 20_000) + b"]}",  # several slices, cut anywhere
        bytes(range(256)) * 5000,
        b"{" * 600_000 + b"[" * 300_000,
    ],
    ids=["empty", "a record", "records", "every byte", "brackets"],
)
def test_structure_units_are_the_weighted_count_of_the_structure_characters(raw: bytes) -> None:
    assert structure_units(raw) == _five_counts(raw)


def test_a_body_of_only_objects_is_refused_from_one_byte_past_its_budget() -> None:
    # Bodies too short to reach the budget are not counted: the shortest refused one is all `{`.
    limit = 64 * 1024
    most = limit // STRUCTURE_BYTES_PER_UNIT // 8
    check_structure(b"{" * most, limit)
    with pytest.raises(PayloadTooLarge):
        check_structure(b"{" * (most + 1), limit)
