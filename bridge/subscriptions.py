"""Webhook subscriptions to events (the Python Bridge Trigger node makes them): every published
event that a subscription wants becomes a signed delivery to its URL, through the same outbox,
retries and dead letters as job callbacks.

A subscription made by a workflow-limited token records that limit (`workflows`): it is
delivered only events of those workflows, and only tokens whose limit covers it see it."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from functools import cached_property
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from bridge.events import EVENT_TYPES, Event, EventType
from bridge.given_url import GivenUrl
from bridge.ids import NO_CONTROL, new_id
from bridge.redact import redact_url
from bridge.webhooks import Delivery
from bridge.workflow_limit import WorkflowLimit


class SubscriptionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: GivenUrl = Field(
        description="where events are POSTed: http(s), visible ASCII, at most 2048 characters, "
        "no fragment (#: never sent), no . or .. path segments in any encoding"
    )
    events: list[EventType] = Field(
        min_length=1, max_length=len(EVENT_TYPES), description="the event types wanted"
    )
    workflow_id: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        pattern=NO_CONTROL,
        description="only events of this workflow",
    )
    description: str | None = Field(None, max_length=512, pattern=NO_CONTROL)


class Subscription(SubscriptionRequest):
    id: str
    created_at: float = Field(default_factory=time.time)
    workflows: list[str] | None = Field(
        None,
        description="the workflow limit of the token that made it: only these workflows' "
        "events are delivered (null: every workflow's)",
    )
    after_event_id: int = Field(
        0,
        description="the newest event when it was made: every matching event after it is "
        "delivered, whichever instance published it",
    )

    @cached_property
    def limit(self) -> WorkflowLimit | None:
        return None if self.workflows is None else WorkflowLimit.parse(self.workflows)

    def visible_to(self, limit: WorkflowLimit | None) -> bool:
        """Whether a credential with `limit` may see (and remove) this subscription."""
        return limit is None or (self.limit is not None and limit.covers(self.limit))

    def shown(self) -> dict[str, Any]:
        """The subscription as the API shows it: its URL redacted."""
        return {**self.model_dump(mode="json"), "url": redact_url(self.url)}

    def wants(self, event: Event) -> bool:
        return (
            event.type in self.events
            and (self.workflow_id is None or event.workflow_id == self.workflow_id)
            and (self.limit is None or self.limit.allows(event.workflow_id))
        )


class SubscriptionStore(Protocol):
    async def add(self, subscription: Subscription) -> None: ...

    async def all(self) -> list[Subscription]: ...

    async def remove(self, subscription_id: str) -> bool: ...


class Subscriptions:
    """The subscriptions, cached in memory so that publishing an event costs no query.

    On a shared backend another instance's new subscription is learned at the next `load`; the
    events this instance published since it was made were handed to the hooks without it, so
    `on_learned(subscriptions, upto)` is told to deliver them: those with ids up to `upto`, the
    last event the hooks had seen when the cache changed (later ones reach it by the hooks)."""

    def __init__(
        self,
        store: SubscriptionStore,
        newest_id: Callable[[], Awaitable[int]],
        position: Callable[[], int],
    ) -> None:
        self._store = store
        self._newest_id = newest_id
        self._position = position
        self._by_id: dict[str, Subscription] = {}
        self._loaded = False
        self.on_learned: Callable[[list[Subscription], int], Awaitable[None]] | None = None

    async def load(self) -> None:
        found = await self._store.all()
        learned = [s for s in found if s.id not in self._by_id] if self._loaded else []
        self._by_id = {s.id: s for s in found}
        upto = self._position()  # no await since the cache changed: the hooks saw up to here
        self._loaded = True
        if learned and self.on_learned is not None:
            await self.on_learned(learned, upto)

    async def add(
        self, request: SubscriptionRequest, limit: WorkflowLimit | None = None
    ) -> Subscription:
        subscription = Subscription(
            id=new_id(),
            workflows=None if limit is None else limit.entries(),
            after_event_id=await self._newest_id(),
            **request.model_dump(),
        )
        await self._store.add(subscription)
        self._by_id[subscription.id] = subscription
        return subscription

    def get(self, subscription_id: str) -> Subscription | None:
        return self._by_id.get(subscription_id)

    def all(self) -> list[Subscription]:
        return list(self._by_id.values())

    def any(self) -> bool:
        return bool(self._by_id)

    async def remove(self, subscription_id: str) -> bool:
        self._by_id.pop(subscription_id, None)
        return await self._store.remove(subscription_id)

    def deliveries_for(
        self, event: Event, among: Iterable[Subscription] | None = None
    ) -> list[Delivery]:
        """One delivery per subscription (of all, or `among`) that wants `event`; the id is
        stable per pair. The deliveries share one body (the event's values are not copied)."""
        candidates = self._by_id.values() if among is None else among
        wanting = [s for s in candidates if s.wants(event)]
        if not wanting:
            return []
        body = event.model_dump(mode="json")
        return [
            Delivery(
                id=f"evt_{event.id}_{subscription.id}",
                kind="event",
                url=subscription.url,
                workflow_id=event.workflow_id,
                job_id=event.job_id,
                subscription_id=subscription.id,
                body=body,
            )
            for subscription in wanting
        ]
