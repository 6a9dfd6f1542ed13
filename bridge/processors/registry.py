"""The processor contract (`@processor`) and the registry that loads processors from modules.

A processor is a plain function, sync or async, marked with `@processor(...)`:

    per item (default):  fn(item: Item, params: P, ctx: Context) -> dict | Item | list | None
    batch=True:          fn(items: list[Item], params: P, ctx: Context) -> list[result | Exception]

A batch function returns one entry per input, in order; an exception in place of a result marks that
item failed. The decorator returns the function unchanged (so it stays importable by name, which a
process pool needs) and records its spec on it; the registry collects specs from modules — built-in,
`BRIDGE_PROCESSORS`, and the entry-point group `n8n_bridge.processors` — with no global state.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, TypeVar

import jsonschema
import referencing
from pydantic import BaseModel, ValidationError

from bridge.errors import ValidationFailed, json_pointer
from bridge.jobs import JobRecord
from bridge.services import Services
from bridge.settings import Settings

ENTRY_POINT_GROUP = "n8n_bridge.processors"
BUILTIN_MODULES = (
    "bridge.processors.echo",
    "bridge.processors.email_send",
    "bridge.processors.n8n_trigger",
    "bridge.processors.template_render",
    "bridge.processors.validation",
)
SPEC_ATTRIBUTE = "__bridge_processor__"

F = TypeVar("F", bound=Callable[..., Any])


class RegistryError(Exception):
    """A processor module cannot be loaded, or two processors share a name; one line."""


@dataclass(frozen=True, slots=True)
class Context:
    """What a processor knows of the job it runs in. Plain values, so it crosses process pools."""

    job_id: str
    trace_id: str
    processor: str
    settings: Settings
    workflow_id: str | None = None
    execution_id: str | None = None
    idempotency_key: str | None = None  # the request's, if it had one
    services: Services | None = None  # on the event loop and in threads; None in processes
    # time.monotonic() by which the run must end (its timeout), set by the runner. A processor
    # working through many items or a long loop should stop once `past_deadline()`: the
    # caller has had its timeout answer, and a thread cannot be stopped from outside.
    deadline: float | None = None

    @classmethod
    def for_job(cls, job: JobRecord, settings: Settings, services: Services | None) -> Context:
        """The context of a job's run, sync or background, from its record."""
        return cls(
            job_id=job.job_id,
            trace_id=job.trace_id or job.job_id,
            processor=job.processing_type,
            settings=settings,
            workflow_id=job.workflow_id,
            execution_id=job.execution_id,
            idempotency_key=job.idempotency_key,
            services=services,
        )

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        return logging.LoggerAdapter(
            logging.getLogger(f"bridge.processors.{self.processor}"),
            {"trace_id": self.trace_id, "job_id": self.job_id, "workflow_id": self.workflow_id},
        )


@dataclass(frozen=True, slots=True)
class ProcessorSpec:
    name: str
    description: str
    func: Callable[..., Any]
    params: type[BaseModel] | Mapping[str, Any] | None = None
    batch: bool = False
    cpu_bound: bool = False
    timeout_s: float | None = None
    concurrency: int | None = None
    item_concurrency: int = 1
    max_attempts: int | None = None
    is_async: bool = False
    module: str = ""
    _validator: Any = field(default=None, repr=False, compare=False)

    def parameters_schema(self) -> dict[str, Any]:
        if self.params is None:
            return {"type": "object", "additionalProperties": True}
        if isinstance(self.params, Mapping):
            return dict(self.params)
        return self.params.model_json_schema()

    def parse_params(
        self, raw: Mapping[str, Any], pointer: str = "/parameters", context: Any = None
    ) -> Any:
        """Validate a request's parameters; problems become a 422 with one JSON pointer each.
        `context` (the app's Services when a request is accepted) is pydantic's validation
        context: a model may judge a value by what the bridge will do with it."""
        if self.params is None:
            return dict(raw)
        if isinstance(self.params, Mapping):
            errors = sorted(self._validator.iter_errors(raw), key=lambda e: list(e.absolute_path))
            if errors:
                raise _params_invalid(
                    self.name,
                    [
                        {"pointer": pointer + json_pointer(e.absolute_path), "message": e.message}
                        for e in errors
                    ],
                )
            return dict(raw)
        try:
            return self.params.model_validate(raw, context=context)
        except ValidationError as exc:
            raise _params_invalid(
                self.name,
                [
                    # a bad key of a mapping points at its entry (pydantic adds "[key]")
                    {
                        "pointer": pointer + json_pointer(p for p in e["loc"] if p != "[key]"),
                        "message": e["msg"],
                    }
                    for e in exc.errors(include_url=False)
                ],
            ) from None


