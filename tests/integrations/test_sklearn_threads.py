"""HnswTransformer from several threads: a ``transform`` beside a ``fit`` uses one fit entirely.

The window is widened deterministically: ``HnswTransformer.__setattr__`` is patched so that
after each attribute a fit (in the test's thread) assigns on the transformer, another thread
runs a whole ``transform`` (or ``fit``) and is joined before the fit goes on.
"""

from __future__ import annotations

import pickle
import threading
from typing import Any, Callable

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

from hnsw_numba.sklearn import HnswTransformer  # noqa: E402

from conftest import clustered  # noqa: E402

PARAMS = dict(n_neighbors=4, m=6, ef_construction=32, n_jobs=1, random_state=5)


def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(21)
    return clustered(rng, 60, 8), clustered(rng, 90, 8), clustered(rng, 12, 8)


def same(a: Any, b: Any) -> bool:
    return (not isinstance(a, Exception) and a.shape == b.shape and np.array_equal(a.indptr, b.indptr)
            and np.array_equal(a.indices, b.indices) and np.array_equal(a.data, b.data))


def after_each_assignment(monkeypatch, target: HnswTransformer, run: Callable[[], Any]) -> list:
    """After each attribute this thread assigns on ``target``, ``run()`` in another thread
    (joined before the assignment returns). Returns the list of results (or errors)."""
    assign = HnswTransformer.__setattr__
    owner = threading.get_ident()
    results: list = []

    def work() -> None:
        try:
            results.append(run())
        except Exception as exc:  # a mixed fit fails in many ways; the assertion shows which
            results.append(exc)

    def hooked(self: Any, name: str, value: Any) -> None:
        assign(self, name, value)
        if self is target and threading.get_ident() == owner:
            t = threading.Thread(target=work)
            t.start()
            t.join()

    monkeypatch.setattr(HnswTransformer, "__setattr__", hooked)
    return results


def test_transform_beside_a_fit_uses_the_old_or_the_new_fit(monkeypatch) -> None:
    """Fails before a fit published one object: a transform that ran between the fit's
    assignments searched the new index over the old store (or counted the old samples)."""
    old_x, new_x, q = data()
    want_old = HnswTransformer(**PARAMS).fit(old_x).transform(q)
    want_new = HnswTransformer(**PARAMS).fit(new_x).transform(q)
    t = HnswTransformer(**PARAMS).fit(old_x)
    seen = after_each_assignment(monkeypatch, t, lambda: t.transform(q))
    t.fit(new_x)
    monkeypatch.undo()
    assert seen
    for got in seen:
        assert same(got, want_old) or same(got, want_new), got
    assert same(seen[-1], want_new) and same(t.transform(q), want_new)


def test_fit_transform_answers_with_its_own_fit(monkeypatch) -> None:
    """Fails before: ``fit_transform`` transformed with whatever fit was published last, here
    another thread's fit of other data (the rows no longer start with the samples themselves)."""
    old_x, new_x, _ = data()
    want = HnswTransformer(**PARAMS).fit_transform(new_x)
    t = HnswTransformer(**PARAMS)
    others = after_each_assignment(monkeypatch, t, lambda: t.fit(old_x))
    got = t.fit_transform(new_x)
    monkeypatch.undo()
    assert others and all(o is t for o in others), others
    assert same(got, want)
    assert t.n_samples_fit_ == 60 and t.index_ is t.fitted_.index  # another thread's fit came last


def test_attributes_read_from_one_fit(monkeypatch) -> None:
    """The fitted attributes are views of ``fitted_``; pickles keep it."""
    old_x, _, q = data()
    t = HnswTransformer(**PARAMS).fit(old_x)
    f = t.fitted_
    assert (t.index_, t.store_, t.n_samples_fit_, t.effective_metric_, t.n_features_in_) == (f.index, f.store, 60, "euclidean", 8)
    assert len(t.get_feature_names_out()) == 60
    back = pickle.loads(pickle.dumps(t))
    assert same(back.transform(q), t.transform(q))


def test_a_pickle_of_separate_fitted_attributes_still_loads() -> None:
    """A transformer pickled when ``index_``, ``store_`` ... were attributes of their own."""
    old_x, _, q = data()
    t = HnswTransformer(**PARAMS).fit(old_x)
    state = {k: v for k, v in t.__getstate__().items() if k != "fitted_"}
    state.update(index_=t.index_, store_=t.store_, n_samples_fit_=60, effective_metric_="euclidean", _n_features_out=60)
    back = HnswTransformer.__new__(HnswTransformer)
    back.__setstate__(pickle.loads(pickle.dumps(state)))
    assert same(back.transform(q), t.transform(q))
    assert back.n_samples_fit_ == 60 and back.fitted_.columns.n_features_in_ == 8
