"""The code blocks of the project's documentation (README.md, docs/, the nodes' README and the
example's), and how an answer is held against one.

A block is a fenced block whose info string names a language (`bash`, `sh`, `json`, `python`,
`toml`); the line right before its fence says what the suite does with it:

    <!-- doc: run -->                    shell: run it; `# …` lines after a command are its output
    <!-- doc: serve -->                  shell: it starts the daemon, which the page's later blocks use
    <!-- doc: file -->                   a file the page's later blocks use, named by its first line
    <!-- doc: request POST /path -->     JSON: sent to the daemon; the answer must be a success
    <!-- doc: response 422 [to POST /path BODY] -->
                                         JSON: the answer to BODY (else to the last request block)
    <!-- doc: checked by tests/F.py::T -->   another test runs exactly this
    <!-- doc: illustrative: why -->      shown, never run

Expected JSON is written for people, so it is read loosely: a string with `…` in it stands for
any string, `{…}` / `[…]` (or `...`) for any value, a trailing `, …` in an object or array for
more members; a float for any number (timings). Everything else must be equal.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
PAGES = ("README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")))
PAGES += ("n8n-nodes/README.md", "examples/invoice_totals/README.md")
LANGUAGES = {"bash", "sh", "json", "python", "toml"}
KINDS = {"run", "serve", "file", "request", "response", "checked", "illustrative"}
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*doc:\s*(?P<kind>[\w-]+)(?:\s+by)?:?\s*(?P<arg>.*?)\s*-->\s*$")
ANY = "…"
MORE = "\x00more"  # the key (or last element) that allows more members


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    kind: str | None  # None: unmarked
    arg: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(page: str) -> list[Block]:
    lines = (ROOT / page).read_text().split("\n")
    found: list[Block] = []
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        indent, language = fence.groups()
        end = index + 1
        while not lines[end].strip().startswith("```"):
            end += 1
        if language in LANGUAGES:
            marker = MARKER.match(lines[index - 1]) if index > 0 else None
            text = "\n".join(line.removeprefix(indent) for line in lines[index + 1 : end])
            found.append(
                Block(
                    page,
                    index + 1,
                    language,
                    text,
                    marker["kind"] if marker else None,
                    marker["arg"] if marker else "",
                )
            )
        index = end + 1
    return found


def all_blocks() -> list[Block]:
    return [block for page in PAGES for block in blocks(page)]


@dataclass
class Command:
    line: str  # as run, continuation lines joined
    expected: str  # the `# ` lines after it, prefixes removed ("" when none)


def commands(text: str) -> list[Command]:
    """A shell block as commands (a command goes on while a line ends in `\\` or a quote is
    open), each with the output the page shows after it."""
    found: list[Command] = []
    pending: list[str] = []
    for raw in text.split("\n"):
        if not pending and raw.lstrip().startswith("#"):
            if found:
                body = raw.lstrip()[1:]
                found[-1].expected += ("\n" if found[-1].expected else "") + body.removeprefix(" ")
            continue
        if not pending and not raw.strip():
            continue
        pending.append(raw)
        if not raw.rstrip().endswith("\\") and _complete("\n".join(pending)):
            found.append(Command("\n".join(pending), ""))
            pending = []
    assert not pending, f"an unfinished command: {pending}"
    return found


def _complete(command: str) -> bool:
    try:
        shlex.split(command, comments=True)
    except ValueError:  # no closing quotation
        return False
    return True


# ---- loose JSON ---------------------------------------------------------------------------------

_ELLIPSIS = r"(?:…|\.\.\.)"
_PLACEHOLDER = re.compile(r"\{\s*" + _ELLIPSIS + r"\s*\}|\[\s*" + _ELLIPSIS + r"\s*\]")
_MORE_MEMBERS = re.compile(r",\s*" + _ELLIPSIS + r"\s*(?=\})")
_MORE_ELEMENTS = re.compile(r",\s*" + _ELLIPSIS + r"\s*(?=\])")


def loose_json(text: str) -> Any:
    """Documentation JSON (with its `…`) as a value `differences` understands; ValueError if it
    is not JSON even so."""
    text = _PLACEHOLDER.sub(f'"{ANY}"', text)
    text = _MORE_MEMBERS.sub(r', "\\u0000more": "\\u0000more"', text)
    text = _MORE_ELEMENTS.sub(r', "\\u0000more"', text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(str(exc)) from None


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where `actual` departs from the documented `expected` (empty: it matches)."""
    here = path or "/"
    if expected == ANY:
        return []
    if isinstance(expected, str):
        if ANY in expected:
            return [] if isinstance(actual, str) else [f"{here}: a string, not {actual!r}"]
        return [] if expected == actual else [f"{here}: {expected!r} documented, {actual!r} seen"]
    if isinstance(expected, bool) or expected is None:
        return [] if expected is actual else [f"{here}: {expected!r} documented, {actual!r} seen"]
    if isinstance(expected, float):
        ok = isinstance(actual, int | float) and not isinstance(actual, bool)
        return [] if ok else [f"{here}: a number, not {actual!r}"]
    if isinstance(expected, int):
        return [] if expected == actual else [f"{here}: {expected!r} documented, {actual!r} seen"]
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{here}: an object, not {actual!r}"]
        more = expected.get(MORE) == MORE
        wanted = {k: v for k, v in expected.items() if k != MORE}
        found = [f"{path}/{k}: documented, missing" for k in wanted if k not in actual]
        if not more:
            found += [f"{path}/{k}: not documented" for k in actual if k not in wanted]
        for k, v in wanted.items():
            if k in actual:
                found += differences(v, actual[k], f"{path}/{k}")
        return found
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{here}: an array, not {actual!r}"]
        more = bool(expected) and expected[-1] == MORE
        wanted = expected[:-1] if more else expected
        if len(actual) < len(wanted) or (not more and len(actual) != len(wanted)):
            return [f"{here}: {len(wanted)} elements documented, {len(actual)} seen"]
        return [d for i, v in enumerate(wanted) for d in differences(v, actual[i], f"{path}/{i}")]
    raise TypeError(f"unexpected documented value {expected!r}")
