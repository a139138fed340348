"""Steps of the Ta-chart case that are specific to it: anchors, phase fidelity, the match
filter, motion along/across the chart, translation/rotation sequences, slit widths and the
recovery of the planted geometry and smoothness (paper §3.2, Figs. 3-4)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from matdyn.analysis.case import fmt_stats, rejection_summary, stats
from matdyn.analysis.cases.ta_chart.config import Config, angle_grid
from matdyn.analysis.cases.ta_chart.geometry import SlitGeometry, pair_iou
from matdyn.analysis.cases.ta_chart.observed import Observed, spread
from matdyn.analysis.fidelity import (
    sliced_wasserstein,
    split_half_baseline,
    swd_baseline,
    wasserstein_1d,
)
from matdyn.descriptors.registration import register_batch
from matdyn.errors import AnalysisError


@dataclass
class Anchors:
    """Observed raw frames of known slit geometry (crops) for matching the references."""

    crops: np.ndarray  # [A, m, m]
    pairs: list[np.ndarray]  # per anchor: slit pairs [P, 2, 2]
    index: np.ndarray  # [A] store frame indices


def anchors(obs: Observed, geom_obs: SlitGeometry, cfg: Config) -> Anchors:
    idx = spread(obs.raw, cfg.n_anchors)
    frames = obs.load(idx)
    crops = geom_obs.crop(frames)
    pairs = [obs.pairs(int(i), f[0], geom_obs) for i, f in zip(idx, frames)]
    keep = [k for k, p in enumerate(pairs) if len(p)]
    if not keep:
        d_nm = obs.expected_widths()
        raise AnalysisError(
            "no slit pair was found in the observed raw frames (profile search for widths "
            f"{d_nm[0]:g}/{d_nm[1]:g} nm ± {cfg.slit_search_tolerance_px:g} px); set "
            "analysis.d1_nm/d2_nm or slit_search_tolerance_px"
        )
    return Anchors(crops[keep], [pairs[k] for k in keep], idx[keep])


def probe_anchors(gen: np.ndarray, anchors_: Anchors, geom: SlitGeometry,
                  cfg: Config) -> dict[str, Any]:
    """All-noise check: generated frames must match some observed raw frame."""
    grid = angle_grid(cfg.anchor_angle_range_deg, max(cfg.anchor_angle_step_deg, 2.0))
    probe = geom.crop(gen[: min(8, len(gen))])
    scores = np.array([register_batch(anchors_.crops, p, grid, upsample_factor=2,
                                      refine_iters=0).score.max() for p in probe])
    ps = stats(scores)
    if ps["median"] < cfg.min_anchor_score:
        raise AnalysisError(
            f"generated frames match no observed Ta-chart frame (best NCC per frame: "
            f"{fmt_stats(ps)}, need median >= min_anchor_score={cfg.min_anchor_score}); the "
            "generator does not draw the test chart (untrained or wrong bundle?)"
        )
    return ps


def w1_metric(max_values: int, seed: int) -> Callable[[np.ndarray, np.ndarray], float]:
    def metric(a: np.ndarray, b: np.ndarray) -> float:
        r = np.random.default_rng(seed)
        va, vb = np.asarray(a).ravel(), np.asarray(b).ravel()
        if va.size > max_values:
            va = va[r.choice(va.size, max_values, replace=False)]
        if vb.size > max_values:
            vb = vb[r.choice(vb.size, max_values, replace=False)]
        return wasserstein_1d(va, vb)

    return metric



def fidelity_distances(obs: np.ndarray, gen: np.ndarray, cfg: Config, seed: int) -> dict[str, Any]:
    """Phase-value W1 and multi-scale SWD, each with its split-half real-vs-real baseline."""
    w1 = w1_metric(cfg.max_w1_values, seed)
    swd = sliced_wasserstein(obs, gen, n_patches=cfg.swd_patches, seed=seed)
    base = swd_baseline(obs, n_patches=cfg.swd_patches, seed=seed)
    return {
        "phase_w1": w1(obs, gen),
        "phase_w1_baseline": float(np.mean(split_half_baseline(obs, w1, n_repeats=3, seed=seed))),
        "swd": swd.mean,
        "swd_levels": swd.levels.tolist(),
        "swd_baseline": base.mean,
        "swd_baseline_levels": base.levels.tolist(),
        "n_generated": int(len(gen)),
        "n_observed": int(len(obs)),
    }



def filters(g: dict[str, np.ndarray], cfg: Config) -> tuple[dict, np.ndarray]:
    """(filters summary, kept [M, N]): NCC vs the reference, and the reference's anchor NCC."""
    ref_score = g["ref_anchor_score"]
    if np.nanmax(ref_score) < cfg.min_anchor_score:
        raise AnalysisError(
            f"no reference image matches an observed frame (best NCC "
            f"{fmt_stats(stats(ref_score))}, need >= {cfg.min_anchor_score}); the generator "
            "does not draw the test chart")
    kept = (g["score"] >= cfg.min_match_score) & np.isfinite(g["shift_px"]).all(axis=2)
    kept &= (ref_score >= cfg.min_anchor_score)[:, None]
    if not kept.any():
        raise AnalysisError(
            f"min_match_score={cfg.min_match_score} rejects every sample (registration NCC "
            f"{fmt_stats(stats(g['score']))}); lower analysis.min_match_score or gamma")
    bad_ref = np.repeat((ref_score < cfg.min_anchor_score)[:, None], kept.shape[1], axis=1)
    return {
        "match_score": rejection_summary(
            ~kept, cfg.min_match_score, "lower bound on the NCC of a sample vs its reference"),
        "reference_anchor": rejection_summary(
            bad_ref, cfg.min_anchor_score,
            "lower bound on a reference's NCC with its best observed raw frame (all its "
            "samples are dropped below it; included in match_score's rates)"),
    }, kept


