"""Request and response bodies of the HTTP API; the OpenAPI spec is generated from these."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
)

from bridge.errors import ERROR_CODES
from bridge.events import EVENT_TYPES
from bridge.given_url import GivenUrl
from bridge.ids import NO_CONTROL
from bridge.items import NOT_BOOL, JsonInt, JsonObject, N8nBinary, N8nItem, PairedItemRef
from bridge.jobs import ItemErrorModel, JobRecord, JobStatus
from bridge.stores.base import JobFilter
from bridge.subscriptions import Subscription
from bridge.webhooks import Delivery
from bridge.workflow_limit import WorkflowLimit


def id_field(description: str | None = None) -> Any:
    """An id a client chooses: 1 to 256 characters, none a control character (NO_CONTROL)."""
    return Field(None, min_length=1, max_length=256, pattern=NO_CONTROL, description=description)


Id = id_field()
# Event ids are SQLite INTEGERs and the first half of Redis stream ids: 64-bit, signed.
MAX_EVENT_ID = 2**63 - 1

# Numbers in a query or header, as JSON writes them: int() and float() take more ("+5", " 5",
# "5_0", other scripts' digits, zero padding, "nan", "1e3"), and each spelling taken is one
# more way past a filter or a cache key. At most 19 digits: an event id's most. The OpenAPI
# document says the same: an integer's JSON text, and `before` as a string of this pattern.
_DIGITS = re.compile("0|[1-9][0-9]{0,18}").fullmatch
# A Unix time as JSON writes one, without an exponent, before the year 5138 (11 digits).
DECIMAL = r"^(?:0|[1-9][0-9]{0,10})(?:\.[0-9]{1,17})?$"
_DECIMAL = re.compile(DECIMAL).fullmatch


def _ascii_digits(value: Any) -> Any:
    if isinstance(value, str) and not _DIGITS(value):
        raise ValueError(
            "must be ASCII digits 0-9 (at most 19), without sign, spaces or leading zeros"
        )
    return value


def _ascii_decimal(value: Any) -> Any:
    if isinstance(value, str) and not _DECIMAL(value):
        raise ValueError(
            "must be ASCII digits (at most 11, without leading zeros), with a '.' and more "
            "digits if any"
        )
    return value


Digits = BeforeValidator(_ascii_digits)


def _list_of(names: tuple[str, ...]) -> str:
    """A pattern of comma-separated names, any of them empty."""
    one = f"(?:{'|'.join(re.escape(name) for name in names)})?"
    return f"^{one}(?:,{one})*$"


# A cursor the API hands out (base64url), and a queue's name.
CURSOR = r"^[A-Za-z0-9_-]*$"
QUEUE_NAME = r"^[A-Za-z0-9_.-]+$"

# An event id, from the query or the Last-Event-ID header: the one parser of both.
EventId = Annotated[int, Field(ge=0, le=MAX_EVENT_ID), Digits]
Limit = Annotated[int, Field(ge=1, le=500), Digits]


class _Submission(BaseModel):
    """What every execute-like request carries besides its items."""

    # A callback_url or callback_method only with mode async (sync answers with the result):
    # `_submission` refuses them otherwise, and the schema says so.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "if": {
                "anyOf": [
                    {
                        "properties": {"callback_url": {"type": "string"}},
                        "required": ["callback_url"],
                    },
                    {
                        "properties": {"callback_method": {"type": "string"}},
                        "required": ["callback_method"],
                    },
                ]
            },
            "then": {"properties": {"mode": {"const": "async"}}, "required": ["mode"]},
        },
    )

    processing_type: str = Field(
        min_length=1, max_length=128, description="a processor name from GET /api/v1/processors"
    )
    mode: Literal["sync", "async"] = Field(
        "sync", description="sync: answer with the result; async: answer 202 and call back"
    )
    workflow_id: str | None = Id
    execution_id: str | None = Id
    node: str | None = Id
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="the processor's parameters (its JSON Schema)"
    )
    callback_url: GivenUrl | None = Field(
        None,
        description="async: where to send the result (an n8n resume URL or webhook): http(s), "
        "visible ASCII, at most 2048 characters, no fragment (#: never sent), no . or .. path "
        "segments in any encoding",
    )
    callback_method: Literal["POST", "GET"] = Field(
        "POST", description="POST (the result as JSON) or GET (n8n's Wait node takes either)"
    )
    priority: JsonInt = Field(5, ge=0, le=9, description="0 lowest … 9 highest (async)")
    timeout_s: Annotated[float, Field(gt=0, le=86400), NOT_BOOL] | None = Field(
        None, description="bound on the processor's run; default: its own"
    )
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        pattern=NO_CONTROL,
        description="async: the same key returns the same job",
    )


class ExecuteRequest(_Submission):
    items: list[N8nItem] = Field(description="n8n items (INodeExecutionData)")


class HybridRequest(_Submission):
    data: list[JsonObject] = Field(description="records: each becomes one item's json")


class OutputItem(BaseModel):
    json_: dict[str, Any] = Field(alias="json")
    binary: dict[str, N8nBinary] | None = None
    pairedItem: PairedItemRef


class _Answer(BaseModel):
    job_id: str
    status: JobStatus
    errors: list[ItemErrorModel] = Field(description="per-item errors, by input index")
    duration_ms: float
    trace_id: str = Field(description="this request's trace id (also in X-Trace-ID)")


class ExecuteResponse(_Answer):
    items: list[OutputItem] = Field(description="output items, each paired with its input")


class HybridResponse(_Answer):
    data: list[dict[str, Any]] = Field(description="output records")


class JobStatusResponse(JobRecord):
    items: list[OutputItem] | None = Field(
        None, description="a finished background job's output items"
    )


class Accepted(BaseModel):
    job_id: str
    status: JobStatus
    status_url: str = Field(description="where the job's status is (also in Location)")
    queue: str | None
    created: bool = Field(description="false: an earlier job with the same idempotency_key")


class JobPage(BaseModel):
    workflow_id: str
    jobs: list[JobRecord]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null: last")


class WorkflowJobsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: Limit = Field(50, description="jobs per page, at most 500")
    cursor: str | None = Field(
        None,
        min_length=1,  # an empty one is no cursor the API hands out
        max_length=512,
        pattern=CURSOR,
        description="next_cursor of the previous page",
    )
    execution_id: str | None = id_field("only the jobs of this n8n execution")


# A Unix time in the query: one spelling (as `DeadLettersQuery.before`), the schema a string.
UnixTime = Annotated[
    float, BeforeValidator(_ascii_decimal), WithJsonSchema({"type": "string", "pattern": DECIMAL})
]
_STATUSES = tuple(status.value for status in JobStatus)
STATUS_LIST = f"^(?:{'|'.join(_STATUSES)})(?:,(?:{'|'.join(_STATUSES)}))*$"
# Each pattern a request's field must match, in words: `body.validation_error` says these, not
# pydantic's "String should match pattern '^[^\x00-…'" (tests/test_api_errors.py keeps it whole).
PATTERN_WORDS = {
    NO_CONTROL: "must contain no control characters",
    CURSOR: "must be a next_cursor the API handed out (ASCII letters, digits, '-' and '_')",
    QUEUE_NAME: "must be a queue's name: ASCII letters, digits, '.', '-' and '_'",
    STATUS_LIST: f"must be one or more of {', '.join(_STATUSES)}, separated by commas",
}


class AdminJobsQuery(BaseModel):
    """GET /admin/jobs: every filter given must hold."""

    model_config = ConfigDict(extra="forbid")

    status: str | None = Field(
        None,
        max_length=64,
        pattern=STATUS_LIST,
        description=f"jobs in any of these statuses, comma-separated: {', '.join(_STATUSES)}",
    )
    processing_type: str | None = Field(
        None, min_length=1, max_length=128, pattern=NO_CONTROL, description="a processor's name"
    )
    queue: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=QUEUE_NAME,
        description="the queue a background job was routed to (sync jobs have none)",
    )
    workflow_id: str | None = id_field("only the jobs of this workflow")
    execution_id: str | None = id_field("only the jobs of this n8n execution")
    since: UnixTime | None = Field(None, description="created at or after (Unix time, seconds)")
    until: UnixTime | None = Field(None, description="created before (Unix time, seconds)")
    limit: Annotated[int, Field(ge=1, le=100), Digits] = Field(
        50, description="jobs per page, at most 100"
    )
    cursor: str | None = Field(
        None,
        min_length=1,
        max_length=512,
        pattern=CURSOR,
        description="next_cursor of the previous page (the other filters must stay the same)",
    )

    def statuses(self) -> frozenset[JobStatus]:
        return frozenset(JobStatus(name) for name in (self.status or "").split(",") if name)

    def filters(self, workflows: WorkflowLimit | None = None) -> JobFilter:
        """What the store is asked for: these filters, within `workflows` (None: all)."""
        return JobFilter(
            statuses=self.statuses(),
            processing_type=self.processing_type,
            queue=self.queue,
            workflow_id=self.workflow_id,
            execution_id=self.execution_id,
            since=self.since,
            until=self.until,
            workflows=workflows,
        )


class AdminJobPage(BaseModel):
    jobs: list[JobRecord]
    next_cursor: str | None = Field(
        description="pass as ?cursor= for the next page; null: last. A page may hold fewer "
        "jobs than `limit` and still have a next cursor (on Redis, a request reads a bounded "
        "number of index entries)"
    )


class EventsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow_id: str | None = id_field("only the events of this workflow")
    # The schema says what `_known_types` accepts, for clients and fuzzers; the validator says
    # which name is unknown and lists the known ones.
    type: (
        Annotated[
            str,
            Field(max_length=512),
            WithJsonSchema({"type": "string", "maxLength": 512, "pattern": _list_of(EVENT_TYPES)}),
        ]
        | None
    ) = Field(
        None,
        description=f"event types, comma-separated (default: all): {', '.join(EVENT_TYPES)}",
    )
    last_event_id: EventId | None = Field(
        None, description="resume after this event (the Last-Event-ID header wins)"
    )

    @field_validator("type")
    @classmethod
    def _known_types(cls, value: str | None) -> str | None:
        for name in (value or "").split(","):
            if name and name not in EVENT_TYPES:
                raise ValueError(f"unknown event type {name!r} (known: {', '.join(EVENT_TYPES)})")
        return value


def header_parameter(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    """A request header a route reads, as an OpenAPI parameter."""
    return {
        "name": name,
        "in": "header",
        "required": False,
        "schema": schema,
        "description": description,
    }


LAST_EVENT_ID = header_parameter(
    "Last-Event-ID",
    {"type": "integer", "minimum": 0, "maximum": MAX_EVENT_ID},
    "resume after this event (wins over `last_event_id`)",
)
# A header value: visible ASCII (a byte that is not ASCII reaches the handler as a lone surrogate).
VISIBLE_ASCII = r"^[\x21-\x7e]*$"
WEBHOOK_ID = header_parameter(
    "webhook-id",
    {"type": "string", "minLength": 1, "maxLength": 256, "pattern": VISIBLE_ASCII},
    "Standard Webhooks message id: a repeated one changes nothing",
)


class DeadLettersQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: Limit = Field(50, description="dead letters per page, at most 500")
    cursor: str | None = Field(
        None,
        min_length=1,  # an empty one is no cursor the API hands out
        max_length=512,
        pattern=CURSOR,
        description="next_cursor of the previous page (not with `before`)",
    )
    # A string to the schema: a client writes a `number` as it likes (`5e-324`), this is taken
    # in one spelling only.
    before: UnixTime | None = Field(
        None,
        description="the letters made strictly before this Unix time (decimal digits, no "
        "exponent). Kept for clients of next_before: letters made in the same instant as a "
        "page's last may be skipped; page with cursor",
    )


class DeadLettersPage(BaseModel):
    dead_letters: list[Delivery] = Field(
        description="newest first by created_at — when the letter was made, or last replayed "
        "(a replay starts its attempts anew) — then by id; each url redacted"
    )
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null: last")
    next_before: float | None = Field(
        description="the last letter's created_at (null: last page), for clients of ?before=; "
        "next_cursor also reaches the letters made in the same instant"
    )


class IncomingCallback(BaseModel):
    """What n8n reports of a workflow run the bridge started."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["completed", "failed", "success", "error"]
    job_id: str | None = Field(
        None, max_length=64, pattern=NO_CONTROL, description="the bridge job that started it"
    )
    execution_id: str | None = Id
    error: Any = None
    data: Any = None


