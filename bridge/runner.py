"""Runs a processor over items without stalling the event loop.

Async functions run on the loop; plain functions run in a thread pool; `cpu_bound` ones in a process
pool (or the thread pool, with BRIDGE_CPU_EXECUTOR=thread), split into chunks across its workers.
A whole batch goes to a pool in one call, and the loop there stops at the deadline, so a timed-out
job does not keep a worker busy for long. A thread-pool call still running ABANDON_AFTER_S after
its caller stopped waiting is abandoned: another thread takes its place (see `thread_pool`). An
exception for one item becomes that item's error; the others go on.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import logging
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any

from bridge import logs
from bridge.errors import BridgeError, ProcessorFailed, Timeout, cut_short
from bridge.items import Item, ItemError, outputs_of
from bridge.metrics import Metrics
from bridge.processors.registry import Context, ProcessorSpec
from bridge.settings import Settings
from bridge.thread_pool import ThreadPool

log = logging.getLogger(__name__)

# One entry per input: its outputs, or its error.
Outcome = list[Item] | ItemError
MIN_CHUNK = 64
# Built-in work (templates, validation) ends at its deadline by itself, within milliseconds; a
# call still running this long after its caller stopped waiting does not stop by itself.
ABANDON_AFTER_S = 1.0


def _item_error(index: int, exc: BaseException) -> ItemError:
    if isinstance(exc, BridgeError):
        return ItemError(index, exc.code, exc.message)
    return ItemError(index, "processor_error", cut_short(f"{type(exc).__name__}: {exc}"))


def _log_item_failure(ctx: Context, index: int, exc: BaseException) -> None:
    ctx.log.warning(
        "item %d failed: %s: %s",
        index,
        type(exc).__name__,
        cut_short(str(exc)),
        exc_info=not isinstance(exc, BridgeError),
    )


def _one(func: Callable[..., Any], item: Item, params: Any, ctx: Context) -> Outcome:
    try:
        return outputs_of(func(item, params, ctx))
    except Exception as exc:
        _log_item_failure(ctx, item.index, exc)
        return _item_error(item.index, exc)


def run_items(
    func: Callable[..., Any], items: Sequence[Item], params: Any, ctx: Context
) -> list[Outcome]:
    """A sync per-item function over a batch; stops taking items once the deadline has passed."""
    outcomes: list[Outcome] = []
    for item in items:
        if ctx.past_deadline():
            break
        outcomes.append(_one(func, item, params, ctx))
    return outcomes


def batch_outcomes(items: Sequence[Item], results: Any, ctx: Context) -> list[Outcome]:
    """Check a batch function's answer (one entry per input) and normalise each entry."""
    if not isinstance(results, list | tuple) or len(results) != len(items):
        got = len(results) if isinstance(results, list | tuple) else type(results).__name__
        raise ProcessorFailed(
            f"batch processor {ctx.processor!r} must return one result per item "
            f"({len(items)}), got {got}"
        )
    outcomes: list[Outcome] = []
    for item, result in zip(items, results, strict=True):
        if isinstance(result, BaseException):
            _log_item_failure(ctx, item.index, result)
            outcomes.append(_item_error(item.index, result))
            continue
        try:
            outcomes.append(outputs_of(result))
        except TypeError as exc:
            outcomes.append(_item_error(item.index, exc))
    return outcomes


def run_batch(
    func: Callable[..., Any], items: Sequence[Item], params: Any, ctx: Context
) -> list[Outcome]:
    return batch_outcomes(items, func(list(items), params, ctx), ctx)


def _init_process(log_format: str, log_level: str, color: str | None) -> None:
    logs.configure(log_format, log_level, color)  # type: ignore[arg-type]


