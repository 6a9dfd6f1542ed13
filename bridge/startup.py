"""What stops `serve` at start, said as one line naming the setting (a ConfigError), and the
same checks made cheaply beforehand.

`listen` starts the app and binds its address: a failure there (address in use, a host that does
not resolve or is no address of this machine, a port it may not take) becomes
`BRIDGE_HOST/BRIDGE_PORT: cannot listen on HOST:PORT: address already in use`. `unless_stopped`
lets a signal end a start-up that waits (for Redis, say) at once. Whatever failed or was stopped,
the caller's `runner.cleanup()` lets go of what start-up took (see `bridge.app`).

`preflight` (`check-config --preflight`, which scripts/run.sh runs before its banner) finds what
would stop a start now without keeping anything: the address (bound and let go, on the same event
loop `serve` uses), the data directory's lock (embedded: taken and let go at once), Redis (one
round trip, REDIS_TIMEOUT_S). It answers for this moment only: a bridge running on the same data
directory or address makes it fail, as it would make `serve` fail.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from bridge import datadir
from bridge.settings import ConfigError, Settings, os_reason
from bridge.stores.redis_db import check_url

REDIS_TIMEOUT_S = 2.0


def listen_error(host: str, port: int, exc: OSError) -> ConfigError:
    """The one line for an address `serve` cannot listen on; it names the setting to change."""
    named = "BRIDGE_HOST" if exc.errno is None or exc.errno < 0 else "BRIDGE_HOST/BRIDGE_PORT"
    if exc.errno == errno.EADDRNOTAVAIL:  # the address is no interface's here
        named = "BRIDGE_HOST"
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return ConfigError(f"{named}: cannot listen on {address}: {os_reason(exc)}")


async def listen(runner: web.AppRunner, settings: Settings) -> None:
    """Start the app (its cleanup contexts) and listen on BRIDGE_HOST:BRIDGE_PORT."""
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
    except OSError as exc:
        raise listen_error(settings.host, settings.port, exc) from None


async def unless_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run `work`, unless `stop` is set first: then cancel it and answer False. A failure of
    `work` is raised; one that comes with the stop is not (a stop was asked)."""
    start = asyncio.create_task(work, name="start-up")
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({start, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not stop.is_set():
        await start  # its result, or its error
        return True
    # Once: a second cancellation could cut short the closing of what it opened (each cleanup
    # context's `finally`). On Python 3.11 a cancellation that lands as an `asyncio.wait_for`
    # completes is lost (redis-py writes through one); start-up then runs on to its end or its
    # failure, and is closed all the same.
    start.cancel()
    await asyncio.wait({start})
    if not start.cancelled():
        start.exception()  # retrieved: no "never retrieved" warning
    return False


async def preflight(settings: Settings) -> None:
    """ConfigError for what would stop `serve` now; nothing is kept."""
    try:
        server = await asyncio.get_running_loop().create_server(
            asyncio.Protocol, settings.host, settings.port
        )
    except OSError as exc:
        raise listen_error(settings.host, settings.port, exc) from None
    server.close()
    await server.wait_closed()
    if settings.redis_url is None:
        try:
            datadir.check_usable(settings.data_dir)
            datadir.check_free(settings.data_dir)
        except datadir.InUse as exc:
            raise ConfigError(f"BRIDGE_DATA_DIR: {exc}") from None
        except OSError as exc:
            raise ConfigError(
                f"BRIDGE_DATA_DIR: cannot use {settings.data_dir}: {os_reason(exc)}"
            ) from None
        return
    await check_url(settings.redis_url, REDIS_TIMEOUT_S)
