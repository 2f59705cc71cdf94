"""The manifest of a sharded index, and the storage it lives on.

A sharded index is one Zarr v3 hierarchy at a local path or fsspec URL::

    <target>/zarr.json            root group; attributes["hnsw_numba"] is the manifest
    <target>/shards/zarr.json     plain group
    <target>/shards/<name>/       one index saved by hnsw_numba.save (hn.load opens it alone)

Shard directories have names ``<position>-<token>`` (``00003-9f2c61d0``): every write
puts changed shards under fresh names and then replaces the manifest, so the manifest
only ever names complete shards, and replacing it is the one step that makes a write
visible. On a local path the manifest is written to a temporary file and renamed over
``zarr.json`` (atomic); on an object store it is a single object ``PUT`` (atomic there).

Keys are int64 and split into ranges: with boundaries ``b_1 < ... < b_{N-1}`` shard
``i`` owns every key ``k`` with ``b_i <= k < b_{i+1}`` (``b_0 = -inf``, ``b_N = +inf``),
so the owner of any key, stored or new, is a binary search over the manifest alone.

Reading a manifest validates every field and its CRC-32C and raises IndexFormatError
on anything inconsistent; a shard is checked against its entry (file checksum, counts,
configuration) by :mod:`hnsw_numba.dask.tasks` before its first search.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np

from ..core.config import MAX_NODES, HnswConfig
from ..core.errors import HnswError, IndexFormatError, InvalidParameterError, PersistError, persist_error, persist_errors
from ..core.metrics import metric_from_name
from ..core.store import FLOAT_DTYPES
from ..core.version import __version__
from ..io.atomic import write_atomically
from ..io.localfiles import clean_leftovers, sibling_name
from ..io.places import save_kind
from ..io.read_faults import is_tree_fault, read_error
from ..io.swap import remove

__all__ = ["SHARDED_FORMAT_VERSION", "ShardEntry", "Manifest", "target_text", "shard_url", "new_shard_name", "is_sharded",
           "read_manifest", "write_manifest", "shard_checksum", "collect_garbage", "WALK_COPY", "is_remote", "remote_fs"]

#: Version of the sharded layout; readers refuse any other.
SHARDED_FORMAT_VERSION = 1
#: The manifest's ``dtype`` of shards holding float32 vectors with a float16 walk copy.
WALK_COPY = "float32+float16"
_ATTR = "hnsw_numba"
_NAME = re.compile(r"[0-9]{5,}-[0-9a-f]{8}")
_I64 = (-(2**63), 2**63 - 1)
_CONFIG_FIELDS = {"dim", "m", "ef_construction", "ef_search", "seed"}
_ENTRY_FIELDS = {"name", "count", "nodes", "key_min", "key_max", "checksum", "nbytes"}
_FIELDS = {"kind", "format_version", "library_version", "metric", "store", "dtype", "config",
           "keys", "rule", "bounds", "generation", "shards", "crc32c"}


@dataclass(frozen=True)
class ShardEntry:
    """One shard: its directory name, live and total node counts, key span and checksum."""

    name: str
    count: int  # live keys
    nodes: int  # NodeIds handed out (live and deleted)
    key_min: int | None  # smallest / largest key of any node (None when empty)
    key_max: int | None
    checksum: int  # shard_checksum() of its files
    nbytes: int  # bytes of its arrays in memory (graph + vectors)

    def to_dict(self) -> dict:
        return {f: getattr(self, f) for f in sorted(_ENTRY_FIELDS)}


@dataclass(frozen=True)
class Manifest:
    """Everything a reader needs before it opens any shard."""

    metric: str
    store: str  # "float" | "qi8"
    dtype: str  # "float32" | "float16" | "bfloat16" | "int8" | "float32+float16" (a walk copy)
    config: dict  # HnswConfig fields except max_nodes
    shards: tuple[ShardEntry, ...]
    bounds: tuple[int, ...]  # N - 1 key boundaries, strictly increasing
    generation: int = 1
    library_version: str = field(default=__version__)

    @property
    def n_shards(self) -> int:
        return len(self.shards)

    @property
    def dim(self) -> int:
        return int(self.config["dim"])

    @property
    def count(self) -> int:
        """Live keys over all shards."""
        return sum(s.count for s in self.shards)

    @property
    def next_key(self) -> int:
        """One past the largest key stored (0 for an empty index): where appends start."""
        tops = [s.key_max for s in self.shards if s.key_max is not None]
        return max(tops) + 1 if tops else 0

    def owner_of(self, keys: np.ndarray) -> np.ndarray:
        """Position of the shard owning each int64 key (every int64 has exactly one owner)."""
        return np.searchsorted(np.asarray(self.bounds, np.int64), np.asarray(keys, np.int64), side="right")

    def with_shards(self, shards: list[ShardEntry], bounds: list[int]) -> "Manifest":
        """The next generation with these shards (validated like a read manifest)."""
        out = replace(self, shards=tuple(shards), bounds=tuple(int(b) for b in bounds),
                      generation=self.generation + 1, library_version=__version__)
        return Manifest.from_attrs(out.to_attrs(), "new manifest")

    def to_attrs(self) -> dict:
        body = {
            "kind": "sharded", "format_version": SHARDED_FORMAT_VERSION, "library_version": self.library_version,
            "metric": self.metric, "store": self.store, "dtype": self.dtype, "config": dict(self.config),
            "keys": "int64", "rule": "key-range", "bounds": list(self.bounds), "generation": self.generation,
            "shards": [s.to_dict() for s in self.shards],
        }
        body["crc32c"] = _crc_of(body)
        return {_ATTR: body}

    @classmethod
    def from_attrs(cls, attrs: Any, where: str) -> "Manifest":
        """Validate a root group's attributes; IndexFormatError names the first problem."""
        m = attrs.get(_ATTR) if isinstance(attrs, dict) else None
        if not isinstance(m, dict) or m.get("kind") != "sharded":
            raise IndexFormatError(f"{where}: no sharded-index manifest ('{_ATTR}' attribute of kind 'sharded')")
        if m.get("format_version") != SHARDED_FORMAT_VERSION:
            raise IndexFormatError(f"{where}: sharded format version {m.get('format_version')!r} is not supported "
                                   f"(this library reads {SHARDED_FORMAT_VERSION})")
        if set(m) != _FIELDS:
            raise IndexFormatError(f"{where}: manifest fields {sorted(set(m) ^ _FIELDS)} missing or unknown")
        body = {k: v for k, v in m.items() if k != "crc32c"}
        if m["crc32c"] != _crc_of(body):
            raise IndexFormatError(f"{where}: manifest CRC-32C mismatch (edited or corrupt)")
        try:
            metric = metric_from_name(m["metric"]) if isinstance(m["metric"], str) else None
        except HnswError:
            metric = None
        if metric is None:
            raise IndexFormatError(f"{where}: unknown metric {m['metric']!r}")
        if m["store"] != metric.store_kind:
            raise IndexFormatError(f"{where}: store {m['store']!r} does not fit metric {m['metric']!r}")
        if (m["store"] == "float" and m["dtype"] not in FLOAT_DTYPES and m["dtype"] != WALK_COPY) or (m["store"] == "qi8" and m["dtype"] != "int8"):
            raise IndexFormatError(f"{where}: dtype {m['dtype']!r} is not one of a {m['store']!r} store")
        cfg = m["config"]
        if not isinstance(cfg, dict) or set(cfg) != _CONFIG_FIELDS:
            raise IndexFormatError(f"{where}: config must have exactly the fields {sorted(_CONFIG_FIELDS)}")
        try:
            HnswConfig(max_nodes=1, **cfg)
        except (HnswError, TypeError) as exc:
            raise IndexFormatError(f"{where}: invalid config: {exc}") from None
        if m["keys"] != "int64" or m["rule"] != "key-range":
            raise IndexFormatError(f"{where}: keys {m['keys']!r} / rule {m['rule']!r}: expected 'int64' / 'key-range'")
        _int(m["generation"], 1, _I64[1], f"{where}: generation")
        if not isinstance(m["library_version"], str):
            raise IndexFormatError(f"{where}: library_version is not a string")
        shards = _entries(m["shards"], where)
        bounds = m["bounds"]
        if not isinstance(bounds, list) or len(bounds) != len(shards) - 1:
            raise IndexFormatError(f"{where}: {len(shards)} shards need {len(shards) - 1} key bounds")
        for i, b in enumerate(bounds):
            _int(b, *_I64, f"{where}: bounds[{i}]")
            if i and b <= bounds[i - 1]:
                raise IndexFormatError(f"{where}: key bounds are not strictly increasing at {i}")
        for i, s in enumerate(shards):
            low = bounds[i - 1] if i else None
            high = bounds[i] if i < len(bounds) else None
            if s.nodes and ((low is not None and s.key_min < low) or (high is not None and s.key_max >= high)):
                raise IndexFormatError(f"{where}: shard {i} ({s.name}) holds keys [{s.key_min}, {s.key_max}] "
                                       f"outside its range [{low}, {high})")
        return cls(m["metric"], m["store"], m["dtype"], dict(cfg), tuple(shards), tuple(bounds),
                   m["generation"], m["library_version"])


