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

One process saves a given target at a time. Loading never unpickles or executes
anything: only numeric arrays with the ``bytes`` + ``crc32c`` codecs are read, every
chunk's CRC-32C is verified, and the graph is validated before any kernel sees it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .checks import (
    check_text_offsets,
    check_unique_keys,
    decode_text_keys,
    encode_text_keys,
    validate_graph,
)
from .swap import resolve_target
from .zarr_io import Reader, Writer, open_reader, open_writer
from ..core.config import MAX_DIM, MAX_LEVEL, MAX_NODES, HnswConfig, _check_int
from ..core.errors import (
    HnswError,
    IndexFormatError,
    InvalidKeyError,
    InvalidParameterError,
    MetricMismatchError,
)
from ..core.graph import Graph
from ..core.index import Hnsw
from ..kernels.integrity import INTEGRITY_MESSAGES, check_graph_kernel
from ..core.keymap import KeyMap
from ..core.limits import check_allocation
from ..core.metrics import Metric
from ..kernels.layout import H_LOCK, H_M, H_NODES, H_UPPER_USED, HEADER_SIZE
from ..core.store import FLOAT_DTYPES, InMemoryVectorStore

__all__ = ["save", "load", "save_index", "load_index", "save_store", "load_store", "FORMAT_VERSION"]

#: Version of the on-disk layout; loading refuses any other.
FORMAT_VERSION = 1
_ATTR = "hnsw_numba"
_STORE_KINDS = ("float", "qi8")


def _library_version() -> str:
    from ..core.version import __version__

    return __version__


def _meta(kind: str, **fields: Any) -> dict:
    return {_ATTR: {"kind": kind, "format_version": FORMAT_VERSION, "library_version": _library_version(), **fields}}


# ============================================================================ public API
def save(target: Any, index: Hnsw, store: Any, *, chunk_rows: int | None = None, fsync: bool = True) -> None:
    """Save ``index`` and its vector ``store`` as one Zarr group (``graph/`` + ``vectors/``).

    Parameters
    ----------
    target : path, URL or zarr store
        See the module docstring; an existing save at ``target`` is replaced atomically
        on local paths.
    index, store : Hnsw, InMemoryVectorStore
        The store must be the one the index was built over (checked: kind and dim).
    chunk_rows : int, optional
        Rows (NodeIds) per chunk. Default: one chunk per array on a local directory
        (so ``load(..., mmap=True)`` can map the vectors), 65536 rows elsewhere.
    fsync : bool
        Flush the files before swapping them in (needed to survive power loss, not a
        process crash).
    """
    tgt = resolve_target(target, write=True)
    chunk_rows = _check_chunk_rows(chunk_rows)
    index._rows_for(store)  # kind, dim and row count, before any file is touched
    with index._rw.exclusive():
        n = index.node_count
        graph = _graph_payload(index)
        vectors = _store_payload(store, n)
        root = _meta("index", graph="graph", vectors="vectors")
        with open_writer(tgt, chunk_rows=chunk_rows, root_attrs=root, fsync=fsync) as w:
            _write_payload(w, "graph", graph)
            _write_payload(w, "vectors", vectors)


def load(target: Any, metric: Metric, *, mmap: bool = False, verify: bool = True) -> tuple[Hnsw, Any]:
    """Load ``(index, store)`` written by :func:`save`.

    Parameters
    ----------
    target : path, URL or zarr store
    metric : Metric
        Must match the metric recorded at save (MetricMismatchError otherwise).
    mmap : bool
        Map the vectors copy-on-write from a local directory instead of reading them
        into memory (needs the default one-chunk layout). Writes to the store then go
        to private memory, never to the files; growing the store copies it into RAM.
    verify : bool
        With ``mmap``, also verify the vectors' checksum (reads them once through the page
        cache). Everything else is always verified.
    """
    _check_metric(metric)
    tgt = resolve_target(target, write=False)
    with open_reader(tgt) as r:
        _expect_kind(r, "", "index")
        kind = _expect_kind(r, "vectors", "vectors").get("store")
        if kind in _STORE_KINDS and kind != metric.store_kind:
            raise MetricMismatchError(f"{r.where}: {metric!r} reads '{metric.store_kind}' stores, the saved store is '{kind}'")
        metric, config, g, keys, used, where = _read_graph(r, "graph", metric)
        # Check the graph (NumPy, then a nogil kernel) while the vectors are read.
        with ThreadPoolExecutor(1, thread_name_prefix="hnsw-load") as pool:
            checked = pool.submit(_check_graph, g, used, where)
            try:
                store, _ = _load_store(r, "vectors", mmap, verify, expect_rows=(g.node_count, config.dim))
                index = _assemble(metric, config, g, keys, where)
            finally:
                checked.exception()  # wait: the check must not outlive a failed load
            checked.result()
    return index, store


