"""The map between users' keys (int or str) and dense NodeIds.

NodeId -> key lives in a NumPy array (int64 while every key is an int that fits, object
otherwise) so batch results convert with one fancy-index. Key -> NodeId is a compiled
open-addressing table for int keys (:mod:`hnsw_numba.core.inthash`, ~12 bytes a slot instead of
a dict's ~90 bytes a key) and a dict once any key is a str or an int past int64.
"""

from __future__ import annotations

import sys
from collections.abc import Set
from typing import Any, Hashable, Iterable

import numpy as np

from .errors import InvalidKeyError
from .inthash import IntHash
from .validate import refuse_masked

__all__ = ["KeyMap", "MAX_INT_KEY_DIGITS", "int_digits", "describe_key", "normalize_key", "normalize_keys", "numbered_keys", "refuse_unordered", "check_new_keys", "key_batch", "key_at", "first_repeat", "stored_key_problem"]

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1

#: The most decimal digits of an int key. A save writes keys past int64 as decimal text, which
#: loaders read back this long; Python's int <-> str conversion stops at 4,300 digits by default.
MAX_INT_KEY_DIGITS = 4000
_INT_KEY_BOUND = 10**MAX_INT_KEY_DIGITS
_INT_KEY_FLOOR = -_INT_KEY_BOUND  # negated once: each negation copies the 1.7 kB int


def int_digits(k: int) -> int:
    """Decimal digits of ``abs(k)``, found without ``str()`` (which refuses ints past 4,300 digits)."""
    k = abs(k)
    d = int((k.bit_length() - 1) * 0.30102999566398120) + 1 if k else 1  # 2**(b-1) <= k < 2**b: d or d + 1 digits
    return d + (k >= 10**d)


def describe_key(key: Any) -> str:
    """``repr(key)`` for messages, or its digit count for an int past :data:`MAX_INT_KEY_DIGITS`."""
    if isinstance(key, (int, np.integer)) and not _INT_KEY_FLOOR < int(key) < _INT_KEY_BOUND:
        return f"an int of {int_digits(int(key)):,} digits"
    try:
        return repr(key)
    except ValueError:  # a container holding an int past Python's str() limit
        return f"a {type(key).__name__} that cannot be printed"


def normalize_key(key: Any) -> Hashable:
    """Return ``key`` as a plain ``int`` or ``str``; other types, and ints of more than
    :data:`MAX_INT_KEY_DIGITS` digits, raise InvalidKeyError."""
    if isinstance(key, str):
        return key if type(key) is str else str.__str__(key)  # a subclass (NumPy's str_) as the plain str files and pickles hold
    if isinstance(key, (bool, np.bool_)):
        raise InvalidKeyError(f"keys must be int or str, got a bool ({key!r})")
    if isinstance(key, (int, np.integer)):
        k = int(key)
        if _INT_KEY_FLOOR < k < _INT_KEY_BOUND:
            return k
        raise InvalidKeyError(f"int keys have at most {MAX_INT_KEY_DIGITS:,} decimal digits (a save writes them as text), "
                              f"got {describe_key(k)}")
    raise InvalidKeyError(f"keys must be int or str, got {type(key).__name__} ({describe_key(key)})")


def numbered_keys(start: int, n: int) -> np.ndarray:
    """The keys ``start .. start + n - 1`` of a numbered add: int64 where they fit, else uint64,
    else Python ints (a file may number past 2**63; :func:`normalize_key` refuses ints of more than
    :data:`MAX_INT_KEY_DIGITS` digits)."""
    if start + n <= _I64_MAX + 1:
        return np.arange(start, start + n, dtype=np.int64)
    if start + n <= 2**64:
        return np.arange(start, start + n, dtype=np.uint64)
    return np.array(range(start, start + n), dtype=object)