def _params_invalid(name: str, problems: list[dict[str, str]]) -> ValidationFailed:
    first = problems[0]
    return ValidationFailed(
        f"parameters for {name!r} are invalid: {first['pointer']}: {first['message']}",
        details=problems,
    )


def processor(
    name: str | None = None,
    *,
    description: str | None = None,
    params: type[BaseModel] | Mapping[str, Any] | None = None,
    batch: bool = False,
    cpu_bound: bool = False,
    timeout_s: float | None = None,
    concurrency: int | None = None,
    item_concurrency: int = 1,
    max_attempts: int | None = None,
) -> Callable[[F], F]:
    """Mark a function as a bridge processor.

    `params` is a pydantic model (or a JSON Schema dict) for the request's `parameters`;
    `cpu_bound` sends a sync function to the process pool instead of the thread pool;
    `timeout_s` bounds one job; `concurrency` bounds the jobs of this processor running at once;
    `item_concurrency` is how many items of one job an async per-item function runs at once;
    `max_attempts` bounds the runs of a background job whose failure is retryable (default:
    BRIDGE_JOB_MAX_ATTEMPTS) — give 1 to a processor whose side effects must not repeat.
    """
    if isinstance(params, Mapping):
        jsonschema.Draft202012Validator.check_schema(params)
    if concurrency is not None and concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if item_concurrency < 1:
        raise ValueError("item_concurrency must be at least 1")
    if max_attempts is not None and max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")

    def decorate(func: F) -> F:
        is_async = inspect.iscoroutinefunction(func)
        if cpu_bound and is_async:
            raise TypeError(f"{func.__qualname__}: cpu_bound processors must be plain functions")
        spec = ProcessorSpec(
            name=name or func.__name__,
            description=description or inspect.cleandoc(func.__doc__ or "").split("\n\n")[0],
            func=func,
            params=params,
            batch=batch,
            cpu_bound=cpu_bound,
            timeout_s=timeout_s,
            concurrency=concurrency,
            item_concurrency=item_concurrency,
            max_attempts=max_attempts,
            is_async=is_async,
            module=func.__module__,
            # An empty registry: `$ref` resolves within the schema, never by fetching a URL.
            _validator=jsonschema.Draft202012Validator(params, registry=referencing.Registry())
            if isinstance(params, Mapping)
            else None,
        )
        setattr(func, SPEC_ATTRIBUTE, spec)
        return func

    return decorate


class Registry:
    """The processors this daemon offers, by name."""

    def __init__(self, specs: Iterable[ProcessorSpec]) -> None:
        self._specs: dict[str, ProcessorSpec] = {}
        for spec in specs:
            other = self._specs.get(spec.name)
            if other is not None and other.func is not spec.func:
                raise RegistryError(
                    f"processor {spec.name!r} is defined twice: in {other.module} and {spec.module}"
                )
            self._specs[spec.name] = spec

    @classmethod
    def load(cls, modules: Sequence[str] = (), *, use_entry_points: bool = True) -> Registry:
        specs: list[ProcessorSpec] = []
        for module_name in (*BUILTIN_MODULES, *modules):
            specs.extend(specs_in(_import(module_name, "BRIDGE_PROCESSORS")))
        if use_entry_points:
            for entry in entry_points(group=ENTRY_POINT_GROUP):
                try:
                    target = entry.load()
                except Exception as exc:
                    raise RegistryError(
                        f"entry point {entry.name!r} ({entry.value}) of {ENTRY_POINT_GROUP}: "
                        f"cannot import: {type(exc).__name__}: {exc}"
                    ) from None
                found = specs_in(target)
                if not found:
                    raise RegistryError(
                        f"entry point {entry.name!r} ({entry.value}) names no @processor"
                    )
                specs.extend(found)
        return cls(specs)

    def get(self, name: str) -> ProcessorSpec:
        spec = self._specs.get(name)
        if spec is None:
            raise ValidationFailed(
                f"unknown processing_type {name!r}; valid: {', '.join(self.names())}",
                details=[{"pointer": "/processing_type", "message": "unknown processor"}],
            )
        return spec

    def names(self) -> list[str]:
        return sorted(self._specs)

    def __iter__(self) -> Iterator[ProcessorSpec]:
        return iter(self._specs[name] for name in self.names())


def _import(module_name: str, source: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:
        raise RegistryError(
            f"{source}: cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None


def specs_in(target: Any) -> list[ProcessorSpec]:
    """The processor specs a module defines, or the one a marked function carries."""
    if isinstance(target, ModuleType):
        return [
            spec
            for value in vars(target).values()
            if isinstance(spec := getattr(value, SPEC_ATTRIBUTE, None), ProcessorSpec)
            and spec.module == target.__name__
        ]
    spec = getattr(target, SPEC_ATTRIBUTE, None)
    return [spec] if isinstance(spec, ProcessorSpec) else []
