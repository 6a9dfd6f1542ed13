"""The template sandbox's filters: Jinja's own, each checking the run's deadline, refusing a
result that would be too large before building it, and checking the size of what it returns.
Those that loop in Python over a whole text or value — `wordwrap`, `urlize`, `title`,
`pprint`, `sum` over lists, `tojson` — are replaced by versions that check the deadline as they
go: one `wordwrap(1)` over a long word takes minutes, and a thread cannot be stopped from outside.
"""

from __future__ import annotations

import functools
import io
import json
import pprint as pprinting
import re
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass
from typing import Any

from jinja2 import pass_environment
from jinja2.environment import Environment
from jinja2.filters import make_attrgetter
from jinja2.nodes import EvalContext
from markupsafe import Markup, escape

from bridge.processors.template_limits import (
    MAX_OUTPUT_CHARS,
    REFERENCE_CHARS,
    RUN,
    check_items,
    check_numbers,
    check_size,
    check_time,
    checked,
    comparable,
    escaped_size,
    out_of_time,
    printf_size,
    spend,
    text_size,
)

LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # where str.splitlines() splits
_SPACE = re.compile(r"\s+")
PIECE = 65_536  # characters of text a filter works on between two looks at the deadline


def line_count(text: str) -> int:
    return 1 + sum(text.count(mark) for mark in LINE_BREAKS)


def replaced_size(text: Any, old: Any, new: Any, count: Any = None, *_: Any, **__: Any) -> int:
    text, old, new = str(text), str(old), str(new)
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * (len(new) - len(old))


def joined_size(separator: Any, parts: Iterable[Any]) -> int:
    """`separator.join(parts)`, the parts as text; `parts` must be a list or tuple (measured,
    then joined). Stops at the first part past the limit: the parts may all be one huge list."""
    size, step = 0, len(str(separator))
    for part in parts:
        size += text_size(part) + step
        check_size(size)
    return size


def listed(value: Any) -> Any:
    """An iterable to be measured and then used: as a list, since measuring would use up an
    iterator (texts, lists and tuples as they are)."""
    return value if isinstance(value, str | list | tuple) else list(value)


def _indented_size(text: Any, width: Any = 4, *_: Any, **__: Any) -> int:
    step: int = len(width) if isinstance(width, str) else width if isinstance(width, int) else 4
    text = str(text)
    return len(text) + line_count(text) * step


def _wrapped_size(
    text: Any,
    width: Any = 79,
    break_long_words: Any = True,
    wrapstring: Any = None,
    *_: Any,
    **__: Any,
) -> int:
    """Two lines in a row hold more than `width` characters, white space between included."""
    text = str(text)
    step = width if isinstance(width, int) and width > 0 else 1
    lines = 4 * len(text) // step + line_count(text) + 1
    return len(text) + lines * len(str(wrapstring or "\n"))


def _urlized_size(
    text: Any,
    trim_url_limit: Any = None,
    nofollow: Any = False,
    target: Any = None,
    rel: Any = None,
    *_: Any,
    **__: Any,
) -> int:
    """The text escaped, each link's text twice (its address and its label), and the markup of
    every possible link: one needs a `.`, `@` or `:`."""
    words = str(text)
    links = words.count(".") + words.count("@") + words.count(":")
    markup = 96 + 5 * (len(str(target or "")) + len(str(rel or "")))
    return 2 * escaped_size(words) + links * markup


def casing_size(text: Any) -> int:
    if not isinstance(text, str):
        return 0  # counted three times already (`times`)
    return len(text) if text.isascii() else 3 * len(text)  # 'ﬃ'.upper() == 'FFI'


def _quoted_size(text: Any, *_: Any, **__: Any) -> int:
    """`urlencode`: %XX for every byte of UTF-8 that is not a letter or digit."""
    if not isinstance(text, str):
        return 0  # counted twelve times already (`times`)
    return 3 * len(text) if text.isascii() else 12 * len(text)


@dataclass(frozen=True, slots=True)
class _Bound:
    # A value that is not text is made text: it counts this many times (0: it is not made
    # text, or its size is in `estimate`).
    times: int = 0
    # (the value, the filter's arguments) → the size of the answer, checked before the work.
    estimate: Callable[..., int] | None = None
    sizes: bool = False  # its numbers are sizes or counts: at most MAX_SIZE
    listed: bool = False  # its value is used twice (measured, then joined): list it first
    compares: bool = False  # compares or hashes the parts of its value or its arguments