def refuse_unordered(keys: Any) -> None:
    """InvalidKeyError for a set of keys (a set, a frozenset, a dict's ``keys()``: any
    ``collections.abc.Set``) where keys pair with rows or results: its order is its hash
    order, which for str keys differs from process to process. Filters take any collection."""
    if type(keys) is not list and type(keys) is not tuple and isinstance(keys, Set):  # lists first: an ABC check costs ~0.3 us
        raise InvalidKeyError(f"keys must be a sequence (a list, tuple or array, in the rows' order), got a {type(keys).__name__}, "
                              "whose order is arbitrary: pass sorted(keys) or list(keys)")


def _listed(keys: Any) -> list:
    """An iterable of keys as a list; anything else (None, a float, ...) raises InvalidKeyError."""
    try:
        it = iter(keys)
    except TypeError:
        raise InvalidKeyError(f"expected a sequence of keys (ints or strs), got {type(keys).__name__} ({keys!r})") from None
    return list(it)


def key_at(key_list: list | None, int_keys: np.ndarray | None, i: int) -> Hashable:
    """Key ``i`` of a batch as :func:`normalize_keys` returns it (for messages)."""
    return key_list[i] if key_list is not None else int(int_keys[i])


def _as_int64(keys: list) -> np.ndarray | None:
    """``keys`` as int64 if every one is an int that fits, else None."""
    if all(type(k) is int and _I64_MIN <= k <= _I64_MAX for k in keys):
        return np.asarray(keys, dtype=np.int64) if keys else np.empty(0, np.int64)
    return None


def normalize_keys(keys: Any, n: int) -> tuple[list | None, np.ndarray | None]:
    """Validate a batch of ``n`` keys.

    A batch is a sequence: its i-th key goes with row i (a set raises, see
    :func:`refuse_unordered`); a masked array with a masked entry raises InvalidKeyError.
    Returns ``(list, None)`` for keys that need the generic path, or ``(None, int64 array)``
    for int keys that fit (no per-key Python objects: they would stay in the allocator's
    arenas after the call and inflate the process's memory).
    """
    if isinstance(keys, np.ndarray):
        keys = refuse_masked(keys, "keys", InvalidKeyError)
    else:
        refuse_unordered(keys)
    if isinstance(keys, np.ndarray) and keys.dtype.kind in "iu":
        if keys.ndim != 1 or keys.shape[0] != n:
            raise InvalidKeyError(f"expected {n} keys, got an array of shape {keys.shape}")
        if keys.dtype.kind == "u" and keys.size and keys.max() > _I64_MAX:
            return [int(k) for k in keys], None
        return None, keys.astype(np.int64)
    if isinstance(keys, (str, bytes)) or not hasattr(keys, "__len__"):
        keys = _listed(keys) if not isinstance(keys, (str, bytes)) else [keys]
    if len(keys) != n:
        raise InvalidKeyError(f"expected {n} keys, got {len(keys)}")
    lst = [normalize_key(k) for k in keys]
    if len(lst) != n:  # a sequence whose iteration disagrees with its len()
        raise InvalidKeyError(f"expected {n} keys, got {len(lst)} (the keys' len() says {len(keys)})")
    ints = _as_int64(lst)
    return (None, ints) if ints is not None else (lst, None)


def check_new_keys(key_list: list | None, int_keys: np.ndarray | None) -> None:
    """Refuse negative int keys and str keys with lone surrogates for new items
    (InvalidKeyError naming the first); :func:`normalize_keys` refuses ints of more than
    :data:`MAX_INT_KEY_DIGITS` digits before.

    Int keys are >= 0, as in hnswlib and usearch, so the -1 that pads ``search_batch``
    results never stands for a real key. Lookups (``in``, ``node_id``, ``delete``,
    filters) accept any int of at most :data:`MAX_INT_KEY_DIGITS` digits: a negative one
    is simply absent (``in`` answers False for a longer one too).
    """
    if int_keys is not None:
        if int_keys.size and int_keys.min() < 0:
            bad = int(int_keys[int(np.argmax(int_keys < 0))])
            raise InvalidKeyError(f"int keys must be >= 0 (-1 pads search results), got {bad}")
        return
    for k in key_list:
        if type(k) is int and k < 0:
            raise InvalidKeyError(f"int keys must be >= 0 (-1 pads search results), got {k}")
        if type(k) is str and not k.isascii():
            try:
                k.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: a save could not write it
                raise InvalidKeyError(f"str keys must be valid Unicode (encodable as UTF-8), got {k!r}") from None


