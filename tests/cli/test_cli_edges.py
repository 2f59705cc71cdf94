"""Command-line edges: global options, help, ranges, compilation outside the timing,
hnswlib conversion checks, missing h5py, and Ctrl-C at every moment (imports, right after a
save, while exiting). In-process through ``cli.main([...])`` where a subprocess is not needed.
"""

from __future__ import annotations

import argparse
import json
import errno
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba import cli
from hnsw_numba.cli import commands, common, files as cli_files
from hnsw_numba.core.config import MAX_EF
from conftest import cli_call as call

N, DIM, NQ = 400, 8, 12


def child(code: str, *args: object, cwd: Path, stdin: bytes | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """Python ``code`` in a subprocess with Ctrl-C delivered as KeyboardInterrupt (even when
    this test run was started with SIGINT ignored, which a child would inherit)."""
    prelude = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    return subprocess.run([sys.executable, "-c", prelude + code, *map(str, args)], cwd=cwd, input=stdin,
                          capture_output=True, timeout=timeout, env=dict(os.environ))


def one_error_line(err: str, *needles: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("hnsw-numba: ")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def d(tmp_path_factory) -> Path:
    """Vectors, queries, an ann-benchmarks file and an index built by the command line."""
    import h5py

    d = tmp_path_factory.mktemp("edges")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    q = rng.standard_normal((NQ, DIM)).astype(np.float32)
    np.save(d / "x.npy", x)
    np.save(d / "q.npy", q)
    truth = np.argsort(((q[:, None, :] - x[None]) ** 2).sum(-1), axis=1)[:, :10]
    with h5py.File(d / "ann.hdf5", "w") as f:
        f["train"], f["test"], f["neighbors"] = x, q, truth
        f.attrs["distance"] = "euclidean"
    assert cli.main(["build", str(d / "x.npy"), "--out", str(d / "idx.zarr"), "-q"]) == 0
    return d


# ============================================================================ options and help
def test_global_options_before_or_after_the_subcommand(d, capsys, monkeypatch) -> None:
    """--quiet and --debug are accepted before the subcommand as well as after it (regression
    test: before the subcommand they were refused)."""
    monkeypatch.chdir(d)
    for args in (["--quiet", "build", "x.npy", "--out", "a.zarr"], ["build", "x.npy", "--out", "b.zarr", "--quiet"],
                 ["-q", "search", "idx.zarr", "q.npy", "--k", "3", "--out", "r1"]):
        rc, out, err = call(capsys, *args)
        assert rc == 0 and err == "", (args, err)
    rc, _, err = call(capsys, "build", "x.npy", "--out", "c.zarr")
    assert rc == 0 and "build: x.npy" in err  # not quiet unless asked
    for args in (["--debug", "info", "missing.zarr"], ["info", "missing.zarr", "--debug"]):
        with pytest.raises(cli_files.DataError):  # --debug: the exception itself, for its traceback
            cli.main(args)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_has_help() -> None:
    """No option or argument of any subcommand is listed without a line of help."""
    parser = cli.build_parser()
    missing = [(None, a.dest) for a in parser._actions if not a.help]
    for name, sub in _subparsers(parser).items():
        missing += [(name, a.dest) for a in sub._actions if not a.help or a.help == argparse.SUPPRESS]
    assert missing == []


@pytest.mark.parametrize("args, needle", [
    (["search", "idx.zarr", "q.npy", "--k", "5000000"], f"k must be in [1, {MAX_EF}], got 5000000"),
    (["search", "idx.zarr", "q.npy", "--ef", "99999999"], f"ef must be in [1, {MAX_EF}], got 99999999"),
    (["build", "x.npy", "--out", "z.zarr", "--ef-construction", "2000000"], "ef_construction must be in"),
    (["build", "x.npy", "--out", "z.zarr", "--m", "20000"], "m must be in [2, 10000]"),
    (["demo", "--n", "10", "--dim", "100000"], "dim must be in"),
    (["demo", "--n", "10", "--seed", "-1"], "seed must be in [0, 9223372036854775807], got -1"),
    (["build", "x.npy", "--out", "z.zarr", "--seed", "-1"], "seed must be in [0, 9223372036854775807], got -1"),
    (["bench", "ann.hdf5", "--repeat", "0"], "repeat must be in"),
    (["bench", "ann.hdf5", "--ef", "8,2000000"], "--ef must be integers in"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_values_beyond_the_library_limits_are_usage_errors(d, capsys, monkeypatch, args, needle) -> None:
    """A value out of the library's range exits 2 with the usage line (regression test:
    unchecked, the value reached the library and exited 1 as a data error)."""
    monkeypatch.chdir(d)
    rc, _, err = call(capsys, *args)
    assert rc == 2 and "usage: hnsw-numba" in err and needle in err and "Traceback" not in err, err


@pytest.mark.parametrize("n", [1, 50, 100, 101])
def test_demo_with_fewer_vectors_than_its_warm_up(capsys, n) -> None:
    """--n below the 100 rows the demo inserts before timing its build still runs to the end."""
    rc, out, err = call(capsys, "demo", "--n", n, "--queries", "3", "--dim", "8", "-q")
    assert rc == 0, err
    assert f"demo: {n:,} generated" in out and "recall@10" in out and len(out.splitlines()) == 9, out


def test_bench_repeat(d, capsys, monkeypatch) -> None:
    """--repeat sets how many timed runs each measurement takes (the best is reported)."""
    monkeypatch.chdir(d)
    rc, out, err = call(capsys, "bench", "ann.hdf5", "--peers", "", "--ef", "16", "--single", "4", "--repeat", "1", "--json")
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["repeat"] == 1 and [r["library"] for r in rep["results"]] == ["hnsw_numba"]
    assert rep["results"][0]["ef"][0]["recall@10"] > 0.9


def test_an_unsupported_distance_is_refused_unless_a_metric_is_given(d, capsys, monkeypatch) -> None:
    """An ann-benchmarks file declaring a distance outside angular / euclidean / dot is not
    built with l2 behind the user's back: build and bench name the distance, exit 1;
    --metric overrides the file."""
    import h5py

    monkeypatch.chdir(d)
    rng = np.random.default_rng(5)
    with h5py.File(d / "hamming.hdf5", "w") as f:
        f["train"], f["test"] = rng.random((60, DIM), np.float32), rng.random((4, DIM), np.float32)
        f["neighbors"] = np.zeros((4, 10), np.int32)
        f.attrs["distance"] = "hamming"
    rc, _, err = call(capsys, "build", "hamming.hdf5", "--out", "ham.zarr", "-q")
    assert rc == 1 and not (d / "ham.zarr").exists()
    one_error_line(err, "hamming.hdf5", "distance 'hamming' is not supported", "--metric")
    rc, _, err = call(capsys, "bench", "hamming.hdf5", "--peers", "", "--single", "0", "--repeat", "1", "-q")
    assert rc == 1 and "no 'distance' attribute" not in err
    one_error_line(err, "hamming.hdf5", "distance 'hamming' is not supported")
    rc, out, err = call(capsys, "build", "hamming.hdf5", "--out", "ham.zarr", "--metric", "l2", "-q")
    assert rc == 0 and "metric l2" in out, err


# ============================================================================ compilation is its own step
@pytest.fixture
def slow_first_call(monkeypatch):
    """A clock that jumps 1,000 s during the first call of ``name``: what a long compilation
    looks like to throughput and ETA, without compiling."""
    clock = {"offset": 0.0}
    real = __import__("time").perf_counter
    fake = types.SimpleNamespace(perf_counter=lambda: real() + clock["offset"])
    for mod in (commands, cli_files, common):
        monkeypatch.setattr(mod, "time", fake)
    monkeypatch.setattr(common, "COMPILE_NOTE_AFTER", 0.0)

    def patch(name: str) -> None:
        original = getattr(hn.Hnsw, name)
        seen = []

        def first_is_slow(self, *a, **k):
            if not seen:
                seen.append(1)
                clock["offset"] += 1000.0
            return original(self, *a, **k)

        monkeypatch.setattr(hn.Hnsw, name, first_is_slow)

    return patch


def test_build_rate_excludes_compilation(d, capsys, monkeypatch, slow_first_call) -> None:
    """The first use of the kernels runs before the clock starts, announced as its own step;
    the build's time and rate are the inserts' alone (regression test: the first block, and
    its compilation, were inside the timing)."""
    monkeypatch.chdir(d)
    slow_first_call("insert_batch")
    rc, out, err = call(capsys, "build", "x.npy", "--out", "t.zarr", "--dtype", "f16")
    assert rc == 0, err
    secs = float(re.search(r"build ([\d.]+) s", out).group(1))
    assert secs < 500, out
    lines = err.splitlines()
    step = next(i for i, ln in enumerate(lines) if ln.startswith("build: compiling kernels for float16"))
    progress = next(i for i, ln in enumerate(lines) if re.match(r"build: [\d,]+/400 ", ln))
    assert step < progress, err
    assert all(float(r.replace(",", "")) > 1 for r in re.findall(r", ([\d,]+)/s, eta", err)), err


def test_search_rate_excludes_compilation(d, capsys, monkeypatch, slow_first_call) -> None:
    """search's queries/s leave the kernels' first use out."""
    monkeypatch.chdir(d)
    slow_first_call("search_batch")
    rc, out, err = call(capsys, "search", "idx.zarr", "q.npy", "--k", "5", "--out", "r2", "--overwrite")
    assert rc == 0, err
    qps = float(re.search(r"\(([\d,]+) queries/s\)", out).group(1).replace(",", ""))
    assert qps > 1, out
    assert "search: compiling kernels for float32" in err


# ============================================================================ convert-hnswlib
@pytest.fixture(scope="module")
def hnswlib_files(d) -> dict:
    hnswlib = pytest.importorskip("hnswlib")
    x = np.load(d / "x.npy") * 3.0  # not unit length
    out = {}
    for space in ("l2", "cosine"):
        ref = hnswlib.Index(space=space, dim=DIM)
        ref.init_index(max_elements=N, M=8, ef_construction=32, random_seed=1)
        ref.add_items(x, np.arange(N))
        ref.save_index(str(d / f"{space}.bin"))
        out[space] = d / f"{space}.bin"
    return out


def test_convert_refuses_cosine_for_an_l2_file(d, hnswlib_files, capsys, monkeypatch) -> None:
    """An l2 file's vectors are not unit length: --space cosine is refused (regression test:
    unchecked, the file converted silently and answered wrongly); the file converts with its own space."""
    monkeypatch.chdir(d)
    rc, _, err = call(capsys, "convert-hnswlib", "l2.bin", "--space", "cosine", "--out", "c1.zarr")
    assert rc == 1 and not (d / "c1.zarr").exists()
    one_error_line(err, "l2.bin", "not unit length", "--space")
    rc, out, err = call(capsys, "convert-hnswlib", "l2.bin", "--space", "l2", "--out", "c2.zarr")
    assert rc == 0 and "unit length" not in err, err


def test_convert_notes_unit_vectors_under_another_space(d, hnswlib_files, capsys, monkeypatch) -> None:
    """A cosine file (unit vectors) given --space l2 converts, with a note naming --space cosine."""
    monkeypatch.chdir(d)
    rc, out, err = call(capsys, "convert-hnswlib", "cosine.bin", "--space", "l2", "--out", "c3.zarr")
    assert rc == 0 and "unit length" in err and "--space cosine" in err, err
    rc, out, err = call(capsys, "convert-hnswlib", "cosine.bin", "--space", "cosine", "--out", "c4.zarr")
    assert rc == 0 and "unit length" not in err, err


def test_convert_refuses_a_pipe(d, hnswlib_files) -> None:
    """A pipe (/dev/stdin) is refused as not a regular file, with a hint (regression test:
    unchecked, the pipe was read as a file of 0 bytes)."""
    p = child("from hnsw_numba.cli import main; raise SystemExit(main())",
              "convert-hnswlib", "/dev/stdin", "--space", "l2", "--out", "p.zarr", cwd=d,
              stdin=hnswlib_files["l2"].read_bytes())
    assert p.returncode == 1, p.stderr
    one_error_line(p.stderr.decode(), "/dev/stdin", "not a regular file")
    assert not (d / "p.zarr").exists()


# ============================================================================ missing h5py
@pytest.mark.parametrize("args", [["bench", "ann.hdf5"], ["build", "ann.hdf5", "--out", "h.zarr"],
                                  ["search", "idx.zarr", "ann.hdf5"]], ids=lambda a: a[0])
def test_missing_h5py_is_one_line(d, capsys, monkeypatch, args) -> None:
    """Without h5py, an HDF5 input gives one line saying to install it, exit 1."""
    monkeypatch.chdir(d)
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py raises ImportError
    rc, _, err = call(capsys, *args)
    assert rc == 1, err
    one_error_line(err, "h5py", "pip install")


def test_extras_are_declared() -> None:
    import tomllib

    extras = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(r.startswith("h5py") for r in extras["hdf5"])
    assert any(r.startswith("pyarrow") for r in extras["parquet"])
    assert {"fsspec", "s3fs"} <= {re.split(r"[<>=\[ ]", r)[0] for r in extras["s3"]}


# ============================================================================ Ctrl-C
INTERRUPT_ON_IMPORT = """
import sys
class Interrupt:  # Ctrl-C while {name!r} is being imported
    def find_spec(self, name, path=None, target=None):
        if name == {name!r}:
            raise KeyboardInterrupt
        return None
sys.meta_path.insert(0, Interrupt())
from hnsw_numba.cli import main  # what the console script does
raise SystemExit(main())
"""


@pytest.mark.parametrize("module", ["numpy", "numba", "hnsw_numba.cli.parser"])
def test_sigint_during_import_is_one_line(d, module) -> None:
    """Ctrl-C while the command line is still importing exits 130 with one line (regression
    test: with the imports outside the entry point's reach, this printed a traceback)."""
    p = child(INTERRUPT_ON_IMPORT.format(name=module), "build", "x.npy", "--out", "imp.zarr", cwd=d)
    err = p.stderr.decode()
    assert p.returncode == 130, err
    one_error_line(err, "interrupted; nothing was written")
    assert not (d / "imp.zarr").exists()


SAVE_THEN_INTERRUPT = """
import os, signal, sys
import hnsw_numba as hn
real_save = hn.save
def save_then_interrupt(*a, **k):
    real_save(*a, **k)
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C the moment the save is complete
hn.save = save_then_interrupt
from hnsw_numba.cli import main
raise SystemExit(main())
"""


def test_sigint_right_after_a_save_says_it_completed(d) -> None:
    """Ctrl-C as a save completes: exit 130, and the message says the index was written
    completely (regression test: unheld, it said 'nothing was written' over a complete index)."""
    p = child(SAVE_THEN_INTERRUPT, "build", "x.npy", "--out", "late.zarr", cwd=d)
    err = p.stderr.decode()
    assert p.returncode == 130, err
    assert "Traceback" not in err and "interrupted; late.zarr was written completely" in err, err
    index, _ = hn.load(d / "late.zarr")
    assert len(index) == N


INTERRUPT_WHILE_EXITING = """
import atexit, os, signal, sys, time
def interrupt():  # Ctrl-C while Python shuts down, after the command has returned
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)
atexit.register(interrupt)
from hnsw_numba.cli import main
sys.argv[0] = "hnsw-numba"
raise SystemExit(main())
"""


def test_sigint_while_exiting_says_the_work_completed(d) -> None:
    """Ctrl-C after the command finished, while the interpreter exits: one line saying what
    was written, exit 130 (regression test: unhandled, the process ended without a word on the outcome)."""
    p = child(INTERRUPT_WHILE_EXITING, "build", "x.npy", "--out", "exit.zarr", "-q", cwd=d)
    err = p.stderr.decode()
    assert p.returncode == 130, err
    assert "wrote exit.zarr" in p.stdout.decode()
    one_error_line(err, "exit.zarr was written completely", "had finished")
    assert len(hn.load(d / "exit.zarr")[0]) == N


# ============================================================================ results files
def _tree_bytes(path: Path) -> dict:
    """Every file under ``path`` (or ``path`` itself) with its bytes."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("out", ["kept", "kept.zarr"])
def test_failed_results_write_keeps_the_previous_files(d, capsys, monkeypatch, out) -> None:
    """A results write whose flush fails (an I/O error) leaves the previous results byte for
    byte, no temporary sibling, and one error line naming the file."""
    monkeypatch.chdir(d)
    rc, _, err = call(capsys, "-q", "search", "idx.zarr", "q.npy", "--k", "3", "--out", out)
    assert rc == 0, err
    paths = [Path(p) for p in cli_files.results_paths(out)]
    before = {p: _tree_bytes(p) for p in paths}

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    rc, _, err = call(capsys, "-q", "search", "idx.zarr", "q.npy", "--k", "5", "--out", out, "--overwrite")
    assert rc == 1
    one_error_line(err, f"cannot write the results {paths[0]}", "previous", "Input/output error")
    assert {p: _tree_bytes(p) for p in paths} == before
    assert [p.name for p in d.iterdir() if ".tmp-" in p.name] == []
    with pytest.raises(hn.PersistError):
        cli_files.write_results(out, np.zeros((2, 1), np.int64), np.zeros((2, 1), np.float32))
    assert {p: _tree_bytes(p) for p in paths} == before


def test_a_failed_distances_write_keeps_the_previous_keys_too(d, capsys, monkeypatch) -> None:
    """The two ``.npy`` results files are written whole before either replaces its target: a
    run whose second file cannot be written (disk full) leaves the previous pair, not the
    new keys beside the previous distances (which renaming each file once written did)."""
    monkeypatch.chdir(d)
    rc, _, err = call(capsys, "-q", "search", "idx.zarr", "q.npy", "--k", "3", "--out", "pair")
    assert rc == 0, err
    paths = [Path(p) for p in cli_files.results_paths("pair")]
    before = {p: p.read_bytes() for p in paths}
    real_save = np.save

    def save(f, arr, *a, **kw):
        if arr.dtype == np.float32:  # the distances, written second
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(f, arr, *a, **kw)

    monkeypatch.setattr(np, "save", save)
    rc, _, err = call(capsys, "-q", "search", "idx.zarr", "q.npy", "--k", "5", "--out", "pair", "--overwrite")
    assert rc == 1
    one_error_line(err, f"cannot write the results {paths[1]}", "previous", os.strerror(errno.ENOSPC))
    assert {p: p.read_bytes() for p in paths} == before
    assert [p.name for p in d.iterdir() if ".tmp-" in p.name] == []


@pytest.mark.parametrize("out", ["synced", "synced.zarr"])
def test_results_files_are_flushed_before_they_are_renamed_in(d, monkeypatch, out) -> None:
    """Every rename that puts a results file in place follows a flush of the new copy: a
    power loss right after the run cannot leave an empty or partial file under the name."""
    monkeypatch.chdir(d)
    events: list[str] = []
    real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    targets = {Path(p).name for p in cli_files.results_paths(out)}

    def renaming(real):
        def rename(src, dst, *a, **kw):
            if Path(dst).name in targets:  # a new copy renamed in (zarr's own renames are not)
                events.append("rename")
            return real(src, dst, *a, **kw)
        return rename

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", renaming(real_replace))
    monkeypatch.setattr(os, "rename", renaming(real_rename))
    written = cli_files.write_results(out, np.arange(6, dtype=np.int64).reshape(3, 2), np.ones((3, 2), np.float32))
    assert written == cli_files.results_paths(out) and all(Path(p).exists() for p in written)
    assert events.count("rename") == len(written), events
    last = 0
    for i in [i for i, e in enumerate(events) if e == "rename"]:  # each new copy was flushed before it was renamed in
        assert "fsync" in events[last:i], events
        last = i + 1


def test_a_results_copy_a_failed_write_left_goes_with_the_next_write(tmp_path) -> None:
    """zarr's writer threads may make a failed results write's copy again after the write
    removed it; the next write of the results removed no such copy (one per failure stayed)."""
    from hnsw_numba.io.localfiles import release_tmp, tmp_name

    out = tmp_path / "res.zarr"
    stray = tmp_name(out)
    release_tmp(stray)  # no write of this process uses it: as the writer threads leave it
    (stray / "keys").mkdir(parents=True)
    cli_files.write_results(str(out), np.zeros((2, 1), np.int64), np.zeros((2, 1), np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res.zarr"]


def test_a_swallowed_ctrl_c_stops_the_build_before_it_writes(d, capsys, monkeypatch) -> None:
    """A Ctrl-C whose KeyboardInterrupt a ctypes callback swallowed (Numba's compiler reports
    to llvmlite through one) leaves its mark (``common.INTERRUPTED``): the build stops before
    its write, status 130, and the index it would replace is kept.

    Fails before the mark: the build ran on and ``--overwrite`` replaced the index (status 0).
    """
    import signal

    monkeypatch.chdir(d)
    assert cli.main(["build", "x.npy", "--out", "keep.zarr", "-q"]) == 0
    before = (d / "keep.zarr" / "zarr.json").read_bytes()  # a save_id: every save differs
    real = hn.Hnsw.insert_batch

    def swallowed(self, *args, **kwargs):
        try:
            common.on_sigint(signal.SIGINT, None)
        except KeyboardInterrupt:
            pass  # as a ctypes callback drops it
        return real(self, *args, **kwargs)

    monkeypatch.setattr(hn.Hnsw, "insert_batch", swallowed)
    rc, _, _ = call(capsys, "build", "x.npy", "--out", "keep.zarr", "--overwrite", "-q")
    assert rc == 130 and (d / "keep.zarr" / "zarr.json").read_bytes() == before


def test_search_refuses_an_index_whose_vectors_are_damaged(d, capsys, monkeypatch, tmp_path) -> None:
    """A byte of a vector flipped in the saved chunk: ``search`` fails with one line naming
    the checksum (status 1) instead of answering from the damaged row.

    Fails before: search mapped the vectors unverified and answered (status 0).
    """
    import shutil

    monkeypatch.chdir(tmp_path)
    shutil.copytree(d / "idx.zarr", tmp_path / "bad.zarr")
    chunk = next(p for p in (tmp_path / "bad.zarr" / "vectors" / "data" / "c").rglob("*") if p.is_file())
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    rc, _, err = call(capsys, "search", "bad.zarr", str(d / "q.npy"), "--out", "r")
    assert rc == 1 and "checksum" in err and not [p for p in tmp_path.iterdir() if p.name.startswith("r.")]



@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_ctrl_c_ignored_by_the_parent_stays_ignored(tmp_path) -> None:
    """Started with SIGINT ignored (``cmd &`` in a script), the command keeps ignoring it:
    the build finishes and writes its index.

    Fails when the command installs its own handler regardless: status 130, nothing written.
    """
    import signal
    import time

    x = np.random.default_rng(12).standard_normal((40_000, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    p = subprocess.Popen([sys.executable, "-m", "hnsw_numba", "build", "x.npy", "--out", "ix.zarr", "-q"], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    time.sleep(1.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err.decode()[-2000:]
    assert len(hn.open(tmp_path / "ix.zarr")) == 40_000


def test_pipes_are_refused_at_once_and_a_byte_order_mark_is_no_key(d, capsys, monkeypatch) -> None:
    """A FIFO as input, queries or keys hung for ever (its format sniffed by one open, read by a
    second that waited for a writer gone); a keys file starting with a UTF-8 byte-order mark
    became text keys, the first "\\ufeff0"."""
    monkeypatch.chdir(d)
    os.mkfifo(d / "pipe")
    for args in (["build", "pipe", "--out", "p.zarr"], ["search", "idx.zarr", "pipe", "--k", "3"],
                 ["build", "x.npy", "--keys", "pipe", "--out", "p.zarr"]):
        rc, _, err = call(capsys, *args)  # an open of the pipe would block: the test would hang
        assert rc == 1
        one_error_line(err, "not a regular file")
    with pytest.raises(hn.VectorFileError, match="FIFO"):
        hn.read_vectors(d / "pipe")
    (d / "bom.txt").write_text("\ufeff" + "".join(f"{i}\n" for i in range(N)), encoding="utf-8")
    rc, _, err = call(capsys, "build", "x.npy", "--keys", "bom.txt", "--out", "bom.zarr", "-q")
    assert rc == 0, err
    index = hn.open(d / "bom.zarr")
    assert 0 in index and index.search(np.load(d / "x.npy")[0], k=1)[0].key == 0


def test_build_refuses_an_output_it_cannot_replace_before_building(d, capsys, monkeypatch) -> None:
    """``--overwrite`` onto a folder of other files was refused only after the whole build."""
    monkeypatch.chdir(d)
    (d / "mine").mkdir()
    (d / "mine" / "notes.txt").write_text("mine")
    built = []
    monkeypatch.setattr(commands, "make_index", lambda *a, **k: built.append(1))
    rc, _, err = call(capsys, "build", "x.npy", "--out", "mine", "--overwrite")
    assert rc == 1 and not built
    one_error_line(err, "holds no save")
    assert (d / "mine" / "notes.txt").read_text() == "mine"


def test_an_empty_str_key_is_refused_as_an_empty_line_is(d, capsys, monkeypatch) -> None:
    """"" pads str search results: a .npy of str keys holding it built, and its hits read like padding."""
    monkeypatch.chdir(d)
    np.save(d / "k.npy", np.array([f"k{i}" for i in range(N - 1)] + [""]))
    rc, _, err = call(capsys, "build", "x.npy", "--keys", "k.npy", "--out", "e.zarr")
    assert rc == 1 and not (d / "e.zarr").exists()
    one_error_line(err, "empty string")


# ============================================================================ results that name a directory
@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
@pytest.mark.parametrize("out", ["outdir/", "outdir", "missing/", ".", "outdir/.npy"])
def test_search_refuses_a_directory_as_the_results_prefix(d, capsys, monkeypatch, tmp_path, out, overwrite) -> None:
    """--out naming a directory (an existing one, or a path ending in a separator) is a data
    error naming it and a name to give, before the search: no hidden files inside it
    (outdir/.keys.npy), none beside it (outdir.keys.npy). The name it gives writes the pair."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outdir").mkdir()
    searches: list = []
    real = hn.Hnsw.search_batch
    monkeypatch.setattr(hn.Hnsw, "search_batch", lambda *a, **k: searches.append(1) or real(*a, **k))
    rc, stdout, err = call(capsys, "search", d / "idx.zarr", d / "q.npy", "--out", out, *overwrite, "-q")
    assert rc == 1 and stdout == "" and searches == [], err
    line = one_error_line(err, f"error: {out}: ", "a directory", "--out RESULTS writes", "e.g. --out ")
    assert [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")] == ["outdir"]
    hint = line.rsplit("e.g. --out ", 1)[1]
    if os.path.isdir(os.path.dirname(hint)):
        rc, _, err = call(capsys, "search", d / "idx.zarr", d / "q.npy", "--k", "3", "--out", hint, "-q")
        assert rc == 0, err
        assert np.load(f"{hint}.keys.npy").shape == np.load(f"{hint}.distances.npy").shape == (NQ, 3)


# ============================================================================ queries read once
def test_search_reads_its_queries_once(d, capsys, monkeypatch) -> None:
    """Each query row is read once, checked and searched from that one read: a file that
    changes between reads (or a stream) cannot answer rows other than the checked ones. Here
    a source answers each read with other values; the results are those of the one read."""
    monkeypatch.chdir(d)
    monkeypatch.setattr(common, "SEARCH_BLOCK", 5)
    monkeypatch.setattr(commands, "SEARCH_BLOCK", 5)
    queries = np.load(d / "q.npy")
    reads: list = []
    real_open = cli_files.open_vectors

    def open_changing(spec: str, default: str = "train"):
        src = real_open(spec, default)
        real_read = src.read

        def read(start: int = 0, stop: int | None = None, **kw):
            rows = real_read(start, stop, **kw)
            reads.append((start, rows.shape[0]))
            return rows + 10.0 * (len(reads) - 1)  # every later read of the file answers other rows

        src.read = read
        return src

    monkeypatch.setattr(cli_files, "open_vectors", open_changing)
    rc, _, err = call(capsys, "search", "idx.zarr", "q.npy", "--k", "3", "--exact", "--out", "once", "-q")
    assert rc == 0, err
    assert sorted(reads) == [(0, 5), (5, 5), (10, NQ - 10)], reads
    index, store = hn.load(d / "idx.zarr")
    offsets = np.repeat(10.0 * np.arange(3), [5, 5, NQ - 10])[:, None]
    expected, _ = index.search_batch(store, (queries + offsets).astype(np.float32), 3, exact=True)
    assert np.load("once.keys.npy").tolist() == expected.tolist()
