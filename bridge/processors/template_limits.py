"""What a template may build, and for how long: the bounds the template sandbox checks, and
upper bounds of how long a value's text will be, worked out before the text is built.

Every bound raises Jinja's `SecurityError`, which fails the item with a message naming the bound.
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections.abc import ItemsView, KeysView, Mapping, Sequence, ValuesView
from contextvars import ContextVar
from typing import Any, Literal

from jinja2 import Undefined
from jinja2.exceptions import SecurityError
from jinja2.runtime import Macro
from jinja2.utils import Namespace

MAX_SIZE = 1_000_000  # a list's items, a repetition, or a number given as a size or count
MAX_OUTPUT_CHARS = 10_000_000  # any text a template builds, and one item's output
MAX_POWER_BITS = 100_000
# What one formatted field may add beyond its value and the numbers in its spec: a float's
# digits in fixed notation (`'%f' % 1e308`), signs, separators.
FIELD_SLACK = 330
FLOAT_CHARS = 24  # the longest float: -1.7976931348623157e+308 (and True, False, None)
# Characters a value of an unknown kind (a loop, cycler, generator…) prints as, at most: Python's
# default `<module.Class object at 0x…>` and Jinja's own short representations.
OPAQUE_CHARS = 256

# What one item of a list, tuple or dict costs of the budget: a call or filter may fill it with
# new objects (`split`, `batch`, `|list`), each some fifty bytes; `+` and `*` only copy
# references to objects paid for already.
ITEM_CHARS = 64
REFERENCE_CHARS = 8
# What any other object a call makes costs (a generator, a cycler, a dict view, a loop or a
# `caller` kept as a value: some two to four hundred bytes each), and a macro defined where it
# may be defined again and again (in a loop or a macro): its function and closure.
OBJECT_CHARS = 256
MACRO_CHARS = 512


class Run:
    """The bounds of one request's (or job's) rendering, shared by all its items: its deadline
    (time.monotonic()) and its budget, what it may still build, in characters — every text a
    template operation, call or filter makes, every list it makes (ITEM_CHARS an item) and every
    item's output, counted as made (what is thrown away too), so that many values, each within
    its bound, cannot add up to unbounded memory. One object, so that a filter looks up both at
    once."""

    __slots__ = ("deadline", "left", "total")

    def __init__(self, deadline: float | None, total: int) -> None:
        self.deadline = math.inf if deadline is None else deadline
        self.left = self.total = total

    def spend(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise self.spent()

    def spent(self) -> SecurityError:
        return SecurityError(
            f"the request's templates built over {self.total:,} characters in all "
            "(BRIDGE_TEMPLATE_BUDGET_CHARS)"
        )


# The run rendering in this thread (none outside template_render).
RUN: ContextVar[Run | None] = ContextVar("template_run", default=None)


def spend(size: int) -> None:
    run = RUN.get()
    if run is not None:
        run.spend(size)


# How text is made of a value: `str()`, `repr()`, or JSON (Jinja's `tojson`, HTML-safe).
Style = Literal["str", "repr", "json"]
_HTML_SPECIALS = ("&", "<", ">", '"', "'")
_DIRECTIVE = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[-#0 +]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d+))?"
    r"[hlL]?(?P<kind>.?)",
    re.DOTALL,
)
_NUMBER = re.compile(r"\d+")


def check_time() -> None:
    run = RUN.get()
    if run is not None and time.monotonic() > run.deadline:
        raise out_of_time()


def out_of_time() -> SecurityError:
    return SecurityError("the template ran past its time limit")


def check_size(size: int) -> None:
    """Refuse building a text of `size` characters if it is too large."""
    if size > MAX_OUTPUT_CHARS:
        raise SecurityError(f"a value of over {MAX_OUTPUT_CHARS:,} characters is not allowed")


def check_items(count: int) -> None:
    """Refuse building a list of `count` items if it is too large."""
    if count > MAX_SIZE:
        raise SecurityError(f"a list of over {MAX_SIZE:,} items is not allowed")


def checked(value: Any) -> Any:
    """`value` (a call's or filter's answer), unless it is a text or list over its limit (its
    length costs nothing to read); whatever new it is, it is paid for from the budget: a text
    by its characters, a list, tuple, dict or namespace by its items (and the container itself),
    a number by its bytes, any other object (a generator, a cycler…) OBJECT_CHARS."""
    kind = type(value)
    if isinstance(value, str):
        check_size(len(value))
        spend(len(value))
    elif isinstance(value, list | tuple):
        check_items(len(value))
        spend(ITEM_CHARS * (len(value) + 1))
    elif isinstance(value, dict):
        spend(ITEM_CHARS * (len(value) + 2))  # a dict's table is larger than a list's
    elif kind is int:
        spend(value.bit_length() // 8)
    elif isinstance(value, Namespace):
        spend(ITEM_CHARS * (len(object.__getattribute__(value, "_Namespace__attrs")) + 4))
    elif not (value is None or kind is bool or kind is float or isinstance(value, Undefined)):
        spend(ITEM_CHARS if kind is range else OBJECT_CHARS)
    return value


def built(value: Any, cost: int) -> Any:
    """`value` (a list, tuple or dict written in the template, or a `loop` or `caller` kept as a
    value), paid for from the budget: `cost`, worked out when the template is compiled."""
    spend(cost)
    return value


def copied(value: Any) -> Any:
    """`value` (what `+`, `*`, `**` or `%` made), paid for from the budget: a text by its
    characters, a list or tuple by its references (its items are paid for already), a number
    by its bytes."""
    if isinstance(value, str):
        spend(len(value))
    elif isinstance(value, list | tuple):
        spend(REFERENCE_CHARS * len(value))
    elif type(value) is int:
        spend(value.bit_length() // 8)
    return value


def comparable(value: Any) -> Any:
    """`value`, unless it is a collection too large to compare or hash: Python compares and
    hashes nested lists and tuples part by part, and a list of ten lists of ten… (shared parts)
    would take hours, out of reach of the deadline."""
    if isinstance(value, list | tuple | dict | set | frozenset):
        check_size(text_size(value))
    return value


def check_numbers(args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Refuse a number over MAX_SIZE given as a size or count (`range(10**9)`)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SIZE:
            raise SecurityError(f"{value} is over {MAX_SIZE:,}, the most a template may ask for")


def text_size(value: Any, style: Style = "str") -> int:
    """An upper bound of the length of `value` as text; the count stops a little past
    MAX_OUTPUT_CHARS. Shared parts are measured once, so a list of ten lists of ten… that would
    print as billions of characters is measured in microseconds."""
    # Most values printed or formatted: measured without the walk (as `_Measure.scalar`).
    kind = type(value)
    if kind is str and style == "str":
        return len(value)
    if kind is float or kind is bool or value is None:
        return FLOAT_CHARS
    if kind is int:
        digits: int = value.bit_length() // 3 + 2
        return digits
    try:
        return _Measure(style).of(value, nested=style != "str")
    except _TooLong:
        return MAX_OUTPUT_CHARS + 1


def escaped_size(value: Any) -> int:
    """An upper bound of the length of `value` HTML-escaped (`&` → `&amp;`, `"` → `&#34;`)."""
    if hasattr(value, "__html__"):  # Markup: not escaped again
        return text_size(value)
    if isinstance(value, str):
        return len(value) + 4 * sum(value.count(special) for special in _HTML_SPECIALS)
    return 5 * text_size(value)


def printf_size(template: str, args: Any, escape: bool = False) -> int:
    """An upper bound of `len(template % args)` (escaping each value if `escape`: Markup's `%`)."""
    values = args if isinstance(args, tuple) else (args,)
    plain = _plain_format(template) if len(template) <= 200 else None
    if plain is not None:  # the common case: what does not depend on the values, known already
        size, styles = plain
        for index, style in enumerate(styles):
            value = values[index] if index < len(values) else None
            size += escaped_size(value) if escape else text_size(value, style)
        return size
    size, index = len(template), 0
    for key, width, precision, style in _directives(template):
        for number in (width, precision):
            if number == STAR:  # the number is the next value
                if index < len(values) and isinstance(values[index], int):
                    size += abs(values[index])
                index += 1
            else:
                size += number
        if key is None:
            value = values[index] if index < len(values) else None
            index += 1
        else:
            value = args.get(key) if isinstance(args, Mapping) else None
        size += FIELD_SLACK + (escaped_size(value) if escape else text_size(value, style))
        check_size(size)
    return size


STAR = -1
# A `%` directive: its key, width and precision (0: none; STAR: `*`) and how it makes text
# (%r as repr; %a escapes non-ASCII letters, as JSON does at most).
Directive = tuple[str | None, int, int, Style]
_STYLES: dict[str, Style] = {"r": "repr", "a": "json"}


def _directives(template: str) -> tuple[Directive, ...]:
    """The `%` directives of a format (`%%` left out). A template formats the same short
    format for every item: those are parsed once."""
    return _short_directives(template) if len(template) <= 200 else _parse_directives(template)


def _parse_directives(template: str) -> tuple[Directive, ...]:
    def number(text: str | None) -> int:
        return STAR if text == "*" else int(text or 0)

    return tuple(
        (d["key"], number(d["width"]), number(d["precision"]), _STYLES.get(d["kind"], "str"))
        for d in _DIRECTIVE.finditer(template)
        if d["kind"] != "%"
    )


_short_directives = functools.lru_cache(maxsize=256)(_parse_directives)


@functools.lru_cache(maxsize=256)
def _plain_format(template: str) -> tuple[int, tuple[Style, ...]] | None:
    """For a short format whose directives take neither a `*` nor a key (`%.2f`, `%s-%05d`):
    what `printf_size` adds up for it before its values (the text, widths, precisions and
    FIELD_SLACK a directive) and how each value is made text. None for any other."""
    directives = _short_directives(template)
    if any(
        key is not None or STAR in (width, precision) for key, width, precision, _ in directives
    ):
        return None
    fixed = len(template) + sum(
        width + precision + FIELD_SLACK for _, width, precision, _ in directives
    )
    return fixed, tuple(style for *_, style in directives)


def field_size(value: Any, spec: str, escape: bool = False) -> int:
    """An upper bound of `format(value, spec)`: the value, every number in the spec (a width,
    a precision) and, with digit grouping, a separator for every digit."""
    size = escaped_size(value) if escape else text_size(value)
    size += sum(int(number) for number in _NUMBER.findall(spec)) + FIELD_SLACK
    return 2 * size if "," in spec or "_" in spec else size


class _TooLong(Exception):
    pass


class _Measure:
    def __init__(self, style: Style) -> None:
        self._json = style == "json"
        self._known: dict[int, int] = {}  # id → size of a collection measured already

    @staticmethod
    def scalar(value: bool | int | float | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value.bit_length() // 3 + 2  # decimal digits, and a sign
        return FLOAT_CHARS

    def of(self, value: Any, nested: bool) -> int:
        if isinstance(value, str):
            if not nested:
                return len(value)
            # A subclass (Markup) prints as `Markup('…')`.
            return self._quoted(value) + (0 if type(value) is str else 16)
        if value is None or isinstance(value, bool | int | float):
            return self.scalar(value)
        if isinstance(value, Undefined):
            return 16
        known = self._known.get(id(value))
        if known is None:
            known = self._known[id(value)] = self._collection(value)
        return known

    def _quoted(self, text: str) -> int:
        """The text as Python's repr or as HTML-safe JSON writes it, quotes and escapes."""
        escaped = text.count("\\") + text.count("'") + text.count('"')
        if text.isascii() and text.isprintable():
            if self._json:  # <, >, & and ' become \u003c…
                escaped += 5 * sum(text.count(special) for special in "<>&'")
            return len(text) + escaped + 2
        if text.isprintable() and not self._json:  # repr keeps printable non-ASCII letters
            return len(text) + escaped + 2
        return 12 * len(text) + 2  # \U0001f600, or "\ud83d\ude00" in JSON

    def _collection(self, value: Any) -> int:
        check_time()
        if isinstance(value, Namespace):
            value = object.__getattribute__(value, "_Namespace__attrs")
        if isinstance(value, Mapping | ItemsView):
            pairs = value.items() if isinstance(value, Mapping) else value
            return self._sum((part for pair in pairs for part in pair), 64)
        if isinstance(value, list | tuple | set | frozenset | KeysView | ValuesView):
            return self._sum(value, 64)
        if isinstance(value, range):
            return self._sum((value.start, value.stop, value.step), 16)
        if isinstance(value, Macro):
            return len(value.name) + OPAQUE_CHARS
        return OPAQUE_CHARS

    def _sum(self, parts: Any, overhead: int) -> int:
        # Each part: itself, a separator (", " or ": ") and, for a view's pairs, brackets.
        size = overhead
        for part in parts:
            size += self.of(part, nested=True) + 4
            if size > MAX_OUTPUT_CHARS:
                raise _TooLong
        return size