def motion(g: dict[str, np.ndarray], pixel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Translation along the chart axis of each reference and across it [M, N], physical."""
    th = np.radians(g["ref_slit_angle"])  # [M]
    u = np.stack([-np.sin(th), np.cos(th)], axis=1)  # (row, col) chart +x in the reference
    v = np.stack([np.cos(th), np.sin(th)], axis=1)
    along = np.einsum("mnk,mk->mn", g["shift_px"], u) * pixel_size
    across = np.einsum("mnk,mk->mn", g["shift_px"], v) * pixel_size
    return along, across


def unpack(packed: np.ndarray, size: int) -> np.ndarray:
    """Packed crop masks [..., bytes] -> bool [..., size, size]."""
    flat = np.unpackbits(packed, axis=-1, count=size * size).astype(bool)
    return flat.reshape(packed.shape[:-1] + (size, size))


def sequences(
    kept: np.ndarray,
    along: np.ndarray,
    across: np.ndarray,
    angle: np.ndarray,
    packed_masks: np.ndarray,
    size: int,
    subset_frac: float,
) -> dict[str, Any]:
    """Per reference, the translation and rotation sequences (sample orders), the IoU of
    consecutive images in them, their steps and gap ratios, and each sample's rank."""
    M, N = kept.shape
    out: dict[str, Any] = {
        "order_t": {},
        "order_r": {},
        "rank_t": np.full((M, N), -1),
        "rank_r": np.full((M, N), -1),
    }
    parts: dict[str, list] = {
        k: [] for k in ("iou_t", "iou_r", "jumps_t", "jumps_r", "gap_t", "gap_r")
    }
    # one pair of sequences per reference
    for i in range(M):
        js = np.flatnonzero(kept[i])
        if js.size == 0:
            continue
        masks = unpack(packed_masks[i, js], size)
        pos = {j: p for p, j in enumerate(js)}
        # "selected subsets" (§3.2): the samples that rotate least form the translation
        # sequence, those that translate least the rotation sequence
        st = least(js, np.abs(angle[i, js]), subset_frac)
        sr = least(js, np.hypot(along[i, js], across[i, js]), subset_frac)
        for key, sel, val in (("t", st, along[i]), ("r", sr, angle[i])):
            order = sel[np.argsort(val[sel], kind="stable")]
            out[f"order_{key}"][i] = order
            out[f"rank_{key}"][i, order] = np.arange(len(order))
            parts[f"iou_{key}"].append(pair_iou(masks[[pos[j] for j in order]]))
            parts[f"jumps_{key}"].append(np.diff(val[order]))
            parts[f"gap_{key}"].append(gap_ratio(val[order]))
    for key in ("iou_t", "iou_r", "jumps_t", "jumps_r"):
        out[key] = np.concatenate(parts[key]) if parts[key] else np.zeros(0)
    out["gap_t"], out["gap_r"] = parts["gap_t"], parts["gap_r"]
    return out


def least(idx: np.ndarray, other: np.ndarray, frac: float) -> np.ndarray:
    """The ``frac`` share (at least 2) of ``idx`` with the smallest ``other``, in idx order.

    >>> least(np.arange(4), np.array([3.0, 0.0, 2.0, 1.0]), 0.5).tolist()
    [1, 3]
    """
    n = min(len(idx), max(2, int(math.ceil(frac * len(idx)))))
    return np.sort(idx[np.argsort(other, kind="stable")[:n]])


def gap_ratio(values: np.ndarray) -> float:
    """Largest step of a sorted sequence over the largest step expected for the same number
    of values drawn uniformly over the same range, ``L · H(n-1) / (n-1)`` (H: harmonic
    number). About 1 for an evenly filled range; much larger means a jump (a gap in the
    motion that the latent neighbourhood does not reach), whatever the sample density.

    >>> round(gap_ratio(np.array([0.0, 1.0, 2.0, 3.0])), 3)
    0.545
    """
    v = np.sort(np.asarray(values, dtype=np.float64))
    n = v.size
    if n < 3 or np.ptp(v) <= 0:
        return float("nan")
    expected = np.ptp(v) * np.sum(1.0 / np.arange(1, n)) / (n - 1)
    return float(np.diff(v).max() / expected)


def nanmax(values: list[float]) -> float:
    v = np.asarray(values, dtype=np.float64)
    return float(np.nanmax(v)) if np.isfinite(v).any() else float("nan")



def slit_summary(gw: np.ndarray, ow: np.ndarray, ref_widths: np.ndarray,
                 ref_anchor_score: np.ndarray) -> dict:
    """Slit widths d1, d2: generated (retained samples), observed raw frames, references."""
    if not np.isfinite(gw).any():
        raise AnalysisError(
            "no slit width could be measured in the generated images (slit profiles left the "
            f"analysis disc or had no contrast; reference anchor NCC "
            f"{fmt_stats(stats(ref_anchor_score))}); raise analysis.crop_frac or check the "
            "generator")
    return {name: {"generated": stats(gw[..., k]), "observed": stats(ow[:, k]),
                   "reference": [float(x) for x in ref_widths[:, k]]}
            for k, name in enumerate(("d1", "d2"))}


def sequence_summary(seqs: dict, kept: np.ndarray, along: np.ndarray, across: np.ndarray,
                     angle: np.ndarray, observed: dict, unit: str) -> dict:
    """Steps, bounds, IoUs and ranges of the translation and rotation sequences."""
    t_steps, t_source = observed["translation_steps"]
    r_steps = observed["rotation_steps"]
    return {
        "translation": {
            "steps": stats(np.abs(seqs["jumps_t"])), "bound": float(np.max(t_steps)),
            "bound_source": t_source, "unit": unit, "iou_generated": stats(seqs["iou_t"]),
            "iou_observed": stats(observed["iou_translation"]), "range": stats(along[kept]),
            "max_gap_ratio": nanmax(seqs["gap_t"]),
        },
        "rotation": {
            "steps": stats(np.abs(seqs["jumps_r"])),
            "bound": float(np.max(r_steps)) if r_steps.size else float("nan"),
            "bound_source": observed["rotation_source"], "unit": "deg",
            "observed_steps": stats(r_steps), "iou_generated": stats(seqs["iou_r"]),
            "iou_observed": stats(observed["iou_rotation"]), "range": stats(angle[kept]),
            "max_gap_ratio": nanmax(seqs["gap_r"]),
        },
        "translation_across": stats(across[kept]),
    }


def table_rows(g: dict, kept: np.ndarray, along: np.ndarray, across: np.ndarray,
               gw: np.ndarray, seqs: dict, unit: str) -> list[dict]:
    """One row per sample: kept, NCC, shift, motion, slit widths, ranks in the sequences."""
    M, N = kept.shape
    angle = g["angle_deg"]
    return [{
        "reference": i, "sample": j, "kept": bool(kept[i, j]), "score": float(g["score"][i, j]),
        "shift_row_px": float(g["shift_px"][i, j, 0]),
        "shift_col_px": float(g["shift_px"][i, j, 1]),
        f"translation_along_{unit}": float(along[i, j]),
        f"translation_across_{unit}": float(across[i, j]),
        "rotation_deg": float(angle[i, j]),
        f"d1_{unit}": float(gw[i, j, 0]), f"d2_{unit}": float(gw[i, j, 1]),
        "rank_translation": int(seqs["rank_t"][i, j]),
        "rank_rotation": int(seqs["rank_r"][i, j]),
    } for i in range(M) for j in range(N)]
