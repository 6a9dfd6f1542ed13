"""template_render against a hostile workflow author: every way of building text or holding the
worker that we know of, each answered by a clear error within about its deadline, with memory
bounded (measured with tracemalloc: the render runs in this process's thread pool)."""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bridge.processors.template_render import MAX_OUTPUT_CHARS
from tests.conftest import pool_calls_end

pytestmark = pytest.mark.parametrize("backend", ["embedded"])  # the sandbox, not the store

EXECUTE = "/api/v1/workflow/execute"
TIMEOUT_S = 2.0
# The most a refused attack may allocate at once: a few copies of the largest text allowed.
MEMORY_BOUND = 8 * MAX_OUTPUT_CHARS

S = "{% set s = 'x' * 999999 %}"  # 1 M characters: the most one repetition may build
N = S + "{% set n = s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s %}"  # 9 M: just under the limit
A = "{% set a = 'x' * 99999 %}"
B = A + "{% set b = [a, a, a, a, a, a, a, a, a, a] %}"  # a list that prints as 1 M characters
C = B + "{% set c = [b, b, b, b, b, b, b, b, b, b] %}"  # 10 M
D = C + "{% set d = [c, c, c, c, c, c, c, c, c, c] %}"  # 100 M: printing it must be refused
Q = "{% set q = '\"' * 999999 %}{% set nq = q ~ q ~ q ~ q ~ q ~ q ~ q ~ q ~ q %}"  # 9 M quotes
# Ten levels of ten: 10**10 zeros when printed, from a few hundred bytes of template.
DAG = "{% set l0 = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0] %}" + "".join(
    f"{{% set l{i} = [{', '.join([f'l{i - 1}'] * 10)}] %}}" for i in range(1, 10)
)
# Two such structures, equal but not shared: comparing them goes down every branch.
TWO_DAGS = "".join(
    f"{{% set {x}0 = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0] %}}"
    + "".join(f"{{% set {x}{i} = [{', '.join([f'{x}{i - 1}'] * 10)}] %}}" for i in range(1, 10))
    for x in "ab"
)
TUPLES = "{% set t0 = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0) %}" + "".join(
    f"{{% set t{i} = ({', '.join([f't{i - 1}'] * 10)}) %}}" for i in range(1, 10)
)
STAR_WIDTHS = "(" + ", ".join(["999999, 1"] * 100) + ")"
MANY_S = " ~ ".join(["s"] * 200)
MANY_L = ", ".join(["l"] * 200)
L = "{% set l = range(99999)|list %}"
WORDS = "{% set w = 'a ' * 499999 %}{% set ws = w ~ w ~ w ~ w ~ w ~ w ~ w ~ w ~ w %}"  # 9 M

