"""template_render through the API: rendering, the sandbox, the templates folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bridge.processors.template_limits import Run
from bridge.processors.template_render import _render, environment
from bridge.settings import Settings
from tests.conftest import ClientFactory, pool_calls_end, token

EXECUTE = "/api/v1/workflow/execute"
# Text doubled 30 times in a loop: 2**30 times its size unless each step is bounded.
DOUBLING = (
    "{{% set ns = namespace(s='x' * 999999) %}}"
    "{{% for i in range(30) %}}{{% set ns.s = {step} %}}{{% endfor %}}{{{{ ns.s|length }}}}"
)


async def render(
    client: TestClient, auth: dict[str, str], items: list[dict[str, Any]], **params: Any
) -> Any:
    body = {"processing_type": "template_render", "items": items, "parameters": params}
    return await client.post(EXECUTE, json=body, headers=auth)


async def test_each_item_gets_its_text(client: TestClient, auth: dict[str, str]) -> None:
    items = [{"json": {"name": "Ada", "n": 1}}, {"json": {"name": "Grace", "n": 2}}]
    response = await render(
        client, auth, items, template="Hello {{ name }} #{{ index }} ({{ json['n'] * 2 }})"
    )
    answer = await response.json()
    assert [i["json"]["rendered"] for i in answer["items"]] == [
        "Hello Ada #0 (2)",
        "Hello Grace #1 (4)",
    ]
    assert answer["items"][0]["json"]["name"] == "Ada"


async def test_jinja_globals_are_there(client: TestClient, auth: dict[str, str]) -> None:
    """The template's globals are flattened for speed; Jinja's own must still be there."""
    template = (
        "{% set ns = namespace(total=0) %}{% for i in range(n) %}{% set ns.total = ns.total + i %}"
        "{% endfor %}{{ ns.total }}{{ dict(a=1)['a'] }}"
    )
    response = await render(client, auth, [{"json": {"n": 4}}], template=template)
    assert (await response.json())["items"][0]["json"]["rendered"] == "61"


async def test_output_field_and_keep_input(client: TestClient, auth: dict[str, str]) -> None:
    response = await render(
        client,
        auth,
        [{"json": {"a": 1}}],
        template="{{ a }}",
        output_field="body",
        keep_input=False,
    )
    assert (await response.json())["items"][0]["json"] == {"body": "1"}


async def test_undefined_is_empty_unless_strict(client: TestClient, auth: dict[str, str]) -> None:
    items = [{"json": {"name": "Ada"}}, {"json": {}}]
    lenient = await (await render(client, auth, items, template="Hi {{ name }}")).json()
    assert [i["json"]["rendered"] for i in lenient["items"]] == ["Hi Ada", "Hi "]
    strict = await (
        await render(client, auth, items, template="Hi {{ name }}", strict_undefined=True)
    ).json()
    assert [i["json"]["rendered"] for i in strict["items"]] == ["Hi Ada"]
    assert strict["errors"] == [
        {"index": 1, "code": "processor_error", "message": "UndefinedError: 'name' is undefined"}
    ]


@pytest.mark.parametrize(
    "escape",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ name.__class__ }}",
        "{{ json.update({'x': 1}) }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ joiner.__init__.__globals__.os.popen('id').read() }}",
        "{{ ''|attr('__class__') }}",
        "{{ self._TemplateReference__context }}",
        "{{ namespace.__init__.__globals__ }}",
        "{% for c in ().__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    ],
)
async def test_the_sandbox_refuses_escapes(
    client: TestClient, auth: dict[str, str], escape: str
) -> None:
    response = await render(client, auth, [{"json": {"name": "Ada"}}], template=escape)
    answer = await response.json()
    assert answer["items"] == []
    assert answer["errors"][0]["code"] == "processor_error"
    assert answer["errors"][0]["message"].startswith("SecurityError: ")


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{ 9 ** 999999 }}", "too large for a template"),
        ("{{ 'x' * 10**9 }}", "repetition over 1,000,000"),
        ("{{ [0] * 10**9 }}", "repetition over 1,000,000"),
        ("{{ 'a'.ljust(10**9) }}", "over 10,000,000 characters"),
        ("{{ 'a'|center(10**9) }}", "the most a template may ask for"),
        ("{{ '%1000000000d' % 1 }}", "over 10,000,000 characters"),
        ("{{ '{:1000000000}'.format(1) }}", "over 10,000,000 characters"),
        ("{{ '{x:1000000000}'.format_map({'x': 1}) }}", "over 10,000,000 characters"),
        (
            "{% set a = 'a'.ljust(999999) %}{% for i in range(99999) %}{{ a }}{% endfor %}",
            "output is longer",
        ),
        ("{{ range(10**9)|list }}", "the most a template may ask for"),
        ("{{ (2 ** 49999) * (2 ** 49999) * (2 ** 49999) }}", "product of numbers"),
        ("{{ ['x' * 999999] * 999999 }}", "repetition over 1,000,000"),
        (DOUBLING.format(step="ns.s ~ ns.s"), "over 10,000,000 characters"),
        (DOUBLING.format(step="ns.s + ns.s"), "over 10,000,000 characters"),
        ("{{ ('x' * 99999).replace('x', 'y' * 99999) }}", "over 10,000,000 characters"),
        ("{{ ('x' * 99999).replace('', 'y' * 99999) }}", "over 10,000,000 characters"),
        ("{{ ('x' * 99999)|replace('x', 'y' * 99999) }}", "over 10,000,000 characters"),
        ("{{ ('y' * 99999).join(range(99999)|map('string')) }}", "over 10,000,000 characters"),
        ("{{ range(99999)|join('y' * 99999) }}", "over 10,000,000 characters"),
        ("{{ ('\t' * 99999).expandtabs(99999) }}", "over 10,000,000 characters"),
        ("{{ ('\n' * 99999)|indent(99999) }}", "over 10,000,000 characters"),
        ("{{ range(3)|batch(999999, 'x' * 999999)|list }}", "over 10,000,000 characters"),
    ],
)
async def test_a_template_cannot_exhaust_memory_or_a_worker(
    client: TestClient, auth: dict[str, str], template: str, reason: str
) -> None:
    """Jinja's sandbox stops escapes, not exhaustion: sizes are bounded too. Each fails its
    own item at once, and the next request is served as usual."""
    items = [{"json": {"name": "Ada"}}]
    answer = await (await render(client, auth, items, template=template)).json()
    assert answer["items"] == []
    assert answer["errors"][0]["message"].startswith("SecurityError: ")
    assert reason in answer["errors"][0]["message"]
    fine = await (await render(client, auth, items, template="Hi {{ name * 2 }}")).json()
    assert fine["items"][0]["json"]["rendered"] == "Hi AdaAda"


async def test_range_is_at_most_100000_items(client: TestClient, auth: dict[str, str]) -> None:
    """Jinja's sandbox limits `range` (docs/processors.md says so)."""
    items = [{"json": {}}]
    answer = await (await render(client, auth, items, template="{{ range(100001)|last }}")).json()
    assert "larger than MAX_RANGE (100000)" in answer["errors"][0]["message"]
    answer = await (await render(client, auth, items, template="{{ range(100000)|last }}")).json()
    assert answer["items"][0]["json"]["rendered"] == "99999"


