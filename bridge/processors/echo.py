"""`echo`: every item back unchanged — for wiring checks and benchmarks."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from bridge.items import Item
from bridge.processors.registry import Context, processor


class EchoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@processor("echo", params=EchoParams)
async def echo(item: Item, params: EchoParams, ctx: Context) -> Item:
    """Returns each item unchanged, binary data included."""
    return item
