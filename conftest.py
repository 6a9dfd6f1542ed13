"""For every test of the repository (tests/ and examples/)."""

from __future__ import annotations

import asyncio
from collections.abc import Generator

import pytest


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """A plain (sync) test gets an event loop of its own, closed after it: looptime asks the
    policy for the current loop around every test, and for a sync one the policy would make a
    loop nobody closes — which the GC then reports against whatever test runs next."""
    if pyfuncitem.get_closest_marker("asyncio") is not None:  # pytest-asyncio's: its own loop
        return (yield)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return (yield)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
