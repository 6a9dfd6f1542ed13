"""The template sandbox's size estimates: their shortcuts for common values measure as the
general walk does, and every estimate is an upper bound."""

from __future__ import annotations

from typing import Any

import pytest
from markupsafe import Markup

from bridge.processors import template_limits
from bridge.processors.template_limits import _Measure, printf_size, text_size

FORMATS = [
    ("%.2f", 1234.5),
    ("%.2f", (1e308,)),
    ("%s-%05d", ("A", 42)),
    ("%d items", 10**300),
    ("%r and %a", ("quote'", "ünï")),
    ("%10.3s|%-8s", ("abcdef", None)),
    ("%s %s", ("only one",)),  # a value missing: measured, then Python refuses it
    ("%%d and %s", True),
]


@pytest.mark.parametrize(("template", "args"), FORMATS)
@pytest.mark.parametrize("escape", [False, True])
def test_a_plain_format_is_measured_as_the_general_walk_measures_it(
    template: str, args: Any, escape: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = printf_size(template, args, escape)
    monkeypatch.setattr(template_limits, "_plain_format", lambda _: None)
    assert fast == printf_size(template, args, escape)
    try:
        text = (Markup(template) if escape else template) % args
    except TypeError:
        return
    assert fast >= len(text)


@pytest.mark.parametrize(
    "value", [0, -1, 10**400, 2**63, 1.5, -1.7976931348623157e308, True, False, None]
)
def test_scalars_are_measured_as_the_walk_measures_them(value: Any) -> None:
    assert text_size(value) == _Measure.scalar(value)
    assert text_size(value) >= len(str(value))
