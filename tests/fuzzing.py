"""The harness the fuzz targets share: a seeded worker run in a subprocess, so that a crash
or a hang fails the test instead of the test session.

A fuzz module defines ``fuzz(count, seed) -> dict`` (with ``n_failures`` and ``failures``),
calls :func:`worker_main` when run as a script, and :func:`run_worker` from its test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def run_worker(script: str | Path, count: int, seed: int, timeout: float) -> tuple[int, dict | None, str]:
    """Run ``script --count N --seed S`` in a fresh interpreter.

    Returns the exit status (-1 on a timeout: a hang), the JSON result the worker printed
    last (None if it died) and the last lines of its stderr.
    """
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", str(TESTS.parent))
    try:
        out = subprocess.run([sys.executable, str(script), "--count", str(count), "--seed", str(seed)],
                             capture_output=True, text=True, timeout=timeout, env=env, cwd=TESTS.parent, check=False)
    except subprocess.TimeoutExpired as exc:
        tail = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return -1, None, "timed out (a hang?); last lines:\n" + "\n".join(tail.strip().splitlines()[-3:])
    lines = out.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if out.returncode == 0 and lines else None
    return out.returncode, result, "\n".join(out.stderr.strip().splitlines()[-5:])


def worker_main(fuzz: Callable[[int, int], dict], description: str, count: int, seed: int) -> None:
    """The worker's command line: ``--count`` / ``--seed``; prints one JSON line of results."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--count", type=int, default=count)
    ap.add_argument("--seed", type=int, default=seed)
    args = ap.parse_args()
    if "NUMBA_CACHE_DIR" not in os.environ:
        import conftest  # noqa: F401  (source-keyed Numba cache, as in the test session)
    t = time.perf_counter()
    result = fuzz(args.count, args.seed)
    result["seconds"] = round(time.perf_counter() - t, 1)
    print(json.dumps(result))
