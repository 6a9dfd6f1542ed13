"""The processor contract and loading processors from modules and entry points."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from bridge import processor
from bridge.errors import ValidationFailed
from bridge.processors.registry import Registry, RegistryError, specs_in


@pytest.fixture
def module_dir(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [n for n in sys.modules if n.startswith("plug_")]:
        del sys.modules[name]


def write(directory: Path, name: str, code: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(code))


def test_decorator_keeps_the_function_and_records_its_spec() -> None:
    class Params(BaseModel):
        n: int

    @processor("double", params=Params, timeout_s=5, concurrency=2)
    def double(item, params, ctx):  # type: ignore[no-untyped-def]
        """Doubles n.

        More text that is not the description."""
        return {"n": params.n * 2}

    assert double(None, Params(n=2), None) == {"n": 4}
    (spec,) = specs_in(double)
    assert (spec.name, spec.description, spec.timeout_s, spec.concurrency) == (
        "double",
        "Doubles n.",
        5,
        2,
    )
    assert spec.parameters_schema()["properties"]["n"]["type"] == "integer"
    assert spec.parse_params({"n": "3"}).n == 3
    with pytest.raises(ValidationFailed) as caught:
        spec.parse_params({})
    assert caught.value.details == [{"pointer": "/parameters/n", "message": "Field required"}]


def test_json_schema_parameters_are_checked_with_jsonschema() -> None:
    schema = {
        "type": "object",
        "properties": {"to": {"type": "string", "format": "email"}},
        "required": ["to"],
        "additionalProperties": False,
    }

    @processor("mail", params=schema)
    def mail(item, params, ctx):  # type: ignore[no-untyped-def]
        return None

    (spec,) = specs_in(mail)
    assert spec.parse_params({"to": "a@b.c"}) == {"to": "a@b.c"}
    with pytest.raises(ValidationFailed) as caught:
        spec.parse_params({"to": 3, "x": 1})
    assert {d["pointer"] for d in caught.value.details} == {"/parameters", "/parameters/to"}


def test_an_invalid_json_schema_is_refused_at_definition() -> None:
    import jsonschema

    with pytest.raises(jsonschema.SchemaError):
        processor("bad", params={"type": "no-such-type"})


def test_cpu_bound_async_functions_are_refused() -> None:
    with pytest.raises(TypeError, match="plain functions"):

        @processor("x", cpu_bound=True)
        async def x(item, params, ctx):  # type: ignore[no-untyped-def]
            return None


def test_modules_load_with_builtins(module_dir: Path) -> None:
    write(
        module_dir,
        "plug_a",
        """
        from bridge import processor

        @processor("shout")
        def shout(item, params, ctx):
            return {"text": item.json["text"].upper()}
    """,
    )
    registry = Registry.load(["plug_a"], use_entry_points=False)
    assert registry.names() == [
        "echo",
        "email_send",
        "n8n_trigger",
        "shout",
        "template_render",
        "validation",
    ]


def test_an_import_error_names_the_module(module_dir: Path) -> None:
    write(module_dir, "plug_broken", "import no_such_package_here\n")
    with pytest.raises(
        RegistryError, match=r"BRIDGE_PROCESSORS: cannot import module 'plug_broken'"
    ):
        Registry.load(["plug_broken"], use_entry_points=False)
    with pytest.raises(RegistryError, match="'plug_missing'"):
        Registry.load(["plug_missing"], use_entry_points=False)


def test_a_duplicate_name_names_both_modules(module_dir: Path) -> None:
    write(
        module_dir,
        "plug_dup",
        """
        from bridge import processor

        @processor("echo")
        def mine(item, params, ctx):
            return None
    """,
    )
    with pytest.raises(
        RegistryError, match=r"'echo' is defined twice: in bridge.processors.echo and plug_dup"
    ):
        Registry.load(["plug_dup"], use_entry_points=False)


def test_a_module_imported_twice_is_not_a_duplicate(module_dir: Path) -> None:
    write(
        module_dir,
        "plug_once",
        """
        from bridge import processor

        @processor("once")
        def once(item, params, ctx):
            return None
    """,
    )
    assert "once" in Registry.load(["plug_once", "plug_once"], use_entry_points=False).names()


def test_entry_points_are_loaded(module_dir: Path) -> None:
    """A real installed distribution on sys.path declaring the entry-point group."""
    write(
        module_dir,
        "plug_ep",
        """
        from bridge import processor

        @processor("from_entry_point")
        def from_entry_point(item, params, ctx):
            return None
    """,
    )
    dist = module_dir / "plug_ep-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plug-ep\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[n8n_bridge.processors]\nplug = plug_ep\n")
    assert "from_entry_point" in Registry.load().names()


def test_unknown_name_lists_the_valid_ones() -> None:
    registry = Registry.load(use_entry_points=False)
    with pytest.raises(ValidationFailed, match="unknown processing_type 'x'; valid: echo"):
        registry.get("x")


def test_errors_keep_their_details_across_processes() -> None:
    import pickle

    from bridge.errors import IntegrationFailed, ValidationFailed

    error = ValidationFailed("bad", details=[{"pointer": "/a", "message": "m"}], http_code=400)
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), again.message, again.details, again.http_code) == (
        ValidationFailed,
        "bad",
        [{"pointer": "/a", "message": "m"}],
        400,
    )
    assert pickle.loads(pickle.dumps(IntegrationFailed("x", retryable=False))).retryable is False
