"""JSON Schemas from workflow authors: checked once, then run reaching nothing outside themselves,
every pattern matched within the run's deadline.

`check(schema)` runs at parameter validation and raises `SchemaRefused` (with the pointer of the
keyword) for a schema invalid against the Draft 2020-12 metaschema, too large (it is checked on the
event loop) or nested too deeply, and for:
- a `$ref` or `$dynamicRef` that does not resolve inside the schema itself — a remote URL, a
  relative one under a remote `$id`, a metaschema — or not at all. Nothing is ever fetched: the
  registry's `retrieve` refuses, so a canary, a redirect or a tarpit gets no request;
- `$schema` other than Draft 2020-12's, or below the root: another dialect would run with
  jsonschema's own validator class, outside the bounds below;
- a pattern that would compile too large (`regex` unrolls counted repeats: compiling
  `(?:(?:a{100}){100}){100}` would take gigabytes), or that `regex` cannot compile;
- `unevaluatedProperties` in a schema that has `patternProperties`: jsonschema matches those
  patterns there with `re`, which has no time limit and holds the GIL.

`validator(schema)` builds the validator (cached): Draft 2020-12 where `pattern`,
`patternProperties` and `additionalProperties` match with `regex` — a timeout of the time left
before the deadline, the GIL released while matching —, `uniqueItems` is linear (jsonschema's
compares every pair of elements it cannot sort), and every keyword checks the deadline first,
so one item is cut short too. `deadline(at)` sets the deadline for the calling thread's run.
"""

from __future__ import annotations

import contextlib
import functools
import re
import reprlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import jsonschema
import orjson
import referencing
import referencing.exceptions
import referencing.jsonschema
import regex
from referencing.jsonschema import DRAFT202012

from bridge.errors import Timeout

if TYPE_CHECKING:  # the standard library's own pattern parser; typeshed has it by its old names
    import sre_constants as _sre
    import sre_parse as _parser

    from referencing._core import Resolver
else:
    from re import _constants as _sre
    from re import _parser

DIALECT = "https://json-schema.org/draft/2020-12/schema"
# Counted repeats `regex` unrolls, in pattern elements: 10,000 cost at most about 3 MB and 2 ms to
# compile. Patterns people write (`^\d{4}-\d{2}$`, `.{1,255}`) are far below.
MAX_PATTERN_SIZE = 10_000
# Values (objects, arrays, scalars) in one schema: checking it runs on the event loop, up to about
# 65 µs a value (a distinct pattern in every subschema), so 5,000 hold the loop for a third of a
# second at most. Schemas people write are far below.
MAX_SCHEMA_VALUES = 5_000
# Validators of larger schemas are built for their request and not kept: a cache must not pin
# megabytes per entry for whoever sends many large schemas.
MAX_CACHED_SCHEMA_BYTES = 64 * 1024
# A text read as a pattern (a schema's `pattern`, an item's value under `format: regex`) is parsed
# by Python's `re` parser: in Python, holding the interpreter for seconds at megabytes, recursing
# once per nested group. Longer ones are refused unread.
MAX_PATTERN_CHARS = 10_000
# Errors the checks of one item may keep, those anyOf/oneOf keep of every branch included (two
# branches per level, 20 levels deep, held 2**20 errors — gigabytes — long before any deadline),
# and all the items of one request (120 items of 10,000 wrong elements kept a million: ~1 GB).
MAX_ITEM_ERRORS = 1_000
MAX_REQUEST_ERRORS = 100_000
# jsonschema writes the whole value into most messages: 100 failing checks of a 5 MB string made
# a 500 MB answer. A message keeps this many characters.
MAX_MESSAGE_CHARS = 300

Path = tuple[str | int, ...]
_BASE = jsonschema.Draft202012Validator
# The run's deadline (time.monotonic()), in the thread validating a batch.
_DEADLINE: ContextVar[float | None] = ContextVar("schema_deadline", default=None)
# Errors the item being validated may still produce (a one-element list, counted down).
_ERRORS_LEFT: ContextVar[list[int] | None] = ContextVar("schema_errors_left", default=None)
_COUNTED = "_bridge_counted"  # set on an error once counted and shortened


class TooManyErrors(Exception):
    """An item's checks kept more errors than it may."""