async def test_no_placeholder_text(client: TestClient, auth: dict[str, str]) -> None:
    """Jinja's `lipsum` writes gigabytes on request: it is not there."""
    answer = await (await render(client, auth, [{"json": {}}], template="{{ lipsum(99) }}")).json()
    assert answer["errors"][0]["message"] == "UndefinedError: 'lipsum' is undefined"


async def test_a_template_stops_at_its_time_limit_and_frees_its_thread(
    client: TestClient, auth: dict[str, str]
) -> None:
    """Loops are not bounded by size alone: two nested loops over a million run for hours. The
    run's deadline is checked at every call and loop start, so the worker thread is free again
    soon after the 504, not when the loops end."""
    endless = "{% set s = 'x' * 999999 %}{% for i in s %}{% for j in s %}{% endfor %}{% endfor %}"
    body = {
        "processing_type": "template_render",
        "items": [{"json": {}} for _ in range(3)],
        "parameters": {"template": endless},
        "timeout_s": 0.5,
    }
    response = await client.post(EXECUTE, json=body, headers=auth)
    assert response.status == 504
    assert (await response.json())["error"]["code"] == "timeout"
    assert await pool_calls_end(client), "the rendering thread is still running past its deadline"
    fine = await (await render(client, auth, [{"json": {"n": 1}}], template="{{ n }}")).json()
    assert fine["items"][0]["json"]["rendered"] == "1"


