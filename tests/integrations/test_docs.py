"""The documentation stays true to the repository.

README's Layout section names exactly the package's folders and modules, docs/architecture.md
has a line for every module, every test or benchmark path the documents cite exists, the
README stays short, and no document, module or test reads like a run diary.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import ROOT

README = ROOT / "README.md"
PKG = ROOT / "hnsw_numba"
DOCS = [README, ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 300

#: Wording of a run diary rather than of the code: issue numbers, and words that only make
#: sense on the day they were written. Spaces are written ``\s+`` so that this file does
#: not match its own patterns.
DIARY = re.compile(
    r"\bissue\s*#?\d+|\bthis\s+round\b|\btoday\b|\bthis\s+session\b|\bslow\s+spell\b|\bthe\s+session\s+before\b",
    re.I,
)
#: Files whose diary wording is left to the change that owns them (the compiled-kernel and
#: core modules): each entry must still match, so the list only shrinks.
PENDING_DIARY: set[str] = set()


def modules() -> set[str]:
    """Every package folder (``kernels/``) and module (``kernels/search.py``), relative to hnsw_numba/.

    A subpackage's ``__init__.py`` is stood for by its folder.
    """
    found = set()
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG)
        if "__pycache__" in rel.parts:
            continue
        if rel.name == "__init__.py" and len(rel.parts) > 1:
            found.add(rel.parent.as_posix() + "/")
        else:
            found.add(rel.as_posix())
    return found


def section(text: str, title: str) -> str:
    """The body of the ``## title`` section of a markdown text."""
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert found, f"no '## {title}' section"
    return found.group(1)


def layout_names(text: str) -> list[str]:
    """Folders and modules the README's Layout tree names, relative to hnsw_numba/.

    The tree is the code block starting ``hnsw_numba/``. Each line lists names first (``x.py``
    or ``folder/``) and then a description. A line indented by two spaces is a top-level entry;
    a folder name makes the modules after it (on its own line, or on the following lines
    indented by four spaces) its members.
    """
    block = re.search(r"^```\nhnsw_numba/\n(.*?)^```", section(text, "Layout"), re.M | re.S)
    assert block, "the Layout section has no tree starting with 'hnsw_numba/'"
    names: list[str] = []
    folder = ""
    for line in block.group(1).splitlines():
        indent = len(line) - len(line.lstrip(" "))
        if indent == 0:
            break  # the repository's other folders follow the package
        if indent == 2:
            folder = ""
        for token in line.split():
            if not re.fullmatch(r"[\w.]+(/|\.py)", token):
                break  # the description starts
            if token.endswith("/"):
                folder = token
                names.append(token)
            else:
                names.append(folder + token)
    return names


def test_layout_names_only_what_exists() -> None:
    names = layout_names(README.read_text())
    assert names, "the Layout tree names nothing"
    missing = [n for n in names if not (PKG / n).exists()]
    assert not missing, f"README Layout names paths that do not exist under hnsw_numba/: {missing}"
    twice = sorted({n for n in names if names.count(n) > 1})
    assert not twice, f"README Layout names these twice: {twice}"


def test_layout_names_every_folder_and_module() -> None:
    unnamed = sorted(modules() - set(layout_names(README.read_text())))
    assert not unnamed, f"README Layout does not name: {unnamed}"


def test_architecture_has_a_line_per_module() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    unnamed = sorted(m for m in modules() if f"`{m}`" not in text)
    assert not unnamed, f"docs/architecture.md has no line for: {unnamed}"


def test_readme_is_short() -> None:
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines (at most {MAX_README_LINES}): move detail to docs/"


def _diary_files() -> list[Path]:
    files = [*DOCS, *sorted((ROOT / "benchmarks").rglob("*.md"))]
    for folder in ("hnsw_numba", "tests", "benchmarks", "examples", "tools"):
        files += sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)
    return files


def test_no_run_diary() -> None:
    hits = []
    for path in _diary_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel in PENDING_DIARY:
            continue
        for no, line in enumerate(path.read_text().splitlines(), 1):
            found = DIARY.search(line)
            if found:
                hits.append(f"{rel}:{no}: {found.group(0)!r}")
    assert not hits, "run-diary wording (say what the code does and why, not when):\n" + "\n".join(hits)


@pytest.mark.parametrize("rel", sorted(PENDING_DIARY))
def test_pending_diary_entries_are_still_needed(rel: str) -> None:
    path = ROOT / rel
    assert path.exists() and DIARY.search(path.read_text()), f"{rel} reads clean now: remove it from PENDING_DIARY"


def test_cited_tests_and_benchmarks_exist() -> None:
    """Every ``tests/...py[::name]`` and ``benchmarks/...py`` the documents cite is there."""
    problems = []
    for doc in DOCS:
        for ref in sorted(set(re.findall(r"\b((?:tests|benchmarks|examples)/[\w/]+\.py)(?:::(\w+))?", doc.read_text()))):
            path, name = ref
            target = ROOT / path
            if not target.exists():
                problems.append(f"{doc.name}: {path} does not exist")
            elif name and not re.search(rf"^(?:def|class) {name}\b", target.read_text(), re.M):
                problems.append(f"{doc.name}: {path} has no {name}")
    assert not problems, "\n".join(problems)
