"""bridge.processors.json_schemas: what its caches keep, and the `regex` format."""

from __future__ import annotations

from bridge.processors import json_schemas


def test_validators_of_small_schemas_are_kept_and_of_large_ones_are_not() -> None:
    """A cache entry per schema: many large schemas must not pin megabytes each."""
    small = {"type": "string", "maxLength": 3}
    assert json_schemas.validator(small) is json_schemas.validator(small)
    large = {"enum": ["x" * (json_schemas.MAX_CACHED_SCHEMA_BYTES + 1)]}
    assert json_schemas.validator(large) is not json_schemas.validator(large)


def test_the_regex_format_is_pythons_re_syntax() -> None:
    check = json_schemas.validator({"format": "regex"})
    assert check.is_valid(r"^\d{4}-\d{2}$")
    assert check.is_valid(5)  # not a string: another keyword's business
    assert not check.is_valid("(unclosed")
    assert not check.is_valid(r"\p{L}")