async def test_the_bounds_leave_ordinary_templates_alone(
    client: TestClient, auth: dict[str, str]
) -> None:
    template = (
        "{{ '%.2f'|format(total) }}|{{ 'order 12345678'|center(20) }}|{{ 2 ** 10 }}|"
        "{{ '-' * 3 }}|{{ '{:>6}'.format(n) }}|{{ range(3)|list|length }}|"
        "{{ 'a b'.replace(' ', '_') }}|{{ tags|join(',') }}|{{ 'x' ~ n ~ 'y' }}|{{ [1] + [2] }}|"
        "{{ 'x\ny'|indent(2) }}|{% for t in tags %}{{ loop.index }}/{{ loop.length }} {% endfor %}|"
        "{{ range(5)|batch(2, 0)|list }}|{{ 6 * 7 }}|{{ 1231|replace('1', 'x') }}|"
        "{{ {'k': 1}|join(',') }}|{{ (range(3)|map('string'))|join('-') }}"
    )
    items = [{"json": {"total": 3.14159, "n": 42, "tags": ["a", "b"]}}]
    answer = await (await render(client, auth, items, template=template)).json()
    assert answer["items"][0]["json"]["rendered"] == (
        "3.14|   order 12345678   |1024|---|    42|3|a_b|a,b|x42y|[1, 2]|x\n  y|1/2 2/2 |"
        "[[0, 1], [2, 3], [4, 0]]|42|x23x|k|0-1-2"
    )


LONG_TEXT = " ".join(
    f"word{i} see https://example.com/p{i}?q=1, or www.ex{i}.org. mail a{i}@example.com (x{i}.)"
    for i in range(3000)
)  # longer than a piece of urlize's work
ORDINARY = [
    "{{ '{:,}'.format(1234567) }} {{ '{:>10.2f}|{!r}'.format(3.14159, 'a') }} {{ '{a}'.format_map(d) }}",
    "{{ '%d items, %s, %5.1f%%' % (5000000, 'x', 2.25) }} {{ '%(a)s' % d }} {{ '%d'|format(5000000) }}",
    "{{ dict(total=5000000).total }} {{ namespace(n=5000000).n }} {{ 5000000|filesizeformat }}",
    "{% for i in range(3) %}{{ loop.cycle(5000000, 'b') }}{{ loop.index }}/{{ loop.length }}"
    "{{ '!' if loop.last }}{% if loop.changed(i // 2) %}c{% endif %}{% endfor %}",
    "{% for x in [[1, [2]], [3]] recursive %}<{{ x if x is number else loop(x) }}>{% endfor %}",
    "{{ text|wordwrap(20) }}|{{ text|wordwrap(5, false, '<br>') }}|{{ text|truncate(12) }}",
    "{{ text|center(40) }}|{{ text|indent(2, true) }}|{{ text|title }}|{{ text|upper }}",
    "{{ html|striptags }}|{{ html|e }}|{{ html|forceescape }}|{{ html|wordcount }}|{{ html|safe }}",
    "{{ d|tojson }}|{{ d|tojson(2) }}|{{ d|pprint }}|{{ nested|pprint }}|{{ nested|tojson }}",
    "{{ d|xmlattr }}|{{ d|urlencode }}|{{ 'a b&c'|urlencode }}|{{ d|dictsort }}|{{ d.items()|list }}",
    "{{ [1, 2, 3]|sum }}|{{ [[1], [2, 3]]|sum(start=[]) }}|{{ users|sum(attribute='age') }}",
    "{{ users|groupby('city')|list }}|{{ users|map(attribute='name')|join(', ') }}|"
    "{{ users|sort(attribute='age')|map(attribute='name')|list }}|{{ [3, 1, 3]|unique|list }}",
    "{{ range(7)|batch(3, 0)|list }}|{{ range(7)|slice(3)|list }}|{{ users|selectattr('age')|list }}",
    "{% macro m(a, b=2) %}[{{ a }}{{ b }}{{ caller() if caller }}]{% endmacro %}{{ m(5000000) }}"
    "{% call m(3, 4) %}in{% endcall %}{% set x %}{{ m(5) }}!{% endset %}{{ x }}"
    "{% filter upper %}up {{ text }}{% endfilter %}",
    "{{ 'a' ~ 1 ~ none ~ [1] ~ html }}|{{ 'x'.ljust(5) }}|{{ 'ab'.replace('a', 'c') }}|"
    "{{ '-'.join(['a', 'b']) }}|{{ 'a\tb'.expandtabs(4) }}|{{ 'ß'.upper() }}|{{ 'ab'.zfill(4) }}",
    "{{ nested }}|{{ [html] }}|{{ (1, 'a') }}|{{ {'k': [1.5, none, true]} }}|{{ html }}",
    "{% autoescape false %}{{ html ~ '<i>' }}{% endautoescape %}{{ html ~ '<i>' }}",
    "{{ long|urlize }}|{{ long|urlize(20, true, '_blank') }}|{{ long|title }}",
]


