"""Operations (scope admin): status, dead letters and their replay, retrying a job, draining."""

from __future__ import annotations

import time

from aiohttp import web

from bridge import __version__
from bridge.api.body import json_response, parse_query
from bridge.api.execute import accepted_response
from bridge.api.models import DeadLettersQuery
from bridge.errors import Conflict, NotFound, ValidationFailed
from bridge.keys import (
    BACKEND,
    BREAKERS,
    DELIVERER,
    EVENTS,
    LIFECYCLE,
    OUTBOX,
    RUNNER,
    SETTINGS,
    TRACE_ID,
    WORKERS,
)
from bridge.stores.base import LETTER_KEY, decode_cursor, encode_cursor
from bridge.webhooks import Delivery


async def status(request: web.Request) -> web.Response:
    return json_response(await snapshot(request.app))


async def snapshot(app: web.Application) -> dict[str, object]:
    """This instance's state, as /admin/status and the console's overview show it."""
    settings, lifecycle, workers = app[SETTINGS], app[LIFECYCLE], app[WORKERS]
    return {
        "color": settings.color,
        "version": __version__,
        "uptime_s": round(lifecycle.uptime_s, 3),
        "draining": lifecycle.draining,
        "backends": app[BACKEND].describe(),
        "queues": workers.status(),
        "drained": _drained(app),
        "workers": {"in_flight": workers.in_flight, "queued": workers.queued},
        "threads": app[RUNNER].thread_status(),
        "deliveries": {**_deliveries(app), "hosts": app[DELIVERER].hosts()},
        "dead_letters": await _dead_letter_count(app),
        "breakers": app[BREAKERS].states(),
        "last_event_id": app[EVENTS].last_id,
    }


def _drained(app: web.Application) -> bool:
    """Draining, and nothing of this instance's own left to finish: no run, no callback or event
    webhook being sent, and — when its queues are its own — no queued job. Safe to stop: shared
    queues are another instance's to empty, and a delivery waiting for its next attempt is in
    the outbox, sent after the stop by another instance (Redis) or by the next start
    (embedded). A drained instance left running still makes those attempts when they are due
    (no other instance takes its deliveries while it lives): drained is false during one."""
    workers = app[WORKERS]
    queued = 0 if app[BACKEND].shared else workers.queued
    return (
        app[LIFECYCLE].draining
        and workers.in_flight == 0
        and app[DELIVERER].sending == 0
        and queued == 0
    )


def _deliveries(app: web.Application) -> dict[str, int]:
    deliverer = app[DELIVERER]
    return {"sending": deliverer.sending, "waiting": deliverer.waiting}


async def _dead_letter_count(app: web.Application) -> int | None:
    """None while the store cannot answer (the rest of the status still can)."""
    try:
        return await app[OUTBOX].count_dead()
    except Exception:
        return None


async def dead_letters(request: web.Request) -> web.Response:
    """A page of dead letters, newest first by (created_at, id): created_at is when a letter
    was made, or last replayed (a replay starts its attempts anew; if they fail, it is made again).
    """
    query = parse_query(request, DeadLettersQuery)
    letters = await request.app[OUTBOX].dead_letters(query.limit + 1, older_than(query))
    last = letters[query.limit - 1] if len(letters) > query.limit else None
    return json_response(
        {
            "dead_letters": [letter.shown() for letter in letters[: query.limit]],
            "next_cursor": encode_cursor(last.created_at, last.id) if last else None,
            "next_before": last.created_at if last else None,
        }
    )


def older_than(query: DeadLettersQuery) -> tuple[float, str] | None:
    """Where a page of dead letters starts: after the cursor's letter; or, given `before`,
    after every letter made at that time (no id sorts before ""). 422 for a cursor the API did
    not hand out, or for both."""
    if query.cursor is None:
        return None if query.before is None else (query.before, "")
    if query.before is not None:
        raise _bad_cursor("give cursor or before, not both")
    try:
        return decode_cursor(query.cursor, LETTER_KEY)
    except ValueError as exc:
        raise _bad_cursor(str(exc)) from None


def _bad_cursor(problem: str) -> ValidationFailed:
    return ValidationFailed(
        f"/query/cursor: {problem}", details=[{"pointer": "/query/cursor", "message": problem}]
    )


async def replay(request: web.Request) -> web.Response:
    letter_id = request.match_info["letter_id"]
    return json_response(await replay_letter(request.app, letter_id, request[TRACE_ID]))


async def replay_letter(app: web.Application, letter_id: str, trace_id: str) -> dict[str, object]:
    """Replay the dead letter `letter_id` (`replay_dead`); 404 unless it is a dead letter."""
    letter = await app[OUTBOX].get(letter_id)
    if letter is None or letter.state != "dead":
        raise NotFound(f"no dead letter {letter_id!r}")
    return await replay_dead(app, letter, trace_id)


async def replay_dead(app: web.Application, letter: Delivery, trace_id: str) -> dict[str, object]:
    """Send a dead callback or event webhook again (same webhook-id, attempts from zero), or
    run a dead job again as a new job. The answer of POST /admin/dead-letters/{id}/replay."""
    answer: dict[str, object] = {"replayed": letter.id}
    if letter.kind == "job":
        assert letter.job_id is not None
        job = await app[WORKERS].retry(letter.job_id, trace_id)
        app[OUTBOX].done(letter.id)
        answer["job_id"] = job.job_id
    else:
        again = letter.model_copy(
            update={"state": "pending", "attempts": 0, "dead_at": None, "created_at": time.time()}
        )
        await app[WORKERS].callback_progress(again)  # its job's callback: pending again
        app[DELIVERER].send(again)
    return answer


async def retry_job(request: web.Request) -> web.Response:
    job = await request.app[WORKERS].retry(request.match_info["job_id"], request[TRACE_ID])
    return accepted_response(job, created=True)


async def undrain(request: web.Request) -> web.Response:
    """Serve again after a drain: the blue-green switch's rollback calls this on the colour it
    goes back to."""
    undrain_instance(request.app, "asked by DELETE /admin/drain")
    return json_response({"draining": False})


async def drain(request: web.Request) -> web.Response:
    """From now on: /ready answers 503 and new background jobs are refused; jobs already
    accepted still run. The blue-green switch calls this on the colour it leaves."""
    return json_response(drain_instance(request.app, "asked by POST /admin/drain"))


def drain_instance(app: web.Application, reason: str) -> dict[str, object]:
    """Drain this instance (`Lifecycle.drain`); what is left to finish, as `drain_state`."""
    app[LIFECYCLE].drain(reason)
    return drain_state(app)


def undrain_instance(app: web.Application, reason: str) -> None:
    """Serve again; 409 once the bridge is shutting down."""
    if not app[LIFECYCLE].resume(reason):
        raise Conflict("this bridge is shutting down; it will not serve again")


def drain_state(app: web.Application) -> dict[str, object]:
    """Draining or not, drained or not, and what of this instance's own is unfinished."""
    workers = app[WORKERS]
    return {
        "draining": app[LIFECYCLE].draining,
        "drained": _drained(app),
        "in_flight": workers.in_flight,
        "queued": workers.queued,
        "deliveries": _deliveries(app),
    }