def key_batch(keys: Any, n: int | None = None, *, unique: type[Exception] | None = None) -> tuple[list | None, np.ndarray | None, int]:
    """A batch of keys as :func:`normalize_keys` returns it, and its length.

    ``n``: the length expected (default: whatever ``keys`` holds). ``unique``: the error
    class raised for a key given twice, naming it (default: repeats allowed). Every batch
    of keys is a sequence, a removal's too (its NodeIds come back in the keys' order, and an
    absent key is named as the first): a set raises InvalidKeyError.
    """
    if n is None:
        if isinstance(keys, np.ndarray):
            if keys.ndim != 1:
                raise InvalidKeyError(f"expected a 1-D array of keys, got an array of shape {keys.shape}")
            n = keys.shape[0]
        elif isinstance(keys, (str, bytes)) or not hasattr(keys, "__len__"):
            keys = [keys] if isinstance(keys, (str, bytes)) else _listed(keys)
            n = len(keys)
        else:
            n = len(keys)
    key_list, int_keys = normalize_keys(keys, n)
    if unique is not None:
        dup = first_repeat(key_list, int_keys)
        if dup is not None:
            raise unique(f"key {dup!r} appears twice in the batch")
    return key_list, int_keys, n


def first_repeat(key_list: list | None, int_keys: np.ndarray | None) -> Hashable | None:
    """The first key of a batch (as :func:`normalize_keys` returns it) that an earlier one
    repeats, or None.

    Whether there is one is decided first, for int keys by a sort (not ``np.unique``: its
    first call imports ``numpy.ma``, ~10 ms of a first insert); only then is the batch
    walked in order.
    """
    if int_keys is not None:
        s = np.sort(int_keys)
        if not (s[1:] == s[:-1]).any():
            return None
    elif len(set(key_list)) == len(key_list):
        return None
    listed = key_list if key_list is not None else int_keys.tolist()
    seen: set = set()
    return next((k for k in listed if k in seen or seen.add(k)), None)


def stored_key_problem(keys: np.ndarray) -> str | None:
    """What makes the NodeId -> key array of a file or pickle unusable, or None.

    A negative int key is refused as :func:`check_new_keys` refuses it for new items:
    ``search_batch`` pads its answers with key -1, so a stored key -1 would read as "no
    hit", and no insert could have written one; an int of more than
    :data:`MAX_INT_KEY_DIGITS` digits as :func:`normalize_key` refuses it (a pickle can hold
    one). A key appearing twice breaks the map.
    """
    n = keys.shape[0]
    if keys.dtype == object:
        lst = keys.tolist()
        huge = next((k for k in lst if type(k) is int and not _INT_KEY_FLOOR < k < _INT_KEY_BOUND), None)
        if huge is not None:
            return f"an int key has {int_digits(huge):,} digits (at most {MAX_INT_KEY_DIGITS:,})"
        neg = next((k for k in lst if type(k) is int and k < 0), None)
        if neg is not None:
            return f"int key {neg} is negative (keys are >= 0; -1 pads search results)"
        dup = first_repeat(lst, None)
        return None if dup is None else f"key {dup!r} appears twice"
    if n and keys.min() < 0:
        return f"int key {int(keys.min())} is negative (keys are >= 0; -1 pads search results)"
    s = np.sort(keys)
    same = s[1:] == s[:-1]
    if same.any():
        return f"key {int(s[1:][np.argmax(same)])} appears twice"
    return None