ATTACKS: list[tuple[str, str, dict[str, Any]]] = [
    # (what, template, more parameters)
    ("format: a field repeated", "{{ ('{0}' * 100).format('x' * 999999) }}", {}),
    ("format: widths", "{{ ('{0:999999}' * 100).format(1) }}", {}),
    ("format: a width from an argument", "{{ ('{0:{1}}' * 100).format('x', '999999') }}", {}),
    ("format: a huge width from an argument", "{{ '{0:{1}}'.format('x', '999999999') }}", {}),
    ("format: !r", D + "{{ '{0!r}'.format(d) }}", {}),
    ("format_map", "{{ ('{x}' * 100).format_map({'x': 'x' * 999999}) }}", {}),
    ("%: fields", S + "{{ ('%s' * 100) % (" + ", ".join(["s"] * 100) + ") }}", {}),
    ("%: widths by name", "{{ ('%(x)999999d' * 100) % {'x': 1} }}", {}),
    ("%: precision", "{{ ('%(x).999999f' * 100) % {'x': 1.0} }}", {}),
    ("%: star widths", "{{ ('%*d' * 100) % " + STAR_WIDTHS + " }}", {}),
    ("%: a list", D + "{{ '%s' % (d,) }}", {}),
    ("format filter", "{{ ('%(x)999999s' * 100)|format(x='y') }}", {}),
    ("format filter: a list", D + "{{ '%s'|format(d) }}", {}),
    ("print a nested list", D + "{{ d }}", {}),
    ("print a list of ten billion zeros", DAG + "{{ l9 }}", {}),
    ("string", D + "{{ d|string }}", {}),
    ("~ a list", D + "{{ '' ~ d }}", {}),
    ("~ many", S + "{{ (" + MANY_S + ")|length }}", {}),
    ("tojson", D + "{{ d|tojson }}", {}),
    ("tojson indent", L + "{{ l|tojson(indent=999) }}", {}),
    ("pprint", D + "{{ d|pprint }}", {}),
    ("pprint indentation", L + "{{ {'k' * 999999: l}|pprint }}", {}),
    ("join", D + "{{ d|join }}", {}),
    ("escape", D + "{{ d|e }}", {}),
    ("escape growth", Q + "{{ nq|e }}", {}),
    ("forceescape", D + "{{ d|forceescape }}", {}),
    ("upper", D + "{{ d|upper }}", {}),
    ("lower", D + "{{ d|lower }}", {}),
    ("title", D + "{{ d|title }}", {}),
    ("capitalize", D + "{{ d|capitalize }}", {}),
    ("trim", D + "{{ d|trim }}", {}),
    ("striptags", D + "{{ d|striptags }}", {}),
    ("safe", D + "{{ d|safe }}", {}),
    ("wordcount", D + "{{ d|wordcount }}", {}),
    ("center", D + "{{ d|center(9) }}", {}),
    ("indent", D + "{{ d|indent }}", {}),
    ("truncate", D + "{{ d|truncate(9) }}", {}),
    ("replace", D + "{{ d|replace('x', 'y') }}", {}),
    ("urlize", D + "{{ d|urlize }}", {}),
    ("urlencode", D + "{{ {'k': d}|urlencode }}", {}),
    (
        "urlencode growth",
        "{% set e = '\U0001f600' * 999999 %}{{ (e ~ e ~ e ~ e ~ e ~ e ~ e ~ e ~ e)|urlencode }}",
        {},
    ),
    ("xmlattr", D + "{{ {'k': d}|xmlattr }}", {}),
    ("xmlattr growth", Q + "{{ {'k': nq}|xmlattr }}", {}),
    ("wordwrap's wrapstring", "{{ ('x' * 99999)|wordwrap(1, wrapstring='y' * 9999) }}", {}),
    ("list|string", D + "{{ d|list|string }}", {}),
    ("reverse", D + "{{ d|reverse|list|string }}", {}),
    ("sort", D + "{{ d|sort|string }}", {}),
    ("dictsort", D + "{{ {'k': d}|dictsort|string }}", {}),
    ("items", D + "{{ {'k': d}|items|list|string }}", {}),
    ("groupby", D + "{{ d|groupby(0)|string }}", {}),
    ("batch", D + "{{ d|batch(3)|list|string }}", {}),
    ("slice", D + "{{ d|slice(3)|list|string }}", {}),
    ("map", D + "{{ d|map('list')|list|string }}", {}),
    ("select", D + "{{ d|select|list|string }}", {}),
    ("sum of lists", D + "{{ d|sum(start=[])|string }}", {}),
    ("sum: a long list", L + "{{ [" + MANY_L + "]|sum(start=[])|length }}", {}),
    ("dict", D + "{{ dict(k=d) }}", {}),
    ("namespace", D + "{{ [namespace(k=d)] }}", {}),
    ("dict items", D + "{{ {'k': d}.items() }}", {}),
    ("dict values", D + "{{ {'k': d}.values()|list }}", {}),
    ("a tuple", D + "{{ (d, d) }}", {}),
    ("a copy", D + "{{ d.copy() }}", {}),
    ("loop.cycle", D + "{% for i in [1] %}{{ loop.cycle(d, 1) }}{% endfor %}", {}),
    ("a macro's argument", D + "{% macro m(v) %}{{ v }}{% endmacro %}{{ m(d) }}", {}),
    (
        "a macro's output",
        S + "{% macro m() %}{% for i in range(200) %}{{ s }}{% endfor %}{% endmacro %}"
        "{{ m()|length }}",
        {},
    ),
    (
        "a macro's output in tiny parts",
        "{% macro m() %}{% for i in range(99999) %}{% for j in range(99999) %}x"
        "{% endfor %}{% endfor %}{% endmacro %}{{ m()|length }}",
        {},
    ),
    (
        "a call block",
        S + "{% macro m() %}{{ caller() }}{% endmacro %}"
        "{% call m() %}{% for i in range(200) %}{{ s }}{% endfor %}{% endcall %}",
        {},
    ),
    (
        "a set block",
        S + "{% set x %}{% for i in range(200) %}{{ s }}{% endfor %}{% endset %}{{ x|length }}",
        {},
    ),
    (
        "a filter block",
        S + "{% filter upper %}{% for i in range(200) %}{{ s }}{% endfor %}{% endfilter %}",
        {},
    ),
    ("output", N + "{% for i in range(64) %}{{ n }}{% endfor %}", {}),
    ("output escaped", Q + "{% for i in range(64) %}{{ nq }}{% endfor %}", {"autoescape": True}),
    (
        "ljust, growing",
        "{% set ns = namespace(s='') %}{% for i in range(200) %}"
        "{% set ns.s = ns.s.ljust(ns.s|length + 999999) %}{% endfor %}{{ ns.s|length }}",
        {},
    ),
    (
        "zfill, growing",
        "{% set ns = namespace(s='') %}{% for i in range(200) %}"
        "{% set ns.s = ns.s.zfill(ns.s|length + 999999) %}{% endfor %}{{ ns.s|length }}",
        {},
    ),
    ("translate", "{{ ('x' * 999999).translate({120: 'y' * 999}) }}", {}),
    ("bytes", "{{ ('x'.encode() * 999999999)|length }}", {}),
    # Comparing or hashing what is too large to compare or hash within the deadline.
    ("==", TWO_DAGS + "{{ a9 == b9 }}", {}),
    ("in", TWO_DAGS + "{{ a8 in b9 }}", {}),
    ("is eq", TWO_DAGS + "{{ a9 is eq b9 }}", {}),
    ("sort", TWO_DAGS + "{{ [a9, b9]|sort|length }}", {}),
    ("max", TWO_DAGS + "{{ [a9, b9]|max|length }}", {}),
    ("select by a test", TWO_DAGS + "{{ [a9, b9]|select('eq', b9)|list|length }}", {}),
    (
        "loop.changed",
        TWO_DAGS + "{% for i in range(9) %}{{ loop.changed(a9 if i is odd else b9) }}{% endfor %}",
        {},
    ),
    ("a dict key", TUPLES + "{{ {t9: 1}|length }}", {}),
    ("unique", TUPLES + "{{ [t9, t9]|unique|list|length }}", {}),
    # Time: each runs for hours unless stopped at the deadline.
    (
        "wordwrap(1) in a loop",
        "{% set s = 'x' * 99999 %}{% for i in range(99999) %}{{ s|wordwrap(1)|length }}"
        "{% endfor %}",
        {},
    ),
    ("wordwrap(1) of a long word", "{{ ('x' * 999999)|wordwrap(1)|length }}", {}),
    ("wordwrap of many words", WORDS + "{{ ws|wordwrap(1)|length }}", {}),
    ("urlize of many words", WORDS + "{{ ws|urlize|length }}", {}),
    (
        "title of many words",
        WORDS + "{% for i in range(99) %}{{ ws|title|length }}{% endfor %}",
        {},
    ),
    ("sort in a loop", L + "{% for i in range(99999) %}{{ l|sort|first }}{% endfor %}", {}),
    ("sum of many lists", "{{ range(99999)|batch(1)|sum(start=[])|length }}", {}),
    (
        "a loop without calls",
        S + "{% for c in s %}{% set t = s ~ c %}{% endfor %}",
        {},
    ),
    (
        "nested loops",
        "{% for i in range(99999) %}{% for j in range(99999) %}{% set k = i * j %}"
        "{% endfor %}{% endfor %}",
        {},
    ),
    (
        "a macro calling itself twice",
        "{% macro m(n) %}{% if n %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}{% endmacro %}"
        "{{ m(40) }}",
        {},
    ),
]


