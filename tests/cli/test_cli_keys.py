"""Keys through the command line: key files name every key the index can hold (ints past int64
too, only ASCII digit lines as ints), build checks them before building, and search results hold
the keys the index gave or are refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

import hnsw_numba as hn
from hnsw_numba.cli import commands
from conftest import cli_call as call


@pytest.fixture()
def d(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    x = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "q.npy", x)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def saved(d: Path, keys: list | np.ndarray) -> str:
    """An index of ``keys`` (the first rows of x.npy) saved as ``i.zarr``."""
    index = hn.Index(4, "l2", seed=0)
    index.add(keys, np.load(d / "x.npy")[: len(keys)])
    index.save(d / "i.zarr")
    return "i.zarr"


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("hnsw-numba: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("keys", [["a\x00", "b"], ["\x00", "b"], ["", "b"], [1, "1", "b"]])
@pytest.mark.parametrize("out", ["r", "r.zarr"])
def test_search_refuses_result_keys_a_file_would_change(d, capsys, keys, out) -> None:
    """NumPy's unicode drops trailing NULs ('\\x00' would read as the padding ''), '' is the padding,
    and int 1 and str '1' both write '1': refused before anything is written."""
    rc, _, err = call(capsys, "search", saved(d, keys), "q.npy", "--k", "2", "--out", out, "-q")
    line = error_line(err)
    assert rc == 1 and ("cannot be written" in line or "are both in the index" in line), line
    assert not list(d.glob("r*"))


def test_search_keeps_str_keys_it_can_write_and_refuses_twins_on_stdout(d, capsys) -> None:
    """Inner NULs and ints that no str key reads as are written as they are; int 1 beside str '1'
    prints the same on stdout: refused there too, before any row."""
    saved(d, ["a\x00b", 7, "c"])
    assert call(capsys, "search", "i.zarr", "q.npy", "--k", "1", "--out", "r.zarr", "-q")[0] == 0
    assert zarr.open_group(str(d / "r.zarr"), mode="r")["keys"][...][:3, 0].tolist() == ["a\x00b", "7", "c"]
    saved(d, [1, "1"])
    rc, out, err = call(capsys, "search", "i.zarr", "q.npy", "--k", "1", "-q")
    assert rc == 1 and out == "" and "int key 1 and str key '1' are both in the index" in error_line(err)


def test_int_keys_past_int64_are_written_as_uint64(d, capsys) -> None:
    """An index of int keys past int64 (hnswlib's labels) writes uint64 keys padded with 2**64 - 1
    (the padding -1 has no uint64 value); stdout prints no padding rows; 2**64 - 1 itself is refused."""
    saved(d, np.array([0, 5, 2**63], np.uint64))
    for out in ("r", "r.zarr"):
        assert call(capsys, "search", "i.zarr", "q.npy", "--k", "4", "--out", out, "-q")[0] == 0
    got = np.load(d / "r.keys.npy")
    assert got.dtype == np.uint64 and got[0].tolist() == [0, 5, 2**63, 2**64 - 1]
    assert zarr.open_group(str(d / "r.zarr"), mode="r")["keys"][...].tolist() == got.tolist()
    rc, out, _ = call(capsys, "search", "i.zarr", "q.npy", "--k", "4", "-q")
    rows = [ln.split("\t") for ln in out.splitlines()[1:]]
    assert rc == 0 and len(rows) == 15 and "9223372036854775808" in [r[2] for r in rows] and "-1" not in [r[2] for r in rows]
    saved(d, np.array([0, 2**64 - 1], np.uint64))
    rc, _, err = call(capsys, "search", "i.zarr", "q.npy", "--k", "1", "--out", "p", "-q")
    assert rc == 1 and "key 18446744073709551615 cannot be written" in error_line(err) and not list(d.glob("p*"))


def test_stdout_escapes_tabs_and_line_breaks_in_keys(d, capsys) -> None:
    """Each result is one line of four tab-separated fields; the key's backslashes, tabs and line
    breaks are escaped as Python writes them."""
    keys = ["a\tb", "c\nd", "e\\f", "g\u2028h", "i\rj"]
    saved(d, keys)
    rc, out, _ = call(capsys, "search", "i.zarr", "q.npy", "--k", "1", "-q")
    rows = [ln.split("\t") for ln in out.split("\n")[1:-1]]
    assert rc == 0 and [len(r) for r in rows] == [4] * 5
    assert [r[2] for r in rows] == ["a\\tb", "c\\nd", "e\\\\f", "g\\u2028h", "i\\rj"]
    assert [r[2].encode().decode("unicode_escape") for r in rows[:3]] == keys[:3]


def test_filter_keys_name_int_keys_past_int64(d, capsys) -> None:
    """--filter-keys from a text line or a uint64 .npy names keys past int64 that the index holds."""
    saved(d, np.array([0, 5, 2**63 + 1], np.uint64))
    (d / "f.txt").write_text(f"{2**63 + 1}\n")
    np.save(d / "f.npy", np.array([2**63 + 1], np.uint64))
    for f in ("f.txt", "f.npy"):
        rc, out, err = call(capsys, "search", "i.zarr", "q.npy", "--k", "1", "--filter-keys", f, "-q")
        assert rc == 0, err
        assert {ln.split("\t")[2] for ln in out.splitlines()[1:]} == {str(2**63 + 1)}


def test_build_keys_past_int64_and_non_ascii_digit_lines(d, capsys) -> None:
    """Keys past int64 build from text and uint64 .npy files; lines of Arabic-Indic or fullwidth
    digits are str keys (int() reads them as 1, 2, 3)."""
    (d / "big.txt").write_text(f"1\n{2**63 + 1}\n{10**30}\n4\n5\n")
    np.save(d / "big.npy", np.array([0, 1, 2, 3, 2**64 - 1], np.uint64))
    (d / "uni.txt").write_text("\u0661\n\u0662\n\uff13\n4\n5\n", encoding="utf-8")
    expect = {"big.txt": [1, 2**63 + 1, 10**30, 4, 5], "big.npy": [0, 1, 2, 3, 2**64 - 1], "uni.txt": ["\u0661", "\u0662", "\uff13", "4", "5"]}
    for f, keys in expect.items():
        rc, _, err = call(capsys, "build", "x.npy", "--out", f"{f}.zarr", "--keys", f, "-q")
        assert rc == 0, err
        assert sorted(hn.open(d / f"{f}.zarr").keys(), key=str) == sorted(keys, key=str)


@pytest.mark.parametrize("lines, needle", [(["1", "-5", "2", "3", "4"], "k.txt: int keys must be >= 0"),
                                           (["1", "2", "9" * 5000, "3", "4"], "k.txt: line 3: an int key of more than 4,000 digits")])
def test_build_refuses_keys_the_index_refuses_before_building(d, capsys, monkeypatch, lines, needle) -> None:
    """A negative key, or a line past the index's digit limit (and Python's int() limit), is a data
    error naming the file before the index is made."""
    (d / "k.txt").write_text("\n".join(lines) + "\n")
    built: list = []
    monkeypatch.setattr(commands, "make_index", lambda *a, **k: built.append(1))
    rc, _, err = call(capsys, "build", "x.npy", "--out", "o.zarr", "--keys", "k.txt")
    assert rc == 1 and needle in error_line(err) and not built and not (d / "o.zarr").exists()