class ErrorBudget:
    """Errors the items of one request may still keep (MAX_REQUEST_ERRORS at first)."""

    def __init__(self) -> None:
        self.left = MAX_REQUEST_ERRORS


class SchemaRefused(ValueError):
    """A schema the bridge will not run; `path` leads to the offending keyword."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


class _NotFetched(Exception):
    """Raised by the registries' `retrieve`: no reference is ever fetched."""


def _refuse(uri: str) -> referencing.Resource[Any]:
    raise _NotFetched(uri)


_NO_RETRIEVAL: referencing.Registry[Any] = referencing.Registry(retrieve=_refuse)  # type: ignore[call-arg]


def check(schema: Mapping[str, Any]) -> None:
    """Refuse what the bridge will not run (see the module's docstring)."""
    if _too_many_values(schema, MAX_SCHEMA_VALUES):
        raise SchemaRefused((), f"the schema is too large: more than {MAX_SCHEMA_VALUES:,} values")
    try:
        _BASE.check_schema(schema, format_checker=_FORMATS)
        _check(schema)
    except jsonschema.SchemaError as exc:
        raise SchemaRefused((), f"not a valid JSON Schema: {exc.message}") from None
    except RecursionError:  # jsonschema and the pattern parser recurse
        raise SchemaRefused((), "the schema is nested too deeply") from None


def _check(schema: Mapping[str, Any]) -> None:
    dialect = schema.get("$schema")
    if dialect is not None and dialect.rstrip("#") != DIALECT:
        raise SchemaRefused(("$schema",), f"only Draft 2020-12 ({DIALECT}) is supported")
    paths = _paths(schema)
    pattern_properties = unevaluated = None
    for sub, resolver in _subschemas(schema):
        path = paths[id(sub)]
        if "$schema" in sub and sub is not schema:
            raise SchemaRefused((*path, "$schema"), "$schema is allowed only at the root")
        for keyword in ("$ref", "$dynamicRef"):
            if keyword in sub:
                _resolve(resolver, sub[keyword], (*path, keyword))
        if isinstance(sub.get("pattern"), str):
            _check_pattern(sub["pattern"], (*path, "pattern"))
        for pattern in sub.get("patternProperties", {}):
            _check_pattern(pattern, (*path, "patternProperties", pattern))
            pattern_properties = pattern_properties or path
        if "unevaluatedProperties" in sub:
            unevaluated = unevaluated or (*path, "unevaluatedProperties")
    if pattern_properties is not None and unevaluated is not None:
        raise SchemaRefused(
            unevaluated,
            "unevaluatedProperties cannot be used in a schema with patternProperties "
            "(their patterns would be matched there without a time limit)",
        )