TEXT = _Bound(times=1)
BOUNDS: dict[str, _Bound] = {
    "string": TEXT,
    "trim": TEXT,
    "striptags": TEXT,
    "wordcount": TEXT,
    "safe": TEXT,
    "upper": _Bound(3, casing_size),
    "lower": _Bound(3, casing_size),
    "title": _Bound(3, casing_size),
    "capitalize": _Bound(3, casing_size),
    "center": _Bound(1, lambda text, width=80: len(str(text)) + width, sizes=True),
    "indent": _Bound(1, _indented_size, sizes=True),
    "truncate": _Bound(1, lambda text, *a, **k: len(str(text)) + len(str(k.get("end", "...")))),
    "replace": _Bound(1, replaced_size),
    "wordwrap": _Bound(1, _wrapped_size),
    "urlize": _Bound(1, _urlized_size),
    "e": _Bound(estimate=escaped_size),
    "escape": _Bound(estimate=escaped_size),
    "forceescape": _Bound(5, lambda text: escaped_size(str(text))),
    "xmlattr": _Bound(5),
    "urlencode": _Bound(12, _quoted_size),
    "join": _Bound(estimate=lambda parts, d="", *_, **__: joined_size(d, parts), listed=True),
    "format": _Bound(
        1,
        lambda text, *args, **kwargs: printf_size(
            str(text), kwargs or args, hasattr(text, "__html__")
        ),
    ),
    "batch": _Bound(sizes=True),
    "slice": _Bound(sizes=True),
    **dict.fromkeys(
        ("sort", "unique", "min", "max", "groupby"), _Bound(listed=True, compares=True)
    ),
    "dictsort": _Bound(compares=True),
}


