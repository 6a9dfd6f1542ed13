"""`n8n-bridge serve | token | check-config` (also `python -m bridge`)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import re
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from bridge import __version__, logs, startup
from bridge.api.edge import EdgeRunner
from bridge.app import create_app
from bridge.auth import Authenticator, NoSigningKey, mint_token
from bridge.keys import LIFECYCLE, RUNNER
from bridge.processors.registry import Registry, RegistryError
from bridge.settings import ConfigError, Settings, load_settings, prepare

GC_YOUNG_THRESHOLD = 50_000

log = logging.getLogger("bridge")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
EXIT_CONFIG = 2
EXIT_NO_SIGNING_KEY = 3  # `token`: the settings are valid, but nothing can sign a token


def parse_duration(text: str) -> float:
    """'90', '90s', '15m', '1h', '7d' → seconds."""
    match = _DURATION.fullmatch(text.strip())
    if not match or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 3600, 15m, 1h or 7d)")
    return float(match[1]) * _UNITS[match[2]]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="n8n-bridge", description="Run real Python from n8n workflows."
    )
    parser.add_argument("--version", action="version", version=f"n8n-bridge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "--config", type=Path, help="TOML file with settings (BRIDGE_* variables override it)"
    )
    commands.add_parser("serve", parents=[config], help="run the daemon")
    token = commands.add_parser(
        "token",
        parents=[config],
        help="print a JWT signed with the configured secret",
        epilog=f"Exits {EXIT_NO_SIGNING_KEY} when there is no HS256 secret to sign with "
        "(only API keys or public keys configured).",
    )
    token.add_argument(
        "--scope",
        default="execute,status",
        help="comma-separated: execute, status, admin (default: execute,status)",
    )
    token.add_argument(
        "--ttl",
        type=parse_duration,
        default=3600.0,
        help="lifetime: seconds or 15m, 1h, 7d (default: 1h)",
    )
    token.add_argument("--subject", default="n8n-bridge-cli", help="the token's `sub` claim")
    token.add_argument(
        "--workflow",
        action="append",
        metavar="ID",
        help="limit the token to this workflow id (repeatable; a trailing * makes it a prefix, "
        "e.g. team-a-*); without it the token reaches every workflow",
    )
    check = commands.add_parser(
        "check-config", parents=[config], help="validate and print the effective settings"
    )
    check.add_argument(
        "--preflight",
        action="store_true",
        help="also what would stop `serve` now: the address taken or not this machine's, the "
        "data directory held by a running bridge, Redis not answering (nothing is kept)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _current_dir_importable()
    try:
        settings = load_settings(args.config)
        if args.command == "check-config":
            return _check_config(settings, args.preflight)
        settings, notice = prepare(settings)
        if args.command == "token":
            scopes = [s.strip() for s in args.scope.split(",") if s.strip()]
            print(mint_token(settings, scopes, args.ttl, args.subject, args.workflow))
            if notice and "generated" in notice:
                print(notice, file=sys.stderr)
            return 0
        return _serve(settings, notice)
    except NoSigningKey as exc:
        print(f"n8n-bridge: error: {exc}", file=sys.stderr)
        return EXIT_NO_SIGNING_KEY
    except (ConfigError, RegistryError) as exc:
        print(f"n8n-bridge: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _current_dir_importable() -> None:
    """Modules named by BRIDGE_PROCESSORS are found in the current directory, as `python -m`
    finds them: the console script puts its own folder on the path instead. Last on the path,
    so a file there never shadows an installed module. The process pool's processes inherit
    the path."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def _check_config(settings: Settings, preflight: bool) -> int:
    """Every check first, then what it found: a bad setting gets its one line alone."""
    if not settings.auth_configured:
        if settings.env == "production":
            prepare(settings)  # raises the production error
    else:
        Authenticator(settings)  # loads and checks every public key
    registry = Registry.load(settings.processors)
    if preflight:
        _run_loop(startup.preflight(settings))
    if not settings.auth_configured:
        print(
            f"note: no auth configured; dev mode generates a JWT secret in {settings.data_dir}",
            file=sys.stderr,
        )
    print(orjson.dumps(settings.masked(), option=orjson.OPT_INDENT_2).decode())
    print(f"processors: {', '.join(registry.names())}", file=sys.stderr)
    return 0


def _serve(settings: Settings, notice: str | None) -> int:
    logs.configure(settings.log_format, settings.log_level, settings.color)
    if notice:
        log.warning(notice)
    app = create_app(settings)
    _run_loop(_run(app, settings))
    busy = app[RUNNER].busy if RUNNER in app else 0
    if busy:
        # Python would wait for these threads at exit: the shutdown bound would not hold.
        log.warning("exiting with %d processor call(s) still running past the shutdown bound", busy)
        logs.flush_now()
        os._exit(0)
    return 0


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        asyncio.run(main)
    else:
        uvloop.run(main)


async def _run(app: web.Application, settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting, let in-flight requests finish within
    BRIDGE_SHUTDOWN_TIMEOUT_S, and close every resource. A start-up that fails (one line: a
    ConfigError) or that a signal stops closes what it had opened just the same."""
    # First: a SIGTERM during start-up, or right after the "listening" line (a supervisor, a
    # test), must stop it cleanly too.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = EdgeRunner(app, access_log=None, shutdown_timeout=settings.shutdown_timeout_s)
    flusher = asyncio.create_task(_flush_logs())
    try:
        if not await startup.unless_stopped(startup.listen(runner, settings), stop):
            log.info("stopping: a signal came during start-up")
            return
        _settle_collector()
        for address in runner.addresses:
            host, port = address[0], address[1]
            log.info(
                "listening on http://%s:%d",
                f"[{host}]" if ":" in host else host,
                port,
                extra={"version": __version__, "env": settings.env},
            )
        await stop.wait()
        app[LIFECYCLE].drain("signal received")
        log.info(
            "stopping: no new connections; in-flight requests get up to %g s",
            settings.shutdown_timeout_s,
        )
    finally:
        # Exits the cleanup contexts that were entered, in reverse: also those of a start-up
        # that stopped half-way (the data directory's lock, Redis, the pools, the writers).
        await runner.cleanup()
        flusher.cancel()
    log.info("stopped")
    logs.flush_now()


def _settle_collector() -> None:
    # What start-up made lives as long as the process: keep it out of the collector's full
    # passes, which would otherwise walk it again and again (tens of ms each here).
    gc.collect()
    gc.freeze()
    # A 10,000-item request keeps ~100,000 objects alive until its answer is sent; at CPython's
    # default young threshold (700) the collector walks them again and again.
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


async def _flush_logs() -> None:
    while True:
        await asyncio.sleep(logs.FLUSH_INTERVAL_S)
        logs.flush_now()