def save_index(index: Hnsw, target: Any, *, chunk_rows: int | None = None, fsync: bool = True) -> None:
    """Save the graph, keys, tombstones and configuration of ``index`` (no vectors)."""
    tgt = resolve_target(target, write=True)
    chunk_rows = _check_chunk_rows(chunk_rows)
    with index._rw.exclusive():
        graph = _graph_payload(index)
        with open_writer(tgt, chunk_rows=chunk_rows, root_attrs=graph[0], fsync=fsync) as w:
            _write_payload(w, "", graph)


def load_index(metric: Metric, target: Any) -> Hnsw:
    """Load a graph saved by :func:`save_index` (or the ``graph/`` half of :func:`save`)."""
    _check_metric(metric)
    with open_reader(resolve_target(target, write=False)) as r:
        metric, config, g, keys, used, where = _read_graph(r, _half(r, "graph"), metric)
    _check_graph(g, used, where)
    return _assemble(metric, config, g, keys, where)


def save_store(store: Any, target: Any, node_count: int, *, chunk_rows: int | None = None, fsync: bool = True) -> None:
    """Save rows ``0 .. node_count - 1`` of a vector store."""
    tgt = resolve_target(target, write=True)
    chunk_rows = _check_chunk_rows(chunk_rows)
    vectors = _store_payload(store, node_count)
    with open_writer(tgt, chunk_rows=chunk_rows, root_attrs=vectors[0], fsync=fsync) as w:
        _write_payload(w, "", vectors)


def load_store(target: Any, *, mmap: bool = False, verify: bool = True, expect: type | None = None) -> tuple[Any, int]:
    """Load ``(store, node_count)`` saved by :func:`save_store` (or the ``vectors/`` half of :func:`save`).

    ``mmap`` and ``verify`` are as for :func:`load`; ``expect`` is the store class the
    caller wants (IndexFormatError if the saved store is of another kind).
    """
    with open_reader(resolve_target(target, write=False)) as r:
        store, n = _load_store(r, _half(r, "vectors"), mmap, verify)
    if expect is not None and not isinstance(store, expect):
        raise IndexFormatError(f"{r.where} holds a {type(store).__name__}, not a {expect.__name__}")
    return store, n


# ============================================================================ helpers
def _check_metric(metric: Any) -> None:
    if not isinstance(metric, Metric):
        raise InvalidParameterError(f"metric must be a Metric instance such as L2(), got {metric!r}")


def _check_chunk_rows(chunk_rows: Any) -> int | None:
    if chunk_rows is not None:
        _check_int("chunk_rows", chunk_rows, 1, MAX_NODES)
        chunk_rows = int(chunk_rows)
    return chunk_rows


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _info(r: Reader, prefix: str) -> dict:
    info = r.attrs(prefix).get(_ATTR)
    where = f"{r.where}: group {prefix or '/'}"
    if not isinstance(info, dict):
        raise IndexFormatError(f"{where} has no '{_ATTR}' attribute: not a saved index, or an interrupted save")
    version = info.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexFormatError(f"{where}: format version {version!r} is not supported (this library reads {FORMAT_VERSION})")
    return info


