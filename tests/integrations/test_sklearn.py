"""HnswTransformer: scikit-learn estimator checks and agreement with KNeighborsTransformer."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

from sklearn.manifold import Isomap  # noqa: E402
from sklearn.neighbors import KNeighborsTransformer  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import hnsw_numba as hn  # noqa: E402
from hnsw_numba.sklearn import HnswTransformer, NotFittedError  # noqa: E402

from conftest import clustered  # noqa: E402


# Every check scikit-learn yields passes, so no expected_failed_checks are declared (sparse
# input is declined with the error the checks expect; the array-API checks skip themselves).
@parametrize_with_checks([HnswTransformer(), HnswTransformer(mode="connectivity", metric="cosine", n_neighbors=3)])
def test_sklearn_estimator_checks(estimator, check) -> None:
    check(estimator)


def _same_neighbours(a, b) -> float:
    """Fraction of (row, neighbour) pairs present in both graphs."""
    hits = 0
    for i in range(a.shape[0]):
        hits += len(set(a.indices[a.indptr[i] : a.indptr[i + 1]]) & set(b.indices[b.indptr[i] : b.indptr[i + 1]]))
    return hits / b.nnz


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_matches_kneighbors_transformer(metric, rng) -> None:
    x = clustered(rng, 1500, 20).astype(np.float64)
    q = clustered(rng, 200, 20).astype(np.float64)
    sk_metric = "euclidean" if metric == "sqeuclidean" else metric
    ref = KNeighborsTransformer(n_neighbors=10, metric=sk_metric, algorithm="brute")
    ours = HnswTransformer(n_neighbors=10, metric=metric, ef=200, m=12, ef_construction=100, n_jobs=2, random_state=0)
    for a, b in ((ours.fit_transform(x), ref.fit_transform(x)), (ours.transform(q), ref.transform(q))):
        assert a.shape == b.shape and a.dtype == b.dtype == np.float64
        assert np.all(np.diff(a.indptr) == 11)  # n_neighbors + 1, as scikit-learn
        assert _same_neighbours(a, b) >= 0.98
        vals = a.data.reshape(-1, 11)
        assert np.all(np.diff(vals, axis=1) >= 0)  # rows best first
        if metric == "sqeuclidean":
            vals = np.sqrt(vals)
        # distances agree on rows that found the same neighbours (float32 vs float64)
        same = np.all(a.indices.reshape(-1, 11)[:, 1:] == b.indices.reshape(-1, 11)[:, 1:], axis=1)
        assert same.mean() > 0.8
        np.testing.assert_allclose(vals[same], b.data.reshape(-1, 11)[same], rtol=1e-3, atol=1e-3)
    fitted = ours.fit_transform(x)
    assert np.all(fitted.indices.reshape(-1, 11)[:, 0] == np.arange(1500))  # self first
    # explicit zeros (cosine: 1 - dot of a float32 unit vector with itself, within an ulp)
    assert np.all(np.abs(fitted.data.reshape(-1, 11)[:, 0]) <= 1e-6)


def test_large_fits_are_renumbered_with_the_same_answers(rng, monkeypatch) -> None:
    """From ``READ_MOSTLY_REORDER`` samples the fitted index is renumbered: one thread and one
    seed build the same graph, so the neighbours graph is the same as without renumbering."""
    from hnsw_numba.core import reorder

    x = clustered(rng, 1200, 16)
    params = dict(n_neighbors=8, ef=64, m=8, ef_construction=64, n_jobs=1, random_state=3)
    plain = HnswTransformer(**params).fit(x)
    monkeypatch.setattr(reorder, "READ_MOSTLY_REORDER", 1000)
    renumbered = HnswTransformer(**params).fit(x)
    assert [plain.index_.node_id(i) for i in range(1200)] == list(range(1200))
    assert [renumbered.index_.node_id(i) for i in range(1200)] != list(range(1200))
    for a, b in ((plain.transform(x), renumbered.transform(x)), (plain.transform(x[:50] + 0.01), renumbered.transform(x[:50] + 0.01))):
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.data, b.data)


def test_connectivity_mode_and_dtypes(rng) -> None:
    x = clustered(rng, 300, 8)
    g = HnswTransformer(n_neighbors=4, mode="connectivity").fit_transform(x)
    assert np.all(np.diff(g.indptr) == 4) and g.dtype == np.float32 and np.all(g.data == 1)
    ref = KNeighborsTransformer(n_neighbors=4, mode="connectivity").fit_transform(x.astype(np.float64))
    assert _same_neighbours(g, ref) >= 0.98
    g16 = HnswTransformer(n_neighbors=4, dtype="float16").fit_transform(x.astype(np.float64))
    assert g16.dtype == np.float64 and _same_neighbours(g16, ref) >= 0.95
    walk = HnswTransformer(n_neighbors=4, dtype="float32+float16")
    gw = walk.fit_transform(x)
    exact = KNeighborsTransformer(n_neighbors=4).fit_transform(x.astype(np.float64))
    assert walk.store_.walk_copy
    same = [i for i in range(300) if set(gw[i].indices) == set(exact[i].indices)]
    assert len(same) >= 290
    for i in same:  # the float32 vectors' distances, not the float16 copy's
        np.testing.assert_allclose(np.sort(gw[i].data), np.sort(exact[i].data), rtol=1e-4, atol=1e-4)


def test_isomap_pipeline_matches_exact(rng) -> None:
    from sklearn.datasets import make_swiss_roll

    x, _ = make_swiss_roll(800, random_state=0)
    ours = make_pipeline(HnswTransformer(n_neighbors=10, ef=200, random_state=0), Isomap(n_neighbors=10, n_components=2, metric="precomputed"))
    ref = make_pipeline(KNeighborsTransformer(n_neighbors=10), Isomap(n_neighbors=10, n_components=2, metric="precomputed"))
    a, b = ours.fit_transform(x), ref.fit_transform(x)
    assert a.shape == (800, 2)
    for j in range(2):  # the same embedding up to the sign of each axis
        assert abs(np.corrcoef(a[:, j], b[:, j])[0, 1]) > 0.99


def test_dbscan_on_precomputed_graph(rng) -> None:
    from sklearn.cluster import DBSCAN

    x = np.concatenate([rng.normal(0, 0.1, (100, 3)), rng.normal(5, 0.1, (100, 3))])
    from sklearn.metrics import adjusted_rand_score

    ours = make_pipeline(HnswTransformer(n_neighbors=20), DBSCAN(eps=0.5, min_samples=5, metric="precomputed"))
    ref = make_pipeline(KNeighborsTransformer(n_neighbors=20), DBSCAN(eps=0.5, min_samples=5, metric="precomputed"))
    labels = ours.fit_predict(x)
    assert adjusted_rand_score(labels, ref.fit_predict(x)) == 1.0
    assert labels[0] != labels[100] and labels.min() >= 0  # both blobs found, no noise


def test_pickle_round_trip(rng) -> None:
    x = clustered(rng, 400, 8)
    t = HnswTransformer(n_neighbors=5, metric="cosine", random_state=1).fit(x)
    back = pickle.loads(pickle.dumps(t))
    assert isinstance(back.index_, hn.Hnsw) and len(back.index_) == 400
    assert (back.transform(x[:50]) != t.transform(x[:50])).nnz == 0


def test_bad_parameters_raise_typed_errors(rng) -> None:
    x = clustered(rng, 30, 4)
    for kw in ({"mode": "weights"}, {"metric": "manhattan"}, {"n_neighbors": 0}, {"m": 1},
               {"ef": 0}, {"ef_construction": 0}, {"n_jobs": 0}, {"dtype": "int8"}):
        with pytest.raises(hn.InvalidParameterError):
            HnswTransformer(**kw).fit(x)
    t = HnswTransformer(n_neighbors=30).fit(x)
    with pytest.raises(hn.InvalidParameterError, match="n_neighbors <= n_samples_fit"):
        t.transform(x)
    t = HnswTransformer(n_neighbors=3).fit(x)
    for kw in ({"mode": "bogus"}, {"ef": "x"}, {"n_jobs": "x"}, {"n_neighbors": 2.7}):  # set after the fit: checked by transform
        with pytest.raises(hn.InvalidParameterError):
            t.set_params(**kw).transform(x)
        t.set_params(mode="distance", ef=None, n_jobs=None, n_neighbors=3)
    assert t.transform(x).shape == (30, 30)


def test_a_value_past_float32s_range_is_named_as_such() -> None:
    """A finite float64 1e39 (inf once float32) was reported as NaN or inf, fit and transform."""
    x = np.random.default_rng(0).standard_normal((30, 4))
    bad = x.copy()
    bad[3, 1] = 1e39
    with pytest.raises(hn.InvalidVectorError, match="vector 3 has a value beyond float32's range"):
        HnswTransformer(n_neighbors=3).fit(bad)
    with pytest.raises(hn.InvalidVectorError, match="vector 3 has a value beyond float32's range"):
        HnswTransformer(n_neighbors=3).fit(x).transform(bad)


def test_input_errors_are_the_librarys_and_scikit_learns() -> None:
    """scikit-learn's own checks raised its errors (and plain ValueError / TypeError), not
    HnswError subclasses; they are both, scikit-learn's classes and messages kept."""
    from sklearn.exceptions import NotFittedError as SkNotFittedError

    scipy_sparse = pytest.importorskip("scipy.sparse")
    x = np.random.default_rng(0).standard_normal((30, 4))
    with pytest.raises(SkNotFittedError) as caught:
        HnswTransformer().transform(x)
    assert isinstance(caught.value, hn.HnswError)
    bad = x.copy()
    bad[2, 2] = np.nan
    for call, expected in ((lambda: HnswTransformer(n_neighbors=3).fit(bad), ValueError),
                           (lambda: HnswTransformer(n_neighbors=3).fit(x).transform(x[:, :3]), ValueError),
                           (lambda: HnswTransformer(n_neighbors=3).fit(scipy_sparse.csr_matrix(x)), TypeError)):
        with pytest.raises(expected) as caught:
            call()
        assert isinstance(caught.value, hn.HnswError), caught.value


