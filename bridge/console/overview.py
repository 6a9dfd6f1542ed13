"""The overview: this instance's state at a glance, with charts of the last 15 minutes (kept in
memory by `bridge.history`), refreshed live."""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web
from markupsafe import Markup

from bridge.api.admin import snapshot
from bridge.api.health import readiness
from bridge.console.charts import sparkline
from bridge.console.render import page
from bridge.history import SAMPLE_INTERVAL_S
from bridge.keys import HISTORY

# (series, caption): the charts shown first, then each queue's depth.
CHARTS = (
    ("completed", f"jobs completed here, per {SAMPLE_INTERVAL_S:.0f} s"),
    ("failed", f"jobs failed here, per {SAMPLE_INTERVAL_S:.0f} s"),
    ("in_flight", "jobs running here"),
    ("oldest_wait_s", "oldest wait in a queue, seconds"),
    ("callbacks_delivered", f"callbacks delivered, per {SAMPLE_INTERVAL_S:.0f} s"),
    ("callbacks_failed", f"callbacks dead-lettered, per {SAMPLE_INTERVAL_S:.0f} s"),
)


@dataclass(frozen=True, slots=True)
class Chart:
    svg: Markup
    caption: str


def charts(app: web.Application) -> list[Chart]:
    series = app[HISTORY].series()
    shown = [(name, caption) for name, caption in CHARTS if name in series]
    shown += [
        (name, f"queue {name.removeprefix('depth:')}: depth")
        for name in series
        if name.startswith("depth:")
    ]
    return [Chart(sparkline(series[name], label=caption), caption) for name, caption in shown]


async def overview(request: web.Request) -> web.StreamResponse:
    return page(
        request,
        "overview.html",
        title="Overview",
        state=await snapshot(request.app),
        checks=await readiness(request.app),
        charts=charts(request.app),
        now=time.time(),
    )
