"""A clone of the repository stands on its own (issue 13): nothing in it reads or cites a
folder beside it, the design the code cites is in ``docs/``, and the installed package never
imports the test suite. ``.ci/run`` proves the rest by running from a clone with nothing
beside it."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: what a clone does not have: the session's shared folder and the design file it held
_OUTSIDE = re.compile(r"\.\./shared|/work/shared|DESIGN(?:\.md)?\s*§")
_CITED = re.compile(r"docs/architecture\.md §(\d+)")
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _texts(*roots: str) -> list[Path]:
    files: list[Path] = []
    for root in roots:
        base = REPO / root
        files += [p for p in base.rglob("*") if p.is_file() and p.suffix in (".py", ".sh", ".md")]
    return [p for p in files if "tests/data" not in p.as_posix() and p != Path(__file__)]


def test_nothing_reads_or_cites_a_folder_beside_the_clone() -> None:
    found = [
        f"{p.relative_to(REPO)}:{n}: {line.strip()}"
        for p in [
            *_texts("src", "tests", "scripts", "bench", "docs"),
            REPO / ".ci/run",
            REPO / "README.md",
        ]
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
        if _OUTSIDE.search(line)
    ]
    assert not found, "\n".join(found)


def test_cited_sections_of_the_architecture_page_exist() -> None:
    page = (REPO / "docs" / "architecture.md").read_text()
    sections = set(re.findall(r"^## (\d+)\. ", page, re.M))
    cited = {
        (m.group(1), f"{p.relative_to(REPO)}")
        for p in _texts("src")
        for m in _CITED.finditer(p.read_text())
    }
    assert cited, "the code cites the architecture page"
    missing = sorted(c for c in cited if c[0] not in sections)
    assert not missing, missing


def test_readme_and_docs_links_point_into_the_repository() -> None:
    bad = []
    for page in [REPO / "README.md", *(REPO / "docs").glob("*.md")]:
        for target in _LINK.findall(page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if (
                not (page.parent / target).resolve().is_relative_to(REPO)
                or not (page.parent / target).exists()
            ):
                bad.append(f"{page.relative_to(REPO)} -> {target}")
    assert not bad, bad


def test_the_package_does_not_import_the_tests() -> None:
    found = [
        str(p.relative_to(REPO))
        for p in (REPO / "src").rglob("*.py")
        if re.search(r"^\s*(from|import)\s+tests\b|sys\.path", p.read_text(), re.M)
    ]
    assert not found, found