class KeyMap:
    """Bijection between keys and NodeIds ``0 .. count - 1`` (deleted nodes keep theirs)."""

    def __init__(self, capacity: int):
        self.node_keys: np.ndarray = np.zeros(max(capacity, 1), np.int64)
        self._ints: IntHash | None = IntHash(16)
        self._to_node: dict[Hashable, int] | None = None
        self._count = 0
        self.renames = 0  # the seqlock of rename(): odd while keys change
        self.renamed: set[int] = set()  # NodeIds rename() gave new keys, not inserted since (their vectors are the old keys')
        self.has_str = False  # a str key was ever given: results pad with None, else -1 (ints past int64 as well)

    @classmethod
    def from_node_keys(cls, node_keys: np.ndarray, count: int, capacity: int) -> "KeyMap":
        """Rebuild from the NodeId -> key array (loaders check uniqueness first)."""
        self = cls(capacity)
        keys = node_keys[:count]
        if keys.dtype.kind in "iu" and (keys.dtype.kind == "i" or not count or keys.max() <= _I64_MAX):
            self.add(None, np.arange(count, dtype=np.int32), keys.astype(np.int64))
        else:
            lst = keys.tolist()
            self.add(lst, np.arange(count, dtype=np.int32), _as_int64(lst))
        return self

    def __len__(self) -> int:
        return self._count

    @property
    def is_int(self) -> bool:
        return self._ints is not None

    def get(self, key: Hashable) -> int:
        """NodeId of ``key`` or -1."""
        if self._ints is None:
            return self._to_node.get(key, -1)
        if type(key) is not int or not _I64_MIN <= key <= _I64_MAX:
            return -1
        return int(self._ints.lookup(np.array([key], np.int64))[0])

    def get_many(self, keys: Iterable[Hashable] | None, int_keys: np.ndarray | None = None) -> np.ndarray:
        """NodeIds (int64, -1 where absent) of ``keys``, or of ``int_keys`` (int64) if given."""
        if int_keys is not None and self._ints is None:
            keys = int_keys.tolist()
        if self._ints is not None:
            if int_keys is None:
                keys = list(keys)
                int_keys = _as_int64(keys)
                if int_keys is None:  # some keys cannot be in an int-keyed map
                    return np.fromiter((self.get(k) for k in keys), dtype=np.int64, count=len(keys))
            return self._ints.lookup(int_keys).astype(np.int64)
        get = self._to_node.get
        return np.fromiter((get(k, -1) for k in keys), dtype=np.int64)

    def add(self, keys: list | None, node_ids: np.ndarray, int_keys: np.ndarray | None) -> None:
        """Record new keys, given as a list or as ``int_keys`` (int64).

        The caller checked they are new and unique, and holds the writers' lock. The same as
        :meth:`write_keys` then :meth:`index_keys`.
        """
        self.index_keys(self.write_keys(keys, node_ids, int_keys), node_ids, int_keys)

    def write_keys(self, keys: list | None, node_ids: np.ndarray, int_keys: np.ndarray | None) -> list | None:
        """The NodeId -> key side of :meth:`add`: ``node_keys[node_ids]``, which scans read.

        An insert writes it before it publishes the NodeIds (a lock-free exact scan reads the
        key of every NodeId below the node count), and :meth:`index_keys` after. Returns
        the keys as :meth:`index_keys` takes them.
        """
        if keys is None:
            keys = int_keys.tolist() if self._ints is None else None
        if int_keys is None and self._ints is not None:
            self._switch_to_dict()
        if self._ints is not None:
            self.node_keys[node_ids] = int_keys
        else:
            self.has_str = self.has_str or any(type(k) is str for k in keys)
            self.node_keys[node_ids] = keys if len(keys) != 1 else keys[0]
        return keys

    def index_keys(self, keys: list | None, node_ids: np.ndarray, int_keys: np.ndarray | None) -> None:
        """The key -> NodeId side of :meth:`add` (after :meth:`write_keys`): the keys are found from now on."""
        if self._ints is not None:
            self._ints.insert(int_keys, node_ids)
        else:
            self._to_node.update(zip(keys, node_ids.tolist()))
        self._count += node_ids.shape[0]

    def _switch_to_dict(self) -> None:
        """First str (or huge int) key: switch to an object array and a dict."""
        old = self.node_keys[: self._count].tolist()
        self.node_keys = self.node_keys.astype(object)
        self._to_node = dict(zip(old, range(self._count)))
        self._ints = None

    def rename(self, node_ids: np.ndarray, keys: list | None, int_keys: np.ndarray | None) -> None:
        """Give NodeIds that carry keys new keys (as a list or ``int_keys``); the old keys are forgotten.

        The caller checked that the new keys are absent and unique, and holds the writers' lock.
        ``renames`` is a seqlock over the keys: odd while they change, two more after each
        call. A search that overlaps a rename runs again (``core.renamed``): its answer may
        hold a node found live before its delete, whose NodeId then carries a key that was
        never live; a compiled filter over keys notices the change and compiles again.
        """
        self.renames += 1
        self.renamed.update(node_ids.tolist())
        try:
            if self._ints is not None and int_keys is not None:
                self._ints.remove(self.node_keys[node_ids])
                self.node_keys[node_ids] = int_keys
                self._ints.insert(int_keys, node_ids)
                return
            if self._ints is not None:
                self._switch_to_dict()
            for k in self.node_keys[node_ids].tolist():
                del self._to_node[k]
            new = keys if keys is not None else int_keys.tolist()
            self.has_str = self.has_str or any(type(k) is str for k in new)
            self.node_keys[node_ids] = new if len(new) != 1 else new[0]
            self._to_node.update(zip(new, node_ids.tolist()))
        finally:
            self.renames += 1

    def key(self, node_id: int) -> Hashable:
        k = self.node_keys[node_id]
        return int(k) if self._ints is not None else k

    def keys_for(self, node_ids: np.ndarray) -> np.ndarray:
        """Keys of a (padded) NodeId array; -1 ids become key -1 (int keys, past int64 too) or None (str keys given)."""
        out = self.node_keys.take(node_ids, mode="clip")  # -1 clips to NodeId 0: replaced below
        pad = node_ids < 0
        if pad.any():
            out[pad] = -1 if self._ints is not None or not getattr(self, "has_str", True) else None
        return out

    def int_ceiling(self, start: int, stop: int) -> int:
        """One past the largest int key of NodeIds ``start .. stop - 1`` (0 when none is an int)."""
        return self.int_ceiling_of(slice(start, stop))  # a view: no index array

    def int_ceiling_of(self, node_ids: np.ndarray | slice) -> int:
        """One past the largest int key of ``node_ids`` (0 when none is an int)."""
        keys = self.node_keys[node_ids]
        if self._ints is not None:
            return int(keys.max()) + 1 if keys.shape[0] else 0
        ints = [k for k in keys.tolist() if isinstance(k, int)]
        return max(ints) + 1 if ints else 0

    def resize(self, capacity: int) -> None:
        new = np.zeros(max(capacity, 1), self.node_keys.dtype)
        n = min(capacity, self.node_keys.shape[0])
        new[:n] = self.node_keys[:n]
        self.node_keys = new

    def nbytes(self) -> int:
        """Approximate bytes held (arrays, plus the dict and key objects in object mode)."""
        total = self.node_keys.nbytes
        if self._ints is not None:
            return int(total + self._ints.nbytes)
        total += sys.getsizeof(self._to_node) + sum(sys.getsizeof(k) for k in self._to_node)
        return int(total)
