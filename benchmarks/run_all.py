"""Run the main benchmarks (the README's performance figures) with one command and collect the tables.

Usage::

    python benchmarks/run_all.py [--quick] [--skip-large] [--large-n 1000000]

Runs, each in a fresh process (so one library's memory or threads never disturb the
next): the recall/QPS comparison on the dev words set and on a seeded 1,000,000 x 128
clustered L2 set (exact ground truth for 1,000 queries), one single-query call taken
apart, the memory breakdown, and the start-up costs. Every script writes its own table under ``benchmarks/results/``
(``.md`` plus a recall-QPS ``.png`` for the ANN runs); this driver concatenates them
into ``benchmarks/results/summary.md``. ``--quick`` is the under-a-minute smoke run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
from common import DEV_SET, RESULTS, machine


def run(args: list[str]) -> bool:
    print("$ python " + " ".join(args), flush=True)
    t = time.perf_counter()
    ok = subprocess.run([sys.executable, *args], cwd=HERE.parent).returncode == 0
    print(f"  -> {'ok' if ok else 'FAILED'} in {time.perf_counter() - t:.0f} s", flush=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="bench_ann --quick only (< 1 minute)")
    ap.add_argument("--skip-large", action="store_true", help="skip the 1M x 128 synthetic run")
    ap.add_argument("--large-n", type=int, default=1_000_000)
    ap.add_argument("--collect-only", action="store_true", help="only rebuild summary.md from the existing results")
    a = ap.parse_args(argv)

    if a.quick:
        return 0 if run(["benchmarks/bench_ann.py", "--quick"]) else 1
    jobs: list[tuple[list[str], Path]] = []
    if DEV_SET.exists():
        jobs.append((["benchmarks/bench_ann.py", str(DEV_SET), "--repeat", "5"], RESULTS / f"ann-{DEV_SET.stem}.md"))
    else:
        print(f"dev set not found at {DEV_SET}: skipped")
    if not a.skip_large:
        name = f"synthetic-clustered-{a.large_n}x128"
        jobs.append(
            (["benchmarks/bench_ann.py", f"synthetic:{a.large_n}:128", "--single-queries", "1000", "--repeat", "3"],
             RESULTS / f"ann-{name}.md")
        )
    if DEV_SET.exists():
        jobs.append((["benchmarks/bench_single.py", str(DEV_SET)], RESULTS / "single.md"))
    jobs.append((["benchmarks/bench_memory.py"], RESULTS / "memory.md"))
    jobs.append((["benchmarks/bench_startup.py"], RESULTS / "startup.md"))

    failed = [] if a.collect_only else [args[0] for args, _ in jobs if not run(args)]
    parts = [f"# Benchmark summary\n\nCollected {time.strftime('%Y-%m-%d')} on {machine()}; each part states its own run.\n"]
    for _, md in jobs:
        if md.exists():
            png = md.with_suffix(".png")
            parts.append(f"## {md.stem}\n\n" + md.read_text() + (f"\n![{md.stem}]({png.name})\n" if png.exists() else ""))
    (RESULTS / "summary.md").write_text("\n".join(parts))
    print(f"written to {RESULTS / 'summary.md'}")
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
