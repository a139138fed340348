"""Clustering and embedding of descriptor tables (paper §3.3.2 HAC, §3.4.2 MDS).

Inputs are descriptor matrices ``X`` [n_samples, n_descriptors] (one row per NP trace or
clump variation). Distances are Euclidean on *scaled* descriptors, "a metric scaled to
account for the range and distribution of the descriptors" (§3.3.2). Scalings
(:func:`scale_descriptors`), each per column:

* ``"range"`` (default, the paper's reading): ``(x - min) / (max - min)``, every descriptor
  spans [0, 1];
* ``"iqr"`` (robust): ``(x - median) / IQR``, outliers do not compress the bulk;
* ``"std"``: z-scores ``(x - mean) / std``;
* ``None``: unchanged.

A constant column is left at 0 after centring (its scale is taken as 1).

:func:`hac` is scipy's agglomerative clustering (average linkage by default, as in the
paper; ``"ward"`` is offered). FINDINGS.md found that plain average linkage lets single
outliers take whole clusters (ARI ≈ 0); :func:`trimmed_hac` first sets aside rows with any
|z-score| > ``z_max`` (2), clusters the rest, then assigns the set-aside rows to the
nearest cluster centre (mean of the cluster in scaled space).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist, squareform
from scipy.stats import kendalltau, spearmanr

from matdyn.errors import AnalysisError, ConfigError

__all__ = [
    "fit_scaler",
    "scale_descriptors",
    "scaled_distance_matrix",
    "HACResult",
    "hac",
    "trimmed_hac",
    "mds_embedding",
    "adjusted_rand",
    "supervised_ari",
    "auc",
    "GroupOrder",
    "order_groups",
]

_LINKAGES = ("average", "ward", "single", "complete", "centroid", "median", "weighted")


def _matrix(X: Any) -> np.ndarray:
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise AnalysisError(
            f"descriptors must be a matrix [n_samples, n_descriptors], got {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise AnalysisError(
            "descriptor matrix contains NaN/inf; drop or impute those rows before clustering"
        )
    return arr


def fit_scaler(X: Any, method: str | None = "range") -> tuple[np.ndarray, np.ndarray]:
    """Per-column ``(loc, scale)`` so that ``(X - loc) / scale`` is the chosen scaling.

    >>> fit_scaler([[0.0, 10.0], [2.0, 10.0]])
    (array([ 0., 10.]), array([2., 1.]))
    """
    x = _matrix(X)
    if method is None:
        return np.zeros(x.shape[1]), np.ones(x.shape[1])
    if method == "range":
        loc, scale = x.min(axis=0), x.max(axis=0) - x.min(axis=0)
    elif method == "iqr":
        q1, med, q3 = np.percentile(x, [25, 50, 75], axis=0)
        loc, scale = med, q3 - q1
    elif method == "std":
        loc, scale = x.mean(axis=0), x.std(axis=0)
    else:
        raise ConfigError(f"scaling must be 'range', 'iqr', 'std' or None, got {method!r}")
    return loc, np.where(scale > 0, scale, 1.0)


def scale_descriptors(X: Any, method: str | None = "range") -> np.ndarray:
    """Scale each descriptor column (see module docstring).

    >>> scale_descriptors([[0.0, 5.0], [1.0, 15.0], [2.0, 10.0]]).tolist()
    [[0.0, 0.0], [0.5, 1.0], [1.0, 0.5]]
    """
    loc, scale = fit_scaler(X, method)
    return (_matrix(X) - loc) / scale


def scaled_distance_matrix(X: Any, method: str | None = "range") -> np.ndarray:
    """Square Euclidean distance matrix [n, n] of the scaled descriptors.

    >>> scaled_distance_matrix([[0.0], [1.0], [3.0]]).round(3).tolist()
    [[0.0, 0.333, 1.0], [0.333, 0.0, 0.667], [1.0, 0.667, 0.0]]
    """
    return squareform(pdist(scale_descriptors(X, method)))


@dataclass(frozen=True)
class HACResult:
    """Cluster labels 0..k-1, the scipy linkage matrix (for a dendrogram) and scaled data."""

    labels: np.ndarray  # [n] int
    linkage: np.ndarray  # [n_clustered - 1, 4] scipy linkage matrix
    scaled: np.ndarray  # [n, d] descriptors after scaling
    kept: np.ndarray  # [n] bool, rows used to build the tree (all True for plain hac)


def _cut(Z: np.ndarray, k: int) -> np.ndarray:
    return fcluster(Z, t=k, criterion="maxclust").astype(np.int64) - 1


def hac(X: Any, k: int, *, method: str = "average", scaling: str | None = "range") -> HACResult:
    """Hierarchical agglomerative clustering of scaled descriptors cut into ``k`` clusters.

    ``method`` is a scipy linkage method: ``"average"`` (paper, §3.3.2) or ``"ward"``
    (robust alternative, FINDINGS.md), among others; distances are Euclidean.

    >>> res = hac([[0.0], [0.1], [0.2], [5.0], [5.1], [9.0]], k=3)
    >>> res.labels.tolist()
    [0, 0, 0, 1, 1, 2]
    """
    x = _matrix(X)
    if method not in _LINKAGES:
        raise ConfigError(f"linkage method must be one of {_LINKAGES}, got {method!r}")
    if not 1 <= k <= len(x):
        raise ConfigError(f"k must be between 1 and the number of samples ({len(x)}), got {k}")
    scaled = scale_descriptors(x, scaling)
    if len(x) == 1:
        return HACResult(np.zeros(1, np.int64), np.zeros((0, 4)), scaled, np.ones(1, bool))
    Z = linkage(scaled, method=method, metric="euclidean")
    return HACResult(_relabel(_cut(Z, k)), Z, scaled, np.ones(len(x), bool))


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Number clusters 0..k-1 in order of first appearance (stable across runs)."""
    _, first = np.unique(labels, return_index=True)
    order = labels[np.sort(first)]
    mapping = {old: new for new, old in enumerate(order)}
    return np.array([mapping[v] for v in labels], dtype=np.int64)


