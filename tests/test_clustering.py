"""Scaling, HAC, trimmed HAC, MDS and scores (matdyn.analysis.clustering)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

from matdyn.analysis.clustering import (
    adjusted_rand,
    auc,
    hac,
    mds_embedding,
    order_groups,
    scale_descriptors,
    scaled_distance_matrix,
    supervised_ari,
    trimmed_hac,
)
from matdyn.errors import AnalysisError, ConfigError


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Labels identical up to a permutation of the cluster names."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def blobs_with_outliers(seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [4.0, 0.0], [2.0, 3.5]])
    X = np.concatenate([rng.normal(c, 0.3, (20, 2)) for c in centres])
    truth = np.repeat([0, 1, 2], 20)
    outliers = np.array([[40.0, 40.0], [-30.0, 45.0]])
    return np.concatenate([X, outliers]), truth


def test_scalings():
    X = np.array([[0.0, 100.0], [5.0, 300.0], [10.0, 200.0], [2.0, 100.0]])
    r = scale_descriptors(X, "range")
    assert r.min(axis=0) == pytest.approx([0, 0]) and r.max(axis=0) == pytest.approx([1, 1])
    z = scale_descriptors(X, "std")
    assert z.mean(axis=0) == pytest.approx([0, 0]) and z.std(axis=0) == pytest.approx([1, 1])
    q = scale_descriptors(X, "iqr")
    assert np.median(q, axis=0) == pytest.approx([0, 0])
    assert np.subtract(*np.percentile(q, [75, 25], axis=0)) == pytest.approx([1, 1])
    const = scale_descriptors(np.array([[1.0, 3.0], [2.0, 3.0]]), "range")
    assert const[:, 1] == pytest.approx([0.0, 0.0])  # a constant column carries no distance
    D = scaled_distance_matrix(X)
    assert D.shape == (4, 4) and np.allclose(D, D.T) and np.allclose(np.diag(D), 0)
    with pytest.raises(ConfigError):
        scale_descriptors(X, "minmax")
    with pytest.raises(AnalysisError):
        scale_descriptors(np.array([[np.nan, 1.0]]))


def test_hac_average_matches_scipy():
    rng = np.random.default_rng(5)
    # two descriptors on very different scales: without scaling the second would dominate
    X = np.column_stack([rng.random(40), 1000 * rng.random(40)])
    res = hac(X, k=4)
    scaled = (X - X.min(axis=0)) / (X.max(axis=0) - X.min(axis=0))
    Z = linkage(pdist(scaled), method="average")
    expected = fcluster(Z, t=4, criterion="maxclust")
    assert np.allclose(res.linkage, Z)
    assert same_partition(res.labels, expected)
    assert sorted(set(res.labels.tolist())) == [0, 1, 2, 3]
    ward = hac(X, k=4, method="ward")
    assert len(set(ward.labels.tolist())) == 4
    with pytest.raises(ConfigError):
        hac(X, k=0)
    with pytest.raises(ConfigError):
        hac(X, k=2, method="kmeans")


def test_trimmed_average_linkage_recovers_blobs_where_plain_fails():
    X, truth = blobs_with_outliers()
    plain = hac(X, k=3)
    trimmed = trimmed_hac(X, k=3, z_max=2.0)
    ari_plain = adjusted_rand(truth, plain.labels[:60])
    ari_trim = adjusted_rand(truth, trimmed.labels[:60])
    assert ari_plain < 0.5  # the two outliers take two of the three clusters
    assert ari_trim == pytest.approx(1.0)
    assert trimmed.kept[:60].all() and not trimmed.kept[60:].any()
    assert set(trimmed.labels[60:].tolist()) <= set(range(3))  # outliers joined a cluster
    with pytest.raises(AnalysisError):
        trimmed_hac(X, k=3, z_max=0.01)


def test_mds_preserves_distances_and_is_seeded():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.random(30), rng.random(30), np.zeros(30)])  # planar in 3D
    emb = mds_embedding(X, scaling=None, seed=1)
    assert emb.shape == (30, 2)
    assert np.corrcoef(pdist(emb), pdist(X))[0, 1] > 0.99
    assert np.allclose(emb, mds_embedding(X, scaling=None, seed=1))
    D = scaled_distance_matrix(X, None)
    emb_pre = mds_embedding(D, precomputed=True, seed=1)
    assert np.corrcoef(pdist(emb_pre), pdist(X))[0, 1] > 0.99


def test_scores_and_group_order():
    assert adjusted_rand([0, 0, 1, 1, 2], [2, 2, 0, 0, 1]) == pytest.approx(1.0)
    assert auc([1, 1, 0, 0], [0.9, 0.7, 0.8, 0.1]) == pytest.approx(0.75)
    assert auc([1, 0], [0.0, 1.0]) == 0.0
    assert auc([1, 0], [0.0, 1.0], either_direction=True) == 1.0
    with pytest.raises(AnalysisError):
        auc([1, 1], [0.3, 0.4])
    # three clusters named arbitrarily; members carry a stage (days); planted order C < A < B
    rng = np.random.default_rng(0)
    labels = np.repeat([7, 3, 5], 30)
    stage = np.concatenate(
        [rng.choice([0, 3], 30), rng.choice([3, 14], 30), rng.choice([14, 28], 30)]
    )
    planted = np.repeat([0, 1, 2], 30)
    res = order_groups(labels, stage, planted)
    assert res.groups.tolist() == [7, 3, 5]
    assert np.all(np.diff(res.mean_score) > 0)
    assert res.spearman == pytest.approx(1.0) and res.kendall == pytest.approx(1.0)
    rev = order_groups(labels, -stage, planted)
    assert rev.spearman == pytest.approx(-1.0)
    assert np.isnan(order_groups(labels, stage).spearman)


def test_supervised_ari_tells_descriptors_that_cannot_separate_from_clustering_that_does_not():
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1, 2], 60)
    # separable along one axis, but one outlier column stretches the range: average linkage
    # with range scaling then lumps the classes, while the classes are there to be found
    x = np.column_stack([y + rng.normal(0, 0.15, y.size), rng.normal(0, 1, y.size)])
    x[0, 1] = 400.0
    clustered = hac(x, 3, method="average", scaling="range").labels
    assert adjusted_rand(y, clustered) < 0.7  # the outlier is a cluster of its own
    assert supervised_ari(x, y) > 0.9
    # descriptors unrelated to the classes: the supervised reference itself is near 0
    noise = rng.normal(size=(180, 2))
    assert abs(supervised_ari(noise, y)) < 0.1
    # half the rows of classes 0 and 1 swapped in feature space: can reach only part
    mixed = y.copy()
    mixed[:30], mixed[60:90] = 1, 0
    part = supervised_ari(np.column_stack([mixed + rng.normal(0, 0.1, y.size)]), y)
    assert 0.2 < part < 0.8
    # deterministic for a seed; undefined for one class or a class of one row
    assert supervised_ari(noise, y, seed=4) == supervised_ari(noise, y, seed=4)
    assert supervised_ari(noise, np.zeros(180)) is None
    assert supervised_ari(noise[:4], [0, 0, 0, 1]) is None
    with pytest.raises(AnalysisError):
        supervised_ari(noise, y[:10])
