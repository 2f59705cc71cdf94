"""Every example script and the README's Python snippet run."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import ROOT

EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def required_modules(path) -> list[str]:
    """Optional dependencies an example names on a ``# requires: mod mod`` line."""
    found = re.search(r"^# requires: (.+)$", path.read_text(), re.M)
    return found.group(1).split() if found else []


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path) -> None:
    for module in required_modules(path):
        pytest.importorskip(module)  # skipped, not failed, without the optional extra
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]


def test_readme_snippet_runs() -> None:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README has no python block"
    out = subprocess.run([sys.executable, "-c", blocks[0]], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]


def test_demo_command() -> None:
    out = subprocess.run([sys.executable, "-m", "hnsw_numba", "demo", "--n", "3000", "--queries", "100", "--dim", "32"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [l.split() for l in out.stdout.splitlines() if re.match(r"\s+\d+\s+[01]\.\d+", l)]
    assert len(rows) == 4 and float(rows[-1][1]) > 0.95, out.stdout
