"""Slit widths of generated Ta-chart frames at the working pixel size (paper §3.2, Fig. 4b;
issue 11: "generated slit widths within 1 px of the truth").

The anchor is an observed raw frame of the synthetic chart (its store truth gives the
chart offset, hence where slits d1 and d2 are). Generated frames and observed frames are
template matched to the anchor and measured with profiles that follow the match
(:func:`matdyn.analysis.fidelity_content.registered_slit_widths`); widths are the
half-contrast widths of band-averaged profiles, in nm at the working pixel size. The
baseline for "generated vs observed" is the difference between two random halves of the
observed frames; the check's floor is half a working pixel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from matdyn.analysis.fidelity_content import Check, half_split, registered_slit_widths
from matdyn.errors import AnalysisError

__all__ = ["chart_anchor_slits", "chart_slit_summary"]

HALF_LENGTH_FACTOR = 0.9  # profile half-length / slit width, as the chart case (cases/ta_chart.py)


def chart_anchor_slits(store: Any, frame: int, resolution: int, fit: str = "crop") -> list[dict]:
    """Slits d1, d2 of raw frame ``frame`` of a synthetic chart store in the working
    geometry: ``[{"name", "centre_rc" (px), "angle_deg" (0: across = along columns),
    "half_length" (px), "truth" (nm)}]``. The slit pair nearest the frame centre is taken.
    """
    from matdyn.data.frames import check_fit
    from matdyn.data.synthetic import ta_chart as tc

    ta = store.truth_attrs
    need = ("pixel_size_nm", "cell_width_nm", "chart_origin_nm", "d1_nm", "d2_nm")
    if "truth/offset_nm" not in store.group or any(k not in ta for k in need):
        raise AnalysisError("the chart store has no slit truth (offset_nm, d1_nm, ...); "
                            "slit widths need the synthetic chart's ground truth")
    offset = float(store.group["truth/offset_nm"][int(frame)])
    a, w = float(ta["pixel_size_nm"]), float(ta["cell_width_nm"])
    h_px, w_px = store.meta.spatial_shape
    side = min(h_px, w_px) if check_fit(fit) == "crop" else max(h_px, w_px)
    off_r, off_c = (h_px - side) / 2.0, (w_px - side) / 2.0
    scale = resolution / side
    mid = 0.5 * (tc.SLIT_LEFT_FRACS[0] + tc.SLIT_LEFT_FRACS[1]) * w + 0.5 * float(ta["d2_nm"])
    cell = round((w_px * a / 2 - offset - float(ta["chart_origin_nm"]) - mid) / w)
    x0 = float(ta["chart_origin_nm"]) + cell * w
    row = 0.5 * (tc.SLIT_ROWS[0] + tc.SLIT_ROWS[1]) * h_px  # edge coordinates
    out = []
    for name, left, width in (("d1", x0 + tc.SLIT_LEFT_FRACS[0] * w, float(ta["d1_nm"])),
                              ("d2", x0 + tc.SLIT_LEFT_FRACS[1] * w, float(ta["d2_nm"]))):
        col = (left + offset + 0.5 * width) / a  # slit centre, column edge coordinates
        centre = ((row - off_r) * scale - 0.5, (col - off_c) * scale - 0.5)
        width_px = width / a * scale
        out.append({"name": name, "centre_rc": centre, "angle_deg": 0.0,
                    "half_length": max(HALF_LENGTH_FACTOR * width_px, 3.0), "truth": width})
    return out


def _stats(v: np.ndarray) -> dict[str, float | int | None]:
    v = v[np.isfinite(v)]
    if not v.size:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}


def chart_slit_summary(store: Any, generated: np.ndarray, observed: np.ndarray,
                       observed_indices: np.ndarray, resolution: int, fit: str, pixel_size: float,
                       *, seed: int = 0, n_max: int = 200) -> tuple[dict[str, Any], list[Check]]:
    """Slit widths (nm) of up to ``n_max`` generated and observed frames (both [N, 1, R, R],
    ``observed`` = store frames ``observed_indices`` prepared with ``fit``), against the
    planted widths; ``pixel_size`` = working pixel size (nm). Returns (summary, checks).
    """
    from matdyn.data.frames import load_observed

    aug = store.group["truth/is_augmented"][...] if "truth/is_augmented" in store.group else None
    raw = np.flatnonzero(aug == 0) if aug is not None else np.arange(len(store))
    anchor_frame = int(raw[len(raw) // 2])
    slits = chart_anchor_slits(store, anchor_frame, resolution, fit)
    anchor = load_observed(store, [anchor_frame], resolution, fit)[0, 0]
    gen, obs = generated[:n_max], observed[:n_max]
    wg = registered_slit_widths(gen, anchor, slits, pixel_size)
    wo = registered_slit_widths(obs, anchor, slits, pixel_size)
    a, b = half_split(len(obs), seed)
    out: dict[str, Any] = {"pixel_size": float(pixel_size), "anchor_frame": anchor_frame}
    checks = []
    for k, s in enumerate(slits):
        g, o = _stats(wg[:, k]), _stats(wo[:, k])
        ha, hb = _stats(wo[a, k]), _stats(wo[b, k])
        entry: dict[str, Any] = {"truth": s["truth"], "generated": g, "observed": o}
        if g["mean"] is not None and o["mean"] is not None:
            entry["generated_minus_truth_px"] = (g["mean"] - s["truth"]) / pixel_size
            entry["within_1px_of_truth"] = abs(g["mean"] - s["truth"]) <= pixel_size
            base = abs(ha["mean"] - hb["mean"]) if ha["mean"] is not None and hb["mean"] is not None else 0.0
            checks.append(Check(f"slit_width.{s['name']}", abs(g["mean"] - o["mean"]), base,
                                0.5 * pixel_size))
        out[s["name"]] = entry
    return out, checks
