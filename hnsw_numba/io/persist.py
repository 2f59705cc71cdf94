"""Save and load indexes and vector stores as Zarr v3 hierarchies.

``save(target, index, store)`` writes one group holding ``graph/`` and ``vectors/``;
``save_index`` and ``save_store`` write either half on its own (the
half's group is then the root). ``target`` is a local path (a directory, or a file whose
name ends in ``.zip``), a ``file://`` or other fsspec URL, or a Zarr store (``LocalStore``,
``MemoryStore``, ``ZipStore``, ``FsspecStore``). The layout is documented in
``docs/zarr-layout.md``.

Atomicity
---------
A local directory or ``.zip`` path is written to a temporary sibling, flushed (``fsync``)
and swapped in: a crash at any point leaves the previous save loadable (a load after a
crash between the two renames of the swap finds and restores the old copy). Other stores
are written in place: the old contents are deleted first and the root group's
``hnsw_numba`` attribute is written last, so an interrupted save is detected at load
(IndexFormatError) but the previous save is gone. A ``ZipStore`` must be empty (zip
entries cannot be replaced) and is readable only once the caller closes it.

A save holds the index's lock exclusive while it writes (one consistent snapshot:
mutations wait, searches do not), then releases it, loads the written copy back with
every check of :func:`load` and only then swaps it in: a copy that does not load never
replaces the previous save. Loads and saves of a local path remove the temporary copies
that killed saves left behind.

One process saves a given target at a time. Loading never unpickles or executes
anything: only numeric arrays with the ``bytes`` + ``crc32c`` codecs are read, every
chunk's CRC-32C is verified, and the graph is validated before any kernel sees it.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

from ..core.config import MAX_NODES, check_int
from ..core.errors import IndexFormatError, InvalidParameterError, MetricMismatchError
from ..core.graph_checks import check_live_rows_written
from ..core.index import Hnsw
from ..core.metrics import Metric
from ..core.validate import check_flag
from .format import ATTR, FORMAT_VERSION, SAVE_ID, STORE_KINDS, check_one_save, config_field, expect_kind, half, meta, save_id_of, with_save_id, write_payload
from .graph_payload import assemble, check_graph, graph_payload, read_graph
from .store_payload import read_store, store_payload
from .places import through_link
from .swap import aside_identity, resolve_target, target_exists
from .zarr_io import open_reader, open_writer

__all__ = ["save", "load", "save_index", "load_index", "save_store", "load_store", "read_info", "across_swaps", "FORMAT_VERSION",
           "LOAD_ATTEMPTS"]

#: Reads of a local directory that a save swaps meanwhile (see :func:`across_swaps`).
LOAD_ATTEMPTS = 4


def save(target: Any, index: Hnsw, store: Any, *, chunk_rows: int | None = None, fsync: bool = True,
         replace: bool = True) -> None:
    """Save ``index`` and its vector ``store`` as one Zarr group (``graph/`` + ``vectors/``).

    Parameters
    ----------
    target : path, URL or zarr store
        See the module docstring; an existing save of an index (or of half of one) at
        ``target`` is replaced atomically on local paths, anything else there is refused
        (PersistFileExistsError: a folder of other files, a sharded index, search results).
    index, store : Hnsw, InMemoryVectorStore
        The store must be the one the index was built over (checked: kind and dim).
    chunk_rows : int, optional
        Rows (NodeIds) per chunk. Default: one chunk per array on a local directory
        (so ``load(..., mmap=True)`` can map the vectors), 65536 rows elsewhere.
    fsync : bool
        Flush the files before swapping them in (needed to survive power loss, not a
        process crash).
    replace : bool
        False: create the save only, refusing a local path that exists before the save or
        appears while it runs (PersistFileExistsError, raised by the step that would put the
        copy in place: of two such saves to one path, one keeps its save and the other
        fails). Other stores are written as with True.
    """
    tgt = resolve_target(target, write=True)
    chunk_rows = _check_chunk_rows(chunk_rows)
    replace = check_flag("replace", replace)
    index.check_store(store)  # kind, dim and row count, before any file is touched
    if not replace and tgt.kind in ("dir", "zip") and os.path.lexists(through_link(tgt.path)):
        raise target_exists(tgt.path)  # before the work; the swap checks again, atomically
    root = meta("index", graph="graph", vectors="vectors")
    mmap = chunk_rows is None and tgt.kind == "dir"  # verify the written vectors through the page cache
    with ExitStack() as finish:  # validation and the swap run after the lock is released
        with index.lock.exclusive():
            n = index.node_count
            graph, vectors = graph_payload(index), store_payload(store, n)
            save_id = save_id_of(graph, vectors)
            root[ATTR][SAVE_ID] = save_id
            graph, vectors = with_save_id(graph, save_id), with_save_id(vectors, save_id)
            w = finish.enter_context(open_writer(tgt, chunk_rows=chunk_rows, root_attrs=root, fsync=fsync,
                                                 check=lambda t: load(t, mmap=mmap), replace=replace))
            write_payload(w, "graph", graph)
            write_payload(w, "vectors", vectors)


def load(target: Any, metric: Metric | None = None, *, mmap: bool = False, verify: bool = True) -> tuple[Hnsw, Any]:
    """Load ``(index, store)`` written by :func:`save`.

    Parameters
    ----------
    target : path, URL or zarr store
    metric : Metric, optional
        Default: the metric recorded at save. A given one must match it
        (MetricMismatchError otherwise).
    mmap : bool
        Map the vectors copy-on-write from a local directory instead of reading them
        into memory (needs the default one-chunk layout). Writes to the store then go
        to private memory, never to the files; growing the store copies it into RAM.
    verify : bool
        With ``mmap``, also verify the vectors' checksum (reads them once through the page
        cache). Everything else is always verified.
    """
    _check_metric(metric)
    mmap, verify = check_flag("mmap", mmap), check_flag("verify", verify)
    tgt = resolve_target(target, write=False)
    return across_swaps(tgt, lambda: _load(tgt, metric, mmap, verify))


def across_swaps(tgt: Any, read: Callable[[], Any]) -> Any:
    """``read()`` of a local directory or zip, again when a save swapped it in meanwhile.

    A save swaps its new copy in by renames, so a reader may meet the path between them or
    read files of both copies: its checksums then disagree, or (arrays of equal shapes) it
    would combine one copy's graph with the other's vectors. A read during which the
    path's identity changed (or that found it missing) runs again, up to ``LOAD_ATTEMPTS``
    times; so does a failed read during which a swap moved the directory (:func:`_moves`),
    though another process's load put the same copy back. A stress run of loads beside
    saves failed 7 of 161 without it.
    """
    local = tgt.kind in ("dir", "zip") and tgt.path is not None
    for attempt in range(LOAD_ATTEMPTS):
        last = attempt == LOAD_ATTEMPTS - 1
        seen, moves = _identity(tgt), _moves(tgt)
        try:
            out = read()
        except (IndexFormatError, FileNotFoundError) as exc:
            changed = local and _identity(tgt) != seen
            if not local or (seen is not None and not changed and _moves(tgt) == moves):
                raise
            if last:
                if changed:  # each read met a save: the file is not corrupt, it kept changing
                    raise IndexFormatError(f"{tgt}: saves replaced it during {LOAD_ATTEMPTS} reads of it; load it again") from exc
                raise
        else:
            if not local or _identity(tgt) == seen:
                return out
            if last:
                raise IndexFormatError(f"{tgt}: saves replaced it during {LOAD_ATTEMPTS} reads of it; load it again")
        time.sleep(0.005 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _identity(tgt: Any) -> tuple[int, ...] | None:
    """Which save a local directory or zip target holds: the path's device and inode, and
    the inode, modification time and size of its root metadata file (the zip itself, a
    directory's ``zarr.json``, which only a save writes). A file system may give a new copy
    a freed inode (A/B/A/B across saves): the inode alone called a load that two saves
    overtook unchanged, pairing one save's keys with another's vectors; the directory's
    own times change with any file made in it (a sync client's), which no save is. None
    when the path is missing."""
    if tgt.kind not in ("dir", "zip") or tgt.path is None:
        return None
    try:
        st = os.stat(tgt.path)
        meta = os.stat(os.path.join(tgt.path, "zarr.json")) if tgt.kind == "dir" else st
    except OSError:
        return None
    return st.st_dev, st.st_ino, meta.st_ino, meta.st_mtime_ns, meta.st_size


def _moves(tgt: Any) -> tuple | None:
    """What a swap's renames change in a local directory target though the copy stays the
    same: the directory's change time and its aside copy's identity. A load that put the
    aside copy back (a save between its renames) restores the :func:`_identity` a reader
    saw before its read failed; the renames still change the time. Files made in the
    directory change it too, so only a failed read consults it."""
    if tgt.kind != "dir" or tgt.path is None:
        return None
    try:
        ctime = os.stat(tgt.path).st_ctime_ns
    except OSError:
        ctime = None
    return ctime, aside_identity(Path(tgt.path))


def _load(tgt: Any, metric: Metric | None, mmap: bool, verify: bool) -> tuple[Hnsw, Any]:
    with open_reader(tgt) as r:
        root = expect_kind(r, "", "index")
        vinfo = expect_kind(r, "vectors", "vectors")
        check_one_save(r.where, root, expect_kind(r, "graph", "graph"), vinfo)
        kind = vinfo.get("store")
        if metric is not None and kind in STORE_KINDS and kind != metric.store_kind:
            raise MetricMismatchError(f"{r.where}: {metric!r} reads '{metric.store_kind}' stores, the saved store is '{kind}'")
        metric, config, g, keys, used, where, extras = read_graph(r, "graph", metric)
        if kind != metric.store_kind:  # the graph's metric (from the file) must read the saved store
            raise IndexFormatError(f"{where}: metric {metric.name!r} reads '{metric.store_kind}' stores, the saved store is {kind!r}")
        # Check the graph (NumPy, then a nogil kernel) while the vectors are read.
        with ThreadPoolExecutor(1, thread_name_prefix="hnsw-load") as pool:
            try:
                checked = pool.submit(check_graph, g, used, where)
            except RuntimeError:  # the OS refused the thread (memory, process limits): checked here first
                check_graph(g, used, where)
                checked = Future()
                checked.set_result(None)
            try:
                store, _ = read_store(r, "vectors", mmap, verify, expect_rows=(g.node_count, config.dim), unit=metric.normalize)
                check_live_rows_written(g.arrays.tombstones, store.written, g.node_count, where)
                index = assemble(metric, config, g, keys, where, extras)
            finally:
                checked.exception()  # wait: the check must not outlive a failed load
            checked.result()
    return index, store


def save_index(index: Hnsw, target: Any, *, chunk_rows: int | None = None, fsync: bool = True) -> None:
    """Save the graph, keys, tombstones and configuration of ``index`` (no vectors)."""
    tgt = resolve_target(target, write=True)
    chunk_rows = _check_chunk_rows(chunk_rows)
    with ExitStack() as finish:
        with index.lock.exclusive():
            graph = graph_payload(index)
            w = finish.enter_context(open_writer(tgt, chunk_rows=chunk_rows, root_attrs=graph[0], fsync=fsync,
                                                 check=lambda t: load_index(None, t)))
            write_payload(w, "", graph)


def load_index(metric: Metric | None, target: Any) -> Hnsw:
    """Load a graph saved by :func:`save_index` (or the ``graph/`` half of :func:`save`).

    ``metric`` None takes the metric recorded in the file; a given one must match it.
    """
    _check_metric(metric)
    tgt = resolve_target(target, write=False)

    def read() -> Hnsw:
        with open_reader(tgt) as r:
            m, config, g, keys, used, where, extras = read_graph(r, half(r, "graph"), metric)
        check_graph(g, used, where)
        return assemble(m, config, g, keys, where, extras)

    return across_swaps(tgt, read)


def save_store(store: Any, target: Any, node_count: int, *, chunk_rows: int | None = None, fsync: bool = True) -> None:
    """Save rows ``0 .. node_count - 1`` of a vector store."""
    tgt = resolve_target(target, write=True)
    chunk_rows = _check_chunk_rows(chunk_rows)
    vectors = store_payload(store, node_count)
    with open_writer(tgt, chunk_rows=chunk_rows, root_attrs=vectors[0], fsync=fsync, check=lambda t: load_store(t)) as w:
        write_payload(w, "", vectors)


def load_store(target: Any, *, mmap: bool = False, verify: bool = True, expect: type | None = None) -> tuple[Any, int]:
    """Load ``(store, node_count)`` saved by :func:`save_store` (or the ``vectors/`` half of :func:`save`).

    ``mmap`` and ``verify`` are as for :func:`load`; ``expect`` is the store class the
    caller wants (IndexFormatError if the saved store is of another kind).
    """
    mmap, verify = check_flag("mmap", mmap), check_flag("verify", verify)
    tgt = resolve_target(target, write=False)

    def read() -> tuple[Any, int, str]:
        with open_reader(tgt) as r:
            return (*read_store(r, half(r, "vectors"), mmap, verify), r.where)

    store, n, where = across_swaps(tgt, read)
    if expect is not None and not isinstance(store, expect):
        raise IndexFormatError(f"{where} holds a {type(store).__name__}, not a {expect.__name__}")
    return store, n


def read_info(target: Any) -> dict:
    """The metadata of a save made by :func:`save`, without reading any array.

    Read as :func:`load` reads (an interrupted swap's aside copy put back, read again when
    a save swaps the path meanwhile).

    Returns
    -------
    dict
        ``metric`` (name), ``keys`` (``"int64"`` or ``"text"``), ``config``
        (:class:`HnswConfig`), ``store`` (``"float"`` / ``"qi8"``), ``dtype`` and
        ``node_count`` of the vectors. Raises IndexFormatError for anything else.
    """
    tgt = resolve_target(target, write=False)

    def read() -> tuple[dict, dict, str]:
        with open_reader(tgt) as r:
            expect_kind(r, "", "index")
            return expect_kind(r, "graph", "graph"), expect_kind(r, "vectors", "vectors"), f"{r.where}: graph"

    graph, vectors, where = across_swaps(tgt, read)
    config = config_field(graph, where)
    return {"metric": graph.get("metric"), "keys": graph.get("keys"), "config": config,
            "store": vectors.get("store"), "dtype": vectors.get("dtype"), "node_count": vectors.get("node_count")}


def _check_metric(metric: Any) -> None:
    if metric is not None and not isinstance(metric, Metric):
        raise InvalidParameterError(f"metric must be a Metric instance such as L2(), got {metric!r}")


def _check_chunk_rows(chunk_rows: Any) -> int | None:
    if chunk_rows is not None:
        check_int("chunk_rows", chunk_rows, 1, MAX_NODES)
        chunk_rows = int(chunk_rows)
    return chunk_rows