@pytest.mark.parametrize("autoescape", [False, True])
@pytest.mark.parametrize("template", ORDINARY)
def test_the_bounds_change_no_ordinary_answer(template: str, autoescape: bool) -> None:
    """The bounded sandbox renders what Jinja's own sandbox renders, to the character."""
    variables = {
        "d": {"a": 1, "b": "x y"},
        "text": "The quick brown fox jumps over the lazy dog\nagain and again",
        "html": '<b class="x">Fish & "chips"</b>',
        "nested": {"k": [1, {"m": ["a" * 30] * 4}], "n": list(range(30))},
        "users": [
            {"name": "Ada", "age": 36, "city": "London"},
            {"name": "Grace", "age": 85, "city": "New York"},
            {"name": "Alan", "age": 41, "city": "London"},
        ],
        "long": LONG_TEXT,
    }
    ours = environment(None, strict=False, autoescape=autoescape).from_string(template)
    jinja = ImmutableSandboxedEnvironment(autoescape=autoescape).from_string(template)
    assert ours.render(variables) == jinja.render(variables)


async def test_html_is_escaped_when_asked(client: TestClient, auth: dict[str, str]) -> None:
    items = [{"json": {"name": "<b>Ada</b>"}}]
    answer = await (
        await render(client, auth, items, template="{{ name }}", autoescape=True)
    ).json()
    assert answer["items"][0]["json"]["rendered"] == "&lt;b&gt;Ada&lt;/b&gt;"


async def test_a_template_that_does_not_compile_is_422(
    client: TestClient, auth: dict[str, str]
) -> None:
    response = await render(client, auth, [{"json": {}}], template="{% if %}")
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["message"].startswith("the template does not compile (template, line 1)")
    assert error["details"][0]["pointer"] == "/parameters/template"


async def test_exactly_one_template_source(client: TestClient, auth: dict[str, str]) -> None:
    response = await render(client, auth, [], template="a", template_name="b")
    assert response.status == 422
    assert "exactly one" in (await response.json())["error"]["message"]