@pytest.mark.parametrize(
    ("template", "params"),
    [pytest.param(template, params, id=what) for what, template, params in ATTACKS],
)
async def test_an_attack_gets_a_clear_error_in_time_and_bounded_memory(
    client: TestClient, auth: dict[str, str], template: str, params: dict[str, Any]
) -> None:
    body = {
        "processing_type": "template_render",
        "items": [{"json": {}}],
        "parameters": {"template": template, **params},
        "timeout_s": TIMEOUT_S,
    }
    tracemalloc.start()
    try:
        started = time.monotonic()
        response = await client.post(EXECUTE, json=body, headers=auth)
        answer = await response.json()
        ended = await pool_calls_end(client, bound_s=TIMEOUT_S)
        took_s = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if response.status == 504:  # the run's deadline came before the item's error
        assert answer["error"]["code"] == "timeout"
    else:
        assert response.status == 200, answer
        assert answer["items"] == [], answer["items"][0]["json"]["rendered"][:100]
        assert answer["errors"][0]["message"].startswith("SecurityError: "), answer["errors"]
    assert ended, "the rendering thread is still running"
    assert took_s < 3 * TIMEOUT_S, f"{took_s:.1f} s"
    assert peak < MEMORY_BOUND, f"{peak / 1e6:.0f} MB"