class Runner:
    """Owns the pools; `run` executes one job's items under its timeout and concurrency."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        # Python's own default size for a thread pool.
        size = settings.thread_workers or min(32, (os.cpu_count() or 1) + 4)
        self._threads = ThreadPool(size, settings.max_abandoned_threads)
        metrics.thread_pool_abandoned.set_function(lambda: self._threads.abandoned)
        self._processes: ProcessPoolExecutor | None = None
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._busy = 0
        self._busy_lock = threading.Lock()

    @property
    def process_workers(self) -> int:
        return self._settings.process_workers or os.cpu_count() or 1

    def _process_pool(self) -> Executor:
        if self._processes is None:
            # forkserver: never fork a process that runs an event loop and threads.
            self._processes = ProcessPoolExecutor(
                max_workers=self.process_workers,
                mp_context=multiprocessing.get_context("forkserver"),
                initializer=_init_process,
                initargs=(
                    self._settings.log_format,
                    self._settings.log_level,
                    self._settings.color,
                ),
            )
        return self._processes

    def timeout_for(self, spec: ProcessorSpec, requested: float | None, mode: str) -> float:
        """The request's timeout within the processor's; by default BRIDGE_SYNC_TIMEOUT_S for
        sync jobs, BRIDGE_JOB_TIMEOUT_S for background ones."""
        default = self._settings.sync_timeout_s if mode == "sync" else self._settings.job_timeout_s
        limit = spec.timeout_s or default
        return min(requested, limit) if requested else limit

    async def run(
        self,
        spec: ProcessorSpec,
        items: Sequence[Item],
        params: Any,
        ctx: Context,
        timeout_s: float,
    ) -> list[Outcome]:
        limit = self._limit(spec)
        ctx = dataclasses.replace(ctx, deadline=time.monotonic() + timeout_s)
        try:
            async with asyncio.timeout(timeout_s):
                if limit is None:
                    outcomes = await self._dispatch(spec, items, params, ctx)
                else:
                    async with limit:
                        outcomes = await self._dispatch(spec, items, params, ctx)
        except TimeoutError:
            raise Timeout(
                f"processor {spec.name!r} did not finish within {timeout_s:g} s",
                description="raise timeout_s, or send fewer items per request",
            ) from None
        except BridgeError:
            raise
        except Exception as exc:
            ctx.log.exception("processor %r failed for the whole job", spec.name)
            raise ProcessorFailed(
                f"processor {spec.name!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if len(outcomes) < len(items):  # a pool loop stopped at the deadline
            raise Timeout(f"processor {spec.name!r} did not finish within {timeout_s:g} s")
        return outcomes

    def _limit(self, spec: ProcessorSpec) -> asyncio.Semaphore | None:
        if spec.concurrency is None:
            return None
        if spec.name not in self._limits:
            self._limits[spec.name] = asyncio.Semaphore(spec.concurrency)
        return self._limits[spec.name]

    async def _dispatch(
        self,
        spec: ProcessorSpec,
        items: Sequence[Item],
        params: Any,
        ctx: Context,
    ) -> list[Outcome]:
        if spec.is_async:
            if spec.batch:
                return batch_outcomes(items, await spec.func(list(items), params, ctx), ctx)
            return await self._async_items(spec, items, params, ctx)
        if spec.cpu_bound and self._settings.cpu_executor == "process":
            return await self._in_processes(spec, items, params, ctx)
        return await self._in_threads(spec, items, params, ctx)

    async def _async_items(
        self, spec: ProcessorSpec, items: Sequence[Item], params: Any, ctx: Context
    ) -> list[Outcome]:
        async def one(item: Item) -> Outcome:
            try:
                return outputs_of(await spec.func(item, params, ctx))
            except Exception as exc:
                _log_item_failure(ctx, item.index, exc)
                return _item_error(item.index, exc)

        if spec.item_concurrency == 1 or len(items) == 1:
            return [await one(item) for item in items]
        gate = asyncio.Semaphore(spec.item_concurrency)

        async def gated(item: Item) -> Outcome:
            async with gate:
                return await one(item)

        return list(await asyncio.gather(*(gated(item) for item in items)))

    async def _in_threads(
        self, spec: ProcessorSpec, items: Sequence[Item], params: Any, ctx: Context
    ) -> list[Outcome]:
        call = (
            functools.partial(run_batch, spec.func, items, params, ctx)
            if spec.batch
            else functools.partial(run_items, spec.func, items, params, ctx)
        )
        # Carry the request's context variables (trace id) into the worker thread's log lines.
        context = contextvars.copy_context()
        future = self._threads.run(functools.partial(context.run, call), repr(spec.name))
        self._count_busy(future)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:  # its deadline passed, or the request went away
            asyncio.get_running_loop().call_later(ABANDON_AFTER_S, self._abandon, future, spec.name)
            raise

    def _abandon(self, future: Future[Any], processor: str) -> None:
        """Give a call's thread up to the pool if the call is still running (see `thread_pool`)."""
        outcome = self._threads.abandon(future)
        if outcome in ("cancelled", "ended"):
            return
        self._metrics.thread_pool_overruns.labels(outcome).inc()
        pool = self._threads
        if outcome == "abandoned":
            log.warning(
                "abandoned the thread of processor %r: still running %g s after its caller "
                "stopped waiting (its deadline), replaced in the pool "
                "(%d of at most %d abandoned threads)",
                processor,
                ABANDON_AFTER_S,
                pool.abandoned,
                pool.max_abandoned,
                extra={"processor": processor},
            )
        else:
            log.error(
                "processor %r runs past its deadline and keeps its thread: %d threads are "
                "abandoned already (BRIDGE_MAX_ABANDONED_THREADS); the pool has one fewer",
                processor,
                pool.abandoned,
                extra={"processor": processor},
            )

    def _submit(
        self, pool: Executor, call: Callable[[], list[Outcome]]
    ) -> asyncio.Future[list[Outcome]]:
        future = pool.submit(call)
        self._count_busy(future)
        return asyncio.wrap_future(future)

    def _count_busy(self, future: Future[Any]) -> None:
        """Count a pool call as busy until it really ends — a timed-out or cancelled await
        does not stop a running thread or process."""
        with self._busy_lock:
            self._busy += 1
        future.add_done_callback(self._done)

    def _done(self, _: object) -> None:
        with self._busy_lock:
            self._busy -= 1

    @property
    def busy(self) -> int:
        """Pool calls still running."""
        return self._busy

    def thread_status(self) -> dict[str, int]:
        """The thread pool's figures for /admin/status."""
        return self._threads.status()

    async def _in_processes(
        self,
        spec: ProcessorSpec,
        items: Sequence[Item],
        params: Any,
        ctx: Context,
    ) -> list[Outcome]:
        pool = self._process_pool()
        ctx = dataclasses.replace(ctx, services=None)  # connections cannot cross processes
        if spec.batch:
            return await self._submit(
                pool, functools.partial(run_batch, spec.func, items, params, ctx)
            )
        size = max(MIN_CHUNK, math.ceil(len(items) / self.process_workers))
        chunks = [items[start : start + size] for start in range(0, len(items), size)]
        parts = await asyncio.gather(
            *(
                self._submit(pool, functools.partial(run_items, spec.func, chunk, params, ctx))
                for chunk in chunks
            )
        )
        return [outcome for part in parts for outcome in part]

    def close(self) -> None:
        self._threads.close()
        if self._processes is not None:
            self._processes.shutdown(wait=False, cancel_futures=True)