def _expect_kind(r: Reader, prefix: str, kind: str) -> dict:
    info = _info(r, prefix)
    if info.get("kind") != kind:
        raise IndexFormatError(f"{r.where}: group {prefix or '/'} holds {info.get('kind')!r}, expected {kind!r}")
    return info


def _half(r: Reader, kind: str) -> str:
    """Prefix of the ``kind`` group: the root, or ``kind/`` under a combined save."""
    root_kind = _info(r, "").get("kind")
    if root_kind == kind:
        return ""
    if root_kind == "index":
        return kind
    raise IndexFormatError(f"{r.where}: holds {root_kind!r}, expected {kind!r} or 'index'")


def _write_payload(w: Writer, prefix: str, payload: tuple[dict, list]) -> None:
    attrs, arrays = payload
    if prefix:
        w.group(prefix, attrs)
    for name, data, kw in arrays:
        w.array(_join(prefix, name), data, **kw)


def _int_field(info: dict, name: str, low: int, high: int, where: str) -> int:
    v = info.get(name)
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise IndexFormatError(f"{where}: attribute {name}={v!r} is not an int in [{low}, {high}]")
    return v


# ============================================================================ graph
def _graph_payload(index: Hnsw) -> tuple[dict, list]:
    """Attributes and ``(name, array, options)`` to write; the caller holds the exclusive lock.

    Everything that can fail on bad input (keys that cannot be encoded) fails here,
    before any file is touched.
    """
    a = index.graph_arrays
    n = index.node_count
    used = int(a.header[H_UPPER_USED])
    header = a.header.copy()
    header[H_LOCK] = 0
    km = index.key_map
    arrays = [
        ("header", header, {"rows": HEADER_SIZE}),
        ("levels", a.levels[:n], {}),
        ("links0", a.links0[:n], {}),
        ("upper_start", a.upper_start[:n], {}),
        ("tombstones", a.tombstones[:n], {}),
    ]
    flat = {"scale": 16}  # not indexed by NodeId: chunks of 16 words (bytes) per chunk row
    if km.is_int:
        key_kind = "int64"
        arrays.append(("keys", np.asarray(km.node_keys[:n], np.int64), {}))
    else:
        key_kind = "text"
        try:
            types, offsets, data = encode_text_keys(km.node_keys[:n].tolist())
        except UnicodeEncodeError as exc:
            raise InvalidKeyError(f"a str key cannot be saved as UTF-8: {exc}") from None
        arrays += [("key_types", types, {}), ("key_offsets", offsets, flat), ("key_bytes", data, flat)]
    arrays.append(("upper_links", a.upper_links[:used], flat))
    attrs = _meta("graph", metric=index.metric.name, config=index.config.to_dict(), keys=key_kind)
    return attrs, arrays


def _read_graph(r: Reader, prefix: str, metric: Metric) -> tuple:
    """Read a graph, checking shapes, dtypes and checksums; :func:`_check_graph` validates it."""
    where = f"{r.where}: {prefix or 'graph'}"
    info = _expect_kind(r, prefix, "graph")
    if info.get("metric") != metric.name:
        raise MetricMismatchError(
            f"{where} was saved with metric {info.get('metric')!r}; loading with {metric!r} ('{metric.name}')"
        )
    try:
        config = HnswConfig.from_dict(dict(info.get("config") or {}))
    except (HnswError, TypeError) as exc:
        raise IndexFormatError(f"{where}: invalid config attribute: {exc}") from None
    p = lambda name: _join(prefix, name)  # noqa: E731

    header = np.empty(HEADER_SIZE, np.int64)
    r.read_into(p("header"), header)
    n, m, used = int(header[H_NODES]), int(header[H_M]), int(header[H_UPPER_USED])
    if m != config.m:
        raise IndexFormatError(f"{where}: header has m={m}, config has m={config.m}")
    if not 0 <= n <= config.max_nodes:
        raise IndexFormatError(f"{where}: header has {n} nodes, outside [0, max_nodes={config.max_nodes}]")
    if not 0 <= used <= n * MAX_LEVEL * (m + 1):
        raise IndexFormatError(f"{where}: header has {used} upper-link words, impossible for {n} nodes")
    check_allocation(Graph.bytes_for(config.max_nodes, m) + used * 4, f"a graph of {config.max_nodes:,} nodes")

    g = Graph.empty(config.max_nodes, m)
    if used > g.arrays.upper_links.shape[0]:
        g.grow_upper(used)
    a = g.arrays
    r.read_into(p("levels"), a.levels[:n])
    r.read_into(p("links0"), a.links0[:n])
    r.read_into(p("upper_start"), a.upper_start[:n])
    r.read_into(p("tombstones"), a.tombstones[:n])
    r.read_into(p("upper_links"), a.upper_links[:used])
    a.header[:] = header
    a.header[H_LOCK] = 0
    keys = _read_keys(r, prefix, info.get("keys"), n, where)
    return metric, config, g, keys, used, where


