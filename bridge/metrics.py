"""Prometheus metrics, one registry per app (no process globals, so tests and apps stay apart).

Every series whose label values are known at start-up (the processors, the queues, the routes,
modes, final states, outcomes, kinds) is there from start-up at 0: a panel or an alert over a
series that does not exist yet shows "No data", not 0, and `rate()` misses the first event."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from bridge import __version__
from bridge.jobs import FINISHED
from bridge.webhook_attempt import ATTEMPT_OUTCOMES

HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
PROCESSOR_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900)
CONTENT_TYPE = CONTENT_TYPE_LATEST

# No `*_created` series beside every counter and histogram: nothing here reads them, and the
# catalogue (docs/metrics.md) is the exact set of what /metrics exports.
disable_created_metrics()  # type: ignore[no-untyped-call]  # (untyped in prometheus_client)

MODES = ("sync", "async")
OUTCOMES = ("ok", "error")  # of a processor's job, of an item
WEBHOOK_KINDS = ("callback", "event")
WEBHOOK_ENDS = ("delivered", "dead_letter")
BACKEND_STATES = ("up", "down")
OVERRUN_OUTCOMES = ("abandoned", "kept")


class Metrics:
    def __init__(
        self,
        color: str | None,
        *,
        processors: Iterable[str] = (),
        queues: Iterable[str] = (),
        routes: Iterable[tuple[str, str]] = (),
    ) -> None:
        """`processors`, `queues` and `routes` (template, method): the label values known at
        start-up, whose series start at 0."""
        self.registry = CollectorRegistry(auto_describe=True)
        Info("bridge_build", "Version and colour of this bridge", registry=self.registry).info(
            {"version": __version__, "color": color or ""}
        )
        self.requests = Counter(
            "bridge_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "bridge_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method",
            ["route", "method"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )
        self.backend_up = Gauge(
            "bridge_backend_up",
            "1 while the shared backend (Redis) answers, 0 while it does not (always 1 embedded)",
            registry=self.registry,
        )
        self.backend_up.set(1)
        self.backend_changes = Counter(
            "bridge_backend_transitions",
            "Times the shared backend went down or came back, by the new state",
            ["state"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "bridge_http_requests_in_flight",
            "HTTP requests being answered now",
            registry=self.registry,
        )
        self.processor_seconds = Histogram(
            "bridge_processor_duration_seconds",
            "Time a processor took for one job, by processor and outcome",
            ["processor", "outcome"],
            buckets=PROCESSOR_BUCKETS,
            registry=self.registry,
        )
        self.processor_items = Counter(
            "bridge_processor_items",
            "Items processed, by processor and outcome (ok, error)",
            ["processor", "outcome"],
            registry=self.registry,
        )
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._job_children: dict[
            tuple[str, str, str], tuple[Counter, Histogram, Counter, Counter]
        ] = {}
        self.jobs = Counter(
            "bridge_jobs",
            "Jobs finished, by processor, mode and final status",
            ["processor", "mode", "status"],
            registry=self.registry,
        )

        self.webhooks = Counter(
            "bridge_webhooks",
            "Webhooks ended, by kind (callback, event) and outcome (delivered, dead_letter)",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.webhook_attempts = Counter(
            "bridge_webhook_attempts",
            "Webhook attempts, by kind and outcome (delivered, connection_error, timeout, "
            "server_error, throttled, not_ready, finished, rejected, refused)",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.webhook_retries = Counter(
            "bridge_webhook_retries",
            "Webhook attempts that will be tried again, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.events_dropped = Counter(
            "bridge_events_dropped",
            "Events a slow in-process listener (an SSE stream) could not take; it resumes "
            "from the event log",
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "bridge_queue_depth", "Jobs waiting, by queue", ["queue"], registry=self.registry
        )
        self.queue_in_flight = Gauge(
            "bridge_queue_in_flight", "Jobs running, by queue", ["queue"], registry=self.registry
        )
        self.queue_oldest_wait = Gauge(
            "bridge_queue_oldest_wait_seconds",
            "How long the oldest waiting job has waited, by queue",
            ["queue"],
            registry=self.registry,
        )
        self.queue_wait_seconds = Histogram(
            "bridge_queue_wait_seconds",
            "Time from queued to started, by queue",
            ["queue"],
            buckets=PROCESSOR_BUCKETS,
            registry=self.registry,
        )
        self.queue_run_seconds = Histogram(
            "bridge_queue_run_seconds",
            "Time a background job ran (one attempt), by queue",
            ["queue"],
            buckets=PROCESSOR_BUCKETS,
            registry=self.registry,
        )
        self.jobs_rejected = Counter(
            "bridge_jobs_rejected",
            "Background jobs refused because their queue was full, by queue",
            ["queue"],
            registry=self.registry,
        )
        self.job_retries = Counter(
            "bridge_job_retries",
            "Background job attempts that failed and will run again, by processor",
            ["processor"],
            registry=self.registry,
        )
        self.thread_pool_abandoned = Gauge(
            "bridge_thread_pool_abandoned",
            "Threads still running a processor call past its deadline, replaced in the pool "
            "(at most BRIDGE_MAX_ABANDONED_THREADS)",
            registry=self.registry,
        )
        self.thread_pool_overruns = Counter(
            "bridge_thread_pool_overruns",
            "Thread-pool calls still running a second after their deadline, by what became of "
            "their thread: abandoned (replaced in the pool) or kept (the bound was reached)",
            ["outcome"],
            registry=self.registry,
        )
        self.dead_letters = Gauge(
            "bridge_dead_letters", "Dead letters kept", registry=self.registry
        )
        self._start_at_zero(tuple(processors), tuple(queues), tuple(routes))

    def _start_at_zero(
        self,
        processors: tuple[str, ...],
        queues: tuple[str, ...],
        routes: tuple[tuple[str, str], ...],
    ) -> None:
        """A child for every label set known now: `labels()` makes it, at 0."""
        for route, method in routes:
            self.request_seconds.labels(route, method)
        for processor in processors:
            self.job_retries.labels(processor)
            for outcome in OUTCOMES:
                self.processor_seconds.labels(processor, outcome)
                self.processor_items.labels(processor, outcome)
            for mode in MODES:
                for status in sorted(FINISHED):
                    self.jobs.labels(processor, mode, status)
        for queue in queues:
            for family in (
                self.queue_depth,
                self.queue_in_flight,
                self.queue_oldest_wait,
                self.queue_wait_seconds,
                self.queue_run_seconds,
                self.jobs_rejected,
            ):
                family.labels(queue)
        for kind in WEBHOOK_KINDS:
            self.webhook_retries.labels(kind)
            for ended in WEBHOOK_ENDS:
                self.webhooks.labels(kind, ended)
            for attempt in ATTEMPT_OUTCOMES:
                self.webhook_attempts.labels(kind, attempt)
        for state in BACKEND_STATES:
            self.backend_changes.labels(state)
        for overrun in OVERRUN_OUTCOMES:
            self.thread_pool_overruns.labels(overrun)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        # Labelled children are looked up once per label set: `labels()` costs more than the
        # update itself. Routes are templates ("unmatched" for the rest), so the set is small.
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.requests.labels(route, method, str(status)),
                self.request_seconds.labels(route, method),
            )
        children[0].inc()
        children[1].observe(seconds)

    def observe_job(
        self, processor: str, mode: str, status: str, seconds: float, ok: int, failed: int
    ) -> None:
        key = (processor, mode, status)
        children = self._job_children.get(key)
        if children is None:
            outcome = "ok" if status == "completed" else "error"
            children = self._job_children[key] = (
                self.jobs.labels(processor, mode, status),
                self.processor_seconds.labels(processor, outcome),
                self.processor_items.labels(processor, "ok"),
                self.processor_items.labels(processor, "error"),
            )
        jobs, duration, items_ok, items_failed = children
        jobs.inc()
        duration.observe(seconds)
        if ok:
            items_ok.inc(ok)
        if failed:
            items_failed.inc(failed)

    def render(self) -> bytes:
        return generate_latest(self.registry)
