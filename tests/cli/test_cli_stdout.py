"""Results that cannot reach stdout (closed, a full device) are one error line naming stdout,
and an output written whole before that is said to be whole."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hnsw_numba as hn

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="/dev/full and closing fd 1 in the child")


def run(*args: object, cwd: Path, stdout=subprocess.DEVNULL, close_stdout: bool = False) -> subprocess.CompletedProcess:
    """``python -m hnsw_numba ARGS`` (the package this test imports, through PYTHONPATH)."""
    return subprocess.run([sys.executable, "-m", "hnsw_numba", *map(str, args)], cwd=cwd, stdout=stdout, stderr=subprocess.PIPE,
                          text=True, env=dict(os.environ), timeout=300, preexec_fn=(lambda: os.close(1)) if close_stdout else None)


def error_line(err: str) -> str:
    assert "Traceback" not in err and "Exception ignored" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("hnsw-numba: error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def d(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("stdout")
    x = np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32)
    np.save(d / "x.npy", x)
    index = hn.Index(8, metric="l2", seed=1)
    index.add(x)
    index.save(d / "i.zarr")
    return d


def test_search_to_a_closed_stdout(d) -> None:
    """search with stdout closed said "internal error: AttributeError: 'NoneType' object has
    no attribute 'write'" (a bug's label for the user's setup)."""
    r = run("search", "i.zarr", "x.npy", "--k", "2", "-q", cwd=d, close_stdout=True)
    assert r.returncode == 1, r.stderr
    line = error_line(r.stderr)
    assert "stdout" in line and "closed" in line and "internal error" not in line, line


def test_info_to_a_closed_stdout(d) -> None:
    """info with stdout closed exited 0 and printed nothing anywhere: the report was lost unseen."""
    r = run("info", "i.zarr", cwd=d, close_stdout=True)
    assert r.returncode == 1, r.stderr
    line = error_line(r.stderr)
    assert "stdout" in line and "closed" in line, line


def test_build_report_to_a_full_device_says_the_index_is_whole(d) -> None:
    """build > /dev/full said only "No space left on device" (exit 1), as if the build had
    failed, though the index was written whole."""
    with open("/dev/full", "w") as full:
        r = run("build", "x.npy", "--out", "j.zarr", "-q", cwd=d, stdout=full)
    assert r.returncode == 1, r.stderr
    line = error_line(r.stderr)
    assert "j.zarr was written completely" in line and "stdout" in line and "No space left on device" in line, line
    assert len(hn.load(d / "j.zarr")[0]) == 200
