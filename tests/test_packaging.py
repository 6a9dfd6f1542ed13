"""The Python package as `python -m build` makes it and PyPI would take it: the sdist holds the
package and what builds it (not the tests, which need the repository), the wheel built from it
holds the package with its `py.typed` and the LICENSE, both pass `twine check --strict`, the
README's links work on PyPI, and a user's `mypy --strict` accepts `from bridge import processor`
(issue 19), README's example as written. Built once per session, in a temporary folder."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from email import message_from_string
from email.message import Message
from pathlib import Path

import pytest

from tests.daemon import ROOT
from tests.doc_blocks import blocks

pytestmark = pytest.mark.slow

# A Markdown link or image target: ](target) — what PyPI renders as a link.
LINK = re.compile(r"\]\(([^)\s]+)\)")


def run(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist, and the wheel `build` makes from that sdist (so the sdist is shown to build)."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, ROOT)
    [sdist] = out.glob("*.tar.gz")
    [wheel] = out.glob("*.whl")
    return {"sdist": sdist, "wheel": wheel}


def sdist_files(sdist: Path) -> set[str]:
    with tarfile.open(sdist) as archive:
        # Every member sits under "n8n_bridge-VERSION/".
        return {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}


def wheel_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def wheel_metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return message_from_string(archive.read(name).decode())


def test_twine_check_strict_passes_for_the_wheel_and_the_sdist(built: dict[str, Path]) -> None:
    checked = run(sys.executable, "-m", "twine", "check", "--strict", *built.values())
    assert checked.stdout.count("PASSED") == 2, checked.stdout


def test_the_sdist_holds_the_package_and_what_builds_it_only(built: dict[str, Path]) -> None:
    files = sdist_files(built["sdist"])
    assert {"LICENSE", "README.md", "pyproject.toml", "PKG-INFO", "bridge/py.typed"} <= files
    assert "bridge/__init__.py" in files and "bridge/api/routes.py" in files
    # No tests (they import bench/ and need the repository's servers), no benchmarks, caches,
    # data or build output; hatchling adds the .gitignore it read.
    others = {f for f in files if not f.startswith("bridge/")}
    assert others <= {"LICENSE", "README.md", "pyproject.toml", "PKG-INFO", ".gitignore"}, others
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]


def test_the_wheel_holds_the_typed_package_and_the_license(built: dict[str, Path]) -> None:
    files = wheel_files(built["wheel"])
    assert "bridge/py.typed" in files
    dist_info = next(f.split("/")[0] for f in files if ".dist-info/" in f)
    assert f"{dist_info}/licenses/LICENSE" in files
    assert {f.split("/")[0] for f in files} == {"bridge", dist_info}
    # The sources of the repository's package, every one of them.
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "bridge").rglob("*.py")}
    assert sources <= files
    # The console's templates and assets: the installed wheel serves it with no network, no build.
    console = ROOT / "bridge" / "console"
    assets = {
        p.relative_to(ROOT).as_posix()
        for folder in ("templates", "static")
        for p in (console / folder).iterdir()
    }
    assert {"bridge/console/static/console.js", "bridge/console/templates/base.html"} <= assets
    assert assets <= files


def test_the_metadata_names_the_license_and_the_project_urls(built: dict[str, Path]) -> None:
    metadata = wheel_metadata(built["wheel"])
    assert metadata["License-Expression"] == "MIT"
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    urls = dict(entry.split(", ", 1) for entry in metadata.get_all("Project-URL") or [])
    assert set(urls) == {"Homepage", "Documentation", "Issues", "Source"}
    # The n8n node package names the same repository (there is no other record of it yet).
    package = json.loads((ROOT / "n8n-nodes" / "package.json").read_text())
    assert package["repository"]["url"] == urls["Source"] + ".git"
    assert package["license"] == "MIT"


def test_the_readme_on_pypi_links_into_the_repository(built: dict[str, Path]) -> None:
    """PyPI renders the README outside the repository: its relative links are made absolute at
    build time, each to a file or folder the repository has; anchors stay as they are."""
    metadata = wheel_metadata(built["wheel"])
    assert metadata["Description-Content-Type"] == "text/markdown"
    described = metadata.get_payload()
    assert isinstance(described, str)
    targets = LINK.findall(described)
    assert len(targets) == len(LINK.findall((ROOT / "README.md").read_text())) > 10
    base = metadata.get_all("Project-URL")[0].split(", ", 1)[1] + "/blob/main/"  # type: ignore[index]
    relative = [t for t in targets if not t.startswith(("https://", "http://", "#", "mailto:"))]
    assert not relative, relative
    for target in targets:
        if target.startswith(base):
            path = target.removeprefix(base).split("#")[0]
            assert (ROOT / path).exists(), f"the README links to {path}, which the repository lacks"


def test_a_users_strict_mypy_accepts_the_installed_package(
    built: dict[str, Path], tmp_path: Path
) -> None:
    """The wheel installed into a fresh environment (unpacked into its site-packages; the
    dependencies from this one's), and a user's module type-checked against it."""
    env = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", env)
    python = env / "bin" / "python"
    site = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        ).stdout.strip()
    )
    with zipfile.ZipFile(built["wheel"]) as archive:
        archive.extractall(site)
    # A path line, not a site dir: this environment's editable install of the repository is
    # not read from there, so `bridge` is found only as the wheel installed it.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    user = tmp_path / "user"
    user.mkdir()
    # README's own example, as a user copies it
    [example] = [b for b in blocks("README.md") if b.text.startswith("# my_processors.py")]
    (user / "my_processors.py").write_text(example.text + "\n")
    found = run(python, "-c", "import bridge; print(bridge.__file__)", cwd=user)
    assert found.stdout.strip().startswith(str(site))
    mypy = ("--strict", "--no-incremental", "--cache-dir", tmp_path / "mypy-cache")
    run(
        sys.executable,
        "-m",
        "mypy",
        *mypy,
        "--python-executable",
        python,
        "my_processors.py",
        cwd=user,
    )


CACHES = (".schemathesis", ".hypothesis", ".mypy_cache", ".pytest_cache", "dist", "build", "data")


def test_caches_and_build_output_are_ignored_and_not_tracked() -> None:
    """What tools and test runs write (schemathesis's and hypothesis's caches, `python -m
    build`'s dist/) is ignored, so a run leaves `git status` clean; none of it is tracked."""
    tracked = run("git", "ls-files").stdout.splitlines()
    assert not [f for f in tracked if f.split("/")[0] in CACHES]
    ignored = run("git", "check-ignore", "--no-index", *[f"{c}/x" for c in CACHES])
    assert len(ignored.stdout.splitlines()) == len(CACHES)
