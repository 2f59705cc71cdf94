"""The VectorStore contract, run for every store type (f32, f16, bf16, Qi8).

``StoreContract`` holds the tests every store must pass; one subclass per store type says
how to build it and what a stored vector should look like. Type-specific checks (range
limits of the half-width types, malformed Qi8 batches) live in the subclasses.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import hnsw_numba as hn
from hnsw_numba.core.store_base import float32_array, value_limit, within_limit
from hnsw_numba.kernels.layout import BF16Rows, F16Rows, F32Rows, Qi8Rows, WalkRows

DIM = 12
BF16 = np.dtype(ml_dtypes.bfloat16)


def snapshot(store) -> list[np.ndarray]:
    """Copies of everything a store holds (to prove a failed call changed nothing)."""
    return [np.array(a, copy=True) for a in store.rows()] + [store.written.copy()]


def assert_unchanged(store, before: list[np.ndarray]) -> None:
    after = snapshot(store)
    assert len(after) == len(before)
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)


class StoreContract:
    """Tests of the VectorStore protocol; subclasses set the store type."""

    kind: str = ""
    rows_type: type = F32Rows
    metric = hn.L2()
    wrong_metric = hn.L2Qi8()

    # -- per type --------------------------------------------------------------------
    def new(self, n: int = 10):
        raise NotImplementedError

    def expected(self, x: np.ndarray) -> np.ndarray:
        """What ``vector(i)`` holds after writing the float32 row ``x``, as float32."""
        raise NotImplementedError

    def as_float(self, v) -> np.ndarray:
        return np.asarray(v, np.float32)

    def check_dtype(self, v) -> None:
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------------
    @staticmethod
    def data(n: int = 4, seed: int = 0) -> np.ndarray:
        return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)

    def put(self, store, ids, x) -> None:
        store.write(np.asarray(ids, np.int32), store.encode(x))

    # -- the contract ------------------------------------------------------------------
    def test_satisfies_the_protocol(self) -> None:
        store = self.new()
        assert isinstance(store, hn.VectorStore)
        assert store.dim == DIM and store.max_nodes == 10 and store.kind == self.metric.store_kind
        rows = store.rows()
        assert type(rows) is self.rows_type
        for arr in rows:
            assert isinstance(arr, np.ndarray) and arr.flags.c_contiguous and arr.shape[0] == store.max_nodes

    def test_unwritten_and_out_of_range_rows_are_none(self) -> None:
        store = self.new()
        assert store.vector(0) is None and store.vector(9) is None
        assert store.vector(-1) is None and store.vector(10) is None

    def test_write_read_round_trip(self) -> None:
        store = self.new()
        x = self.data()
        self.put(store, [0, 3, 4, 9], x)
        for i, row in zip([0, 3, 4, 9], x):
            v = store.vector(i)
            self.check_dtype(v)
            np.testing.assert_array_equal(self.as_float(v), self.expected(row))
        assert store.vector(1) is None
        # vector() returns a copy: changing it does not touch the store
        v = store.vector(0)
        before = snapshot(store)
        (v.data if isinstance(v, hn.Qi8) else v)[:] = 0
        assert_unchanged(store, before)

    @pytest.mark.parametrize("src", ["float64", "float16", "bfloat16", "int64", "list"])
    def test_dtype_conversion_on_write(self, src) -> None:
        store = self.new()
        x = np.round(self.data() * 4) / 4  # exact in every source type
        given = x.tolist() if src == "list" else x.astype(BF16 if src == "bfloat16" else src)
        if src == "int64":
            x = x.astype(np.int64).astype(np.float32)
        self.put(store, [0, 1, 2, 3], given)
        for i in range(4):
            self.check_dtype(store.vector(i))
            np.testing.assert_array_equal(self.as_float(store.vector(i)), self.expected(x[i]))

    def test_overwrite_replaces_the_row(self) -> None:
        store = self.new()
        x = self.data(2)
        self.put(store, [5], x[:1])
        self.put(store, [5], x[1:])
        np.testing.assert_array_equal(self.as_float(store.vector(5)), self.expected(x[1]))

    @pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
    def test_non_finite_input_is_refused_and_nothing_stored(self, bad) -> None:
        store = self.new()
        self.put(store, [0], self.data(1))
        before = snapshot(store)
        x = self.data(3)
        x[2, 5] = bad
        with pytest.raises(hn.InvalidVectorError, match="vector 2"):
            store.encode(x)
        assert_unchanged(store, before)

    @pytest.mark.parametrize("shape", [(3, DIM + 1), (DIM,), (2, 3, DIM), (0, DIM - 1)])
    def test_wrong_shape_is_refused(self, shape) -> None:
        store = self.new()
        with pytest.raises(hn.DimensionMismatchError):
            store.encode(np.zeros(shape, np.float32))

    @pytest.mark.parametrize("bad", [[[1.0] * DIM, [1.0]], [["1"] * DIM], np.full((1, DIM), 1 + 2j), np.zeros((1, DIM), "datetime64[D]"),
                                     {"a": 1}, "abc"], ids=["ragged", "text", "complex", "datetime", "dict", "str"])
    def test_input_that_is_not_real_numbers_is_refused(self, bad) -> None:
        store = self.new()
        before = snapshot(store)
        with pytest.raises(hn.InvalidVectorError):  # NumPy would parse text, drop imaginary parts, count ticks
            store.encode(bad)
        assert_unchanged(store, before)

    def test_bad_write_changes_nothing(self) -> None:
        store = self.new()
        x = self.data(3)
        self.put(store, [0], x[:1])
        before = snapshot(store)
        enc = store.encode(x)
        with pytest.raises(hn.CapacityError):
            store.write(np.array([1, 2, 10], np.int32), enc)  # last id is past the end
        with pytest.raises(hn.CapacityError):
            store.write(np.array([-1, 2, 3], np.int32), enc)
        with pytest.raises(hn.DimensionMismatchError):
            store.write(np.array([1, 2], np.int32), enc)  # 2 ids, 3 rows
        # NumPy would read these as other rows than meant: a mask, parsed text, truncated floats
        for ids in (np.array([True, False, True]), np.array(["1", "2", "3"]), [1.9, 2.2, 3.5], None, 7):
            with pytest.raises(hn.InvalidParameterError):
                store.write(ids, enc)
        with pytest.raises(hn.InvalidParameterError, match="repeat"):
            store.write(np.array([4, 2, 4], np.int64), enc)
        assert_unchanged(store, before)
        store.write(range(4, 7), enc)  # a range, a list: integers either way
        store.write([7, 9, 8], enc)

    def test_resize_keeps_rows_and_refuses_to_drop_written_ones(self) -> None:
        store = self.new()
        x = self.data(2)
        self.put(store, [1, 7], x)
        store.resize(30)
        assert store.max_nodes == 30 and store.rows()[0].shape[0] == 30
        np.testing.assert_array_equal(self.as_float(store.vector(7)), self.expected(x[1]))
        assert store.vector(20) is None
        with pytest.raises(hn.CapacityError):
            store.resize(5)
        store.resize(8)
        np.testing.assert_array_equal(self.as_float(store.vector(1)), self.expected(x[0]))

    def test_memory_report_adds_up(self) -> None:
        store = self.new(100)
        rep = store.memory_report()
        assert rep["total"] == store.nbytes == sum(a.nbytes for a in store.rows()) + store.written.nbytes
        assert rep["total"] == sum(v for k, v in rep.items() if k not in ("total", "per_vector"))
        assert rep["per_vector"] == store.bytes_per_vector
        # nbytes is what the arrays really hold, per row: payload + the 1-byte written flag
        assert store.nbytes == 100 * (store.bytes_per_vector + 1)

    def test_metric_of_the_wrong_store_type_fails_at_the_first_call(self) -> None:
        store = self.new()
        before = snapshot(store)
        idx = hn.Hnsw(self.wrong_metric, hn.HnswConfig(dim=DIM, max_nodes=10))
        with pytest.raises(hn.MetricMismatchError, match="store"):
            idx.insert_batch(store, [1, 2], self.data(2))
        with pytest.raises(hn.MetricMismatchError):
            idx.search(store, self.data(1)[0], 1)
        with pytest.raises(hn.MetricMismatchError):
            idx.search_batch(store, self.data(2), 1)
        assert len(idx) == 0 and idx.node_count == 0
        assert_unchanged(store, before)

    def test_an_index_over_the_store_works(self) -> None:
        store = self.new(50)
        x = self.data(40, seed=3)
        idx = hn.Hnsw(self.metric, hn.HnswConfig(dim=DIM, max_nodes=50, m=4, seed=1))
        idx.insert_batch(store, np.arange(40), x)
        keys, _ = idx.search_batch(store, x[:5], 1)
        assert keys[:, 0].tolist() == [0, 1, 2, 3, 4]
        idx.check_integrity()


class FloatStoreContract(StoreContract):
    dtype: np.dtype = np.dtype(np.float32)

    def new(self, n: int = 10):
        return hn.InMemoryVectorStore(DIM, n, dtype=self.kind)

    def expected(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float32).astype(self.dtype).astype(np.float32)

    def check_dtype(self, v) -> None:
        assert isinstance(v, np.ndarray) and v.dtype == self.dtype and v.shape == (DIM,)

    def test_encoded_rows_of_another_type_are_refused(self) -> None:
        store = self.new()
        before = snapshot(store)
        wrong = np.zeros((1, DIM), np.float64)
        with pytest.raises(hn.InvalidVectorError):
            store.write(np.array([0], np.int32), wrong)
        with pytest.raises(hn.InvalidVectorError):
            store.write(np.array([0], np.int32), store.encode(np.zeros((1, DIM)))[:, :-1])
        assert_unchanged(store, before)

    @pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
    def test_encoded_rows_with_nan_or_inf_are_refused(self, bad: str) -> None:
        store = self.new()
        store.write(np.array([0], np.int32), store.encode(self.data(1)))
        before = snapshot(store)
        enc = store.encode(self.data(3, seed=1))
        # the bits of the bad value in the storage type (float16 and bfloat16 rows are uint16)
        enc[2, 1] = np.array([float(bad)], np.float32).astype(self.dtype).view(enc.dtype)[0]
        with pytest.raises(hn.InvalidVectorError, match="vector 2 contains NaN or inf"):
            store.write(np.array([1, 2, 3], np.int32), enc)
        assert_unchanged(store, before)

    def test_the_dtype_is_named_by_type_or_string(self) -> None:
        for spec in (self.kind, self.dtype, self.dtype.type):
            assert hn.InMemoryVectorStore(DIM, 2, dtype=spec).dtype == self.dtype
        with pytest.raises(hn.InvalidParameterError):
            hn.InMemoryVectorStore(DIM, 2, dtype="float64")


class TestFloat32Store(FloatStoreContract):
    kind = "float32"
    rows_type = F32Rows


def test_from_array_refuses_rows_a_search_cannot_rank() -> None:
    data = np.ones((5, DIM), np.float32)
    data[3, 1] = np.nan
    with pytest.raises(hn.InvalidVectorError, match="vector 3"):
        hn.InMemoryVectorStore.from_array(data)
    assert hn.InMemoryVectorStore.from_array(data, check=False).data is data  # a caller that checks itself
    bits = np.ones((5, DIM), np.float16)
    bits[4, 0] = np.inf
    with pytest.raises(hn.InvalidVectorError, match="vector 4"):
        hn.InMemoryVectorStore.from_array(bits.view(np.uint16), dtype="float16")


@pytest.mark.parametrize("kind", ["float32", "bfloat16"])
def test_rows_whose_distances_would_overflow_are_refused(kind) -> None:
    store = hn.InMemoryVectorStore(DIM, 4, dtype=kind)
    x = np.zeros((2, DIM), np.float32)
    x[1, 0] = 1e20  # finite in float32 and bfloat16, beyond sqrt(FLT_MAX / (4 * 12))
    with pytest.raises(hn.InvalidVectorError, match="vector 1 .*overflow"):
        store.encode(x)  # refused up front, by the check a write applies
    with pytest.raises(hn.InvalidVectorError, match="vector 1 .*overflow"):
        store.write(np.array([0, 1]), x if kind == "float32" else x.astype(ml_dtypes.bfloat16).view(np.uint16))
    assert not store.written.any()
    qi8 = hn.InMemoryQi8VectorStore(DIM, 4)
    with pytest.raises(hn.InvalidVectorError, match="overflow"):
        qi8.write(np.array([0]), (np.ones((1, DIM), np.int8), np.array([1e35], np.float32), np.zeros(1, np.int8)))


class TestFloat32WalkCopyStore(FloatStoreContract):
    kind = "float32"
    rows_type = WalkRows

    def new(self, n: int = 10):
        return hn.InMemoryVectorStore(DIM, n, walk_copy=True)


class TestFloat16Store(FloatStoreContract):
    kind = "float16"
    dtype = np.dtype(np.float16)
    rows_type = F16Rows

    def test_half_the_bytes_of_float32(self) -> None:
        f32 = hn.InMemoryVectorStore(384, 1000)
        half = hn.InMemoryVectorStore(384, 1000, dtype=self.kind)
        assert half.bytes_per_vector * 2 == f32.bytes_per_vector == 4 * 384
        assert half.memory_report()["vectors"] * 2 == f32.memory_report()["vectors"]

    def test_values_beyond_the_type_range_are_refused(self) -> None:
        store = self.new()
        before = snapshot(store)
        x = self.data(2)
        x[1, 0] = 65504.0
        store.encode(x)  # the largest finite float16 is fine
        x[1, 0] = 65520.0  # rounds to inf in float16
        with pytest.raises(hn.InvalidVectorError, match="vector 1 .*range of float16"):
            store.encode(x)
        assert_unchanged(store, before)


class TestBFloat16Store(TestFloat16Store):
    kind = "bfloat16"
    dtype = BF16
    rows_type = BF16Rows

    def test_values_beyond_the_type_range_are_refused(self) -> None:
        store = self.new()
        x = self.data(2)
        x[0, 0] = 1e18  # far past float16's range, within the distances' float32 limit
        x[0, 1] = 1e-40  # subnormal: kept (bfloat16 has float32's exponent range)
        store.write(np.array([0, 1], np.int32), store.encode(x))
        assert self.as_float(store.vector(0))[0] == float(np.float32(1e18).astype(BF16))
        x[0, 0] = float(ml_dtypes.finfo(BF16).max)  # a bfloat16, but its distances overflow float32
        with pytest.raises(hn.InvalidVectorError, match="overflow"):
            store.write(np.array([0, 1], np.int32), store.encode(x))
        before = snapshot(store)
        x[1, 0] = np.finfo(np.float32).max  # rounds to inf in bfloat16
        with pytest.raises(hn.InvalidVectorError, match="vector 1 .*range of bfloat16"):
            store.encode(x)
        assert_unchanged(store, before)


class TestQi8Store(StoreContract):
    kind = "qi8"
    rows_type = Qi8Rows
    metric = hn.L2Qi8()
    wrong_metric = hn.L2()

    def new(self, n: int = 10):
        return hn.InMemoryQi8VectorStore(DIM, n)

    def expected(self, x: np.ndarray) -> np.ndarray:
        return hn.quantize_qi8(np.asarray(x, np.float32)).dequantize()

    def as_float(self, v) -> np.ndarray:
        return v.dequantize()

    def check_dtype(self, v) -> None:
        assert isinstance(v, hn.Qi8) and v.data.dtype == np.int8 and v.data.shape == (DIM,)
        assert isinstance(v.scale, float) and isinstance(v.zero_point, int)

    def test_a_quarter_of_float32_plus_scale_and_zero_point(self) -> None:
        f32 = hn.InMemoryVectorStore(384, 1000)
        q = hn.InMemoryQi8VectorStore(384, 1000)
        rep = q.memory_report()
        assert rep["codes"] * 4 == f32.memory_report()["vectors"]
        assert rep["scale"] == 4 * 1000 and rep["zero_point"] == 1 * 1000
        assert q.bytes_per_vector == 384 + 4 + 1

    def test_qi8_batches_are_stored_as_given(self) -> None:
        store = self.new()
        qb = hn.quantize_qi8(self.data(3) * 7)
        store.write(np.array([2, 4, 6], np.int32), store.encode(qb))
        for i, nid in enumerate([2, 4, 6]):
            v = store.vector(nid)
            np.testing.assert_array_equal(v.data, qb.data[i])
            assert v.scale == float(qb.scale[i]) and v.zero_point == int(qb.zero_point[i])
        one = hn.quantize_qi8(self.data(1)[0])
        store.write(np.array([0], np.int32), store.encode(one))
        np.testing.assert_array_equal(store.vector(0).data, one.data)

    @pytest.mark.parametrize(
        "parts, exc",
        [
            (lambda c, s, z: (c.astype(np.int16), s, z), hn.InvalidVectorError),  # wrong code dtype
            (lambda c, s, z: (c.astype(np.float32), s, z), hn.InvalidVectorError),
            (lambda c, s, z: (c[:, :-1], s, z), hn.DimensionMismatchError),  # wrong dim
            (lambda c, s, z: (c[0], s, z), hn.DimensionMismatchError),  # 1-D codes
            (lambda c, s, z: (c, s[:-1], z), hn.DimensionMismatchError),
            (lambda c, s, z: (c, s, z[:, None]), hn.DimensionMismatchError),
            (lambda c, s, z: (c, np.where(np.arange(3) == 1, 0.0, s), z), hn.InvalidVectorError),  # scale 0
            (lambda c, s, z: (c, -s, z), hn.InvalidVectorError),
            (lambda c, s, z: (c, np.where(np.arange(3) == 2, np.nan, s), z), hn.InvalidVectorError),
            (lambda c, s, z: (c, np.where(np.arange(3) == 2, np.inf, s), z), hn.InvalidVectorError),
            (lambda c, s, z: (c, s.astype(np.float64) * 1e300, z), hn.InvalidVectorError),  # inf as float32
            (lambda c, s, z: (c, s, z.astype(np.int16) + 200), hn.InvalidVectorError),  # zero point > 127
            (lambda c, s, z: (c, s, z.astype(np.float32) + 0.5), hn.InvalidVectorError),  # not an integer
            (lambda c, s, z: (c, s), hn.InvalidVectorError),
        ],
        ids=["int16-codes", "float-codes", "dim", "1-d", "scale-len", "zero-shape", "scale-0", "scale-neg",
             "scale-nan", "scale-inf", "scale-f32-overflow", "zero-range", "zero-fraction", "two-parts"],
    )
    def test_malformed_qi8_rows_are_refused_and_nothing_stored(self, parts, exc) -> None:
        store = self.new()
        self.put(store, [0], self.data(1))
        before = snapshot(store)
        codes, scale, zero = store.encode(self.data(3, seed=1))
        with pytest.raises(exc):
            store.write(np.array([1, 2, 3], np.int32), parts(codes, scale, zero))
        assert_unchanged(store, before)

    @pytest.mark.parametrize(
        "make, exc",
        [
            (lambda: hn.Qi8(np.zeros(DIM, np.uint8), 1.0, 0), hn.InvalidVectorError),
            (lambda: hn.Qi8(np.zeros((1, DIM), np.int8), 1.0, 0), hn.DimensionMismatchError),
            (lambda: hn.Qi8(np.zeros(DIM, np.int8), 0.0, 0), hn.InvalidVectorError),
            (lambda: hn.Qi8(np.zeros(DIM, np.int8), 1e-50, 0), hn.InvalidVectorError),  # 0 as float32
            (lambda: hn.Qi8(np.zeros(DIM, np.int8), float("nan"), 0), hn.InvalidVectorError),
            (lambda: hn.Qi8(np.zeros(DIM, np.int8), 1.0, -129), hn.InvalidVectorError),
            (lambda: hn.Qi8Batch(np.zeros((2, DIM), np.int8), np.ones(2), np.array([0, 300])), hn.InvalidVectorError),
            (lambda: hn.Qi8Batch(np.zeros((2, DIM), np.int8), np.ones(2), np.array([0.0, np.nan])), hn.InvalidVectorError),
        ],
    )
    def test_malformed_qi8_objects_are_refused(self, make, exc) -> None:
        with pytest.raises(exc):
            make()

    def test_qi8_of_the_wrong_dim_is_refused_by_store_and_index(self) -> None:
        store = self.new()
        before = snapshot(store)
        wrong = hn.quantize_qi8(np.ones((2, DIM + 1), np.float32))
        with pytest.raises(hn.DimensionMismatchError):
            store.encode(wrong)
        idx = hn.Hnsw(self.metric, hn.HnswConfig(dim=DIM, max_nodes=10))
        with pytest.raises(hn.DimensionMismatchError):
            idx.insert_batch(store, [1, 2], wrong)
        with pytest.raises(hn.DimensionMismatchError):
            idx.insert(store, 1, wrong[0])
        assert_unchanged(store, before)
        assert len(idx) == 0

    def test_from_arrays_validates(self) -> None:
        codes = np.zeros((3, DIM), np.int8)
        store = hn.InMemoryQi8VectorStore.from_arrays(codes, np.ones(3, np.float32), np.array([0, -128, 127], np.int8))
        assert store.rows().codes is codes and store.vector(2).zero_point == 127
        with pytest.raises(hn.InvalidVectorError):
            hn.InMemoryQi8VectorStore.from_arrays(codes, np.array([1, 0, 1], np.float32), np.zeros(3, np.int8))
        with pytest.raises(hn.InvalidVectorError):
            hn.InMemoryQi8VectorStore.from_arrays(codes, np.ones(3, np.float32), np.array([0, 0, 128]))
        with pytest.raises(hn.DimensionMismatchError):
            hn.InMemoryQi8VectorStore.from_arrays(codes, np.ones(2, np.float32), np.zeros(3, np.int8))


def test_a_float64_value_past_float32_is_named_as_such() -> None:
    """A finite float64 1e39 became inf in the conversion and was reported as NaN or inf."""
    index = hn.Index(4, metric="l2")
    index.add(np.ones((3, 4)))
    for call in (lambda: index.search(np.array([1e39, 0, 0, 0]), k=1), lambda: index.add([[1.0, 1, 1, 1], [0, 0, -1e39, 0]]),
                 lambda: index.search(np.array([[1.0, 1, 1, 1], [1e39, 0, 0, 0]]), k=1)):
        with pytest.raises(hn.InvalidVectorError, match=r"vector [01] has a value beyond float32's range"):
            call()
    assert len(index) == 3


@pytest.mark.parametrize("ids, named", [(np.array([2**63], np.uint64), str(2**63)), (np.array([-5, 3]), "-5"),
                                        (np.array([3, 12]), "12")])
def test_a_nodeid_outside_the_store_is_named_as_given(ids: np.ndarray, named: str) -> None:
    """A uint64 NodeId past int64 was named wrapped (-9223372036854775808), and a negative one
    beside a valid one was reported as the valid one (the largest)."""
    store = hn.InMemoryVectorStore(4, 10)
    with pytest.raises(hn.CapacityError, match=f"NodeId {named} does not fit"):
        store.write(ids, store.encode(np.ones((ids.shape[0], 4), np.float32)))
    assert not store.written.any()


def _past_once_stored(dim: int, kind: str) -> np.ndarray:
    """A float32 row within value_limit that the store of ``kind`` keeps past it: bfloat16
    rounds the largest float32 within the limit up (to 2**63 at dim 1); Qi8 reads ``-L`` of
    ``[L, -L]`` back as about ``-1.004 L``."""
    lim = value_limit(dim)
    if kind == "bfloat16":
        x = np.float32(lim)
        while float(x) > lim:
            x = np.nextafter(x, np.float32(0))
        return np.full(dim, x, np.float32)
    big = np.float32(lim * 0.999)
    return np.array([big, -big] * (dim // 2), np.float32)


@pytest.mark.parametrize("kind, dim, change", [("bfloat16", 1, "rounded to bfloat16"), ("qi8", 2, "quantized to int8")])
def test_encode_refuses_rows_the_write_refuses_as_stored(kind: str, dim: int, change: str) -> None:
    """encode passed a row within the limit as given but past it as stored, which the write
    then refused: an index validating through encode changed rows before the write failed."""
    store = hn.InMemoryQi8VectorStore(dim, 4) if kind == "qi8" else hn.InMemoryVectorStore(dim, 4, dtype=kind)
    rows = np.stack([np.ones(dim, np.float32), _past_once_stored(dim, kind)])
    assert within_limit(rows).all()
    with pytest.raises(hn.InvalidVectorError, match=f"vector 1 has a component beyond .* once {change} \\(within it as given\\)"):
        store.encode(rows)
    store.write(np.array([0]), store.encode(rows[:1]))  # the row within the limit as stored: taken
    assert store.written.tolist() == [1, 0, 0, 0]


def test_a_normalising_metric_keeps_the_direction_of_wide_rows() -> None:
    """float64 rows of 1e-50 became zero vectors in the float32 conversion (every cosine
    distance 1.0), and rows of 1e50 were refused, though cosine compares directions only."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, DIM))
    unit = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    for scale in (1e-50, 1e50, 1.0):
        got = hn.Cosine().prepare(x * scale)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, unit, atol=1e-6)
        want = x / np.abs(x).max(1, keepdims=True) if scale != 1 else x  # rows float32 holds: converted as they are
        np.testing.assert_array_equal(float32_array(x * scale, unit=True), want.astype(np.float32))
    wide = np.array([[np.nan, 1.0], [np.inf, 1.0]])
    assert not np.isfinite(hn.Cosine().prepare(wide)).all(axis=1).any()  # NaN and inf rows stay non-finite: refused after
    f32 = rng.standard_normal((4, DIM)).astype(np.float32)
    assert float32_array(f32, unit=True) is f32  # float32 rows: no copy
    assert (hn.L2().prepare(np.full((1, DIM), 1e-50)) == 0).all()  # L2 keeps magnitudes: rounded as float32 rounds them


