"""Seeded mutation fuzzing of the hnswlib loader, in a subprocess (a crash fails the test).

Every mutated file must either load, pass ``check_integrity()`` and answer searches, or
raise ``LegacyFormatError``; any other exception, a hang or a crash is a failure.

Run longer by hand: ``python tests/io/test_legacy_fuzz.py --count 50000 --seed 7``.
"""

from __future__ import annotations

import struct
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: the shared fuzz harness, conftest
from fuzzing import run_worker, worker_main

DATA = HERE.parent / "data" / "hnswlib"
BASES = [("l2.bin", "l2"), ("deleted.bin", "l2"), ("ip.bin", "ip"), ("cosine.bin", "cosine"),
         ("single.bin", "l2"), ("empty.bin", "l2")]
FIELD_OFFSETS = [(0, "<Q"), (8, "<Q"), (16, "<Q"), (24, "<Q"), (32, "<Q"), (40, "<Q"), (48, "<i"), (52, "<I"),
                 (56, "<Q"), (64, "<Q"), (72, "<Q"), (80, "<d"), (88, "<Q")]


class Mutator:
    """Structure-aware mutations of one valid file (it knows where the sections are)."""

    def __init__(self, data: bytes, rng) -> None:
        self.data, self.rng = data, rng
        h = struct.unpack_from("<QQQQQQiIQQQdQ", data)
        self.n, self.s, self.m0, self.m = h[2], h[3], h[9], h[8]
        self.upper0 = 96 + self.n * self.s
        self.records = []
        pos = self.upper0
        for _ in range(self.n):
            self.records.append(pos)
            pos += 4 + struct.unpack_from("<I", data, pos)[0]

    def interesting(self) -> int:
        r = self.rng
        n, m0 = self.n, self.m0
        return int(r.choice([0, 1, 2, n - 1, n, n + 1, m0, m0 + 1, self.m, self.m + 1, 0xFFFF, 0x10000, 0x1FFFF,
                             0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 4 * (1 + self.m), 8 * (1 + self.m) + 4,
                             int(r.integers(0, 2**32))]) % 2**32)

    def word_offset(self) -> int:
        """A 4-aligned offset, biased towards link counts, neighbour ids and record sizes."""
        r, n, s = self.rng, self.n, self.s
        kind = r.integers(0, 5)
        if n and kind == 0:  # level-0 header word
            return 96 + int(r.integers(0, n)) * s
        if n and kind == 1:  # level-0 neighbour slot
            return 96 + int(r.integers(0, n)) * s + 4 * int(r.integers(1, self.m0 + 1))
        if n and kind == 2:  # upper record size word
            return self.records[int(r.integers(0, n))]
        if len(self.data) > self.upper0 and kind == 3:  # anywhere in the upper region
            return self.upper0 + 4 * int(r.integers(0, (len(self.data) - self.upper0) // 4))
        return 4 * int(r.integers(0, len(self.data) // 4))

    def mutate(self, data: bytes) -> tuple[bytes, str]:
        r = self.rng
        b = bytearray(data)
        op = int(r.integers(0, 9))
        if op == 0 and b:  # flip random bits
            for _ in range(int(r.integers(1, 9))):
                b[int(r.integers(0, len(b)))] ^= 1 << int(r.integers(0, 8))
            return bytes(b), "bitflip"
        if op in (1, 2) and len(b) >= 4:  # an interesting value in a structural word
            off = min(self.word_offset(), len(b) - 4)
            struct.pack_into("<I", b, off, self.interesting())
            return bytes(b), f"word@{off}"
        if op == 3 and len(b) >= 4:  # a 16-bit count, keeping the flag half
            off = min(self.word_offset(), len(b) - 4)
            struct.pack_into("<H", b, off, self.interesting() & 0xFFFF)
            return bytes(b), f"count@{off}"
        if op == 4 and len(b) >= 96:  # a header field
            i = int(r.integers(0, 13))
            off, fmt = FIELD_OFFSETS[i]
            if fmt == "<d":
                val = float(r.choice([0.0, -1.0, 1e300, float("nan"), float("inf"), 1e-300, 1.0]))
            elif fmt == "<i":
                val = int(r.choice([-1, 0, 1, 2, 3, 7, 31, 32, 2**31 - 1, -(2**31)]))
            else:
                cur = struct.unpack_from(fmt, b, off)[0]
                val = int(r.choice([0, 1, cur - 1, cur + 1, cur + 4, cur * 2, 2**32 - 1, 2**31, 2**62 + 16,
                                    2**64 - 1, self.interesting()])) % (2 ** (8 * struct.calcsize(fmt)))
            struct.pack_into(fmt, b, off, val)
            return bytes(b), f"field{i}={val!r}"
        if op == 5:  # truncate
            cut = int(r.integers(0, len(b) + 1))
            return bytes(b[:cut]), f"truncate@{cut}"
        if op == 6:  # insert or delete an aligned chunk
            off = 4 * int(r.integers(0, len(b) // 4 + 1))
            k = 4 * int(r.integers(1, 4))
            if r.integers(0, 2):
                return bytes(b[:off] + bytes(r.integers(0, 256, k, dtype="u1")) + b[off:]), f"insert{k}@{off}"
            return bytes(b[:off] + b[off + k:]), f"delete{k}@{off}"
        if op == 7 and len(b) > 16:  # copy a chunk elsewhere
            k = int(r.integers(4, 64))
            src, dst = (int(x) for x in r.integers(0, max(1, len(b) - k), 2))
            b[dst : dst + k] = b[src : src + k]
            return bytes(b), f"splice{k}:{src}->{dst}"
        if n_app := int(r.integers(1, 9)):  # append bytes
            return bytes(b) + bytes(r.integers(0, 256, n_app, dtype="u1")), f"append{n_app}"
        return bytes(b), "none"


def fuzz(count: int, seed: int) -> dict:
    import numpy as np

    import hnsw_numba as hn
    from hnsw_numba.legacy import load_hnswlib

    rng = np.random.default_rng(seed)
    bases = [((DATA / f).read_bytes(), metric) for f, metric in BASES]
    mutators = [Mutator(data, rng) for data, _ in bases]
    stats: Counter = Counter()
    failures = []
    for case in range(count):
        j = int(rng.integers(0, len(bases)))
        blob, metric = bases[j]
        steps = []
        for _ in range(int(rng.choice([1, 1, 1, 2, 3]))):
            blob, what = mutators[j].mutate(blob)
            steps.append(what)
        desc = f"case {case} base {BASES[j][0]} {'+'.join(steps)}"
        print(desc, file=sys.stderr, flush=True)  # the last line names the case if we crash
        try:
            index, store = load_hnswlib(metric, None, blob)
        except hn.LegacyFormatError as exc:
            stats["rejected"] += 1
            stats[f"check:{exc.check}"] += 1
            continue
        except Exception as exc:  # noqa: BLE001 - anything else is a bug
            failures.append(f"{desc}: load raised {type(exc).__name__}: {exc}")
            continue
        try:
            index.check_integrity()
            q = np.random.default_rng(case).standard_normal((3, index.dim)).astype(np.float32)
            keys, dist = index.search_batch(store, q, 5, ef=16, num_threads=1)
            index.search(store, q[0], 3)
            if case % 25 == 0 and index.node_count:
                copy, cstore = index.materialize(store)
                copy.check_integrity()
            stats["loaded"] += 1
        except Exception as exc:  # noqa: BLE001
            failures.append(f"{desc}: loaded, then {type(exc).__name__}: {exc}")
    return {"count": count, "seed": seed, "stats": dict(stats), "failures": failures[:20], "n_failures": len(failures)}


def test_fuzzed_files_load_cleanly_or_raise_legacy_format_error() -> None:
    code, result, tail = run_worker(__file__, 2400, 20261130, timeout=600)
    assert code == 0, f"fuzz worker died with status {code}; last lines:\n{tail}"
    assert result["n_failures"] == 0, "\n".join(result["failures"])
    stats = result["stats"]
    assert stats["loaded"] + stats["rejected"] == 2400
    # both outcomes are exercised, and many different checks fire
    assert stats["loaded"] >= 200 and stats["rejected"] >= 1000, stats
    assert sum(k.startswith("check:") for k in stats) >= 15, stats


if __name__ == "__main__":
    worker_main(fuzz, "fuzz the hnswlib loader", 2400, 20261130)