def bounded_tests(tests: Mapping[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """Every test (`is eq`, `is in`…) checking the deadline, and what it compares."""
    return {name: _guarded(test, COMPARES) for name, test in tests.items()}


COMPARES = _Bound(compares=True)


def bounded_filters(filters: Mapping[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """Every filter guarded (see the module's docstring), the slow ones replaced."""
    replaced: dict[str, Callable[..., Any]] = {
        "wordwrap": wordwrap,
        "urlize": _urlize_in_pieces(filters["urlize"]),
        "title": _title_in_pieces(filters["title"]),
        "pprint": pprint,
        "sum": sum_,
    }
    return {
        name: _guarded(replaced.get(name, function), BOUNDS.get(name))
        for name, function in filters.items()
    }


def _guarded(function: Callable[..., Any], bound: _Bound | None) -> Callable[..., Any]:
    skip = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0  # Jinja's context

    if bound is None:

        @functools.wraps(function)  # keeps Jinja's pass_context/pass_environment marks
        def clocked(*args: Any, **kwargs: Any) -> Any:
            check_time()
            return checked(function(*args, **kwargs))

        return clocked
    if not (bound.sizes or bound.listed or bound.compares):
        return _measured(function, bound.times, bound.estimate, skip)

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        check_time()
        value, rest = args[skip], args[skip + 1 :]
        if bound.sizes:
            check_numbers(rest, kwargs)
        if bound.listed and not isinstance(value, str | list | tuple):
            value = list(value)  # measured, then used: an iterator would be used up
            args = (*args[:skip], value, *rest)
        if bound.compares:
            for part in (value, *rest, *kwargs.values()):
                comparable(part)
        if bound.times and not isinstance(value, str):
            check_size(bound.times * text_size(value))
        if bound.estimate is not None:
            check_size(bound.estimate(value, *rest, **kwargs))
        return checked(function(*args, **kwargs))

    return guarded


def _measured(
    function: Callable[..., Any], times: int, estimate: Callable[..., int] | None, skip: int
) -> Callable[..., Any]:
    """`guarded` for a filter that only makes text of its value (`lower`, `format`, `replace`…),
    with the checks written out: most templates call one or two of these for every item, where
    each call of a check cost about as much as the filter itself."""
    run_of, now = RUN.get, time.monotonic

    @functools.wraps(function)
    def measured(*args: Any, **kwargs: Any) -> Any:
        run = run_of()
        if run is not None and now() > run.deadline:
            raise out_of_time()
        value = args[skip]
        if times and not isinstance(value, str):
            check_size(times * text_size(value))
        if estimate is not None:
            check_size(estimate(value, *args[skip + 1 :], **kwargs))
        result = function(*args, **kwargs)
        if type(result) is str and len(result) <= MAX_OUTPUT_CHARS:
            if run is not None:  # `checked`'s payment, written out
                run.left -= len(result)
                if run.left < 0:
                    raise run.spent()
            return result
        return checked(result)

    return measured


class _ClockedChunks(list[str]):
    """textwrap's chunks of one paragraph: it takes them one by one with `pop`."""

    def pop(self, index: Any = -1) -> str:
        check_time()
        return super().pop(index)


class _ClockedWrapper(textwrap.TextWrapper):
    def _split_chunks(self, text: str) -> list[str]:
        return _ClockedChunks(super()._split_chunks(text))

    def _handle_long_word(
        self, reversed_chunks: list[str], cur_line: list[str], cur_len: int, width: int
    ) -> None:
        check_time()  # a long word at width 1: one call per character, each copying the rest
        super()._handle_long_word(reversed_chunks, cur_line, cur_len, width)


@pass_environment
def wordwrap(
    environment: Environment,
    s: str,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> str:
    """Jinja's `wordwrap` (each line of the text a paragraph), checking the deadline at every
    line it makes."""
    if wrapstring is None:
        wrapstring = environment.newline_sequence
    wrapper = _ClockedWrapper(
        width=width,
        expand_tabs=False,
        replace_whitespace=False,
        break_long_words=break_long_words,
        break_on_hyphens=break_on_hyphens,
    )
    return wrapstring.join([wrapstring.join(wrapper.wrap(line)) for line in s.splitlines()])


def pieces(text: str) -> Iterator[str]:
    """`text` in pieces of about PIECE characters, each cut after white space, with the
    deadline checked before each."""
    start = 0
    while start < len(text):
        check_time()
        space = _SPACE.search(text, start + PIECE)
        end = space.end() if space else len(text)
        yield text[start:end]
        start = end


def _title_in_pieces(title: Callable[[str], str]) -> Callable[[Any], str]:
    """Jinja's `title` (Python work for every word: seconds over a long text), over pieces cut
    at white space — a word's first letter is the same in a piece — with the deadline checked
    between them."""

    @functools.wraps(title)
    def title_in_pieces(value: Any) -> str:
        return "".join(title(piece) for piece in pieces(str(value)))

    return title_in_pieces


def _urlize_in_pieces(urlize: Callable[..., Any]) -> Callable[..., Any]:
    """Jinja's `urlize` (Python work for every word), over pieces cut at white space — it treats
    every word alone, so the answer is the same — with the deadline checked between them."""

    @functools.wraps(urlize)  # keeps its pass_eval_context mark
    def urlize_in_pieces(eval_ctx: EvalContext, value: Any, *args: Any, **kwargs: Any) -> Any:
        text = str(escape(value))  # what urlize would do first; Markup is not escaped again
        joined = "".join(
            str(urlize(eval_ctx, Markup(piece), *args, **kwargs)) for piece in pieces(text)
        )
        return Markup(joined) if eval_ctx.autoescape else joined

    return urlize_in_pieces


class _CountingText(io.StringIO):
    def write(self, text: str) -> int:
        check_size(self.tell() + len(text))
        return super().write(text)


class _ClockedPrinter(pprinting.PrettyPrinter):
    def format(
        self, obj: object, context: dict[int, int], maxlevels: int, level: int
    ) -> tuple[str, bool, bool]:
        check_time()  # called for every part of the value
        return super().format(obj, context, maxlevels, level)


def pprint(value: Any) -> str:
    """Jinja's `pprint`, counting the text as it is written: the lines of a value under a long
    dict key are each indented by the key's length."""
    check_size(text_size(value, "repr"))  # the printer first writes the whole value on one line
    out = _CountingText()
    _ClockedPrinter(stream=out).pprint(value)
    return out.getvalue()[:-1]  # pprint ends with a new line; Jinja's pformat does not


@pass_environment
def sum_(
    environment: Environment, iterable: Iterable[Any], attribute: Any = None, start: Any = 0
) -> Any:
    """Jinja's `sum`. Adding up lists (`sum(start=[])`) copies the total so far at every step:
    the size and the deadline are checked at each."""
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    if not isinstance(start, list | tuple):
        return sum(iterable, start)
    total, count = start, len(start)
    for value in iterable:
        check_time()
        count += len(value) if isinstance(value, Sized) else 0
        check_items(count)
        spend(REFERENCE_CHARS * count)
        total = total + value
    return total


def json_dumps(obj: Any, **kwargs: Any) -> str:
    """`tojson`'s encoder (the `json.dumps_function` policy). Jinja then writes <, >, & and '
    as six characters each (`\\u003c`), which the count includes."""
    if kwargs.get("indent") is None and text_size(obj, "json") <= MAX_OUTPUT_CHARS:
        return json.dumps(obj, **kwargs)  # within the bound: C's encoder, in one go
    # Indented (each line carries its depth's indent) or near the bound: counted as it is made.
    size, parts = 0, []
    for part in json.JSONEncoder(**kwargs).iterencode(obj):
        check_time()
        size += len(part) + 5 * sum(part.count(special) for special in "<>&'")
        check_size(size)
        parts.append(part)
    return "".join(parts)
