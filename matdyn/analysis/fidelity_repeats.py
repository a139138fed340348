"""Where particles sit at the scale of a pixel: the near-repeat distance (how close the
nearest particle of another frame lies) and sub-pixel locking of centroids (issue 11).

Counts and centre densities (:mod:`matdyn.analysis.fidelity_content`) cannot see how much a
particle that keeps its place (a trap, a pinned particle) wanders between frames. For random
pairs of frames, the distance from each particle to the nearest particle of the other frame,
kept below one particle radius, is that wander for such particles and a chance coincidence
for mobile ones. On the NP demo the generator drew trapped particles with 0.12-0.24 px
jitter against 0.36 px observed (trackpy, 600 frames), while the trap region's count ratio
was 1.00; the median near-repeat distance was 0.39 against 0.74 px.

Sub-pixel locking (:func:`subpixel_fidelity`): the fractional parts of particle centroids
are near uniform for particles at random positions; a generator whose ×2 upsampling repeats
pixels (nearest neighbour, PGGAN's default) puts its coarse grid into every stage and piles
centroids onto it; the locked share and the circular W1 against the observed centroids see
it where counts, densities and near-repeat distances cannot. Centroids come from trackpy's
locator (:func:`located_subpixel_fidelity`, the one the Monte Carlo displacements use):
binary-mask centroids of small particles are quantised by the mask's shape, which swamps the
generator's grid (on held-out NP stand-ins d and e, seed 0, mask centroids put nearest- and
linear-upsampling generators alike at 4.3-4.9× the baseline; trackpy centroids at 5.5-5.7×
against 2.6-3.4×; a second nearest training on d: 2.0×, issue 11, session 13).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from matdyn.analysis.fidelity_content import (
    Centres,
    Check,
    _num,
    halvings,
    matched_check,
    matched_distance,
    matched_subsets,
    ratio_check,
)
from matdyn.errors import ConfigError

__all__ = ["NEAR_REPEAT_SPLITS", "circular_w1", "located_centres", "located_subpixel_fidelity",
           "near_repeat_distances", "near_repeat_fidelity", "subpixel_fidelity",
           "subpixel_fractions"]


def _frame_points(c: Centres) -> tuple[list[np.ndarray], list[Any]]:
    """Per frame: its centres [k, 2] and a KD-tree of them (None for an empty frame)."""
    from scipy.spatial import cKDTree

    order = np.argsort(c.frame, kind="stable")
    bounds = np.searchsorted(c.frame[order], np.arange(c.n_frames + 1))
    pts = [c.rc[order[bounds[i] : bounds[i + 1]]] for i in range(c.n_frames)]
    return pts, [cKDTree(p) if len(p) else None for p in pts]


def _near_repeats(pts: list[np.ndarray], trees: list[Any], frames: np.ndarray, r_max: float,
                  n_pairs: int, seed: int) -> np.ndarray:
    if frames.size < 2:
        return np.zeros(0)
    i, j = np.random.default_rng(seed).choice(frames, (2, n_pairs))
    out = []
    for a, b in zip(i[i != j], j[i != j]):  # one nearest-neighbour query per frame pair
        if trees[b] is not None and len(pts[a]):
            d, _ = trees[b].query(pts[a], distance_upper_bound=r_max)
            out.append(d[np.isfinite(d)])
    return np.concatenate(out) if out else np.zeros(0)


def near_repeat_distances(c: Centres, r_max: float, *, n_pairs: int = 1000,
                          seed: int = 0) -> np.ndarray:
    """Near-repeat distances [K] (px): for ``n_pairs`` random draws of an ordered frame pair
    (i, j) (with replacement; draws with i = j are skipped, so one frame gives []), the
    distance from each particle of frame i to the nearest particle of frame j, kept when
    below ``r_max`` px. A particle that keeps its place (a trap, a pinned
    particle) gives the spread of its positional jitter (two independent N(0, σ²) positions
    per axis: Rayleigh with scale σ√2, median 1.67 σ); particles that move far give chance
    coincidences, uniform over the disc (median r_max/√2). A generator that draws pinned
    particles too still (or too loose) shifts this distribution; counts and centre
    densities cannot see it (issue 11: trap jitter 0.12–0.24 px generated vs 0.36 px
    observed on the NP demo, while the trap region's count ratio was 1.00).

    >>> c = Centres(np.array([0, 1, 2]), np.array([[5., 5.], [5., 5.3], [5.4, 5.]]),
    ...             np.ones(3, int), 3)
    >>> d = near_repeat_distances(c, 2.0, n_pairs=50)
    >>> sorted(set(np.round(d, 6).tolist()))      # 0.3, 0.4 and 0.5 px apart
    [0.3, 0.4, 0.5]
    """
    if not r_max > 0:
        raise ConfigError(f"r_max must be > 0 px, got {r_max!r}")
    if int(n_pairs) < 1:
        raise ConfigError(f"n_pairs must be >= 1, got {n_pairs!r}")
    pts, trees = _frame_points(c)
    return _near_repeats(pts, trees, np.arange(c.n_frames), float(r_max), int(n_pairs), seed)


#: halvings for the near-repeat baseline: its halves agree to 1-4 % (11 NP generators, 2026-12-02)
NEAR_REPEAT_SPLITS = 5


def near_repeat_fidelity(real: Centres, gen: Centres, *, n_splits: int = NEAR_REPEAT_SPLITS,
                         n_pairs: int = 1000, seed: int = 0, min_count: int = 20
                         ) -> tuple[dict[str, Any], list[Check]]:
    """Median near-repeat distance, generated / observed (``ratio``, all frames), with the
    halves' ratios as the baseline. The check compares like with like: its value is the mean
    ``|1 - r|`` of the ratios of a generated subset as large as a half (drawn with as many
    frame pairs) to the other half (``matched_deviation``, :mod:`matdyn.analysis.baselines`;
    the halves agree to 1-4 %, so the ratio floor sets the flag level in practice);
    ``r_max`` = the median radius of the observed particles (√(area/π)).
    Particles that all move far give chance coincidences on both sides (median ≈
    r_max/√2). Fewer than ``min_count`` observed near repeats (or no observed particle):
    reported with a ``note``, not checked; fewer generated ones over all frames: ratio inf
    (flagged); a halving whose halves have too few is left out of the baseline
    (``baseline_splits`` counts the rest), one whose generated subset has too few out of the
    matched value. Summary keys: r_max_px, n_pairs, n_real, n_generated, real_median_px,
    generated_median_px, ratio, real_vs_real_ratio, matched_deviation, baseline_splits. Returns ``(summary, checks)`` as
    :func:`matdyn.analysis.fidelity_content.particle_fidelity`."""
    if len(real) == 0:
        return {"n_real": 0, "note": "no observed particle: not checked"}, []
    splits = halvings(real.n_frames, n_splits, seed)
    r_max = float(np.sqrt(np.median(real.area) / np.pi))
    rp, rt = _frame_points(real)
    dr = _near_repeats(rp, rt, np.arange(real.n_frames), r_max, n_pairs, seed)
    dg = _near_repeats(*_frame_points(gen), np.arange(gen.n_frames), r_max, n_pairs, seed)
    med = [_num(np.median(v)) if v.size else None for v in (dr, dg)]
    out: dict[str, Any] = {"r_max_px": r_max, "n_pairs": int(n_pairs), "n_real": int(dr.size),
                           "n_generated": int(dg.size), "real_median_px": med[0],
                           "generated_median_px": med[1]}
    if dr.size < min_count:
        out["note"] = f"{dr.size} observed near repeats (< {min_count}): not checked"
        return out, []
    ratio = float(np.median(dg) / np.median(dr)) if dg.size >= min_count else float("inf")
    gp, gt = _frame_points(gen)
    halves, matched = [], []
    subsets = (matched_subsets(gen.n_frames, splits, seed) if gen.n_frames
               else [np.zeros(0, np.int64)] * len(splits))
    for k, ((a, b), g) in enumerate(zip(splits, subsets)):
        da = _near_repeats(rp, rt, a, r_max, n_pairs // 2, seed + 2 * k + 1)
        db = _near_repeats(rp, rt, b, r_max, n_pairs // 2, seed + 2 * k + 2)
        if da.size >= min_count and db.size >= min_count:
            halves.append(float(np.median(db) / np.median(da)))
            dgk = _near_repeats(gp, gt, g, r_max, n_pairs // 2, seed + 2 * k + 2)
            if dgk.size >= min_count:  # a short generated subset is left out, as a short half
                matched.append(float(np.median(dgk) / np.median(da)))
    check = ratio_check("near_repeat_median", ratio, halves)
    if matched and np.isfinite(ratio):  # half against half: mean |1 - r| over the halvings
        check = check._replace(value=float(np.mean(np.abs(1.0 - np.asarray(matched)))))
    out.update(ratio=_num(ratio), real_vs_real_ratio=_num(1.0 + check.baseline),
               matched_deviation=_num(check.value), baseline_splits=len(halves))
    return out, [check]


# ------------------------------------------------------------------------ sub-pixel locking


def subpixel_fractions(c: Centres) -> np.ndarray:
    """Fractional parts [2K] in [0, 1) of the K centroids' row and column coordinates (px;
    0 = a pixel centre), both axes pooled."""
    return np.mod(np.asarray(c.rc, dtype=np.float64), 1.0).ravel()


def circular_w1(a: Any, b: Any) -> float:
    """1D Wasserstein distance between two samples on the unit circle [0, 1) (the fractional
    parts of coordinates, so 0.95 and 0.05 lie 0.1 apart): ∫|F − G − m| over the circle
    with m the length-weighted median of F − G (Rabin, Delon & Gousseau 2011, J. Math.
    Imaging Vis. 41, "Transportation distances on the circle"). Unit: px for fractional
    parts of pixel coordinates; at most 0.5. Raises :class:`ConfigError` for an empty sample.

    >>> circular_w1([0.05], [0.95]), circular_w1([0.0], [0.5]), circular_w1([0.2, 0.7], [0.7, 0.2])
    (0.1, 0.5, 0.0)
    """
    a = np.sort(np.mod(np.asarray(a, dtype=np.float64).ravel(), 1.0))
    b = np.sort(np.mod(np.asarray(b, dtype=np.float64).ravel(), 1.0))
    if a.size == 0 or b.size == 0:
        raise ConfigError("circular_w1 needs two non-empty samples")
    x = np.unique(np.concatenate([a, b, [0.0, 1.0]]))
    w = np.diff(x)
    mid = 0.5 * (x[:-1] + x[1:])
    d = np.searchsorted(a, mid, "right") / a.size - np.searchsorted(b, mid, "right") / b.size
    o = np.argsort(d, kind="stable")
    cw = np.cumsum(w[o])
    m = d[o][np.searchsorted(cw, 0.5 * cw[-1])]
    return float(np.round(np.sum(w * np.abs(d - m)), 12))


#: a coordinate counts as locked within this distance (px) of a pixel centre (uniform: 2 × 0.05)
LOCK_WINDOW = 0.05


def subpixel_fidelity(real: Centres, gen: Centres, *, n_splits: int = NEAR_REPEAT_SPLITS,
                      seed: int = 0, min_count: int = 50) -> tuple[dict[str, Any], list[Check]]:
    """Sub-pixel locking of generated centroids against the observed ones: the circular W1
    distance (px, :func:`circular_w1`) between the fractional parts of generated and observed
    centroid coordinates (:func:`subpixel_fractions`), each observed half against the other
    and against a generated subset as large (:func:`~matdyn.analysis.baselines.
    matched_distance`, check ``subpixel_w1``; ``w1_all_frames_px``: all against all), and the
    share of coordinates within :data:`LOCK_WINDOW` px of a pixel centre on each side
    (``locked_share``; 2 × LOCK_WINDOW for uniform positions). Fewer than ``min_count``
    observed or generated centroids: reported with a ``note``, not checked. Summary keys:
    n_real, n_generated, real_locked_share, generated_locked_share, w1_px, real_vs_real_px,
    baseline_splits. Returns ``(summary, checks)`` as
    :func:`matdyn.analysis.fidelity_content.particle_fidelity`."""
    fr, fg = subpixel_fractions(real), subpixel_fractions(gen)

    def locked(f: np.ndarray) -> float | None:
        return _num(np.mean(np.minimum(f, 1.0 - f) <= LOCK_WINDOW)) if f.size else None

    out: dict[str, Any] = {"n_real": int(len(real)), "n_generated": int(len(gen)),
                           "real_locked_share": locked(fr), "generated_locked_share": locked(fg),
                           "lock_window_px": LOCK_WINDOW}
    if len(real) < min_count or len(gen) < min_count:
        out["note"] = f"fewer than {min_count} observed or generated centroids: not checked"
        return out, []
    splits = halvings(real.n_frames, n_splits, seed)
    triples = [(real.subset(a), real.subset(b), gen.subset(g))
               for (a, b), g in zip(splits, matched_subsets(gen.n_frames, splits, seed))]
    w1 = matched_distance(lambda x, y: circular_w1(subpixel_fractions(x), subpixel_fractions(y))
                          if len(x) and len(y) else None, triples)
    out.update(w1_px=w1["generated_vs_real"], w1_sd_px=w1["generated_vs_real_sd"],
               real_vs_real_px=w1["real_vs_real"], real_vs_real_sd_px=w1["real_vs_real_sd"],
               w1_all_frames_px=circular_w1(fr, fg), comparison="matched halves",
               baseline_splits=w1["baseline_splits"])
    return out, [matched_check("subpixel_w1", w1)]


def located_centres(images: Any, params: Any) -> Centres:
    """trackpy-located centroids (:func:`matdyn.dynamics.locate.locate_stack` with
    ``params``, a :class:`~matdyn.dynamics.locate.LocateParams`) of frames [N, H, W] or
    [N, 1, H, W] as :class:`Centres` (px; ``area`` is not measured and set to 0)."""
    from matdyn.dynamics.locate import locate_stack

    loc = locate_stack(np.asarray(images), params)
    return Centres(loc.frame.astype(np.int64), loc.coords, np.zeros(len(loc.frame), np.int64),
                   int(loc.n_images))


def located_subpixel_fidelity(real: Any, gen: Any, *, dark: bool = True, params: Any = None,
                              n_splits: int = NEAR_REPEAT_SPLITS, seed: int = 0
                              ) -> tuple[dict[str, Any], list[Check]]:
    """:func:`subpixel_fidelity` of trackpy centroids: observed ``real`` and generated ``gen``
    frames [N, H, W] or [N, 1, H, W] located with one ``params``
    (:class:`~matdyn.dynamics.locate.LocateParams`; None: estimated with
    :func:`~matdyn.dynamics.locate.estimate_locate_params` on the first of up to 8 observed
    frames with a visible particle, ``dark`` for dips). No particle located: the summary says
    so in ``note``, no check."""
    from matdyn.dynamics.locate import estimate_locate_params_from
    from matdyn.errors import AnalysisError

    real, gen = np.asarray(real), np.asarray(gen)
    if params is None:
        try:
            params, _ = estimate_locate_params_from(real, dark=dark)
        except AnalysisError:
            return {"note": "no particle located in the first observed frames: not checked"}, []
    out, checks = subpixel_fidelity(located_centres(real, params), located_centres(gen, params),
                                    n_splits=n_splits, seed=seed)
    out.update(locator="trackpy", locate_diameter_px=int(params.diameter),
               locate_minmass=float(params.minmass))
    return out, checks
