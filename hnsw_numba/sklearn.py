"""``HnswTransformer``: a drop-in for scikit-learn's ``KNeighborsTransformer`` backed by HNSW.

It produces the same sparse neighbours graph (CSR, each row best first, the query point
itself included when it is in the fitted data) and answers ``kneighbors`` and
``kneighbors_graph`` as it does, so it can sit in a ``Pipeline`` ahead of
any estimator taking ``metric='precomputed'`` (``Isomap``, ``TSNE``, ``DBSCAN``,
``SpectralClustering``, ...)::

    make_pipeline(HnswTransformer(n_neighbors=15, mode="distance"),
                  Isomap(n_neighbors=15, metric="precomputed"))

scikit-learn and scipy are optional: ``pip install 'hnsw_numba[sklearn]'``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin, clone
from sklearn.utils import check_random_state
from sklearn.exceptions import NotFittedError as SkNotFittedError
from sklearn.utils.validation import check_is_fitted

from .core.config import MAX_EF, MAX_M, HnswConfig
from .core.errors import HnswError, InvalidParameterError, InvalidVectorError
from .core.index import Hnsw
from .core.knn import neighbors_to_csr
from .core import reorder
from .core.metrics import L2, Cosine, Metric
from .core.store import InMemoryVectorStore, resolve_float_dtype
from .core.store_base import float32_array
from .core.validate import check_flag, refuse_masked

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sk_validate_data
except ImportError:  # pragma: no cover - scikit-learn 1.3 - 1.5

    def _sk_validate_data(est: BaseEstimator, X: Any, **kw: Any) -> np.ndarray:
        return est._validate_data(X, **kw)


__all__ = ["HnswTransformer", "NotFittedError"]


class NotFittedError(HnswError, SkNotFittedError):
    """``transform`` before ``fit``: scikit-learn's NotFittedError (a ValueError and an
    AttributeError) and the library's own."""


def _validate_data(est: BaseEstimator, X: Any, **kw: Any) -> np.ndarray:
    """scikit-learn's input checks, their errors typed as the library's (messages kept, so
    scikit-learn's own checks still match them): a TypeError as InvalidParameterError (also
    a TypeError), a ValueError as InvalidVectorError; a masked array with a masked entry raises InvalidVectorError."""
    X = refuse_masked(X, "X")  # scikit-learn reads the values under the mask
    try:
        return _sk_validate_data(est, X, **kw)
    except HnswError:
        raise
    except TypeError as exc:
        raise InvalidParameterError(str(exc)) from exc
    except ValueError as exc:
        raise InvalidVectorError(str(exc)) from exc

#: metric name -> (index metric, post-processing of its distances). The index's L2 is
#: squared; scikit-learn's 'euclidean' is not, so those distances get a square root.
_METRICS: dict[str, tuple[type[Metric], str]] = {
    "euclidean": (L2, "sqrt"),
    "l2": (L2, "sqrt"),
    "sqeuclidean": (L2, "none"),
    "cosine": (Cosine, "clip"),
}
_MODES = ("distance", "connectivity")
#: The ``dtype`` of float32 vectors with a float16 walk copy.
WALK_COPY = "float32+float16"


class Fitted(NamedTuple):
    """Everything one ``fit`` made, published in one assignment and read once per call.

    ``columns`` is an unfitted clone of the transformer on which the fit's input checks
    recorded ``n_features_in_`` (and ``feature_names_in_``): ``transform`` checks its input
    against it, so the columns checked and the index searched come from the same fit.
    """

    index: Hnsw
    store: InMemoryVectorStore
    n_samples: int
    effective_metric: str
    columns: Any
    dtype: Any = np.float64  # the fitted data's: kneighbors() answers in it


def check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise InvalidParameterError(f"{name} must be an int in [{low}, {high}], got {value!r}")
    return int(value)


class HnswTransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Transform X into a sparse graph of approximate k nearest neighbours (HNSW).

    Same conventions as :class:`sklearn.neighbors.KNeighborsTransformer`: ``transform(X)``
    returns a CSR matrix of shape (n_samples, n_samples_fit) whose row ``i`` holds the
    ``n_neighbors + 1`` nearest fitted samples of ``X[i]`` in ``mode='distance'`` (the
    extra one is the sample itself when ``X`` is the fitted data: scikit-learn's
    precomputed-graph consumers expect it), or ``n_neighbors`` ones valued 1.0 in
    ``mode='connectivity'``. Each row is sorted by distance; zero distances are explicit.

    Parameters
    ----------
    mode : {'distance', 'connectivity'}
        Edge values: distances, or ones.
    n_neighbors : int
        Neighbours per sample (plus the sample itself in distance mode).
    metric : {'euclidean', 'l2', 'sqeuclidean', 'cosine'}
        'euclidean'/'l2' return true Euclidean distances (the index searches squared L2,
        same order); 'cosine' returns ``1 - cos`` clipped to >= 0, like scikit-learn.
    m : int
        HNSW links per node (level 0 gets ``2 * m``).
    ef_construction : int
        Beam width while building.
    ef : int, optional
        Beam width while searching (default 50; at least the neighbours asked for).
        Higher is slower and closer to exact.
    n_jobs : int, optional
        Threads for build and search, joblib-style: None means 1 (unless in a
        ``joblib.parallel_config`` context), -1 all cores.
    dtype : {'float32', 'float16', 'bfloat16', 'float32+float16'}
        Storage type of the fitted vectors (half types halve the memory; distances are
        still computed in float32; ``'float32+float16'`` keeps float32 vectors and a
        float16 copy that the walks read: faster, float32 distances, 1.5x the memory).
        The output matrix has the input's float dtype.
    random_state : int, RandomState or None
        Seeds the HNSW level generator. With ``n_jobs=1`` a fit is then reproducible;
        with several threads the graph depends on thread timing.

    Attributes
    ----------
    index_ : Hnsw
        The fitted index (keys are the row numbers of the fitted data).
    store_ : InMemoryVectorStore
        Its vectors.
    n_samples_fit_ : int
    n_features_in_ : int
    effective_metric_ : str
        The metric after resolving the 'l2' alias.
    fitted_ : Fitted
        All of the above as one object: a ``fit`` replaces it in one assignment, so a
        ``transform`` running beside a ``fit`` in another thread uses the old or the new fit
        entirely (``n_features_in_`` and ``feature_names_in_`` are copies for inspection,
        written after it).
    """

    def __init__(
        self,
        *,
        mode: str = "distance",
        n_neighbors: int = 5,
        metric: str = "euclidean",
        m: int = 16,
        ef_construction: int = 200,
        ef: int | None = None,
        n_jobs: int | None = None,
        dtype: Any = "float32",
        random_state: Any = None,
    ) -> None:
        # scikit-learn convention: store the parameters untouched, validate in fit
        self.mode = mode
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.m = m
        self.ef_construction = ef_construction
        self.ef = ef
        self.n_jobs = n_jobs
        self.dtype = dtype
        self.random_state = random_state

    # ------------------------------------------------------------------ validation
    def _check_params(self) -> None:
        if self.mode not in _MODES:
            raise InvalidParameterError(f"mode must be one of {_MODES}, got {self.mode!r}")
        if not isinstance(self.metric, str) or self.metric not in _METRICS:
            raise InvalidParameterError(f"metric must be one of {sorted(_METRICS)}, got {self.metric!r}")
        check_int("n_neighbors", self.n_neighbors, 1, MAX_EF - 1)
        check_int("m", self.m, 2, MAX_M)
        check_int("ef_construction", self.ef_construction, 1, MAX_EF)
        if self.ef is not None:
            check_int("ef", self.ef, 1, MAX_EF)
        if self.n_jobs is not None and (isinstance(self.n_jobs, bool) or not isinstance(self.n_jobs, (int, np.integer)) or self.n_jobs == 0):
            raise InvalidParameterError(f"n_jobs must be None or a non-zero int, got {self.n_jobs!r}")
        if self.dtype != WALK_COPY:
            resolve_float_dtype(self.dtype)

    def _threads(self) -> int:
        from joblib import effective_n_jobs

        return max(1, int(effective_n_jobs(self.n_jobs)))

    # ------------------------------------------------------------------ fit / transform
    def fit(self, X: Any, y: Any = None) -> "HnswTransformer":
        """Build the HNSW index over ``X`` (from ``READ_MOSTLY_REORDER`` samples, renumbered
        once built so that neighbours sit together in memory: faster queries, same answers;
        repaired where a sparse graph left samples no walk reaches, see ``Hnsw.stats``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self
        """
        self._publish(self._build(X))
        return self

    def _build(self, X: Any) -> Fitted:
        self._check_params()
        columns = clone(self)  # the input checks record the columns here, not on self (see Fitted)
        X = _validate_data(columns, X, dtype=[np.float64, np.float32])
        n, dim = X.shape
        metric_cls, _ = _METRICS[self.metric]
        seed = None if self.random_state is None else int(check_random_state(self.random_state).randint(2**31 - 1))
        config = HnswConfig(dim=dim, max_nodes=n, m=int(self.m), ef_construction=int(self.ef_construction), seed=seed)
        index = Hnsw(metric_cls(), config)
        copy = self.dtype == WALK_COPY
        store = InMemoryVectorStore(dim, n, dtype="float32" if copy else self.dtype, walk_copy=copy)
        index.insert_batch(store, np.arange(n), np.require(float32_array(X), np.float32, ["C", "W"]), num_threads=self._threads(), progress=False)
        st = index.stats()  # every sample reachable from where a walk lands (a sparse graph over copies leaves groups cut off)
        if st["unreachable_live"] or st["landings_cut_off"]:
            index.repair(store, num_threads=self._threads())
        reorder.renumber_read_mostly(index, store, self._threads())  # fitted once, queried many times
        return Fitted(index, store, n, "euclidean" if self.metric == "l2" else self.metric, columns, X.dtype)

    def _publish(self, fitted: Fitted) -> None:
        self.fitted_ = fitted  # the one assignment transform reads
        self.n_features_in_ = fitted.columns.n_features_in_
        names = getattr(fitted.columns, "feature_names_in_", None)
        if names is not None:
            self.feature_names_in_ = names
        elif "feature_names_in_" in self.__dict__:  # fitted on named columns before
            del self.feature_names_in_

    index_ = property(lambda self: self.fitted_.index, doc="The fitted index (keys are the row numbers of the fitted data).")
    store_ = property(lambda self: self.fitted_.store, doc="Its vectors.")
    n_samples_fit_ = property(lambda self: self.fitted_.n_samples, doc="Samples fitted.")
    effective_metric_ = property(lambda self: self.fitted_.effective_metric, doc="The metric after resolving the 'l2' alias.")
    _n_features_out = property(lambda self: self.fitted_.n_samples, doc="For get_feature_names_out: one column per fitted sample.")

    def __setstate__(self, state: dict) -> None:
        if "index_" in state:  # pickled when every fitted attribute was one of its own: one Fitted of them
            state = dict(state)
            columns = type(self).__new__(type(self))
            columns.__dict__.update({k: state[k] for k in self._get_param_names() if k in state})
            columns.n_features_in_ = state["n_features_in_"]
            if "feature_names_in_" in state:
                columns.feature_names_in_ = state["feature_names_in_"]
            state.pop("_n_features_out", None)
            state["fitted_"] = Fitted(state.pop("index_"), state.pop("store_"), state.pop("n_samples_fit_"),
                                      state.pop("effective_metric_"), columns)
        super().__setstate__(state)

    def transform(self, X: Any) -> Any:
        """The neighbours graph of ``X`` against the fitted samples.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scipy.sparse.csr_matrix of shape (n_samples, n_samples_fit)
            ``n_neighbors + 1`` (distance mode) or ``n_neighbors`` (connectivity mode)
            entries per row, best first, in ``X``'s float dtype.
        """
        return self._transform(self._fitted(), X)

    def _fitted(self) -> Fitted:
        try:
            check_is_fitted(self)
        except SkNotFittedError as exc:
            raise NotFittedError(str(exc)) from None
        return self.fitted_

    def _transform(self, fitted: Fitted, X: Any) -> Any:
        self._check_params()  # set_params since the fit (mode, n_neighbors, ef, n_jobs) is checked here too
        X = _validate_data(fitted.columns, X, dtype=[np.float64, np.float32], reset=False)
        k = int(self.n_neighbors) + (self.mode == "distance")
        if k > fitted.n_samples:
            raise InvalidParameterError(
                f"Expected n_neighbors <= n_samples_fit, but n_neighbors = {k}, "
                f"n_samples_fit = {fitted.n_samples}, n_samples = {X.shape[0]}"
            )
        ids, dist = self._search(fitted, float32_array(X), k, X.dtype)
        values = np.ones(ids.shape, X.dtype) if self.mode == "connectivity" else dist
        return neighbors_to_csr(np.arange(X.shape[0]), ids, values, (X.shape[0], fitted.n_samples))

    def _search(self, fitted: Fitted, X: np.ndarray, k: int, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest fitted samples of each row of ``X`` (float32): their rows and
        distances on scikit-learn's scale for the fitted metric, in ``dtype``."""
        ef = max(self.ef if self.ef is not None else fitted.index.config.ef_search, k)
        # a writeable C float32 copy: read-only input would compile another kernel variant
        q = np.require(X, np.float32, ["C", "W"])
        ids, dist = fitted.index.search_batch(fitted.store, q, k, ef=ef, num_threads=self._threads())  # keys: sample rows
        short = np.flatnonzero(ids[:, -1] < 0)  # a walk that met fewer than k samples (a sparse graph): answered exactly
        if short.shape[0]:
            ids[short], dist[short] = fitted.index.search_batch(fitted.store, q[short], k, exact=True, num_threads=self._threads())
        post = _METRICS[fitted.effective_metric][1]  # the fitted metric's, whatever set_params did since
        values = dist.astype(dtype)
        if post == "sqrt":
            np.sqrt(np.maximum(values, 0, out=values), out=values)
        elif post == "clip":
            np.maximum(values, 0, out=values)
        return ids, values

    def kneighbors(self, X: Any = None, n_neighbors: int | None = None, return_distance: bool = True) -> Any:
        """The nearest fitted samples of each row of ``X``, as ``KNeighborsTransformer.kneighbors``.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features), optional
            Default: the fitted samples, each not counted as its own neighbour (when more
            exact duplicates than neighbours tie with it, its first listed one is dropped
            instead, as scikit-learn does).
        n_neighbors : int, optional
            Neighbours per row (default: the ``n_neighbors`` parameter).
        return_distance : bool
            Whether to return the distances too.

        Returns
        -------
        (distances, indices) or indices
            Arrays (n_queries, n_neighbors), best first: distances on scikit-learn's scale
            for the metric, in the queries' float dtype (the fitted data's when ``X`` is
            None); indices are rows of the fitted data (int64).

        Raises
        ------
        InvalidParameterError
            ``n_neighbors`` is not a positive int, or more than the fitted samples (as
            scikit-learn words it); ``return_distance`` is not a bool.
        """
        return_distance = check_flag("return_distance", return_distance)  # "no" is truthy: a bool only, as everywhere else
        return self._kneighbors(self._fitted(), X, n_neighbors, return_distance)

    def _kneighbors(self, fitted: Fitted, X: Any, n_neighbors: int | None, return_distance: bool) -> Any:
        self._check_params()
        k = check_int("n_neighbors", self.n_neighbors if n_neighbors is None else n_neighbors, 1, MAX_EF - 1)
        n = fitted.n_samples
        if X is None:
            if k >= n:
                raise InvalidParameterError(f"Expected n_neighbors < n_samples_fit, but n_neighbors = {k}, "
                                            f"n_samples_fit = {n}, n_samples = {n}")
            ids, dist = self._search(fitted, fitted.index.get_vectors(fitted.store, np.arange(n)), k + 1, fitted.dtype)
            keep = ids != np.arange(n)[:, None]
            keep[keep.all(axis=1), 0] = False  # the sample not among its k + 1 nearest: the first is dropped
            ids, dist = ids[keep].reshape(n, k), dist[keep].reshape(n, k)
        else:
            X = _validate_data(fitted.columns, X, dtype=[np.float64, np.float32], reset=False)
            if k > n:
                raise InvalidParameterError(f"Expected n_neighbors <= n_samples_fit, but n_neighbors = {k}, "
                                            f"n_samples_fit = {n}, n_samples = {X.shape[0]}")
            ids, dist = self._search(fitted, float32_array(X), k, X.dtype)
        return (dist, ids) if return_distance else ids

    def kneighbors_graph(self, X: Any = None, n_neighbors: int | None = None, mode: str = "connectivity") -> Any:
        """The k-neighbours graph of ``X`` (default: the fitted samples, each without itself),
        as ``KNeighborsTransformer.kneighbors_graph``.

        Returns
        -------
        scipy.sparse.csr_matrix of shape (n_queries, n_samples_fit)
            ``n_neighbors`` entries per row, best first: ones (float64) for
            ``mode='connectivity'``, :meth:`kneighbors`' distances for ``mode='distance'``.
        """
        if mode not in _MODES:
            raise InvalidParameterError(f'Unsupported mode, must be one of "connectivity", or "distance" but got "{mode}" instead')
        fitted = self._fitted()
        dist, ids = self._kneighbors(fitted, X, n_neighbors, True)
        values = np.ones(ids.shape) if mode == "connectivity" else dist
        return neighbors_to_csr(np.arange(ids.shape[0]), ids, values, (ids.shape[0], fitted.n_samples))

    def fit_transform(self, X: Any, y: Any = None) -> Any:
        """``fit(X).transform(X)``: each row then holds the sample itself, first unless another sample
        ties with it (an exact duplicate; under cosine a zero row is at distance 1 from every row,
        itself included), as scikit-learn's; this call's fit, even when another thread fits meanwhile."""
        fitted = self._build(X)
        self._publish(fitted)
        return self._transform(fitted, X)

    # ------------------------------------------------------------------ tags
    def __sklearn_tags__(self):  # scikit-learn >= 1.6
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def _more_tags(self) -> dict:  # pragma: no cover - scikit-learn < 1.6
        return {"preserves_dtype": [np.float64, np.float32]}