def _masked_rows(x: np.ndarray, row: int) -> np.ndarray:
    """``x`` as a masked array whose row ``row`` is masked, its hidden values far from the rest."""
    m = np.ma.masked_array(x.copy(), mask=np.zeros(x.shape, bool))
    m.data[row], m.mask[row] = 999.0, True
    return m


def test_masked_vectors_are_refused_by_the_index_and_exact_search() -> None:
    """np.asarray drops a mask: the index stored the hidden values of masked rows, answered a
    query whose every component was masked, and exact_neighbors returned a masked data row.
    Each raises InvalidVectorError and changes nothing; nothing masked reads as the data."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((30, DIM)).astype(np.float32)
    idx = hn.Index(DIM, metric="l2", seed=1)
    idx.add(x[:20])
    masked = _masked_rows(x[20:], 5)
    gone = np.ma.masked_array(x[:2], mask=True)
    for call in (lambda: idx.add(masked), lambda: idx.add(list(range(100, 110)), masked), lambda: idx.set(list(range(100, 110)), masked),
                 lambda: idx.add(200, gone[0]), lambda: idx.set(3, gone[0]), lambda: idx.add([gone[0], x[0]]),
                 lambda: idx.native[0].insert_batch(idx.native[1], np.arange(100, 110), masked)):
        with pytest.raises(hn.InvalidVectorError, match="vectors: a masked array with"):
            call()
    assert len(idx) == 20 and sorted(idx.keys()) == list(range(20))
    np.testing.assert_array_equal(idx.get(3), x[3])
    for call in (lambda: idx.search(gone, 3), lambda: idx.search(gone[0], 3), lambda: idx.search(gone[0], 3, exact=True),
                 lambda: idx.search(gone, 3, filter=np.arange(5))):
        with pytest.raises(hn.InvalidVectorError, match=r"vectors: a masked array with \d+ masked entries \(the first in (entry|row) 0\)"):
            call()
    whole = np.ma.masked_array(x[20:], mask=False)
    assert np.array_equal(idx.search(whole, 2)[0], idx.search(x[20:], 2)[0])
    idx.add(whole)
    np.testing.assert_array_equal(idx.get(np.arange(20, 30)), x[20:])
    data = _masked_rows(x, 0)
    with pytest.raises(hn.InvalidVectorError, match=r"data: a masked array with 12 masked entries \(the first in row 0\)"):
        hn.exact_neighbors(data, x[:1], 2)
    with pytest.raises(hn.InvalidVectorError, match="data: a masked array"):
        hn.exact_neighbors(list(data), x[:1], 2)
    with pytest.raises(hn.InvalidVectorError, match="queries: a masked array"):
        hn.exact_neighbors(x, gone, 2)
    np.testing.assert_array_equal(hn.exact_neighbors(np.ma.masked_array(x, mask=False), x[:1], 2)[0], [[0, np.argsort(((x - x[0]) ** 2).sum(1))[1]]])


def test_masked_rows_are_refused_by_the_stores() -> None:
    """InMemoryVectorStore.from_array wrapped a masked array's data, and encode read its hidden
    values: both raise InvalidVectorError, and nothing is written."""
    x = np.random.default_rng(9).standard_normal((6, DIM)).astype(np.float32)
    masked = _masked_rows(x, 2)
    with pytest.raises(hn.InvalidVectorError, match="data: a masked array"):
        hn.InMemoryVectorStore.from_array(masked)
    for store in (hn.InMemoryVectorStore(DIM, 8), hn.InMemoryVectorStore(DIM, 8, dtype="float16"), hn.InMemoryQi8VectorStore(DIM, 8)):
        with pytest.raises(hn.InvalidVectorError, match="vectors: a masked array"):
            store.encode(masked)
        assert not store.written.any()


def test_a_sharded_index_refuses_masked_rows_masked_keys_and_sets_of_keys(tmp_path) -> None:
    """hdask.build read the blocks of a masked dask array as their data (masked rows indexed),
    a sharded delete of masked keys deleted the masked ones too; a set of keys raises
    InvalidKeyError as Index does. Nothing is written."""
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")
    hdask = pytest.importorskip("hnsw_numba.dask")
    x = np.random.default_rng(10).standard_normal((40, DIM)).astype(np.float32)
    with dask.config.set(scheduler="synchronous"):
        with pytest.raises(hn.InvalidVectorError, match="data: a masked array"):
            hdask.build(da.from_array(_masked_rows(x, 25), chunks=20, asarray=False), tmp_path / "m.zarr", metric="l2", n_shards=2)
        assert not (tmp_path / "m.zarr").exists()
        index = hdask.build(da.from_array(np.ma.masked_array(x, mask=False), chunks=20, asarray=False), tmp_path / "s.zarr",
                            metric="l2", n_shards=2, m=8, ef_construction=32)
        names = [s.name for s in index.manifest.shards]
        with pytest.raises(hn.InvalidKeyError, match="keys: a masked array"):
            index.delete(np.ma.masked_array([10, 11], mask=[False, True]))
        with pytest.raises(hn.InvalidVectorError, match="vectors: a masked array"):
            index.set([3, 4], _masked_rows(x[:2], 1))
        for bad in ({10, 11}, frozenset({10})):
            with pytest.raises(hn.InvalidKeyError, match="must be a sequence"):
                index.delete(bad)
            with pytest.raises(hn.InvalidKeyError, match="must be a sequence"):
                index.set(bad, x[:len(bad)])
        with pytest.raises(hn.InvalidKeyError, match="must be a sequence"):
            hdask.build(da.from_array(x[:2], chunks=2), tmp_path / "k.zarr", metric="l2", keys={5, 6})
        masked_keys = da.from_array(np.ma.masked_array(np.arange(40), mask=np.arange(40) == 30), chunks=20, asarray=False)
        with pytest.raises(hn.InvalidKeyError, match="keys: a masked array"):
            hdask.build(da.from_array(x, chunks=20), tmp_path / "mk.zarr", metric="l2", n_shards=2, keys=masked_keys)
        assert [s.name for s in hdask.read_manifest(tmp_path / "s.zarr").shards] == names and len(index) == 40


def test_masked_rows_are_refused_by_tune_ef_and_the_estimator() -> None:
    """tune_ef and HnswTransformer read a masked array's hidden values: both raise InvalidVectorError."""
    x = np.random.default_rng(11).standard_normal((40, DIM)).astype(np.float32)
    masked = _masked_rows(x[:10], 4)
    native = hn.Index(DIM, metric="l2", seed=1)
    native.add(x)
    with pytest.raises(hn.InvalidVectorError, match="queries: a masked array"):
        hn.tune_ef(*native.native, masked, 3)
    sk = pytest.importorskip("hnsw_numba.sklearn")
    with pytest.raises(hn.InvalidVectorError, match="X: a masked array"):
        sk.HnswTransformer(n_neighbors=3).fit(_masked_rows(x, 7))
    fitted = sk.HnswTransformer(n_neighbors=3).fit(np.ma.masked_array(x, mask=False))
    with pytest.raises(hn.InvalidVectorError, match="X: a masked array"):
        fitted.transform(masked)
    with pytest.raises(hn.InvalidVectorError, match="X: a masked array"):
        fitted.kneighbors(masked)


def test_a_masked_array_given_as_a_vector_source_is_refused() -> None:
    """add_from and VectorSource read the values hidden under a mask (as np.asarray does)."""
    x = np.random.default_rng(9).standard_normal((30, DIM)).astype(np.float32)
    masked = _masked_rows(x, 3)
    idx = hn.Index(DIM, metric="l2", seed=1)
    with pytest.raises(hn.InvalidVectorError, match="source: a masked array with"):
        idx.add_from(masked)
    with pytest.raises(hn.VectorFileError, match="a masked array with"):
        hn.VectorSource(masked)
    assert len(idx) == 0
    idx.add_from(np.ma.masked_array(x, mask=False))
    np.testing.assert_array_equal(idx.get(np.arange(30)), x)