def _too_many_values(document: Any, limit: int) -> bool:
    stack, count = [document], 0
    while stack:  # a loop, not recursion: nesting is bounded only by the body
        value = stack.pop()
        count += 1
        if count > limit:
            return True
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def _paths(document: Any) -> dict[int, Path]:
    """Where each object of a parsed JSON document is, by identity (no object is in two places)."""
    paths: dict[int, Path] = {}
    stack: list[tuple[Any, Path]] = [(document, ())]
    while stack:  # a loop, not recursion: nesting is bounded only by the body
        value, path = stack.pop()
        if isinstance(value, dict):
            paths[id(value)] = path
            stack.extend((v, (*path, k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, (*path, i)) for i, v in enumerate(value))
    return paths


def _subschemas(
    schema: Mapping[str, Any],
) -> Iterator[tuple[Mapping[str, Any], Resolver[Any]]]:
    """Every subschema (by Draft 2020-12's keywords: not `const`, `enum` or `default` values),
    with the resolver for references made in it."""
    root = DRAFT202012.create_resource(schema)
    registry = _NO_RETRIEVAL.with_resource(root.id() or "", root).crawl()
    stack = [(schema, registry.resolver(root.id() or ""))]
    while stack:
        sub, resolver = stack.pop()
        yield sub, resolver
        for child in DRAFT202012.subresources_of(sub):
            if isinstance(child, dict):
                resource = DRAFT202012.create_resource(child)
                stack.append((child, resolver.in_subresource(resource)))


def _resolve(resolver: Resolver[Any], ref: Any, path: Path) -> None:
    try:
        resolver.lookup(ref)
    except referencing.exceptions.Unresolvable as exc:
        if isinstance(exc.__cause__, referencing.exceptions.Unretrievable):
            raise SchemaRefused(
                path,
                f"{ref!r} points outside the schema: references must resolve inside it "
                "(remote schemas are never fetched)",
            ) from None
        raise SchemaRefused(path, f"{ref!r} cannot be resolved inside the schema") from None


def _check_pattern(pattern: str, path: Path) -> None:
    if len(pattern) > MAX_PATTERN_CHARS:
        raise SchemaRefused(path, f"a pattern of over {MAX_PATTERN_CHARS:,} characters")
    try:
        size = _unrolled_size(_parser.parse(pattern).data)
        if size <= MAX_PATTERN_SIZE:
            _compiled(pattern)
    except (re.error, regex.error, OverflowError, RecursionError) as exc:
        raise SchemaRefused(path, f"not a supported pattern: {exc}") from None
    if size > MAX_PATTERN_SIZE:
        raise SchemaRefused(
            path,
            f"the pattern is too large: {size:,} elements once its repeats are unrolled "
            f"(most {MAX_PATTERN_SIZE:,})",
        )


def _unrolled_size(items: Iterable[tuple[Any, Any]]) -> int:
    """An upper bound of the elements `regex` compiles a pattern (parsed by the standard library's
    own parser) to: a counted repeat counts its body as many times as its largest count (its
    smallest, when open-ended)."""
    total = 0
    for op, av in items:
        if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT):
            low, high, body = av
            total += (high if high != _sre.MAXREPEAT else max(low, 1)) * _unrolled_size(body)
        elif op in (_sre.SUBPATTERN, _sre.ASSERT, _sre.ASSERT_NOT):
            total += _unrolled_size(av[-1])
        elif op is _sre.ATOMIC_GROUP:
            total += _unrolled_size(av)
        elif op is _sre.BRANCH:
            total += sum(_unrolled_size(branch) for branch in av[1])
        elif op is _sre.GROUPREF_EXISTS:
            total += sum(_unrolled_size(branch) for branch in av[1:] if branch is not None)
        else:
            total += 1
    return total


# Running: the validator class and the deadline.


@contextlib.contextmanager
def deadline(at: float | None) -> Iterator[None]:
    """Validation in this thread (one run) ends by `at` (time.monotonic())."""
    token = _DEADLINE.set(at)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _time_left() -> float | None:
    at = _DEADLINE.get()
    if at is None:
        return None
    left = at - time.monotonic()
    if left <= 0:
        raise Timeout("validation stopped: out of time")
    return left


def _is_regex(instance: object) -> bool:
    """The `regex` format, for the schema's patterns and items' values alike: Python's `re` syntax,
    parsed only — `re.compile` would keep every string it saw in `re`'s cache."""
    if not isinstance(instance, str):
        return True
    if len(instance) > MAX_PATTERN_CHARS:
        return False
    try:
        _parser.parse(instance)
    except (re.error, OverflowError, RecursionError):
        return False
    return True


_FORMATS = jsonschema.FormatChecker(formats=())
_FORMATS.checkers.update(_BASE.FORMAT_CHECKER.checkers)
_FORMATS.checks("regex")(_is_regex)


@functools.lru_cache(maxsize=64)
def _compiled(pattern: str) -> regex.Pattern[str]:
    # Not in `regex`'s own cache (500 entries): this one is small, and each entry bounded by
    # MAX_PATTERN_SIZE, so what it holds stays small too.
    return regex.compile(pattern, cache_pattern=False)


def _search(pattern: str, text: str) -> bool:
    try:
        return _compiled(pattern).search(text, timeout=_time_left()) is not None
    except TimeoutError:
        raise Timeout(
            f"validation stopped: out of time matching the pattern {reprlib.repr(pattern)}"
        ) from None


Keyword = Callable[[Any, Any, Any, Mapping[str, Any]], Iterator[jsonschema.ValidationError]]


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield jsonschema.ValidationError(
            f"{reprlib.repr(instance)} does not match {reprlib.repr(pattern)}"
        )


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    """jsonschema's own, given the properties no pattern matched (matched here, in time)."""
    patterns = schema.get("patternProperties")
    if patterns and validator.is_type(instance, "object"):
        instance = {k: v for k, v in instance.items() if not any(_search(p, k) for p in patterns)}
        schema = {k: v for k, v in schema.items() if k != "patternProperties"}
    yield from _BASE.VALIDATORS["additionalProperties"](validator, additional, instance, schema)


