"""The graph half of a save: what is written, and reading it back with every check.

:func:`read_graph` reads arrays whose shapes, dtypes and checksums are verified;
:func:`check_graph` then validates the graph's invariants (NumPy, then a nogil kernel)
before :func:`assemble` hands it to an index.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..core.config import HnswConfig
from ..core.errors import HnswError, IndexFormatError, InvalidKeyError, MetricMismatchError
from ..core.graph import Graph
from ..core.graph_checks import check_loaded_graph, stored_dropped_ceiling, stored_layout, stored_renamed
from ..core.index import Hnsw
from ..core.keymap import KeyMap
from ..core.limits import check_allocation
from ..core.metrics import Metric, metric_from_name
from ..kernels.layout import H_LOCK, H_UPPER_USED, HEADER_SIZE
from .checks import check_keys, check_text_offsets, decode_text_keys, encode_text_keys
from .format import capacity_for, config_field, expect_kind, join, meta
from .zarr_io import Reader

__all__ = ["graph_payload", "read_graph", "check_graph", "assemble", "read_keys"]


def graph_payload(index: Hnsw) -> tuple[dict, list]:
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
        except ValueError as exc:  # sys.set_int_max_str_digits set below an int key's digits
            raise InvalidKeyError(f"an int key cannot be saved as decimal text: {exc}") from None
        arrays += [("key_types", types, {}), ("key_offsets", offsets, flat), ("key_bytes", data, flat)]
    arrays.append(("upper_links", a.upper_links[:used], flat))
    # renamed NodeIds not inserted since (undelete refuses them after a load too); an empty
    # list too: a file without the record predates it, and counts every deleted NodeId in
    renamed = sorted(getattr(km, "renamed", ()))
    attrs = meta("graph", metric=index.metric.name, config=index.config.to_dict(), keys=key_kind,
                 dropped_ceiling=index.state.dropped_ceiling, renamed=renamed)
    return attrs, arrays


def read_graph(r: Reader, prefix: str, metric: Metric | None) -> tuple:
    """Read a graph, checking shapes, dtypes and checksums; :func:`check_graph` validates it.

    ``metric`` None takes the metric the file records; a given one must match it.
    """
    where = f"{r.where}: {prefix or 'graph'}"
    info = expect_kind(r, prefix, "graph")
    if metric is None:
        try:
            metric = metric_from_name(info.get("metric"))
        except (HnswError, TypeError):
            raise IndexFormatError(f"{where}: unknown metric {info.get('metric')!r}") from None
    if info.get("metric") != metric.name:
        raise MetricMismatchError(
            f"{where} was saved with metric {info.get('metric')!r}; loading with {metric!r} ('{metric.name}')"
        )
    config = config_field(info, where)
    p = lambda name: join(prefix, name)  # noqa: E731

    header = np.empty(HEADER_SIZE, np.int64)
    r.read_into(p("header"), header)
    n, used, specs = stored_layout(header, config.m, config.max_nodes, where)
    # the arrays the header sizes must be stored whole before room for them is made
    for name, dtype, shape in specs:
        r.check_stored(p(name), dtype, shape)
    config = dataclasses.replace(config, max_nodes=capacity_for(config.max_nodes, n))
    g = Graph.for_load(config.max_nodes, config.m, used)
    a = g.arrays
    for name, _, shape in specs:
        r.read_into(p(name), getattr(a, name)[: shape[0]])
    a.header[:] = header
    a.header[H_LOCK] = 0
    keys = read_keys(r, prefix, info.get("keys"), n, where)
    extras = {"dropped_ceiling": stored_dropped_ceiling(info.get("dropped_ceiling", 0), where),
              "renamed": stored_renamed(info.get("renamed"), a.tombstones, n, where)}
    return metric, config, g, keys, used, where, extras


def check_graph(g: Graph, used: int, where: str) -> None:
    """Validate what :func:`read_graph` read: NumPy checks first, then ``check_graph_kernel``."""
    check_loaded_graph(g.arrays, g.node_count, g.m, used, where)


def assemble(metric: Metric, config: HnswConfig, g: Graph, keys: np.ndarray, where: str, extras: dict | None = None) -> Hnsw:
    """The index over a read graph, after checking its keys (unique, ints >= 0); ``extras``:
    :func:`read_graph`'s ``dropped_ceiling`` and ``renamed``."""
    check_keys(keys, where)
    keymap = KeyMap.from_node_keys(keys, g.node_count, g.capacity)
    keymap.renamed = set((extras or {}).get("renamed", ()))
    index = Hnsw.from_parts(metric, config, g.arrays, keymap)
    index.state.dropped_ceiling = (extras or {}).get("dropped_ceiling", 0)
    return index


def read_keys(r: Reader, prefix: str, kind: Any, n: int, where: str) -> np.ndarray:
    p = lambda name: join(prefix, name)  # noqa: E731
    if kind == "int64":
        keys = np.empty(n, np.int64)
        r.read_into(p("keys"), keys)
        return keys
    if kind == "text":
        types = np.empty(n, np.uint8)
        r.read_into(p("key_types"), types)
        offsets = np.empty(n + 1, np.int64)
        r.read_into(p("key_offsets"), offsets)
        total = check_text_offsets(offsets, n, where)
        # The last offset sizes the key bytes: compare it with the stored array's shape and
        # the memory limit before allocating, so a crafted offset cannot ask for terabytes.
        r.array(p("key_bytes"), np.uint8, (total,))
        check_allocation(total, f"{total:,} bytes of text keys")
        data = np.empty(total, np.uint8)
        r.read_into(p("key_bytes"), data)
        return decode_text_keys(types, offsets, data, where)
    raise IndexFormatError(f"{where}: unknown key encoding {kind!r}")
