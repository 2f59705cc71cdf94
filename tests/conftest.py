"""Shared fixtures.

Numba's cache keys a function on its own file only, so an edited callee in another module
could run stale machine code: point the cache at a directory named by a hash of every
package source before anything imports the package. pytest-xdist workers share it: every
write to a kernel's cache files holds a file lock (``hnsw_numba.kernels.jit.LockedCacheFile``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "hnsw_numba"
SHARED = ROOT.parent / "shared"


def _source_hash() -> str:
    h = hashlib.sha256()
    for p in sorted(PKG.rglob("*.py")):
        h.update(p.relative_to(PKG).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


if "NUMBA_CACHE_DIR" not in os.environ:
    os.environ["NUMBA_CACHE_DIR"] = str(ROOT / ".numba_cache" / _source_hash())

import hnsw_numba as hn  # noqa: E402  (after the cache dir is set)


@pytest.fixture(autouse=True, scope="session")
def sigint_raises_keyboard_interrupt():
    """Tests that send SIGINT expect Python's KeyboardInterrupt; a shell's background job
    (``cmd &``, many CI runners) starts Python with SIGINT ignored, and such a test then
    waited out its timeouts and failed."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


@pytest.fixture
def sigint_raises():
    """SIGINT raising KeyboardInterrupt in this, the main, thread (``held_interrupts`` holds it)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("SIGINT reaches the main thread only")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def signal_waits(monkeypatch, lock, waiting) -> None:
    """Set the ``waiting`` event when this thread asks ``lock`` for exclusive use (then it blocks)."""
    import threading

    real, me = lock.exclusive, threading.get_ident()

    def exclusive():
        if threading.get_ident() == me:
            waiting.set()
        return real()

    monkeypatch.setattr(lock, "exclusive", exclusive)


#: The start of a child process's script in which the OS refuses new threads (CPython's
#: RuntimeError of a failed pthread_create) until ``threading._start_new_thread = real``.
#: ``refused_then(first, retry)`` prints ``first()`` run while threads are refused (or its
#: error's class and whether it is a PersistError), then ``retry()`` with threads again, and
#: ends the process (zarr's loop thread may never have started: shutdown would wait on it).
REFUSE_THREADS = """
import os, sys, threading
import numpy as np
import hnsw_numba as hn
real = threading._start_new_thread
def refused(*a, **k):
    raise RuntimeError("can't start new thread")
def refused_then(first, retry):
    threading._start_new_thread = refused
    try:
        print(first())
    except Exception as exc:
        print(type(exc).__name__, isinstance(exc, hn.PersistError))
    threading._start_new_thread = real
    print(retry())
    sys.stdout.flush()
    os._exit(0)