def _check_graph(g: Graph, used: int, where: str) -> None:
    """Validate what :func:`_read_graph` read: NumPy checks first, then ``check_graph_kernel``."""
    a = g.arrays
    validate_graph(a, g.node_count, g.m, used, where)
    code, node, level = check_graph_kernel(a)
    if code:
        raise IndexFormatError(f"{where}: {INTEGRITY_MESSAGES[code]} (node {node}, level {level})")


def _assemble(metric: Metric, config: HnswConfig, g: Graph, keys: np.ndarray, where: str) -> Hnsw:
    """The index over a read graph, after checking its keys are unique."""
    check_unique_keys(keys, where)
    keymap = KeyMap.from_node_keys(keys, g.node_count, g.capacity)
    return Hnsw._from_parts(metric, config, g.arrays, keymap)


def _read_keys(r: Reader, prefix: str, kind: Any, n: int, where: str) -> np.ndarray:
    p = lambda name: _join(prefix, name)  # noqa: E731
    if kind == "int64":
        keys = np.empty(n, np.int64)
        r.read_into(p("keys"), keys)
        return keys
    if kind == "text":
        types = np.empty(n, np.uint8)
        r.read_into(p("key_types"), types)
        offsets = np.empty(n + 1, np.int64)
        r.read_into(p("key_offsets"), offsets)
        data = np.empty(check_text_offsets(offsets, n, where), np.uint8)
        r.read_into(p("key_bytes"), data)
        return decode_text_keys(types, offsets, data, where)
    raise IndexFormatError(f"{where}: unknown key encoding {kind!r}")


# ============================================================================ vectors
def _store_payload(store: Any, node_count: Any) -> tuple[dict, list]:
    """Attributes and arrays of rows ``0 .. node_count - 1`` of ``store``."""
    if isinstance(store, InMemoryVectorStore):
        _check_int("node_count", node_count, 0, store.max_nodes)
        n = int(node_count)
        data = store._data[:n]
        data_attrs: dict = {}
        if store.dtype == np.float16:
            data = data.view(np.float16)  # a real float16 array to plain Zarr readers
        elif store.dtype != np.float32:
            data_attrs = {_ATTR: {"dtype": "bfloat16", "encoding": "uint16 bit pattern"}}
        attrs = _meta("vectors", store="float", dtype=store.dtype.name, dim=store.dim, max_nodes=store.max_nodes, node_count=n)
        arrays = [("data", data, {"attrs": data_attrs}), ("written", store._written[:n], {})]
        return attrs, arrays
    if _is_qi8_store(store):
        _check_int("node_count", node_count, 0, store.max_nodes)
        n = int(node_count)
        attrs = _meta("vectors", store="qi8", dtype="int8", dim=store.dim, max_nodes=store.max_nodes, node_count=n)
        zero = store._zero[:n].astype(np.int8)  # held as float32 for the kernels; an int8 value
        arrays = [("codes", store._codes[:n], {}), ("scale", store._scale[:n], {}),
                  ("zero_point", zero, {}), ("written", store._written[:n], {})]
        return attrs, arrays
    raise InvalidParameterError(
        f"cannot save a {type(store).__name__}; expected an InMemoryVectorStore or InMemoryQi8VectorStore"
    )


