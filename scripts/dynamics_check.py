"""Check the particle-level dynamics estimators (issue 12) on a store and a generator.

    # tracking baseline of a time-resolved store (per planted mode when it has truth)
    python scripts/dynamics_check.py track STORE [--channel 1] [--drift] [--n-frames 400]
    # MC displacement statistics of a trained generator at several γ, the γ ↔ Δt
    # calibration and MSD(Δt), beside tracking of the store it was trained on
    python scripts/dynamics_check.py variation BUNDLE STORE [--gammas 0.5 1 2]

Prints JSON (numbers in the store's units); ``--out FILE`` also writes it (atomically).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from matdyn.cli import guarded
from matdyn.errors import AnalysisError


def _locate(args: argparse.Namespace):
    from matdyn.dynamics import LocateParams

    if args.diameter is None:
        return None
    return LocateParams(diameter=args.diameter, minmass=args.minmass or 0.0, dark=not args.bright)


def _track(store, args: argparse.Namespace, resolution: int | None = None) -> dict:
    from matdyn.dynamics import tracking_baseline

    r = tracking_baseline(store, n_frames=args.n_frames, resolution=resolution,
                          fit=args.fit, channel=args.channel, params=_locate(args),
                          dark=not args.bright, subtract_drift=args.drift)
    if not r.applicable:
        return {"applicable": False, "reason": r.reason}
    return {"applicable": True, "info": r.info, "fits": r.fits.to_dict("records"),
            "msd": r.msd.to_dict("records")}


def _region_of(store, yx: np.ndarray, resolution: int, fit: str) -> np.ndarray:
    """Planted mode at reference-particle positions (generator px) from truth region_map."""
    truth = store.truth
    if "region_map" not in truth:
        return np.full(len(yx), -1)
    h, w = store.meta.spatial_shape
    side = min(h, w) if fit == "crop" else max(h, w)
    off = np.array([(h - side) // 2, (w - side) // 2])
    p = (yx + 0.5) * side / resolution - 0.5 + off
    rc = np.clip(np.rint(p).astype(int), 0, [h - 1, w - 1])
    return truth["region_map"][rc[:, 0], rc[:, 1]].astype(int)


def _decode(bundle, z: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return bundle.sample(torch.as_tensor(z, dtype=torch.float32)).numpy()[:, 0]


def _variation(args: argparse.Namespace) -> dict:
    import pandas as pd

    from matdyn.data.frames import ObservedFrames
    from matdyn.data.store import open_store
    from matdyn.descriptors.differences import DensityDifference, EntropyDifference
    from matdyn.dynamics import (
        dt_for_gammas,
        estimate_locate_params,
        lag_differences,
        lag_intercept,
        msd_curve,
        still_variation,
        variation_displacements,
    )
    from matdyn.sampling.engine import variation_latents
    from matdyn.sampling.samplers import UniformSampler
    from matdyn.training.bundle import load_generator

    store = open_store(args.store)
    bundle = load_generator(args.bundle)
    res, fit = bundle.resolution, args.fit
    obs = ObservedFrames(store, np.arange(min(len(store), args.n_frames or len(store))), res, fit)
    px, dt_frame = obs.pixel_size, float(store.meta.frame_interval or 1.0)
    frames = obs.load()
    metrics = {"density_diff": DensityDifference(), "entropy_diff": EntropyDifference()}
    lag = {k: lag_differences(frames, m, frame_interval=dt_frame) for k, m in metrics.items()}
    names = list(store.truth_attrs.get("mode_names", []))
    rows, curve = [], {k: [] for k in metrics}
    for i in range(args.n_refs):  # one reference at a time, all γ on the same z
        z, _ = variation_latents(args.seed, i, 1, bundle.latent_dim, UniformSampler(1.0))
        ref = _decode(bundle, z[None].numpy())[0]
        try:
            params = _locate(args) or estimate_locate_params(ref, dark=not args.bright)
            floor = variation_displacements(ref, still_variation(ref, 64, seed=i), px, dt_frame,
                                            params=params)
        except AnalysisError:
            continue  # a reference without particles has nothing to measure
        for g in args.gammas:  # samples of this reference at each γ
            _, eps = variation_latents(args.seed, i, args.n_samples, bundle.latent_dim,
                                       UniformSampler(g))
            smp = _decode(bundle, (z[None] + eps).numpy())
            for k, m in metrics.items():
                curve[k].append((g, float(np.median(m.compare(smp[:, None], np.repeat(
                    ref[None, None], len(smp), 0))))))
            v = variation_displacements(ref, smp, px, dt_frame, params=params).add_floor(floor)
            t = v.particles.assign(ref=i, gamma=g, appearing=float(v.n_appearing.mean()))
            t["mode"] = _region_of(store, t[["y_px", "x_px"]].to_numpy(), res, fit)
            rows.append(t)
    if not rows:
        raise AnalysisError("no reference image of the generator had a locatable particle")
    tab = pd.concat(rows, ignore_index=True)
    u = store.meta.unit
    msd_c, fl_c = f"msd_{u}2", f"msd_floor_{u}2"
    out: dict = {"pixel_size": px, "frame_interval": dt_frame, "resolution": res,
                 "lag_differences": {k: v.to_dict("records") for k, v in lag.items()}}
    gam = np.array(sorted(set(args.gammas)))
    cal = {}
    for k in metrics:  # γ -> median difference -> Δt
        c = pd.DataFrame(curve[k], columns=["gamma", "diff"]).groupby("gamma")["diff"].median()
        lt, ld = lag[k][f"dt_{store.meta.time_unit}"], lag[k]["median"]
        d0 = lag_intercept(lt, ld) if args.noise_intercept else 0.0
        dts, ok = dt_for_gammas(c.loc[gam].to_numpy(), lt, ld - d0)
        cal[k] = {"gamma_diff": c.loc[gam].tolist(), "lag_intercept": d0, "dt": dts.tolist(),
                  "in_range": ok.tolist()}
    out["gamma_to_dt"] = cal
    per = []
    dt_g = np.asarray(cal["density_diff"]["dt"])
    for mode, grp in tab.groupby("mode"):  # MC MSD per planted region and γ
        med = grp.groupby("gamma")[[msd_c, fl_c]].median().loc[gam]
        rec = {"mode": names[mode] if 0 <= mode < len(names) else str(mode),
               "n_particles": int(grp[grp.gamma == gam[0]].shape[0]),
               "msd_by_gamma": med[msd_c].tolist(), "floor": med[fl_c].tolist(),
               "anisotropy": grp.groupby("gamma")["anisotropy"].median().loc[gam].tolist(),
               "drift_fraction": grp.groupby("gamma")["drift_fraction"].median().loc[gam].tolist(),
               "D_at_frame_interval": (med[msd_c] / (4 * dt_frame)).tolist()}
        if np.isfinite(dt_g).any():
            rec["D_at_calibrated_dt"] = (med[msd_c].to_numpy() / (4 * dt_g)).tolist()
        if np.isfinite(dt_g).sum() >= 2:
            fitr = msd_curve(dt_g, med[msd_c].to_numpy(), floor=med[fl_c].to_numpy())
            rec.update(D_slope=float(fitr["D"][0]), alpha=float(fitr["alpha"][0]),
                       motion=str(fitr["motion"][0]))
        per.append(rec)
    out["mc_by_mode"] = per
    out["modes_from_data"] = _cluster_check(tab, msd_c, gam)
    if args.table:
        tab.to_csv(args.table, index=False)
    out["tracking"] = _track(store, args, resolution=res)
    return out


def _cluster_check(tab, msd_c: str, gam: np.ndarray) -> dict:
    """Number of motion modes in the MC descriptors at the middle γ (log MSD alone, and
    log MSD with drift fraction and anisotropy), and the adjusted Rand index against the
    planted regions."""
    from sklearn.metrics import adjusted_rand_score

    from matdyn.dynamics import choose_n_clusters

    t = tab[tab.gamma == gam[len(gam) // 2]].dropna(subset=[msd_c, "drift_fraction",
                                                            "anisotropy"])
    logm = np.log(t[msd_c].clip(lower=1e-9)).to_numpy()[:, None]
    x = np.column_stack([logm, t["drift_fraction"], t["anisotropy"]])
    out = {"gamma": float(gam[len(gam) // 2]), "n_particles": int(len(t))}
    for feats, xx in (("log_msd", logm), ("log_msd_drift_anisotropy", x)):
        for method in ("gap", "silhouette"):
            c = choose_n_clusters(xx, method=method)
            out[f"{feats}/{method}"] = {"k": c.k, "ari_vs_planted": float(
                adjusted_rand_score(t["mode"], c.labels))}
    from sklearn.cluster import AgglomerativeClustering

    z = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    fixed = AgglomerativeClustering(n_clusters=3, linkage="average").fit_predict(z)
    out["fixed_3_average_linkage_ari"] = float(adjusted_rand_score(t["mode"], fixed))
    return out


@guarded
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["track", "variation"])
    ap.add_argument("paths", nargs="+", help="track: STORE; variation: BUNDLE STORE")
    ap.add_argument("--channel", type=int, default=0)
    ap.add_argument("--n-frames", type=int, default=None)
    ap.add_argument("--fit", default="crop")
    ap.add_argument("--drift", action="store_true", help="subtract ensemble drift (trackpy)")
    ap.add_argument("--bright", action="store_true", help="particles brighter than background")
    ap.add_argument("--diameter", type=int, default=None)
    ap.add_argument("--minmass", type=float, default=None)
    ap.add_argument("--gammas", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    ap.add_argument("--n-refs", type=int, default=20)
    ap.add_argument("--n-samples", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise-intercept", action="store_true",
                    help="subtract the Δt→0 frame-noise part of the lag differences")
    ap.add_argument("--out", default=None)
    ap.add_argument("--table", default=None, help="variation: per-particle table as CSV")
    args = ap.parse_args(argv)
    if args.what == "track":
        from matdyn.data.store import open_store

        result = _track(open_store(args.paths[0]), args)
    else:
        if len(args.paths) != 2:
            raise AnalysisError("variation needs BUNDLE STORE (generator bundle and its store)")
        args.bundle, args.store = args.paths
        result = _variation(args)
    text = json.dumps(result, indent=1, default=float)
    print(text)
    if args.out:
        from matdyn.io import atomic_write_text

        atomic_write_text(Path(args.out), text)


if __name__ == "__main__":
    main(sys.argv[1:])
