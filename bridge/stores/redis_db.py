"""The Redis connection of the Redis backend, written with group commit (`batching`).

Stores put objects of a `Kind` (job records, queue entries, events…), each of which becomes a few
Redis commands; a batch goes out as one call of a Lua script that runs them all (`APPLY`), so
what one transition writes — a job's outcome, its callback in the outbox, the acknowledgement of
its queue entry — lands together or not at all. One script call instead of a MULTI pipeline:
redis-py spends some 15 µs of Python packing and parsing per pipelined command, and a job's
transitions write about 35; the commands travel as one MessagePack blob that the script unpacks
(`cmsgpack`, built into Redis). Reads are plain commands.

Two clients share the URL: `redis` for commands (a short socket timeout, so an outage shows at
once) and `blocking` for XREAD/XREADGROUP … BLOCK, whose socket timeout is longer than BLOCK_MS.
`watch` pings Redis every second and reports each change of state (up ↔ down) to `on_change`.
Works on Redis 7.0 and later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bridge.aio import stop_tasks
from bridge.redact import MASK, redact_url
from bridge.settings import ConfigError
from bridge.stores.batching import REMOVED, Batch, GroupCommit

log = logging.getLogger(__name__)

PREFIX = "bridge:"
BLOCK_MS = 2000
COMMAND_TIMEOUT_S = 5.0
MIN_VERSION = (7, 0)
WATCH_INTERVAL_S = 1.0


Command = list[str | bytes]
# Runs a batch: a MessagePack list of commands, each a list of strings. One pseudo-command:
# EVENT stream counter cap body origin at [list keep ttl] — appends an event with the counter's
# next value as id; with a list (its job's), pushes the id there too, keeping the last `keep`.
APPLY = """
local commands = cmsgpack.unpack(ARGV[1])
for i = 1, #commands do
  local c = commands[i]
  if c[1] == 'EVENT' then
    local n = redis.call('INCR', c[3])
    redis.call('XADD', c[2], 'MAXLEN', '~', c[4], n .. '-0', 'b', c[5], 'o', c[6], 't', c[7])
    if c[8] then
      redis.call('RPUSH', c[8], n)
      redis.call('LTRIM', c[8], -tonumber(c[9]), -1)
      redis.call('EXPIRE', c[8], c[10])
    end
  else
    redis.call(unpack(c))
  end
end
return #commands
"""


@dataclass(frozen=True, slots=True)
class Kind:
    """How pending objects of one kind become commands: `write(commands, key, obj)` appends
    them, `delete(commands, key)` those of a removal. Numbers go as exact strings (`num`)."""

    name: str
    write: Callable[[list[Command], str, Any], None]
    delete: Callable[[list[Command], str], None] | None = None


def num(value: float) -> str:
    """A number as Redis should get it: exact (Lua would round a float to 14 digits)."""
    return repr(value) if isinstance(value, float) else str(value)


def key(*parts: str) -> str:
    return PREFIX + ":".join(parts)


def consumer_name(color: str | None) -> str:
    """This instance's name in the consumer groups, stable for its life: colour, host, pid, and
    a few random characters (two apps in one process stay apart)."""
    return f"{color or 'bridge'}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


async def check_server(client: aioredis.Redis, url: str) -> None:
    """One round trip: when the Redis at `url` cannot serve (unreachable, refusing the
    credentials, older than 7.0), ConfigError — one line naming the URL without its
    credentials."""
    try:
        info = await client.info("server")
    except (RedisError, OSError) as exc:
        raise ConfigError(
            f"BRIDGE_REDIS_URL: Redis at {redact_url(url)} cannot serve: "
            f"{type(exc).__name__}: {without_password(url, str(exc))}"
        ) from None
    version = tuple(int(part) for part in str(info["redis_version"]).split(".")[:2])
    if version < MIN_VERSION:
        raise ConfigError(
            f"BRIDGE_REDIS_URL: Redis {info['redis_version']} at {redact_url(url)} "
            "is too old: the bridge needs Redis 7.0 or later"
        )


async def check_url(url: str, timeout_s: float) -> None:
    """`check_server` on a client of its own, closed again: nothing is kept."""
    client = aioredis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    try:
        await check_server(client, url)
    finally:
        await client.aclose()


def without_password(url: str, text: str) -> str:
    """`text` (a Redis client's error) with the URL's password masked, should it quote it."""
    password = urlsplit(url).password
    return text.replace(unquote(password), MASK) if password else text


class RedisDb(GroupCommit):
    def __init__(self, url: str, kinds: tuple[Kind, ...]) -> None:
        super().__init__((kind.name for kind in kinds), self._write)
        self.url = url
        self._writers = {kind.name: kind for kind in kinds}
        self.redis = aioredis.Redis.from_url(
            url,
            socket_timeout=COMMAND_TIMEOUT_S,
            socket_connect_timeout=COMMAND_TIMEOUT_S,
            health_check_interval=30,
        )
        self.blocking = aioredis.Redis.from_url(
            url,
            socket_timeout=BLOCK_MS / 1000 + COMMAND_TIMEOUT_S,
            socket_connect_timeout=COMMAND_TIMEOUT_S,
        )
        self._apply = self.redis.register_script(APPLY)
        self.up = False
        self.down_reason: str | None = "not connected yet"
        self.on_change: list[Callable[[bool, str | None], None]] = []
        self._watcher: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Connect and check the server (`check_server`); on failure the clients are closed."""
        try:
            await check_server(self.redis, self.url)
        except ConfigError:
            await self.redis.aclose()
            await self.blocking.aclose()
            raise
        self._changed(True, None)
        self.start("redis-writer")
        self._watcher = asyncio.create_task(self._watch(), name="redis-watch")

    async def close(self) -> None:
        if self._watcher is not None:
            await stop_tasks([self._watcher])
        with contextlib.suppress(RedisError, OSError, RuntimeError):
            await self.stop()
        await self.redis.aclose()
        await self.blocking.aclose()

    async def _write(self, batch: Batch) -> None:
        commands: list[Command] = []
        for name, objs in batch.items():
            kind = self._writers[name]
            for obj_key, obj in objs.items():
                if obj is not REMOVED:
                    kind.write(commands, obj_key, obj)
                elif kind.delete is not None:
                    kind.delete(commands, obj_key)
        if commands:  # Redis's cmsgpack reads only the old raw type: no str8/bin types
            await self._apply(args=[msgpack.packb(commands, use_bin_type=False)])

    async def ping(self) -> None:
        if not self.up:
            raise ConnectionError(f"Redis is unreachable: {self.down_reason}")
        try:
            await self.redis.ping()
        except (RedisError, OSError) as exc:
            self._changed(False, self._reason(exc))
            raise ConnectionError(f"Redis is unreachable: {self.down_reason}") from None
        if not self.running:
            raise RuntimeError("the Redis writer has stopped")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            try:
                await self.redis.ping()
            except (RedisError, OSError) as exc:
                self._changed(False, self._reason(exc))
            else:
                self._changed(True, None)

    def _reason(self, exc: Exception) -> str:
        return f"{type(exc).__name__}: {without_password(self.url, str(exc))}"

    def _changed(self, up: bool, reason: str | None) -> None:
        if up == self.up:
            return
        self.up, self.down_reason = up, reason
        if up:
            log.info("Redis is reachable at %s", redact_url(self.url))
        else:
            log.error("Redis is unreachable (%s); background jobs are refused meanwhile", reason)
        for callback in self.on_change:
            callback(up, reason)