class CallbackAck(BaseModel):
    accepted: bool
    duplicate: bool = Field(description="true: this webhook-id was applied before; nothing changed")


class SubscriptionList(BaseModel):
    subscriptions: list[Subscription]


class Deleted(BaseModel):
    deleted: str


class ProcessorOptions(BaseModel):
    batch: bool
    cpu_bound: bool
    is_async: bool
    timeout_s: float | None
    concurrency: int | None
    item_concurrency: int
    max_attempts: int | None


class ProcessorInfo(BaseModel):
    name: str
    description: str
    parameters: dict[str, Any] = Field(description="JSON Schema of `parameters`")
    options: ProcessorOptions


class ProcessorList(BaseModel):
    processors: list[ProcessorInfo]


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    color: str | None
    uptime_s: float


class Ready(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str] = Field(description="each dependency: 'ok' or why not")


DRAINED = (
    "draining, and nothing of this instance's own left to finish: no run, no callback or event "
    "webhook being sent, and (embedded) no queued job. Safe to stop: a delivery waiting for its "
    "next attempt is in the outbox, sent after the stop by another instance (Redis) or the next "
    "start (embedded). A drained instance left running still makes those attempts when due, "
    "and is not drained during one"
)


class DeliveryCounts(BaseModel):
    sending: int = Field(
        description="callbacks and event webhooks being sent, or due and waiting for a sending slot"
    )
    waiting: int = Field(
        description="waiting for their next attempt (back-off, Retry-After, an open breaker)"
    )


class Deliveries(DeliveryCounts):
    hosts: dict[str, Any] = Field(
        description="per host: its breaker, sending, queued for a sending slot, waiting by why, "
        "the earliest next_attempt_at"
    )


class DrainAnswer(BaseModel):
    draining: bool
    drained: bool = Field(description=DRAINED)
    in_flight: int = Field(description="jobs running here")
    queued: int = Field(description="jobs in this instance's queues (on Redis: shared)")
    deliveries: DeliveryCounts


class AdminStatus(BaseModel):
    color: str | None
    version: str
    uptime_s: float
    draining: bool
    drained: bool = Field(description=DRAINED)
    backends: dict[str, Any]
    queues: dict[str, Any]
    workers: dict[str, int] = Field(description="in_flight: jobs running here; queued")
    threads: dict[str, Any]
    deliveries: Deliveries
    dead_letters: int | None = Field(description="null while the store cannot answer")
    breakers: dict[str, Any]
    last_event_id: int


class ErrorDetail(BaseModel):
    code: Literal[ERROR_CODES]  # type: ignore[valid-type]
    message: str
    description: str | None
    http_code: int
    retryable: bool
    trace_id: str
    details: Any = None


class ErrorBody(BaseModel):
    error: ErrorDetail
