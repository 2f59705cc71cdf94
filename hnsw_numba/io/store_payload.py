"""The vectors half of a save: a store's columns written, and read back (or memory-mapped)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..core.config import MAX_DIM, MAX_NODES, check_int
from ..core.errors import HnswWarning, IndexFormatError, InvalidParameterError, InvalidVectorError
from ..core.limits import check_allocation
from ..core.quantize import check_scales
from ..core.store import FLOAT_DTYPES, UNRESOLVED, InMemoryVectorStore
from ..core.store_qi8 import InMemoryQi8VectorStore
from .format import ATTR, STORE_KINDS, capacity_for, expect_kind, int_field, join, meta
from .zarr_io import Reader

__all__ = ["store_payload", "read_store"]


def store_payload(store: Any, node_count: Any) -> tuple[dict, list]:
    """Attributes and arrays of rows ``0 .. node_count - 1`` of ``store``."""
    if not isinstance(store, (InMemoryVectorStore, InMemoryQi8VectorStore)):
        raise InvalidParameterError(
            f"cannot save a {type(store).__name__}; expected an InMemoryVectorStore or InMemoryQi8VectorStore"
        )
    check_int("node_count", node_count, 0, store.max_nodes)
    n = int(node_count)
    cols = {name: arr[:n] for name, arr in store.columns().items()}
    if isinstance(store, InMemoryVectorStore):
        data = cols["data"]
        data_attrs: dict = {}
        if store.dtype == np.float16:
            data = data.view(np.float16)  # a real float16 array to plain Zarr readers
        elif store.dtype != np.float32:
            data_attrs = {ATTR: {"dtype": "bfloat16", "encoding": "uint16 bit pattern"}}
        attrs = meta("vectors", store="float", dtype=store.dtype.name, dim=store.dim, max_nodes=store.max_nodes, node_count=n)
        if store.walk_copy and store.written_resolve(n):
            attrs[ATTR]["walk_copy"] = True  # the copy is made again from the vectors at load
        elif store.walk_copy:  # rows taken in writes too small to check: the load would drop the copy
            warnings.warn(f"vectors saved without the float16 walk copy: {UNRESOLVED}; the save opens as dtype 'f32' "
                          "(float32 walks, exact answers, slower)", HnswWarning, stacklevel=3)
        return attrs, [("data", data, {"attrs": data_attrs}), ("written", cols["written"], {})]
    attrs = meta("vectors", store="qi8", dtype="int8", dim=store.dim, max_nodes=store.max_nodes, node_count=n)
    return attrs, [(name, cols[name], {}) for name in ("codes", "scale", "zero_point", "written")]


def read_store(r: Reader, prefix: str, mmap: bool, verify: bool, expect_rows: tuple[int, int] | None = None,
               unit: bool = False) -> tuple[Any, int]:
    """Read a store; ``expect_rows`` is the graph's ``(node_count, dim)`` when loading both.

    Rows a search could not rank (NaN or inf, a Qi8 scale not > 0, and with ``unit``, for a
    cosine index, a norm neither 0 nor 1) are refused: the checksums only say the bytes are
    the ones saved. A mapped store read with ``verify=False`` is taken as it is.
    """
    where = f"{r.where}: {prefix or 'vectors'}"
    info = expect_kind(r, prefix, "vectors")
    dim = int_field(info, "dim", 1, MAX_DIM, where)
    max_nodes = int_field(info, "max_nodes", 1, MAX_NODES, where)
    n = int_field(info, "node_count", 0, max_nodes, where)
    max_nodes = capacity_for(max_nodes, n)
    if expect_rows is not None and (n, dim) != expect_rows:
        raise IndexFormatError(
            f"{where}: {n} vectors of dim {dim} do not match the graph ({expect_rows[0]} nodes, dim {expect_rows[1]})"
        )
    kind = info.get("store")
    if kind not in STORE_KINDS:
        raise IndexFormatError(f"{where}: unknown store kind {kind!r}")
    p = lambda name: join(prefix, name)  # noqa: E731
    written = np.empty(n, np.uint8)
    r.read_into(p("written"), written)
    if n and written.max() > 1:
        raise IndexFormatError(f"{where}: written mask holds values other than 0 and 1")
    walk_copy = info.get("walk_copy", False)
    if walk_copy is not False and (walk_copy is not True or kind != "float" or info.get("dtype") != "float32"):
        raise IndexFormatError(f"{where}: walk_copy {walk_copy!r} for a {info.get('dtype')!r} store")
    load = _load_float if kind == "float" else _load_qi8
    store = load(r, p, info, n, dim, max_nodes, mmap, verify, where)
    store.written[:n] = written
    bad = store.unsearchable_row(n, unit) if verify or not mmap else -1
    if bad >= 0:
        why = "NaN or inf, a component beyond the range whose distances stay finite, a Qi8 scale that is not > 0" + (", or a norm other than 0 or 1 in a cosine index" if unit else "")
        raise IndexFormatError(f"{where}: vector {bad} cannot be searched ({why})")
    if walk_copy:
        try:
            kept = store.enable_walk_copy(strict=False)
        except InvalidVectorError as e:  # a row beyond float16: no walk copy ever held it
            raise IndexFormatError(f"{where}: {e}") from None
        if not kept:  # rows taken in writes too small to check: exact answers without the copy
            warnings.warn(f"{where}: opened without its float16 walk copy (dtype 'f32': float32 walks, exact answers, slower): "
                          f"{UNRESOLVED}; a save writes it without the copy, and the store's enable_walk_copy() makes the "
                          "copy again once the rows float16 merges are changed, or deleted and compacted", HnswWarning, stacklevel=6)
    return store, n


def _load_float(r: Reader, p, info: dict, n: int, dim: int, max_nodes: int, mmap: bool, verify: bool, where: str) -> Any:
    name = info.get("dtype")
    if name not in FLOAT_DTYPES:
        raise IndexFormatError(f"{where}: unknown vector dtype {name!r}")
    dtype = FLOAT_DTYPES[name]
    disk = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}[name]
    if name == "bfloat16":
        tag = r.array(p("data"), disk, (n, dim)).attrs.get(ATTR, {})
        if not isinstance(tag, dict) or tag.get("dtype") != "bfloat16":
            raise IndexFormatError(f"{where}: data is uint16 without the bfloat16 tag")
    if mmap and n:
        mapped = r.mmap(p("data"), disk, (n, dim), verify)
        storage = np.float32 if dtype == np.float32 else np.uint16
        return InMemoryVectorStore.from_array(np.asarray(mapped).view(storage), dtype, check=False)  # read_store checks
    check_allocation(max_nodes * dim * dtype.itemsize, f"a store of {max_nodes:,} x {dim} vectors")
    store = InMemoryVectorStore(dim, max_nodes, dtype)
    r.read_into(p("data"), store.data[:n].view(disk))
    return store


def _load_qi8(r: Reader, p, info: dict, n: int, dim: int, max_nodes: int, mmap: bool, verify: bool, where: str) -> Any:
    if info.get("dtype") != "int8":
        raise IndexFormatError(f"{where}: qi8 store with dtype {info.get('dtype')!r}")
    scale = np.empty(n, np.float32)
    r.read_into(p("scale"), scale)
    try:
        check_scales(scale, np.zeros(n, np.int8))
    except InvalidVectorError as e:
        raise IndexFormatError(f"{where}: {e}") from None
    zero = np.empty(n, np.int8)
    r.read_into(p("zero_point"), zero)
    if mmap and n:
        codes = np.asarray(r.mmap(p("codes"), np.int8, (n, dim), verify))
        return InMemoryQi8VectorStore.from_arrays(codes, scale, zero)
    store = InMemoryQi8VectorStore(dim, max_nodes)
    r.read_into(p("codes"), store.codes[:n])
    store.scale[:n] = scale
    store.zero_point[:n] = zero
    return store
