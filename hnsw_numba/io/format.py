"""The saved layout's shared vocabulary: format version, metadata attributes, group helpers.

A saved object is a Zarr group whose ``hnsw_numba`` attribute names its kind (``index``,
``graph`` or ``vectors``) and the format version; see ``docs/zarr-layout.md``.
"""

from __future__ import annotations

import json
from typing import Any

import google_crc32c
import numpy as np

from ..core.config import HnswConfig, stored_config
from ..core.errors import IndexFormatError
from ..core.limits import capacity_for  # the rule of every loader
from .zarr_io import Reader, Writer

__all__ = ["FORMAT_VERSION", "READABLE_VERSIONS", "ATTR", "capacity_for", "STORE_KINDS", "library_version", "meta", "join", "group_info", "expect_kind",
           "half", "write_payload", "int_field", "config_field", "SAVE_ID", "save_id_of", "with_save_id", "check_one_save"]

#: Version 2 adds a digest to every array (binding chunks to their array); version 1
#: saves still load, their chunks checked by CRC alone.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
ATTR = "hnsw_numba"
#: Field of the ``hnsw_numba`` attribute naming the save a group belongs to (combined saves).
SAVE_ID = "save_id"
STORE_KINDS = ("float", "qi8")


def library_version() -> str:
    """The installed package version (recorded in every save)."""
    from ..core.version import __version__

    return __version__


def meta(kind: str, **fields: Any) -> dict:
    """The ``hnsw_numba`` attribute of a saved group of ``kind``."""
    return {ATTR: {"kind": kind, "format_version": FORMAT_VERSION, "library_version": library_version(), **fields}}



def save_id_of(*payloads: tuple[dict, list]) -> str:
    """The name of one save: 16 hex digits, a CRC-32C over each payload's attributes and
    array bytes. The groups of a combined save carry the same one; saves of the same index
    get the same name (a save stays reproducible: the sharded index compares shards by
    checksum), saves of different contents different ones."""
    parts = []
    for attrs, arrays in payloads:
        crc = google_crc32c.value(json.dumps(attrs, sort_keys=True, default=str).encode())
        for name, data, _ in arrays:
            crc = google_crc32c.extend(crc, name.encode())
            crc = google_crc32c.extend(crc, np.ascontiguousarray(data).reshape(-1).view(np.uint8))
        parts.append(f"{crc:08x}")
    return "".join(parts)


def with_save_id(payload: tuple[dict, list], save_id: str) -> tuple[dict, list]:
    """``payload`` (attributes, arrays) with ``save_id`` in its ``hnsw_numba`` attribute.

    The arrays' digests cover that attribute, so an array copied from another save (one
    of the same shape and settings) fails its digest, and :func:`check_one_save` refuses a
    whole group copied from one.
    """
    attrs, arrays = payload
    return {**attrs, ATTR: {**attrs[ATTR], SAVE_ID: save_id}}, arrays


def check_one_save(where: str, *infos: dict) -> None:
    """IndexFormatError unless the groups' ``hnsw_numba`` attributes name one save (saves
    written before the field existed name none and pass)."""
    ids = [info.get(SAVE_ID) for info in infos]
    if any(i is not None and not isinstance(i, str) for i in ids):
        raise IndexFormatError(f"{where}: attribute {SAVE_ID} must be a string, got {ids!r:.120}")
    if any(i is not None for i in ids) and len(set(ids)) > 1:
        raise IndexFormatError(f"{where}: its groups come from different saves (save ids {ids})")


def join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def group_info(r: Reader, prefix: str) -> dict:
    info = r.attrs(prefix).get(ATTR)
    where = f"{r.where}: group {prefix or '/'}"
    if not isinstance(info, dict):
        raise IndexFormatError(f"{where} has no '{ATTR}' attribute: not a saved index, or an interrupted save")
    version = info.get("format_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise IndexFormatError(f"{where}: format version {version!r} is not supported (this library reads "
                               f"{', '.join(map(str, READABLE_VERSIONS))})")
    if version >= 2:
        r.require_digest = True
    return info


def expect_kind(r: Reader, prefix: str, kind: str) -> dict:
    info = group_info(r, prefix)
    if info.get("kind") != kind:
        raise IndexFormatError(f"{r.where}: group {prefix or '/'} holds {info.get('kind')!r}, expected {kind!r}")
    return info


def half(r: Reader, kind: str) -> str:
    """Prefix of the ``kind`` group: the root, or ``kind/`` under a combined save."""
    root_kind = group_info(r, "").get("kind")
    if root_kind == kind:
        return ""
    if root_kind == "index":
        return kind
    raise IndexFormatError(f"{r.where}: holds {root_kind!r}, expected {kind!r} or 'index'")


def write_payload(w: Writer, prefix: str, payload: tuple[dict, list]) -> None:
    attrs, arrays = payload
    if prefix:
        w.group(prefix, attrs)
    for name, data, kw in arrays:
        w.array(join(prefix, name), data, **kw)


def int_field(info: dict, name: str, low: int, high: int, where: str) -> int:
    v = info.get(name)
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise IndexFormatError(f"{where}: attribute {name}={v!r} is not an int in [{low}, {high}]")
    return v


def config_field(info: dict, where: str) -> HnswConfig:
    """The graph's ``config`` attribute as an :class:`HnswConfig` (:func:`~hnsw_numba.core.config.stored_config`)."""
    return stored_config(info.get("config"), where)