"""


def interrupt_each_step(call, step, after_interrupt, limit: int) -> tuple[object, int]:
    """Run ``call()`` for n = 1, 2, ..., ``limit - 1`` with ``step(n, seen)`` as its profile
    function (it counts the run's steps in ``seen[0]`` and interrupts at the n-th),
    ``after_interrupt()`` after each run a KeyboardInterrupt ended, until a run finishes
    before its n-th step. Returns that run's result and n."""
    import sys

    for n in range(1, limit):
        seen = [0]
        try:
            sys.setprofile(step(n, seen))
            try:
                result = call()
            finally:
                sys.setprofile(None)
        except KeyboardInterrupt:
            after_interrupt()
            continue
        if seen[0] < n:
            return result, n
    raise AssertionError(f"{call} never finished")


def once_at_checkpoint(monkeypatch, event: str, action) -> None:
    """Run ``action()`` the first time ``hnsw_numba.io.swap.checkpoint(event)`` is reached
    (another run's write at that instant of this one's)."""
    from hnsw_numba.io import swap

    real, armed = swap.checkpoint, [True]

    def checkpoint(name: str) -> None:
        real(name)
        if name == event and armed[0]:
            armed[0] = False
            action()

    monkeypatch.setattr(swap, "checkpoint", checkpoint)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def clustered(rng: np.random.Generator, n: int, dim: int, centers: int = 20) -> np.ndarray:
    """Small clustered data set (more realistic than uniform noise)."""
    c = rng.standard_normal((centers, dim)).astype(np.float32) * 3
    lab = rng.integers(0, centers, n)
    return (c[lab] + rng.standard_normal((n, dim)).astype(np.float32)).astype(np.float32)


@pytest.fixture
def rules_each_call(monkeypatch):
    """Every filtered search takes the path the exact-search rules pick when it runs: no call
    is kept on a Filter (core.kept_exact, core.kept_walk), so a test may change a rule between searches."""
    import hnsw_numba.core.block_search as block_search
    import hnsw_numba.core.filtered as filtered

    monkeypatch.setattr(block_search, "remember", lambda *args: None)
    monkeypatch.setattr(filtered, "remember_walk", lambda *args: None)


@pytest.fixture(scope="session")
def small_data() -> tuple[np.ndarray, np.ndarray]:
    r = np.random.default_rng(7)
    return clustered(r, 1500, 24), clustered(r, 60, 24)


def build(metric, data: np.ndarray, *, keys=None, m: int = 8, efc: int = 64, seed: int = 3, extra: int = 100, dtype=np.float32,
          num_threads: int | None = None):
    """Index + store over ``data`` with a little spare capacity (``num_threads=1``: the same graph every run)."""
    n, dim = data.shape
    idx = hn.Hnsw(metric, hn.HnswConfig(dim=dim, max_nodes=n + extra, m=m, ef_construction=efc, seed=seed))
    store = hn.InMemoryVectorStore(dim, n + extra, dtype=dtype)
    idx.insert_batch(store, np.arange(n) if keys is None else keys, data, num_threads=num_threads)
    return idx, store


def toward_point(x: np.ndarray, test: np.ndarray, n_queries: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``x`` by distance from the first test point (nearest first), and the
    ``n_queries`` test points nearest it: queries on one side of the data."""
    c = test[0]
    order = np.argsort(((x - c) ** 2).sum(1))
    return order, np.ascontiguousarray(test[np.argsort(((test - c) ** 2).sum(1))[:n_queries]])


def explain_each(idx, store, queries: np.ndarray, k: int, **kw) -> tuple[list, list]:
    """Each query searched alone with ``explain=True`` (``kw``: filter, ef, plan): its keys and
    its SearchPlan, in query order."""
    found, plans = [], []
    for q in queries:
        hits, plan = idx.search(store, q, k, explain=True, **kw)
        found.append(hits.keys)
        plans.append(plan)
    return found, plans


def without_digests(path: Path) -> None:
    """Mark a save as format version 1, which has no digests, so that edited attributes are read."""
    import json

    for zj in Path(path).rglob("zarr.json"):
        meta = json.loads(zj.read_text())
        attrs = meta.get("attributes", {})
        attrs.pop("hnsw_numba_digest", None)
        if isinstance(attrs.get("hnsw_numba"), dict) and "format_version" in attrs["hnsw_numba"]:
            attrs["hnsw_numba"]["format_version"] = 1
        zj.write_text(json.dumps(meta))


def shared_path(*parts: str) -> Path:
    """A path under ../shared, skipping the test when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not available")
    return p


def cli_call(capsys, *args: object) -> tuple[int, str, str]:
    """``hnsw_numba.cli.main(args)`` in-process: (exit status, stdout, stderr)."""
    from hnsw_numba import cli

    capsys.readouterr()
    try:
        rc = cli.main([str(a) for a in args])
    except SystemExit as exc:  # argparse: usage errors and --help
        rc = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


def wrong_hits_during(idx, store, data: np.ndarray, queries: np.ndarray, action, *, batch_rows: int = 1,
                      excluded=lambda key: False) -> list:
    """Run ``action()`` while one thread calls ``search`` and another ``search_batch`` in a loop
    (L2, k = 5); return every hit ``(key, distance, true distance)`` whose distance is not the
    squared L2 distance to ``data[key]`` or whose key is ``excluded``.

    ``search_batch`` takes ``batch_rows`` consecutive queries at a time, in turn.
    """
    import threading

    bad: list = []
    stop = threading.Event()
    started = threading.Barrier(3)

    def searcher(batch: bool) -> None:
        started.wait()
        i = 0
        while not stop.is_set():
            start = (i * batch_rows) % len(queries) if batch else i % len(queries)
            i += 1
            if batch:
                qs = queries[start : start + batch_rows]
                keys, dists = idx.search_batch(store, qs, 5, num_threads=1)
                hits = [(qs[r], key, d) for r in range(len(qs)) for key, d in zip(keys[r].tolist(), dists[r].tolist())]
            else:
                q = queries[start]
                hits = [(q, h.key, h.distance) for h in idx.search(store, q, 5)]
            for q, key, d in hits:
                true = float(((data[key] - q) ** 2).sum())
                if excluded(key) or abs(true - d) > 1e-3 * max(1.0, true):
                    bad.append((key, d, true))

    threads = [threading.Thread(target=searcher, args=(b,)) for b in (False, True)]
    for t in threads:
        t.start()
    started.wait()
    try:
        action()
    finally:
        stop.set()
        for t in threads:
            t.join()
    return bad


class GeneralCalls:
    """Counts the filtered searches that take the general path (``FilteredSearch._search``)
    rather than a call kept on a Filter (core.kept_exact, core.kept_walk)."""

    def __init__(self, monkeypatch) -> None:
        from hnsw_numba.core.filtered import FilteredSearch

        self.calls = 0
        general = FilteredSearch._search

        def counted(fs, *args):
            self.calls += 1
            return general(fs, *args)

        monkeypatch.setattr(FilteredSearch, "_search", counted)


def allowed_top_k(idx, store, metric, allowed_keys: list, q: np.ndarray, k: int) -> tuple[list, np.ndarray]:
    """The k nearest of ``allowed_keys`` (live) and their distances: the brute-force oracle over the stored rows."""
    from naive import exact_knn

    rows, dists = exact_knn(metric, idx.get_vectors(store, allowed_keys), q[None], k)
    return [allowed_keys[r] for r in rows[0]], dists[0]


METRIC_CLASSES = {"l2": hn.L2, "cosine": hn.Cosine, "ip": hn.InnerProduct, "l2qi8": hn.L2Qi8}


def index_of(x: np.ndarray, metric: str, *, str_keys: bool = False, dtype: str = "float32", efc: int = 32, extra: int = 10):
    """``(index, store, metric)`` over ``x`` built on one thread (m = 8): the metric named in
    ``METRIC_CLASSES``, a Qi8 store for a Qi8 metric, ``dtype="walk"`` for float32 with a
    float16 walk copy; keys ``0 .. n-1``, or ``"k0" ...`` with ``str_keys``."""
    n, dim = x.shape
    m = METRIC_CLASSES[metric]()
    idx = hn.Hnsw(m, hn.HnswConfig(dim=dim, max_nodes=n + extra, m=8, ef_construction=efc, seed=1))
    if metric.endswith("qi8"):
        store = hn.InMemoryQi8VectorStore(dim, n + extra)
    else:
        store = hn.InMemoryVectorStore(dim, n + extra, dtype="float32" if dtype == "walk" else dtype, walk_copy=dtype == "walk")
    idx.insert_batch(store, [f"k{i}" for i in range(n)] if str_keys else np.arange(n), x, num_threads=1)
    return idx, store, m
