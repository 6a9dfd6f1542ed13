"""Dead letters: callbacks, event webhooks and jobs that gave up, replayed one at a time or all
of a kind at once (by the API's own replay, `bridge.api.admin.replay_dead`).

The stores page dead letters newest first by (created_at, id) only; the kind filter is applied
here, to a bounded scan (SCAN_LIMIT letters per page at most, matching or not), so that a page of
a rare kind among many dead letters costs no more than that. A page that stopped scanning links
to the older ones as a full page does: "Older" carries the cursor of the last letter read, as
the API's `next_cursor` (`before`, a bare time, is still taken from an old link).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlencode, urlsplit

from aiohttp import web
from pydantic import Field, ValidationError

from bridge.api.admin import older_than, replay_dead, replay_letter
from bridge.api.body import parse_query, validation_error
from bridge.api.models import DeadLettersQuery
from bridge.backends import DeadLetterStore
from bridge.console.render import SESSION, page, redirect, text_field
from bridge.errors import BridgeError, ValidationFailed
from bridge.keys import OUTBOX, TRACE_ID
from bridge.stores.base import encode_cursor
from bridge.webhooks import Delivery

Kind = Literal["any", "callback", "event", "job"]
KINDS: tuple[Kind, ...] = ("any", "callback", "event", "job")
PLURAL = {
    "any": "dead letters",
    "callback": "dead callbacks",
    "event": "dead event webhooks",
    "job": "dead jobs",
}
SCAN_CHUNK = 500  # letters read per store query when filtering by kind
SCAN_LIMIT = 5000  # letters read per page at most, matching or not
REPLAY_LIMIT = 1000  # letters replayed per click at most
PAGE = "/admin/ui/dead-letters"


class DeadLetterFilter(DeadLettersQuery):
    """The page's query: the API's (limit, cursor or before) and a kind."""

    kind: Kind = Field("any", description="callback, event, job, or any")


async def matching(
    outbox: DeadLetterStore, kind: Kind, limit: int, older_than: tuple[float, str] | None
) -> tuple[list[Delivery], tuple[float, str] | None]:
    """Up to `limit` dead letters of `kind`, newest first, after `older_than` (a letter's
    (created_at, id)); and where the next page starts (None: there is none). Reads SCAN_LIMIT
    letters at most (and one more when `kind` is any, to know whether more remain)."""
    chunk = limit + 1 if kind == "any" else SCAN_CHUNK
    found: list[Delivery] = []
    scanned = 0
    while True:
        letters = await outbox.dead_letters(chunk, older_than)
        for letter in letters:
            if kind in ("any", letter.kind):
                if len(found) == limit:  # one more matches: a next page has it
                    return found, (found[-1].created_at, found[-1].id)
                found.append(letter)
        if len(letters) < chunk:
            return found, None
        older_than = (letters[-1].created_at, letters[-1].id)
        scanned += len(letters)
        if scanned >= SCAN_LIMIT:
            return found, older_than


def host_of(letter: Delivery) -> str:
    """Where a letter goes, as the page may say it: the host of its redacted URL."""
    shown = str(letter.shown()["url"])
    return urlsplit(shown).hostname or shown or "—"


def _address(kind: Kind, after: tuple[float, str] | None = None) -> str:
    query: dict[str, str] = {"kind": kind} if kind != "any" else {}
    if after is not None:
        query["cursor"] = encode_cursor(*after)
    return PAGE + (f"?{urlencode(query)}" if query else "")


async def dead_letters(request: web.Request) -> web.StreamResponse:
    query = parse_query(request, DeadLetterFilter)
    outbox = request.app[OUTBOX]
    start = older_than(query)
    letters, following = await matching(outbox, query.kind, query.limit, start)
    rows = [
        {"letter": letter, "url": letter.shown()["url"], "host": host_of(letter)}
        for letter in letters
    ]
    return page(
        request,
        "dead_letters.html",
        title="Dead letters",
        kinds=KINDS,
        kind=query.kind,
        plural=PLURAL[query.kind],
        rows=rows,
        total=await outbox.count_dead(),
        cursor=encode_cursor(*start) if start is not None else None,
        older=_address(query.kind, following) if following is not None else None,
        newest=_address(query.kind) if start is not None else None,
        replay_limit=REPLAY_LIMIT,
    )


def _kind(form: Mapping[str, object]) -> Kind:
    """The filter a form carries, to go back to it."""
    value = text_field(form, "kind") or "any"
    if value not in KINDS:
        raise ValidationFailed(
            f"kind must be one of {', '.join(KINDS)}",
            details=[{"pointer": "/kind", "message": "not a kind"}],
        )
    return value


async def replay_one(request: web.Request) -> web.StreamResponse:
    kind = _kind(await request.post())
    answer = await replay_letter(request.app, request.match_info["letter_id"], request[TRACE_ID])
    letter_id = answer["replayed"]
    if "job_id" in answer:
        said = f"Dead letter {letter_id}: its job runs again as the new job {answer['job_id']}."
    else:
        said = (
            f"Dead letter {letter_id} is being sent again "
            "(the same webhook-id, its attempts counted from zero)."
        )
    request[SESSION].flashes.append(said)
    return redirect(_address(kind))


def _cursor_query(cursor: str) -> DeadLettersQuery:
    try:
        return DeadLettersQuery.model_validate({"cursor": cursor})
    except ValidationError as exc:
        raise validation_error(exc, within=("cursor",)) from None


async def replay_all(request: web.Request) -> web.StreamResponse:
    """The letters of the page's kind from the page's place on (newest first), REPLAY_LIMIT at
    most; when more remain, back to the page where this click stopped, whose Replay all goes on
    from there — not to the newest, where the letters just replayed land again if they fail."""
    form = await request.post()
    kind = _kind(form)
    cursor = text_field(form, "cursor")
    start = older_than(_cursor_query(cursor)) if cursor else None
    letters, more = await matching(request.app[OUTBOX], kind, REPLAY_LIMIT, start)
    replayed, refused = 0, []
    for letter in letters:
        try:
            await replay_dead(request.app, letter, request[TRACE_ID])
        except BridgeError as exc:  # one letter's trouble (its job gone, a queue full) stops none
            refused.append(exc.message)
        else:
            replayed += 1
    said = [f"Replayed {replayed} of the {PLURAL[kind]}."]
    if refused:
        said.append(f"{len(refused)} could not be replayed; the first because: {refused[0]}")
    if more is not None:
        said.append(
            f"More remain (at most {REPLAY_LIMIT} go per click): this page starts where the "
            "click stopped; its Replay all goes on from there."
        )
    request[SESSION].flashes.append(" ".join(said))
    return redirect(_address(kind, more))