def _is_qi8_store(store: Any) -> bool:
    if getattr(store, "kind", None) != "qi8":
        return False
    from ..core.store_qi8 import InMemoryQi8VectorStore

    return isinstance(store, InMemoryQi8VectorStore)


def _load_store(r: Reader, prefix: str, mmap: bool, verify: bool, expect_rows: tuple[int, int] | None = None) -> tuple[Any, int]:
    """Read a store; ``expect_rows`` is the graph's ``(node_count, dim)`` when loading both."""
    where = f"{r.where}: {prefix or 'vectors'}"
    info = _expect_kind(r, prefix, "vectors")
    dim = _int_field(info, "dim", 1, MAX_DIM, where)
    max_nodes = _int_field(info, "max_nodes", 1, MAX_NODES, where)
    n = _int_field(info, "node_count", 0, max_nodes, where)
    if expect_rows is not None and (n, dim) != expect_rows:
        raise IndexFormatError(
            f"{where}: {n} vectors of dim {dim} do not match the graph ({expect_rows[0]} nodes, dim {expect_rows[1]})"
        )
    kind = info.get("store")
    if kind not in _STORE_KINDS:
        raise IndexFormatError(f"{where}: unknown store kind {kind!r}")
    p = lambda name: _join(prefix, name)  # noqa: E731
    written = np.empty(n, np.uint8)
    r.read_into(p("written"), written)
    if n and written.max() > 1:
        raise IndexFormatError(f"{where}: written mask holds values other than 0 and 1")
    load = _load_float if kind == "float" else _load_qi8
    store = load(r, p, info, n, dim, max_nodes, mmap, verify, where)
    store._written[:n] = written
    return store, n


def _load_float(r: Reader, p, info: dict, n: int, dim: int, max_nodes: int, mmap: bool, verify: bool, where: str) -> Any:
    name = info.get("dtype")
    if name not in FLOAT_DTYPES:
        raise IndexFormatError(f"{where}: unknown vector dtype {name!r}")
    dtype = FLOAT_DTYPES[name]
    disk = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}[name]
    if name == "bfloat16":
        tag = r.array(p("data"), disk, (n, dim)).attrs.get(_ATTR, {})
        if not isinstance(tag, dict) or tag.get("dtype") != "bfloat16":
            raise IndexFormatError(f"{where}: data is uint16 without the bfloat16 tag")
    if mmap and n:
        mapped = r.mmap(p("data"), disk, (n, dim), verify)
        storage = np.float32 if dtype == np.float32 else np.uint16
        return InMemoryVectorStore.from_array(np.asarray(mapped).view(storage), dtype)
    check_allocation(max_nodes * dim * dtype.itemsize, f"a store of {max_nodes:,} x {dim} vectors")
    store = InMemoryVectorStore(dim, max_nodes, dtype)
    r.read_into(p("data"), store._data[:n].view(disk))
    return store


def _load_qi8(r: Reader, p, info: dict, n: int, dim: int, max_nodes: int, mmap: bool, verify: bool, where: str) -> Any:
    from ..core.store_qi8 import InMemoryQi8VectorStore

    if info.get("dtype") != "int8":
        raise IndexFormatError(f"{where}: qi8 store with dtype {info.get('dtype')!r}")
    scale = np.empty(n, np.float32)
    r.read_into(p("scale"), scale)
    if not np.isfinite(scale).all():
        raise IndexFormatError(f"{where}: scale holds NaN or inf")
    zero = np.empty(n, np.int8)
    r.read_into(p("zero_point"), zero)
    if mmap and n:
        codes = np.asarray(r.mmap(p("codes"), np.int8, (n, dim), verify))
        return InMemoryQi8VectorStore.from_arrays(codes, scale, zero)
    store = InMemoryQi8VectorStore(dim, max_nodes)
    r.read_into(p("codes"), store._codes[:n])
    store._scale[:n] = scale
    store._zero[:n] = zero
    return store