# Each value within its own bound, but many of them: only the request's budget of text built
# (BRIDGE_TEMPLATE_BUDGET_CHARS) stops them. (template, items in the request)
NS = "{% set ns = namespace(l=[], d={}) %}"
BIG = "('x' * 999999 ~ i)"
# A million steps, each keeping a new object chained to those before ({} is the object).
KEEP = (
    "{{% set ns = namespace(l=none) %}}"
    "{{% macro m() %}}{{% set ns.l = [ns.l, caller] %}}{{% endmacro %}}"
    "{{% for i in range(1000) %}}{{% for j in range(1000) %}}{{% set ns.l = {} %}}"
    "{{% endfor %}}{{% endfor %}}x"
)
KEPT = [
    ("kept: list literals", "[ns.l, i, j]"),
    ("kept: empty list literals", "[[], ns.l]"),
    ("kept: tuple literals", "(ns.l, i, j)"),
    ("kept: dict literals", '{"a": ns.l, "b": i, "c": j}'),
    ("kept: empty dict literals", "[{}, ns.l]"),
    ("kept: dict() with keywords", "dict(a=ns.l)"),
    ("kept: namespace()", "namespace(a=ns.l)"),
    ("kept: large numbers", "[ns.l, 2 ** 49999 + j]"),
    ("kept: generators", "[ns.l, range(3)|map('string')]"),
    ("kept: dict views", "[ns.l, {}.items()]"),
    ("kept: ranges", "[ns.l, range(j)]"),
    ("kept: batches", "[ns.l, range(3)|batch(1)|list]"),
    ("kept: groups", "[ns.l, [1, 2, 3]|groupby('real')]"),
    ("kept: sorted dicts", "[ns.l, {1: 2, 3: 4}|dictsort]"),
    ("kept: cyclers", "[ns.l, cycler(i)]"),
    # (`ns.l %}…{% set x = 0`: statements in the loop's body)
    (
        "kept: loops",
        "ns.l %}{% for k in [0] %}{% set ns.l = [ns.l, loop] %}{% endfor %}{% set x = 0",
    ),
    ("kept: callers", "ns.l %}{% call m() %}{% endcall %}{% set x = 0"),
    ("kept: macros", "ns.l %}{% macro n() %}{% endmacro %}{% set ns.l = [ns.l, n] %}{% set x = 0"),
]
SUMS: list[tuple[str, str, int]] = [
    (
        "a list collecting capped texts",
        NS + "{% for i in range(200) %}{% set ns.l = ns.l + [" + BIG + "] %}{% endfor %}"
        "{{ ns.l|length }}",
        1,
    ),
    (
        "|list of capped texts",
        "{{ range(200)|map('string')|map('center', 999999)|list|length }}",
        1,
    ),
    ("|list of many texts", "{{ range(99999)|map('string')|map('center', 999)|list|length }}", 1),
    (
        "a dict collecting capped texts",
        NS + "{% for i in range(200) %}{% set ns.d = dict(ns.d, **{i ~ '': " + BIG + "}) %}"
        "{% endfor %}{{ ns.d|length }}",
        1,
    ),
    (
        "a macro's big output, collected",
        NS + "{% macro m(i) %}{{ 'x' * 999999 }}{{ i }}{% endmacro %}{% for i in range(200) %}"
        "{% set ns.l = ns.l + [m(i)] %}{% endfor %}{{ ns.l|length }}",
        1,
    ),
    (
        "set blocks, collected",
        NS + "{% for i in range(200) %}{% set b %}{{ 'x' * 999999 }}{{ i }}{% endset %}"
        "{% set ns.l = ns.l + [b] %}{% endfor %}{{ ns.l|length }}",
        1,
    ),
    (
        "slices, collected",
        NS + S + "{% for i in range(200) %}{% set ns.l = ns.l + [s[i:]] %}{% endfor %}"
        "{{ ns.l|length }}",
        1,
    ),
    (
        "lists of many small texts, collected",
        NS + "{% for i in range(8) %}{% set ns.l = ns.l + [('ab ' * 333333).split()] %}"
        "{% endfor %}{{ ns.l|length }}",
        1,
    ),
    # Objects the template makes without a call, kept: a million steps of a nested loop, each
    # keeping a new one chained to the last (from outside testers: 1 GB in 20 s).
    *((what, KEEP.format(value), 1) for what, value in KEPT),
    (
        "many items, each building near the limit",
        "{% for i in range(9) %}{% set t = 'x' * 999999 %}{% endfor %}",
        20,
    ),
]


