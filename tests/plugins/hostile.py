"""A processor whose description is markup, as a careless or hostile plugin's may be: pages that
show it must show it as text."""

from __future__ import annotations

from bridge import Context, Item, processor

DESCRIPTION = '<script>alert("description")</script><img src=x onerror="alert(1)">'


@processor("hostile_description", description=DESCRIPTION)
def hostile_description(item: Item, params: dict, ctx: Context) -> dict:
    return item.json