async def test_named_templates_come_from_the_folder_and_reload(
    make_client: ClientFactory, settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "greeting.txt").write_text("Hello {{ name }}")
    (folder / "outside.txt").write_text("secret")
    client = await make_client(templates_dir=folder)
    auth = {"Authorization": f"Bearer {token(settings)}"}
    items = [{"json": {"name": "Ada"}}]
    first = await (await render(client, auth, items, template_name="greeting.txt")).json()
    assert first["items"][0]["json"]["rendered"] == "Hello Ada"

    path = folder / "greeting.txt"
    path.write_text("Dear {{ name }}")
    stat = path.stat()
    os.utime(path, (stat.st_atime, stat.st_mtime + 10))  # a visibly newer file
    second = await (await render(client, auth, items, template_name="greeting.txt")).json()
    assert second["items"][0]["json"]["rendered"] == "Dear Ada"

    included = await (
        await render(client, auth, items, template="{% include 'greeting.txt' %}!")
    ).json()
    assert included["items"][0]["json"]["rendered"] == "Dear Ada!"

    for name in ("../outside.txt", "/etc/passwd", "missing.txt"):
        response = await render(client, auth, items, template_name=name)
        assert response.status == 422, name
        assert "no template" in (await response.json())["error"]["message"]


async def test_the_templates_folder_cannot_be_left(
    make_client: ClientFactory, settings: Settings, tmp_path: Path
) -> None:
    """Only files inside BRIDGE_TEMPLATES_DIR: no `..`, no absolute path, no link that leads
    out of it (one that stays inside is fine), and nothing over the network."""
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "greeting.txt").write_text("Hello {{ name }}")
    (folder / "alias.txt").symlink_to("greeting.txt")
    (tmp_path / "outside.txt").write_text("secret")
    (folder / "link.txt").symlink_to(tmp_path / "outside.txt")
    (folder / "etc").symlink_to("/etc")
    (folder / "loop.txt").symlink_to(folder / "loop.txt")
    client = await make_client(templates_dir=folder)
    auth = {"Authorization": f"Bearer {token(settings)}"}
    items = [{"json": {"name": "Ada"}}]
    alias = await (await render(client, auth, items, template_name="alias.txt")).json()
    assert alias["items"][0]["json"]["rendered"] == "Hello Ada"
    for name in (
        "../outside.txt",
        "sub/../../outside.txt",
        "/etc/passwd",
        "link.txt",
        "etc/passwd",
        "etc/hostname",
        "loop.txt",
        "a\x00b",
        "http://127.0.0.1:1/x.txt",
        "//127.0.0.1/share/x.txt",
    ):
        response = await render(client, auth, items, template_name=name)
        assert response.status == 422, name
        assert "no template" in (await response.json())["error"]["message"], name
        included = await (
            await render(client, auth, items, template=f"{{% include {name!r} %}}")
        ).json()
        assert included["errors"][0]["message"].startswith("TemplateNotFound"), name


async def test_named_templates_need_the_folder_setting(
    client: TestClient, auth: dict[str, str]
) -> None:
    response = await render(client, auth, [{"json": {}}], template_name="greeting.txt")
    assert response.status == 422
    assert "BRIDGE_TEMPLATES_DIR" in (await response.json())["error"]["message"]


async def test_inline_templates_cannot_read_files(client: TestClient, auth: dict[str, str]) -> None:
    response = await render(client, auth, [{"json": {}}], template="{% include '/etc/passwd' %}")
    answer = await response.json()
    assert answer["items"] == []
    assert answer["errors"][0]["message"] == "TemplateNotFound: /etc/passwd"


async def test_any_render_failure_fails_only_its_item(
    client: TestClient, auth: dict[str, str]
) -> None:
    items = [{"json": {"d": 2}}, {"json": {"d": 0}}]
    answer = await (await render(client, auth, items, template="{{ 10 // d }}")).json()
    assert [i["json"]["rendered"] for i in answer["items"]] == ["5"]
    assert answer["errors"][0]["index"] == 1
    assert answer["errors"][0]["message"].startswith("ZeroDivisionError")


@pytest.mark.parametrize("count", [0, 1, 31, 32, 33, 100])
def test_the_output_is_read_whole_whatever_its_number_of_parts(count: int) -> None:
    # Two parts per step: read PARTS (64) at a time, the last batch short, full or empty.
    template = environment(None, strict=False, autoescape=False).from_string(
        "{% for i in range(n) %}<{{ i }}{% endfor %}"
    )
    run = Run(deadline=None, total=1_000_000)
    assert _render(template, {"n": count}, run) == template.render(n=count)