def _unique_items(
    validator: Any, unique: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    """jsonschema's compares every pair when the elements cannot be sorted (mixed types,
    objects): quadratic inside one keyword. Here each element becomes a hashable identity with
    JSON's equality (1 == 1.0, true != 1, objects without key order), in one pass that checks
    the deadline as it goes."""
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for index, element in enumerate(instance):
        if index % 1024 == 0:
            _time_left()
        identity = _identity(element)
        if identity in seen:
            yield jsonschema.ValidationError(f"{reprlib.repr(instance)} has non-unique elements")
            return
        seen.add(identity)


def _identity(value: Any) -> Any:
    if isinstance(value, bool):  # before int: True == 1 in Python, not in JSON
        return (0, value)
    if isinstance(value, int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    if isinstance(value, list):
        return (3, tuple(map(_identity, value)))
    if isinstance(value, dict):
        return (4, frozenset((key, _identity(item)) for key, item in value.items()))
    return (5, value)  # None


def _in_time(keyword: Keyword) -> Keyword:
    def checked(
        validator: Any, value: Any, instance: Any, schema: Mapping[str, Any]
    ) -> Iterator[jsonschema.ValidationError]:
        _time_left()
        for error in keyword(validator, value, instance, schema):
            if not getattr(error, _COUNTED, False):  # a parent keyword passes it on again
                _count(error)
            yield error

    return checked


def _count(error: jsonschema.ValidationError) -> None:
    """Shortens the message, and counts the errors kept: those an anyOf/oneOf error keeps of its
    branches (errors of a branch that then matched are dropped, and not counted)."""
    setattr(error, _COUNTED, True)
    if len(error.message) > MAX_MESSAGE_CHARS:  # the middle is the value; its end says why
        half = MAX_MESSAGE_CHARS // 2
        error.message = f"{error.message[:half]}…{error.message[-half:]}"
        error.args = (error.message, *error.args[1:])  # the exception's args held the original
    if error.context:
        _spend(len(error.context))


def _spend(errors: int) -> None:
    left = _ERRORS_LEFT.get()
    if left is not None:
        left[0] -= errors
        if left[0] < 0:
            raise TooManyErrors


def item_errors(
    validator: Any, record: Any, budget: ErrorBudget
) -> tuple[list[jsonschema.ValidationError], str | None]:
    """One item's errors, up to what the item and the request may keep, and why it stopped
    there (None when it did not)."""
    allowed = min(MAX_ITEM_ERRORS, budget.left)
    left = [allowed]
    token = _ERRORS_LEFT.set(left)
    errors: list[jsonschema.ValidationError] = []
    try:
        for error in validator.iter_errors(record):
            _spend(1)
            errors.append(error)
        return errors, None
    except TooManyErrors:
        if allowed == MAX_ITEM_ERRORS:
            return errors, (
                f"more than {MAX_ITEM_ERRORS:,} errors in this item (anyOf/oneOf keep every "
                "branch's); not validated further"
            )
        return errors, (
            f"the request's items kept more than {MAX_REQUEST_ERRORS:,} errors; not validated "
            "further"
        )
    finally:
        budget.left -= allowed - max(left[0], 0)
        _ERRORS_LEFT.reset(token)


_BOUNDED: dict[str, Keyword] = {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
    "uniqueItems": _unique_items,
}
_KEYWORDS: dict[str, Keyword] = {**_BASE.VALIDATORS, **_BOUNDED}
_Validator = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    _BASE, validators={name: _in_time(keyword) for name, keyword in _KEYWORDS.items()}
)


def validator(schema: Mapping[str, Any]) -> Any:
    """The validator of a schema `check` accepted; small schemas' are cached."""
    schema_json = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    if len(schema_json) > MAX_CACHED_SCHEMA_BYTES:
        return _build(schema_json)
    return _cached(schema_json)


def _build(schema_json: bytes) -> Any:
    schema = orjson.loads(schema_json)
    # `$schema` (only Draft 2020-12's is accepted) would make jsonschema pick its own class for
    # the root whenever a reference comes back to it.
    schema.pop("$schema", None)
    return _Validator(schema, registry=_NO_RETRIEVAL, format_checker=_FORMATS)


_cached = functools.lru_cache(maxsize=64)(_build)
