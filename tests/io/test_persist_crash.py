"""Crash safety of saves: SIGKILL a saving process, then load what is left.

A child process loads index B and saves it over index A, with the persistence layer's
checkpoint hook (called after every file written and every step of the swap) replaced by
one that SIGKILLs the process at the N-th checkpoint. Whatever N, the target must then
load as A or as B, whole. ``HNSW_NUMBA_CRASH_ALL=1`` kills at every checkpoint instead of
a spread of them (slower).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import hnsw_numba as hn
from conftest import clustered

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and rename semantics")

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import hnsw_numba as hn
    from hnsw_numba.io import swap as _swap

    src, target, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    seen = []

    def hook(event):
        seen.append(event)
        if len(seen) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    index, store = hn.load(src, hn.L2())
    _swap.checkpoint = hook
    hn.save(target, index, store, fsync=False)
    print("\\n".join(seen))
    """
)


def run_child(src: Path, target: Path, kill_at: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, str(src), str(target), str(kill_at)],
                          capture_output=True, text=True, env=os.environ.copy(), timeout=300)


def fingerprint(index: hn.Hnsw, store, queries: np.ndarray) -> tuple:
    keys, dists = index.search_batch(store, queries, 5, num_threads=1)
    return index.node_count, len(index), keys.tolist(), dists.tobytes()


@pytest.fixture(scope="module")
def two_indexes(tmp_path_factory):
    rng = np.random.default_rng(5)
    d = tmp_path_factory.mktemp("crash")
    out = {}
    for name, n, keys in (("a", 150, None), ("b", 220, [f"b{i}" for i in range(220)])):
        data = clustered(rng, n, 8, centers=5)
        idx = hn.Hnsw(hn.L2(), hn.HnswConfig(dim=8, max_nodes=n + 10, m=5, ef_construction=30, seed=1))
        st = hn.InMemoryVectorStore(8, n + 10)
        idx.insert_batch(st, keys if keys is not None else np.arange(n), data)
        idx.delete(idx.key(3))
        hn.save(d / name, idx, st)
        out[name] = (d / name, idx, st)
    return out


def test_sigkill_at_any_point_leaves_old_or_new(tmp_path, two_indexes) -> None:
    (_, a, sa), (src_b, b, sb) = two_indexes["a"], two_indexes["b"]
    q = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    old, new = fingerprint(a, sa, q), fingerprint(b, sb, q)
    target = tmp_path / "ix"

    dry = run_child(src_b, tmp_path / "dry", 10**9)
    assert dry.returncode == 0, dry.stderr
    events = dry.stdout.split("\n")[:-1] if dry.stdout.endswith("\n") else dry.stdout.split("\n")
    total = len(events)
    swap = [i + 1 for i, e in enumerate(events) if e.startswith("swap")]
    assert swap, events  # the old copy is moved aside, the new one renamed in, the old one removed
    points = sorted(set(range(1, total + 1)) if os.environ.get("HNSW_NUMBA_CRASH_ALL") else
                    {1, total // 2, swap[0] - 1, *swap})
    outcomes = set()
    for kill_at in points:
        hn.save(target, a, sa)  # the old copy
        r = run_child(src_b, target, kill_at)
        assert r.returncode == -signal.SIGKILL, (kill_at, r.returncode, r.stderr[-2000:])
        idx, st = hn.load(target, hn.L2())
        got = fingerprint(idx, st, q)
        assert got in (old, new), f"killed at checkpoint {kill_at} ({events[kill_at - 1]}): neither old nor new"
        outcomes.add("new" if got == new else "old")
        idx.check_integrity()
        # the next save cleans up whatever the crash left (aside copy, temporary directory)
        hn.save(target, b, sb)
        assert sorted(p.name for p in tmp_path.iterdir() if p.name != "dry") == ["ix"]
        assert fingerprint(*hn.load(target, hn.L2()), q) == new
    assert outcomes == {"old", "new"}


def test_sigkill_without_a_previous_copy(tmp_path, two_indexes) -> None:
    src_b, b, sb = two_indexes["b"]
    target = tmp_path / "fresh"
    r = run_child(src_b, target, 4)
    assert r.returncode == -signal.SIGKILL
    with pytest.raises(FileNotFoundError):  # nothing was ever whole at the target
        hn.load(target, hn.L2())
    hn.save(target, b, sb)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh"]
