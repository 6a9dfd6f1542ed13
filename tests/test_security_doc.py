"""docs/security.md names, for every guard, the test that shows it: each named test exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# `tests/file.py`, `tests/file.py::test_name`, or `::test_name` (in the file named last before it)
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(test_\w+))?`|`::(test_\w+)`")


def test_every_test_the_security_page_names_exists() -> None:
    text = (ROOT / "docs" / "security.md").read_text()
    missing, named, current = [], 0, None
    for match in REFERENCE.finditer(text):
        path, name, continued = match.groups()
        if path is not None:
            current = ROOT / path
            if not current.exists():
                missing.append(path)
                continue
        name = name or continued
        if name is None:
            continue
        assert current is not None, f"::{name} comes before any file"
        named += 1
        if not re.search(rf"^(async )?def {name}\b", current.read_text(), re.M):
            missing.append(f"{current.relative_to(ROOT)}::{name}")
    assert missing == []
    assert named > 100  # the page names its tests; a change of format must not pass unseen
