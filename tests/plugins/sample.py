"""Processors the tests load through BRIDGE_PROCESSORS, as a user's plugin module would be."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict

from bridge import Binary, Context, Item, processor
from bridge.errors import IntegrationFailed

# The blocking processor holds its worker thread until a test opens this gate.
GATE = threading.Event()
ENTERED = threading.Event()


class Repeat(BaseModel):
    times: int = 1


@processor("repeat", params=Repeat)
def repeat(item: Item, params: Repeat, ctx: Context) -> list[dict]:
    """One input gives `times` outputs (zero, one or many)."""
    return [{**item.json, "copy": n} for n in range(params.times)]


@processor("fan_out")
async def fan_out(item: Item, params: dict, ctx: Context) -> list[dict]:
    """json.copies outputs for one input (zero, one or many), after json.delay seconds; the
    outputs keep none of the input's fields, and say when they were made (the bridge's clock)."""
    started = time.monotonic()
    await asyncio.sleep(item.json.get("delay", 0))
    done = time.monotonic()
    return [{"copy": n, "started": started, "done": done} for n in range(item.json["copies"])]


class Shown(BaseModel):
    """Parameters of each simple type (n8n shows them as fields), and a list (JSON only)."""

    model_config = ConfigDict(extra="forbid")
    greeting: str = "hello"
    times: int = 1
    ratio: float = 1.0
    loud: bool = False
    tone: Literal["plain", "warm"] = "plain"
    tags: list[str] = []


@processor("show_params", params=Shown)
def show_params(item: Item, params: Shown, ctx: Context) -> dict:
    """The item's json.n, and the parameters the processor was given."""
    return {"n": item.json.get("n"), "parameters": params.model_dump()}


@processor("fail_odd")
def fail_odd(item: Item, params: dict, ctx: Context) -> dict:
    """Fails every item whose json.n is odd."""
    if item.json["n"] % 2:
        raise ValueError(f"odd number {item.json['n']}")
    return item.json


@processor("blocking")
def blocking(item: Item, params: dict, ctx: Context) -> dict:
    """Blocks its worker thread until the test opens GATE."""
    ENTERED.set()
    GATE.wait(timeout=60)
    return {"released": True}


class Sleep(BaseModel):
    seconds: float


@processor("sleep", params=Sleep)
async def sleep(item: Item, params: Sleep, ctx: Context) -> dict:
    await asyncio.sleep(params.seconds)
    return {"slept": params.seconds}


@processor("sleep_sync", params=Sleep)
def sleep_sync(item: Item, params: Sleep, ctx: Context) -> dict:
    time.sleep(params.seconds)
    return {"slept": params.seconds}


@processor("spin", params=Sleep)
def spin(item: Item, params: Sleep, ctx: Context) -> dict:
    """Burns CPU for `seconds`, ignoring its deadline: a runaway plain processor."""
    end = time.monotonic() + params.seconds
    while time.monotonic() < end:
        pass
    return {"spun": params.seconds}


@processor("square", cpu_bound=True)
def square(item: Item, params: dict, ctx: Context) -> dict:
    """CPU-bound: runs in the process pool."""
    import os

    return {"square": item.json["x"] ** 2, "pid": os.getpid()}


@processor("count_batch", batch=True)
def count_batch(items: list[Item], params: dict, ctx: Context) -> list:
    """Batch: sees every item at once; items with json.bad get an exception in their place."""
    return [
        ValueError("bad item") if item.json.get("bad") else {"i": item.index, "of": len(items)}
        for item in items
    ]


@processor("wrong_batch", batch=True)
def wrong_batch(items: list[Item], params: dict, ctx: Context) -> list:
    return []


@processor("upper_file")
def upper_file(item: Item, params: dict, ctx: Context) -> Item:
    """Binary in, binary out: upper-cases the `file` attachment."""
    blob = item.binary["file"]
    return Item(
        json={"size": len(blob.data)},
        binary={"file": Binary(blob.data.upper(), blob.mime_type, blob.file_name)},
    )


@processor("unserialisable")
def unserialisable(item: Item, params: dict, ctx: Context) -> dict:
    return {"value": object()} if item.json.get("bad") else {"ok": True}


@processor("crash", batch=True)
def crash(items: list[Item], params: dict, ctx: Context) -> list:
    raise RuntimeError("the whole batch broke")


@processor("log_item")
def log_item(item: Item, params: dict, ctx: Context) -> dict:
    ctx.log.info("processing item %d", item.index)
    return item.json


FLAKY_CALLS: dict[str, int] = {}


class Flaky(BaseModel):
    failures: int = 1


@processor("flaky", params=Flaky, batch=True)
def flaky(items: list[Item], params: Flaky, ctx: Context) -> list:
    """Fails retryably for the first `failures` runs of a job (or of every job whose first item
    has the same json.key), then echoes."""
    key = str(items[0].json.get("key", ctx.job_id)) if items else ctx.job_id
    calls = FLAKY_CALLS[key] = FLAKY_CALLS.get(key, 0) + 1
    if calls <= params.failures:
        raise IntegrationFailed(f"the remote service is down (run {calls})")
    return [item.json for item in items]


@processor("quote_error")
def quote_error(item: Item, params: dict, ctx: Context) -> dict:
    """Fails the item with an error text quoting its json.message, however long."""
    raise ValueError(f"bad input: {item.json['message']}")


@processor("quote_crash", batch=True)
def quote_crash(items: list[Item], params: dict, ctx: Context) -> list:
    """Fails the whole job with an error text quoting the first item's json.message."""
    raise RuntimeError(f"bad batch: {items[0].json['message']}")