def _crc_of(body: dict) -> int:
    return google_crc32c.value(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def _int(v: Any, low: int, high: int, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise IndexFormatError(f"{what}: {v!r} is not an int in [{low}, {high}]")
    return v


def _entries(raw: Any, where: str) -> list[ShardEntry]:
    if not isinstance(raw, list) or not raw:
        raise IndexFormatError(f"{where}: shards must be a non-empty list")
    out, names = [], set()
    for i, e in enumerate(raw):
        w = f"{where}: shard {i}"
        if not isinstance(e, dict) or set(e) != _ENTRY_FIELDS:
            raise IndexFormatError(f"{w}: entry must have exactly the fields {sorted(_ENTRY_FIELDS)}")
        name = e["name"]
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in names:
            raise IndexFormatError(f"{w}: bad or repeated directory name {name!r}")
        names.add(name)
        nodes = _int(e["nodes"], 0, MAX_NODES, f"{w}: nodes")
        count = _int(e["count"], 0, nodes, f"{w}: count")
        if nodes:
            lo = _int(e["key_min"], *_I64, f"{w}: key_min")
            hi = _int(e["key_max"], lo, _I64[1], f"{w}: key_max")
            if hi - lo + 1 < nodes:
                raise IndexFormatError(f"{w}: {nodes} distinct keys cannot lie in [{lo}, {hi}]")
        elif e["key_min"] is not None or e["key_max"] is not None:
            raise IndexFormatError(f"{w}: an empty shard has no key span")
        _int(e["checksum"], 0, 2**32 - 1, f"{w}: checksum")
        _int(e["nbytes"], 0, _I64[1], f"{w}: nbytes")
        out.append(ShardEntry(name, count, nodes, e["key_min"], e["key_max"], e["checksum"], e["nbytes"]))
    return out


# ============================================================================ storage
def target_text(target: Any) -> str:
    """``target`` as a path or URL string (a sharded index must be reachable by name)."""
    if isinstance(target, os.PathLike):
        target = os.fspath(target)
    if not isinstance(target, str) or not target:
        raise InvalidParameterError(f"target must be a local path or fsspec URL, got {target!r}")
    for prefix in ("file://", "local://"):  # the local file system: a path (locked writes, atomic manifest swaps)
        target = target.removeprefix(prefix)
    if "::" in target:  # a caching layer reads no byte ranges from the end (the shards' checksums)
        raise InvalidParameterError(f"a sharded index takes a path or a plain fsspec URL (s3://...), not a chained URL: {target!r}")
    return target.rstrip("/") or "/"


def is_remote(text: str) -> bool:
    """Whether ``text`` (from :func:`target_text`) is an fsspec URL rather than a local path."""
    return "://" in text or "::" in text


def remote_fs(text: str) -> tuple[Any, str]:
    """``(filesystem, path)`` of the fsspec URL ``text`` (InvalidParameterError without fsspec or its package, or malformed)."""
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise InvalidParameterError(f"{text!r} is a URL: install fsspec (and the filesystem's package)") from None
    try:
        return url_to_fs(text)
    except (ImportError, ValueError) as exc:
        raise InvalidParameterError(f"cannot open {text!r}: {exc}") from None


def shard_url(target: str, name: str) -> str:
    """Where shard ``name`` of ``target`` lives (a path or URL for :func:`hnsw_numba.load`)."""
    return f"{target}/shards/{name}"


def new_shard_name(position: int) -> str:
    """A fresh directory name for the shard at ``position`` (never reused)."""
    return f"{position:05d}-{secrets.token_hex(4)}"


def _read_bytes(text: str) -> bytes:
    if is_remote(text):
        fs, path = remote_fs(text)
        if not fs.exists(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), text)
        return fs.cat_file(path)
    return Path(text).read_bytes()


def is_sharded(target: Any) -> bool:
    """Whether ``target`` holds a sharded index (its root group has a sharded manifest).

    A root ``zarr.json`` that is missing or misplaced means no; the OS failing to read one
    (I/O error, no permission) raises :class:`~hnsw_numba.PersistError`, since the answer
    is unknown.
    """
    try:
        text = target_text(target)
        doc = json.loads(_read_bytes(f"{text}/zarr.json"))
    except OSError as exc:
        if is_tree_fault(exc):
            return False
        raise persist_error(exc, f"cannot read {text}/zarr.json") from exc
    except (ValueError, RecursionError, HnswError):  # not JSON, or nested past the parser
        return False
    return save_kind(doc) == "sharded"


def read_manifest(target: Any) -> Manifest:
    """The validated manifest of the sharded index at ``target``.

    Raises :class:`~hnsw_numba.PersistError` when the OS fails to read the manifest (a
    ``FileNotFoundError`` one when there is no index), IndexFormatError when the root is
    not a (valid) sharded manifest.
    """
    text = target_text(target)
    with persist_errors(f"cannot read the manifest of {text}"):
        raw = _read_bytes(f"{text}/zarr.json")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise IndexFormatError(f"{text}: zarr.json is not JSON: {exc if isinstance(exc, ValueError) else 'nested too deep'}") from None
    if not isinstance(doc, dict) or doc.get("zarr_format") != 3 or doc.get("node_type") != "group":
        raise IndexFormatError(f"{text}: zarr.json is not a Zarr v3 group")
    return Manifest.from_attrs(doc.get("attributes"), text)


def _group_doc(attrs: dict) -> bytes:
    return json.dumps({"zarr_format": 3, "node_type": "group", "attributes": attrs}, indent=1).encode()


def _skeleton(root: Path) -> bool:
    """Whether ``root`` (no root ``zarr.json``) is empty or what a first build that stopped before its
    manifest leaves: ``shards/`` holding only its group file and shard directories (a user's folder that
    happens to hold a ``shards/`` directory is not), beside a killed writer's manifest copies (removed here)."""
    clean_leftovers(root / "zarr.json")
    stray = sibling_name(root / "zarr.json", "tmp-").name
    entries = [p.name for p in root.iterdir() if not p.name.startswith(stray)]  # a live writer's: its manifest comes
    if not entries:
        return True
    if entries != ["shards"] or not (root / "shards").is_dir():
        return False
    group = sibling_name(root / "shards" / "zarr.json", "tmp-").name  # a killed rewrite of the group file
    return all(e == "zarr.json" or e.startswith(group) or _NAME.fullmatch(e.lstrip(".").split(".", 1)[0])
               for e in (p.name for p in (root / "shards").iterdir()))


def bare_skeleton(target: str) -> bool:
    """Whether local ``target`` holds only what :func:`prepare_target` makes (``shards/zarr.json``)."""
    root = Path(target)
    try:
        return [p.name for p in root.iterdir()] == ["shards"] and [p.name for p in (root / "shards").iterdir()] in ([], ["zarr.json"])
    except OSError:
        return False


def prepare_target(target: str) -> None:
    """Create ``target`` and ``shards/`` (refusing a target that holds anything but a sharded
    index); OS errors raise :class:`~hnsw_numba.PersistError`."""
    with persist_errors(f"cannot write a sharded index at {target}"):
        if is_remote(target):
            fs, path = remote_fs(target)
            if fs.exists(f"{path}/zarr.json") and not is_sharded(target):
                raise InvalidParameterError(f"{target} holds a Zarr hierarchy that is not a sharded index; choose another target")
            fs.makedirs(f"{path}/shards", exist_ok=True)
            fs.pipe_file(f"{path}/shards/zarr.json", _group_doc({}))
            return
        root = Path(target)
        if root.exists() and (not root.is_dir() or ((root / "zarr.json").exists() and not is_sharded(target))
                              or (not (root / "zarr.json").exists() and not _skeleton(root))):
            raise InvalidParameterError(f"{target} exists and is not a sharded index; choose another target")
        (root / "shards").mkdir(parents=True, exist_ok=True)
        doc, group = _group_doc({}), root / "shards" / "zarr.json"
        if not group.is_file() or group.read_bytes() != doc:  # a failure rewriting it in place left it empty
            write_atomically(group, lambda f: f.write(doc), fsync=False)


def write_manifest(target: str, manifest: Manifest, *, fsync: bool = True) -> None:
    """Replace the manifest in one atomic step (rename locally, one object PUT remotely).

    A local manifest is written by :func:`hnsw_numba.io.atomic.write_atomically`: a
    failed write (flushing the directory after the rename included) leaves the previous
    manifest and no temporary file (those of killed writers are removed here); OS errors
    raise :class:`~hnsw_numba.PersistError`.
    """
    data = _group_doc(manifest.to_attrs())
    what = f"cannot write the manifest of {target} (the previous one is kept)"
    if not is_remote(target):
        write_atomically(Path(target) / "zarr.json", lambda f: f.write(data), fsync=fsync, what=what)
        return
    with persist_errors(what):
        fs, path = remote_fs(target)
        fs.pipe_file(f"{path}/zarr.json", data)


def shard_checksum(url: str) -> int:
    """CRC-32C over a saved shard's files: every ``zarr.json`` whole, every chunk's CRC-32C trailer.

    Chunks carry their own CRC-32C (verified by :func:`hnsw_numba.load`), so folding the
    trailers with the metadata fingerprints the whole save without reading the data twice.
    A shard missing or misplaced files raises IndexFormatError; the OS failing to read
    one (I/O error, no permission) raises :class:`~hnsw_numba.PersistError`.
    """
    try:
        return _checksum(url)
    except HnswError:
        raise
    except OSError as exc:
        raise read_error(f"shard {url}", exc) from exc


def _checksum(url: str) -> int:
    crc = 0
    if is_remote(url):
        fs, base = remote_fs(url)
        files = sorted(p for p in fs.find(base) if not p.rsplit("/", 1)[-1].startswith("."))
        for p in files:
            rel = p[len(base.rstrip("/")) + 1:]
            body = fs.cat_file(p) if rel.endswith("zarr.json") else fs.cat_file(p, start=-4)
            crc = google_crc32c.extend(crc, rel.encode() + b"\0" + body)
        return crc
    root = Path(url)
    if not root.is_dir():
        raise IndexFormatError(f"{url}: no shard there")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    for rel in files:
        with open(root / rel, "rb") as f:
            if rel.endswith("zarr.json"):
                body = f.read()
            else:
                f.seek(max(0, os.fstat(f.fileno()).st_size - 4))
                body = f.read()
        crc = google_crc32c.extend(crc, rel.encode() + b"\0" + body)
    return crc


def collect_garbage(target: str, keep: set[str]) -> list[str]:
    """Remove shard directories (and their temporary or aside copies) not named in ``keep``.

    Only entries whose name is a shard name, possibly wrapped as ``.<name>.old`` or
    ``.<name>.tmp-...``, are touched. Returns the names removed. A local directory that cannot be removed is
    left for the next call and named in a :class:`~hnsw_numba.PersistError` raised once the others are removed;
    an OS error listing ``shards/`` (or removing a remote directory) raises one too."""
    gone, left = [], []
    with persist_errors(f"cannot remove the unused shard directories of {target}"):
        if is_remote(target):
            fs, path = remote_fs(target)
            entries = [p.rsplit("/", 1)[-1] for p in fs.ls(f"{path}/shards", detail=False)]
        else:
            d = Path(target) / "shards"
            entries = [p.name for p in d.iterdir()] if d.is_dir() else []
        for entry in entries:
            base = entry.lstrip(".").split(".", 1)[0]
            if not _NAME.fullmatch(base) or base in keep:
                continue
            if is_remote(target):
                fs.rm(f"{path}/shards/{entry}", recursive=True)
            else:
                remove(Path(target) / "shards" / entry)  # best effort: what stays is reported below
                if os.path.lexists(Path(target) / "shards" / entry):
                    left.append(entry)
                    continue
            gone.append(entry)
    if left:
        raise PersistError(f"cannot remove the unused shard directories {', '.join(left)} of {target}")
    return gone