def test_every_row_holds_n_neighbors_entries_on_a_sparse_graph() -> None:
    """m = 2 over two far-apart clusters: walks met fewer than n_neighbors + 1 samples and
    122 of 2,000 rows came back short (12 entries the fewest); KNeighborsClassifier on the
    precomputed graph then refused it. Such rows are answered exactly."""
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    n = 2000
    x = rng.standard_normal((n, 5)) * np.r_[np.ones(n // 2), 100 * np.ones(n - n // 2)][:, None]
    got = HnswTransformer(n_neighbors=100, m=2, ef_construction=4, random_state=0).fit_transform(x)
    assert (np.diff(got.indptr) == 101).all()
    y = np.arange(n) % 2
    KNeighborsClassifier(n_neighbors=100, metric="precomputed").fit(got, y).predict(got)


def test_fit_links_samples_a_sparse_graph_over_copies_cut_off() -> None:
    """Five points, 400 copies each, m = 3: the fitted graph left groups no walk reached
    (stats() counted them) and 400 rows held 51 neighbours of another point each, with 400
    copies at distance 0. fit repairs such a graph."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 4))[np.repeat(np.arange(5), 400)]
    label = np.repeat(np.arange(5), 400)
    t = HnswTransformer(n_neighbors=50, m=3, ef_construction=200, random_state=0)
    got = t.fit_transform(x)
    assert all((label[got.indices[got.indptr[i] : got.indptr[i + 1]]] == label[i]).all() for i in range(2000))
    st = t.index_.stats()
    assert st["unreachable_live"] == 0 and st["landings_cut_off"] == 0


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_kneighbors_and_kneighbors_graph_match_scikit_learns(metric) -> None:
    """kneighbors / kneighbors_graph as KNeighborsTransformer's: X=None means the fitted
    samples without themselves; distances on scikit-learn's scale for each metric."""
    rng = np.random.default_rng(3)
    x, q = rng.standard_normal((120, 6)), rng.standard_normal((15, 6))
    ref = KNeighborsTransformer(n_neighbors=4, metric=metric, algorithm="brute").fit(x)
    ours = HnswTransformer(n_neighbors=4, metric=metric, ef=200, random_state=0).fit(x)
    for args in ((), (q,), (None, 7), (q, 120)):
        (d, i), (rd, ri) = ours.kneighbors(*args), ref.kneighbors(*args)
        assert i.shape == ri.shape and i.dtype == np.int64
        assert [set(r) for r in i] == [set(r) for r in ri]  # exact at this ef
        np.testing.assert_allclose(d, rd, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(ours.kneighbors(*args, return_distance=False), i)
    assert not (ours.kneighbors(return_distance=False) == np.arange(120)[:, None]).any()  # itself excluded
    for mode in ("connectivity", "distance"):
        for X in (None, q):
            a, b = ours.kneighbors_graph(X, mode=mode), ref.kneighbors_graph(X, mode=mode)
            assert a.shape == b.shape and a.nnz == b.nnz and a.dtype == b.dtype
            assert _same_neighbours(a, b) == 1.0
            np.testing.assert_allclose(a.toarray(), b.toarray(), rtol=1e-5, atol=1e-6)
    assert ours.kneighbors_graph(q, n_neighbors=2).nnz == 30


def test_kneighbors_refuses_what_scikit_learn_refuses() -> None:
    """More neighbours than fitted samples (X=None: than the others), a bad count or mode:
    typed errors with scikit-learn's messages; unfitted: NotFittedError."""
    x = np.random.default_rng(4).standard_normal((20, 3))
    ours, ref = HnswTransformer(n_neighbors=3).fit(x), KNeighborsTransformer(n_neighbors=3).fit(x)
    for args in ((None, 20), (x, 21)):
        with pytest.raises(ValueError) as want:
            ref.kneighbors(*args)
        with pytest.raises(hn.InvalidParameterError, match=re.escape(str(want.value))):
            ours.kneighbors(*args)
    assert ours.kneighbors(None, 19)[1].shape == (20, 19) and ours.kneighbors(x, 20)[1].shape == (20, 20)
    for bad in (0, -1, 1.5, "3", True):
        with pytest.raises(hn.InvalidParameterError):
            ours.kneighbors(x, bad)
    with pytest.raises(hn.InvalidParameterError, match="Unsupported mode"):
        ours.kneighbors_graph(mode="x")
    with pytest.raises(hn.InvalidVectorError):  # columns the fit did not have
        ours.kneighbors(x[:, :2])
    with pytest.raises(NotFittedError):
        HnswTransformer().kneighbors(x)