def trimmed_hac(
    X: Any,
    k: int,
    *,
    z_max: float = 2.0,
    method: str = "average",
    scaling: str | None = "range",
) -> HACResult:
    """Average linkage after trimming outliers, then nearest-centre assignment of the trimmed.

    Rows with any |z| > ``z_max`` (z-scores per descriptor over all rows) are set aside;
    the rest are scaled (``scaling`` fitted on them) and clustered with :func:`hac`; each
    set-aside row joins the cluster whose centre (mean scaled descriptor) is nearest.
    Trimming can also remove a genuine small mode far from the bulk: compare with Ward.

    >>> X = [[0.0], [0.1], [0.2], [5.0], [5.1], [5.2], [10.0], [10.1], [60.0]]
    >>> trimmed_hac(X, k=3).labels.tolist()
    [0, 0, 0, 1, 1, 1, 2, 2, 2]
    """
    x = _matrix(X)
    z = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    kept = (np.abs(z) <= z_max).all(axis=1)
    if kept.sum() < k:
        raise AnalysisError(
            f"trimming |z| > {z_max} leaves {int(kept.sum())} rows for {k} clusters; raise z_max"
        )
    loc, scale = fit_scaler(x[kept], scaling)
    scaled = (x - loc) / scale
    core = hac(x[kept], k, method=method, scaling=scaling)
    labels = np.empty(len(x), dtype=np.int64)
    labels[kept] = core.labels
    if (~kept).any():
        n_clusters = int(core.labels.max()) + 1
        centres = np.stack([scaled[kept][core.labels == c].mean(axis=0) for c in range(n_clusters)])
        d = np.linalg.norm(scaled[~kept][:, None, :] - centres[None], axis=2)
        labels[~kept] = d.argmin(axis=1)
    return HACResult(labels, core.linkage, scaled, kept)


def mds_embedding(
    X: Any,
    n_components: int = 2,
    *,
    scaling: str | None = "range",
    precomputed: bool = False,
    seed: int = 0,
    max_iter: int = 300,
) -> np.ndarray:
    """Metric MDS embedding [n, n_components] (sklearn SMACOF, seeded) of scaled descriptors,
    or of a distance matrix with ``precomputed=True`` (paper Fig. 8a).

    >>> X = [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]]
    >>> emb = mds_embedding(X, scaling=None)
    >>> emb.shape, bool(abs(np.linalg.norm(emb[0] - emb[3]) - 2**0.5) < 0.05)
    ((4, 2), True)
    """
    from sklearn.manifold import MDS

    if precomputed:
        D = np.asarray(X, dtype=np.float64)
        if D.ndim != 2 or D.shape[0] != D.shape[1] or not np.allclose(D, D.T):
            raise AnalysisError(
                f"a precomputed distance matrix must be square and symmetric, got {D.shape}"
            )
    else:
        D = scaled_distance_matrix(X, scaling)
    params = inspect.signature(MDS).parameters
    kwargs: dict[str, Any] = {
        "n_components": n_components,
        "random_state": seed,
        "max_iter": max_iter,
    }
    if "metric_mds" in params:  # scikit-learn >= 1.8
        kwargs.update(metric="precomputed", metric_mds=True, init="classical_mds")
    else:  # older scikit-learn
        kwargs.update(dissimilarity="precomputed", metric=True, n_init=4)
    if "normalized_stress" in params:
        kwargs["normalized_stress"] = "auto"
    return MDS(**kwargs).fit_transform(D)


def adjusted_rand(labels_true: Any, labels_pred: Any) -> float:
    """Adjusted Rand index (1 = identical partitions up to renaming, ≈ 0 = chance).

    >>> adjusted_rand([0, 0, 1, 1], [5, 5, 3, 3])
    1.0
    """
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(np.asarray(labels_true), np.asarray(labels_pred)))