@pytest.mark.parametrize(
    ("template", "count"),
    [pytest.param(template, count, id=what) for what, template, count in SUMS],
)
async def test_a_request_builds_at_most_its_budget_in_all(
    client: TestClient, auth: dict[str, str], template: str, count: int
) -> None:
    body = {
        "processing_type": "template_render",
        "items": [{"json": {}}] * count,
        "parameters": {"template": template, "keep_input": False},
        "timeout_s": 10 * TIMEOUT_S,
    }
    tracemalloc.start()
    try:
        response = await client.post(EXECUTE, json=body, headers=auth)
        answer = await response.json()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert response.status == 200, answer
    messages = [error["message"] for error in answer["errors"]]
    assert messages, "every item rendered"
    assert all("characters in all" in message for message in messages), messages[0]
    assert peak < MEMORY_BOUND, f"{peak / 1e6:.0f} MB"


async def test_many_items_output_at_most_the_budget_in_all(
    client: TestClient, auth: dict[str, str]
) -> None:
    """Twenty items, each printing 9 M characters: past the budget the items fail, so the
    request's peak memory is that of about one such item, not twenty."""
    peaks = []
    for count in (1, 20):
        body = {
            "processing_type": "template_render",
            "items": [{"json": {}}] * count,
            "parameters": {"template": "{% for i in range(9) %}{{ 'x' * 999999 }}{% endfor %}"},
        }
        tracemalloc.start()
        try:
            response = await client.post(EXECUTE, json=body, headers=auth)
            answer = await response.json()
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert response.status == 200
    assert len(answer["items"]) == 1
    assert all("characters in all" in error["message"] for error in answer["errors"])
    assert peaks[1] < 2 * peaks[0], f"{peaks[0] / 1e6:.0f} MB, then {peaks[1] / 1e6:.0f} MB"