def supervised_ari(X: Any, labels_true: Any, *, n_splits: int = 5, seed: int = 0) -> float | None:
    """How well the descriptors ``X`` [n, f] can separate the known classes at all: ARI of
    out-of-fold predictions of a supervised classifier (scikit-learn random forest, 100
    trees, ≥ 5 rows per leaf; stratified ``n_splits``-fold, shuffled with ``seed``).

    The classifier is shown the truth, a clustering is not, so this is the reference a
    clustering ARI is read against: when it is itself low, the descriptors do not carry
    the classes and no clustering method or scaling can recover them; when it is high and
    the clustering ARI low, the clustering is the weak part. (It is not a strict bound: a
    clustering may beat one particular classifier.) Scale-free (trees), deterministic for
    a ``seed``. None with fewer than 2 classes or a class of fewer than 2 rows. Issue 12:
    on five stand-in generators the log-MSD descriptor gave 0.39–0.57 here.

    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1, 2], 40)
    >>> supervised_ari(rng.normal(size=(120, 1)) + 10 * y[:, None], y)
    1.0
    >>> abs(supervised_ari(rng.normal(size=(120, 1)), y)) < 0.1
    True
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x = _matrix(X)
    y = np.asarray(labels_true).ravel()
    if len(y) != len(x):
        raise AnalysisError(f"{len(x)} descriptor rows but {len(y)} labels")
    _, counts = np.unique(y, return_counts=True)
    if len(counts) < 2 or counts.min() < 2:
        return None
    cv = StratifiedKFold(int(min(n_splits, counts.min())), shuffle=True, random_state=seed)
    clf = RandomForestClassifier(n_estimators=100, min_samples_leaf=5, random_state=seed,
                                 n_jobs=1)
    return adjusted_rand(y, cross_val_predict(clf, x, y, cv=cv))


def auc(positive: Any, score: Any, *, either_direction: bool = False) -> float:
    """ROC AUC of ``score`` for separating ``positive`` (bool) rows from the rest.

    With ``either_direction=True`` returns ``max(auc, 1 - auc)`` (a descriptor that is
    *lower* for the positives separates them as well).

    >>> auc([True, True, False, False], [0.9, 0.8, 0.1, 0.2])
    1.0
    >>> auc([True, False], [0.0, 1.0], either_direction=True)
    1.0
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(positive).astype(bool)
    if y.all() or not y.any():
        raise AnalysisError("AUC needs both positive and negative rows")
    value = float(roc_auc_score(y, np.asarray(score, dtype=np.float64)))
    return max(value, 1.0 - value) if either_direction else value


@dataclass(frozen=True)
class GroupOrder:
    """Groups ranked by the mean per-member score, and agreement with a planted order."""

    groups: np.ndarray  # group ids, ascending mean score
    mean_score: np.ndarray  # mean score of each group in that order
    spearman: float  # member-level rank correlation with the planted order (nan if none)
    kendall: float


def order_groups(labels: Any, score: Any, planted: Any | None = None) -> GroupOrder:
    """Rank groups by the mean of ``score`` over their members (e.g. aging stage, §3.4.2).

    Agreement with ``planted`` (a per-member value carrying the true order, e.g. the
    planted mode's position in time, or the stage itself): Spearman ρ and Kendall τ-b
    between each member's group *rank* and its planted value. 1 = the groups come in the
    planted order; 0 = unrelated.

    >>> res = order_groups([2, 2, 0, 0, 1, 1], [0, 1, 10, 12, 5, 6], planted=[0, 0, 2, 2, 1, 1])
    >>> res.groups.tolist(), round(res.spearman, 6), round(res.kendall, 6)
    ([2, 1, 0], 1.0, 1.0)
    """
    lab = np.asarray(labels).ravel()
    sc = np.asarray(score, dtype=np.float64).ravel()
    if lab.shape != sc.shape or lab.size == 0:
        raise AnalysisError("labels and score must be non-empty and of equal length")
    groups = np.unique(lab)
    means = np.array([sc[lab == g].mean() for g in groups])
    order = np.argsort(means, kind="stable")
    rank_of = {g: r for r, g in enumerate(groups[order])}
    rho = tau = float("nan")
    if planted is not None:
        pl = np.asarray(planted, dtype=np.float64).ravel()
        if pl.shape != lab.shape:
            raise AnalysisError("planted must have one value per member")
        member_rank = np.array([rank_of[g] for g in lab], dtype=np.float64)
        if np.ptp(member_rank) > 0 and np.ptp(pl) > 0:
            rho = float(spearmanr(member_rank, pl).statistic)
            tau = float(kendalltau(member_rank, pl).statistic)
    return GroupOrder(groups[order], means[order], rho, tau)
