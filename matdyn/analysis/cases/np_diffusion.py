"""NP-diffusion case study (paper §3.3): fidelity, latent Monte Carlo traces, diffusion modes.

Steps of :func:`run`:

1. **Inputs.** A 1-channel 2D generator and store. Observed frames are centre-cropped and
   resized to the generator's resolution (``square_frames`` + ``resize_frames``, as in
   training); every length uses the bundle's pixel size at that resolution.
2. **Fidelity (§3.3.1, Fig. 5a/b).** ``n_fidelity`` generated frames (z ~ N(0, I)) vs as
   many observed frames spread over the store. Particles are segmented identically in both
   sets: Gaussian σ, black top-hat, threshold = ``trace_threshold`` × the *observed* particle
   depth (median single-particle dip), components ≥ ``min_area`` px. Reported, each with a
   split-half real-vs-real baseline: the 1D Wasserstein distance of particle areas
   (``area_normalize="range"``: both samples mapped to [0, 1] by the min and max of the
   pooled areas, our reading of the paper's 0.068; also the raw value in nm²), the
   multi-scale sliced Wasserstein distance (Karras et al. 2018) and the S₂ RMS distance of
   the particle masks. A generator whose frames lack the spatial correlation of the data
   (lag-1 pixel autocorrelation < ``noise_corr_ratio`` × the observed one) or show no
   particles is rejected as noise.
3. **Monte Carlo (§3.3.2).** ``n_refs`` references × ``n_samples`` perturbations
   ε ~ U[-γ, γ]^d through :class:`~matdyn.sampling.engine.VariationEngine` (resumable in
   ``out_dir/variations``). A sample is kept when its image-entropy difference to its
   reference is ≤ the threshold: a number (paper 0.2, on the paper's own entropy scale), or
   ``"auto"``: the ``entropy_bound`` ("max", the paper's "upper bound", or "p95") of the
   same metric between consecutive observed frames at the same resolution
   (:func:`~matdyn.gamma.continuity.consecutive_differences`). Kept samples (and the
   reference, Eq. 3, with ``include_reference``) are averaged pixel-wise
   (:class:`~matdyn.sampling.reducers.FilteredMean`).
4. **Traces (Fig. 6a).** Each averaged image is segmented with
   :func:`~matdyn.descriptors.traces.extract_traces` at ``depth`` = the median
   single-particle dip depth of *its reference image*, so fading traces of moving particles
   are measured against the depth of a still particle. The reference image's own particles
   are described the same way (the "before averaging" baseline).
5. **Descriptors.** ``anisotropy`` = (λ1 - λ2)/(λ1 + λ2) of the depth-weighted second
   moments (0 isotropic, → 1 line); ``tortuosity`` = arc-chord ratio of the ordered,
   smoothed skeleton path (≥ 1, 1 = straight; grows with meandering). **Diffusion area**
   (Fig. 6b) = the MSD-equivalent spread of the trace beyond the still particle::

       A = [tr Σ_trace - tr Σ_particle] × pixel_size²   (nm²)

   Σ are the second moments of the smoothed dip above a locally fitted background plane,
   inside a Mahalanobis window of radius ``moment_window`` within the trace's watershed
   basin (no threshold, so the tails of faded traces count); Σ_particle is that of the
   reference particle lying on the trace (else the median reference particle). Averaging
   convolves the particle with the distribution of its positions and second moments of a
   convolution add, so A estimates tr Σ_positions. If the kept samples are the states
   reachable from the reference within the time t that γ stands for (the paper equates
   γ = 1 with ~1 s, §3.3.1), that is the mean squared displacement MSD(t) = 4 D t; if they
   behave like the frames of a t-long window, it is the window spread (2 D t / 3 = MSD / 6
   for free diffusion). The summary gives both planted values (``planted_msd``,
   ``planted_window_spread``, from the true trajectories), the planted 4 D t and the
   paper's 7712 ± 2862 nm² (XPCS: 7550 nm² per s). On 1-s averages of the stand-in's own
   frames at 128 px, A matched the planted window spread within ~15-30 % per mode. Noise
   makes A scatter around 0 for still particles (the reference rows of the table,
   measured against their median, show that floor). A trace fades below the
   segmentation threshold once its spread per axis exceeds about twice the particle's
   own second moment, so very mobile particles are missed rather than measured. The mask
   area (``area``), the 1-σ ellipse area (``ellipse_area``) and ``rms_displacement`` = √A
   (A clipped at 0; much less skewed than A, the better clustering feature) are in the
   table too.
6. **Clustering (Fig. 6c/d).** ``features`` of the averaged traces, scaled per column
   (``scaling``, paper: range), Euclidean; HAC cut into ``n_modes`` clusters with average
   linkage (paper) and the robust variants ``trimmed`` (average linkage after setting aside
   rows with |z| > ``trim_z``, then nearest centre) and ``ward``, which cluster
   ``robust_features`` (default anisotropy + rms displacement: tortuosity is ~1 for nearly
   every trace of the stand-in, FINDINGS.md). Clusters are named:
   highest mean anisotropy → directed, then larger mean diffusion area → free, → confined.
7. **Ground truth** (synthetic stores only, ``summary["recovery"]``): a trace's planted
   mode is the store's ``region_map`` (cropped and nearest-neighbour resized like the
   frames) at the trace centroid; traces outside every region (-1) are left out of the ARI.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from scipy import ndimage

from matdyn.analysis.cases import require_shapes
from matdyn.analysis.clustering import HACResult, adjusted_rand, auc, hac, trimmed_hac
from matdyn.analysis.fidelity import (
    s2_baseline,
    s2_distance,
    sliced_wasserstein,
    split_half_baseline,
    two_point_correlation,
    wasserstein_1d,
    wasserstein_baseline,
)
from matdyn.data.transforms import resize_frames, square_frames
from matdyn.descriptors.differences import EntropyDifference, MetricFilter
from matdyn.descriptors.particles import Binarizer, particle_areas_batch
from matdyn.descriptors.traces import (
    TraceSet,
    extract_traces,
    second_moments,
    trace_descriptors,
)
from matdyn.errors import AnalysisError, ConfigError
from matdyn.gamma.continuity import consecutive_differences, summarize
from matdyn.sampling.engine import VariationEngine
from matdyn.sampling.reducers import FilteredMean, SampleMetrics
from matdyn.sampling.samplers import UniformSampler
from matdyn.viz.figures import (
    cluster_boxplots,
    dendrogram_figure,
    distribution_comparison,
    image_grid,
    save_figure,
)

__all__ = ["Config", "run", "PAPER"]

CASE = "np_diffusion"
MODE_NAMES = ("directed", "free", "confined")  # region_map values 0, 1, 2 of the stand-in
DIRECTED, FREE, CONFINED = 0, 1, 2
_METHODS = ("average", "trimmed", "ward")
_FEATURES = (
    "anisotropy",
    "tortuosity",
    "diffusion_area",
    "rms_displacement",
    "area",
    "ellipse_area",
    "major_sigma",
    "minor_sigma",
)
_NM_PER_UNIT = {"nm": 1.0, "um": 1e3, "µm": 1e3, "μm": 1e3, "mm": 1e6, "A": 0.1, "Å": 0.1}

#: the paper's numbers for the report table (§3.3.1, §3.3.2)
PAPER: dict[str, Any] = {
    "particle_area_w1": 0.068,  # §3.3.1, observed vs generated NP areas
    "n_fidelity": 1000,  # §3.3.1, generated samples
    "gamma": 1.0,  # §3.3.1
    "gamma_time_s": 1.0,  # §3.3.1: γ = 1 ≈ NP motion over ~1 s
    "entropy_threshold": 0.2,  # §3.3.2
    "entropy_upper_bound_consecutive": 0.26,  # §3.3.1
    "n_refs": 200,  # §3.3.2
    "n_samples": 500,  # §3.3.2
    "diffusion_area_nm2": {"mean": 7712.0, "std": 2862.0},  # §3.3.2, Fig. 6b
    "xpcs_diffusion_nm2_per_s": {"mean": 7550.0, "std": 850.0},  # §3.3.2
    "n_modes": 3,  # §3.3.2, Fig. 6c
    "linkage": "average",  # §3.3.2
}


@dataclass
class Config:
    """Every count and threshold of the NP case; CPU-sized counts, paper values in comments."""

    n_refs: int = 60  # paper: 200 reference states (§3.3.2)
    n_samples: int = 100  # paper: 500 perturbed images per reference (§3.3.2)
    n_fidelity: int = 200  # paper: 1000 generated frames vs the observed ones (§3.3.1)
    # filter: |H(x) - H(x_ref)| <= threshold; a number (paper 0.2, §3.3.2, on the paper's
    # entropy scale) or "auto" = `entropy_bound` of consecutive observed frames (paper's rule)
    entropy_threshold: float | str = "auto"
    entropy_bound: str = "max"  # "max" (paper: upper bound 0.26, §3.3.1) or "p95"
    entropy_bins: int = 256  # grey levels of the image entropy (ours, FINDINGS.md)
    baseline_frames: int = 500  # consecutive observed frames for the baseline (paper: all 2000)
    baseline_stride: int = 1  # frame step of the consecutive-frame baseline
    include_reference: bool = True  # G(z_i) belongs to its variation V_i (Eq. 3)
    min_kept: int = 5  # references with fewer kept samples are left out (ours)
    gamma_time_s: float = 1.0  # time the run's γ stands for (paper: γ = 1 ≈ 1 s, §3.3.1)
    # trace extraction (FINDINGS.md: σ 1, top-hat 6, threshold 0.3-0.4 of the depth, 6 px)
    trace_sigma: float = 1.0
    tophat_radius: int = 6
    trace_threshold: float = 0.35
    min_area: int = 6
    moment_window: float = 3.5  # Mahalanobis radius of the moment window (diffusion area)
    path_sigma: float = 1.0  # smoothing of the skeleton path for tortuosity
    depth_frames: int = 64  # observed frames used to measure the particle depth
    # fidelity
    area_normalize: str | None = "range"  # W1 of areas: "range" | "std" | None (nm²)
    baseline_repeats: int = 3  # random halvings for the real-vs-real baselines
    swd_patches: int = 2048  # per pyramid level (PGGAN: 16384 on 2^13 images)
    swd_directions: int = 128
    swd_repeats: int = 2
    noise_corr_ratio: float = 0.5  # generated lag-1 autocorrelation below this × observed: noise
    # clustering (§3.3.2: scaled distance, HAC average linkage, 3 modes)
    n_modes: int = 3
    features: Sequence[str] = ("anisotropy", "tortuosity")  # the paper's two descriptors
    # features of the robust variants (trimmed, ward); empty: same as `features`. Tortuosity
    # is ~1 for nearly every trace here (FINDINGS.md); rms displacement separates the modes
    robust_features: Sequence[str] = ("anisotropy", "rms_displacement")
    scaling: str | None = "range"
    methods: Sequence[str] = ("average", "trimmed", "ward")  # paper first, robust variants
    trim_z: float = 2.0
    # execution
    batch_size: int = 64
    n_show: int = 6  # image pairs in the grid figures

    def __post_init__(self) -> None:
        self.features = tuple(self.features)
        self.robust_features = tuple(self.robust_features or ())
        self.methods = tuple(self.methods)
        if isinstance(self.area_normalize, str) and self.area_normalize.lower() in ("none", "null"):
            self.area_normalize = None

    def validate(self) -> None:
        for name in (
            "n_refs",
            "n_samples",
            "entropy_bins",
            "baseline_stride",
            "min_area",
            "batch_size",
            "tophat_radius",
            "depth_frames",
            "swd_patches",
            "swd_directions",
            "swd_repeats",
            "baseline_repeats",
            "n_show",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ConfigError(f"analysis.{name} must be a positive integer, got {v!r}")
        if int(self.n_fidelity) != self.n_fidelity or self.n_fidelity < 4:
            raise ConfigError(
                f"analysis.n_fidelity must be an integer >= 4, got {self.n_fidelity!r}"
            )
        if int(self.baseline_frames) != self.baseline_frames or self.baseline_frames < 2:
            raise ConfigError(
                f"analysis.baseline_frames must be an integer >= 2, got {self.baseline_frames!r}"
            )
        if int(self.min_kept) != self.min_kept or self.min_kept < 0:
            raise ConfigError(f"analysis.min_kept must be an integer >= 0, got {self.min_kept!r}")
        if int(self.n_modes) != self.n_modes or self.n_modes < 2:
            raise ConfigError(f"analysis.n_modes must be an integer >= 2, got {self.n_modes!r}")
        thr = self.entropy_threshold
        if isinstance(thr, str):
            if thr != "auto":
                try:
                    thr = float(thr)
                except ValueError:
                    raise ConfigError(
                        f"analysis.entropy_threshold must be a number or 'auto', got {thr!r}"
                    ) from None
        if not isinstance(thr, str) and not (math.isfinite(float(thr)) and float(thr) >= 0):
            raise ConfigError(f"analysis.entropy_threshold must be >= 0 or 'auto', got {thr!r}")
        if self.entropy_bound not in ("max", "p95"):
            raise ConfigError(
                f"analysis.entropy_bound must be 'max' or 'p95', got {self.entropy_bound!r}"
            )
        if not 0.0 < self.trace_threshold < 1.0:
            raise ConfigError(
                f"analysis.trace_threshold is a fraction of the particle depth in (0, 1), got {self.trace_threshold}"
            )
        if self.trace_sigma < 0 or self.path_sigma < 0 or not self.moment_window > 0:
            raise ConfigError("analysis.trace_sigma and path_sigma must be >= 0, moment_window > 0")
        if not self.gamma_time_s > 0:
            raise ConfigError(f"analysis.gamma_time_s must be > 0, got {self.gamma_time_s}")
        if self.area_normalize not in (None, "range", "std"):
            raise ConfigError(
                f"analysis.area_normalize must be 'range', 'std' or null, got {self.area_normalize!r}"
            )
        if not 0.0 <= self.noise_corr_ratio < 1.0:
            raise ConfigError(
                f"analysis.noise_corr_ratio must be in [0, 1), got {self.noise_corr_ratio}"
            )
        bad = [f for f in (*self.features, *self.robust_features) if f not in _FEATURES]
        if not self.features or bad:
            raise ConfigError(
                f"analysis.features must be a non-empty subset of {_FEATURES}, got {list(self.features)}"
            )
        bad = [m for m in self.methods if m not in _METHODS]
        if not self.methods or bad:
            raise ConfigError(
                f"analysis.methods must be a non-empty subset of {_METHODS}, got {list(self.methods)}"
            )
        if self.scaling not in (None, "range", "iqr", "std"):
            raise ConfigError(
                f"analysis.scaling must be 'range', 'iqr', 'std' or null, got {self.scaling!r}"
            )

    def threshold_value(self) -> float | None:
        """The fixed entropy threshold, or None for 'auto'."""
        return None if self.entropy_threshold == "auto" else float(self.entropy_threshold)


# ----------------------------------------------------------------------------- helpers


def _f(x: Any) -> float | None:
    """A JSON-friendly float (None for NaN/inf)."""
    v = float(x)
    return v if math.isfinite(v) else None


def _stats(values: Any) -> dict[str, Any]:
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0, "mean": None, "std": None, "median": None, "min": None, "max": None}
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "median": float(np.median(v)),
        "min": float(v.min()),
        "max": float(v.max()),
    }


def _check_inputs(generator: Any, store: Any) -> tuple[int, int]:
    """(resolution, latent_dim) after checking that generator and store hold 2D phase images."""
    require_shapes(generator, store, case=CASE, channels=1, ndim=2, what="phase images")
    res = int(getattr(generator, "resolution", 0))
    dim = int(getattr(generator, "latent_dim", 0))
    if res < 8 or dim < 1:
        raise AnalysisError(
            f"the generator needs resolution >= 8 and latent_dim >= 1, got {res} and {dim}"
        )
    return res, dim


def _pixel_size(generator: Any, store: Any, res: int) -> tuple[float, str, list[str]]:
    """Physical size of one generated pixel, its unit, and warnings."""
    meta = store.meta
    derived = meta.pixel_size * min(meta.spatial_shape) / res  # centre crop, then resize
    norm = dict(getattr(generator, "normalization", {}) or {})
    unit = str(norm.get("unit") or meta.unit)
    warnings: list[str] = []
    ps = norm.get("pixel_size")
    if ps is None:
        return float(derived), unit, warnings
    ps = float(ps)
    if abs(ps / derived - 1.0) > 0.01:
        warnings.append(
            f"bundle pixel_size {ps:.4g} {unit} differs from the store's cropped-and-resized "
            f"{derived:.4g} {unit} at {res} px; using the bundle's"
        )
    return ps, unit, warnings


def _load_real(
    store: Any, res: int, n_baseline: int, fidelity_idx: np.ndarray, chunk: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """Observed frames at the generator resolution: the first ``n_baseline`` (consecutive)
    and the frames ``fidelity_idx``, both [n, 1, res, res] float32, read chunk by chunk."""
    stop_all = max(n_baseline, int(fidelity_idx.max()) + 1 if fidelity_idx.size else 0)
    base, fid = [], []
    # one chunk of frames at a time: crop, resize, keep what is needed
    for start in range(0, stop_all, chunk):
        stop = min(start + chunk, stop_all)
        sel = fidelity_idx[(fidelity_idx >= start) & (fidelity_idx < stop)] - start
        if start >= n_baseline and sel.size == 0:
            continue
        x = torch.from_numpy(store.load(start, stop))
        x = resize_frames(square_frames(x, "crop"), res).numpy().astype(np.float32)
        if start < n_baseline:
            base.append(x[: n_baseline - start])
        if sel.size:
            fid.append(x[sel])
    empty = np.zeros((0, 1, res, res), np.float32)
    return (np.concatenate(base) if base else empty), (np.concatenate(fid) if fid else empty)


def _images_fn(generator: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    fn = getattr(generator, "sample", None)
    return fn if callable(fn) else generator


def _generate(generator: Any, z: torch.Tensor, batch_size: int, res: int) -> np.ndarray:
    """Physical-unit images [N, 1, res, res] float32 for latents z [N, d]."""
    params = list(generator.parameters()) if isinstance(generator, torch.nn.Module) else []
    device = params[0].device if params else torch.device("cpu")
    fn = _images_fn(generator)
    out = []
    with torch.inference_mode():
        # one generator call per batch of latents
        for a in range(0, z.shape[0], batch_size):
            x = fn(z[a : a + batch_size].to(device))
            out.append(x.detach().to("cpu", torch.float32).numpy())
    arr = np.concatenate(out)
    if arr.shape[1:] != (1, res, res):
        raise AnalysisError(
            f"the generator returned images of shape {arr.shape[1:]}, expected (1, {res}, {res}) "
            "from its channels and resolution; check the bundle"
        )
    if not np.isfinite(arr).all():
        raise AnalysisError("the generator produced NaN/inf images; check the bundle")
    return arr


def _lag1_corr(images: np.ndarray) -> np.ndarray:
    """Mean lag-1 pixel autocorrelation (rows and columns) of each image [N, 1, H, W] -> [N].

    >>> smooth = np.tile(np.sin(np.linspace(0, 3, 32)), (32, 1))[None, None]
    >>> noise = np.random.default_rng(0).standard_normal((1, 1, 32, 32))
    >>> bool(_lag1_corr(smooth)[0] > 0.45), bool(abs(_lag1_corr(noise)[0]) < 0.1)
    (True, True)
    """
    x = images[:, 0].astype(np.float64)
    x = x - x.mean(axis=(1, 2), keepdims=True)
    var = (x**2).mean(axis=(1, 2))
    c_r = (x[:, 1:, :] * x[:, :-1, :]).mean(axis=(1, 2))
    c_c = (x[:, :, 1:] * x[:, :, :-1]).mean(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, 0.5 * (c_r + c_c) / var, 0.0)


def _extract(image: np.ndarray, ps: float, cfg: Config, depth: float | None) -> TraceSet:
    return extract_traces(
        image,
        ps,
        sigma=cfg.trace_sigma,
        tophat_radius=cfg.tophat_radius,
        threshold=cfg.trace_threshold,
        min_area=cfg.min_area,
        depth=depth,
    )


def _describe(image: np.ndarray, ps: float, cfg: Config, depth: float) -> pd.DataFrame:
    return trace_descriptors(
        image,
        ps,
        path_sigma=cfg.path_sigma,
        sigma=cfg.trace_sigma,
        tophat_radius=cfg.tophat_radius,
        threshold=cfg.trace_threshold,
        min_area=cfg.min_area,
        depth=depth,
    )


def _particle_depth(image: np.ndarray, cfg: Config) -> float:
    """Median peak dip depth of the particles of one still image (NaN if none)."""
    ts = _extract(image, 1.0, cfg, None)
    if not ts.traces:
        return float("nan")
    return float(np.median([tr.weights.max() for tr in ts.traces]))


def _moment_spreads(
    ts: TraceSet, image: np.ndarray, sigma: float, window: float, iterations: int = 6
) -> np.ndarray:
    """tr Σ (px²) of each trace's dip, background-subtracted locally, with its tails.

    The dip is the negated image smoothed with ``sigma`` (no top-hat, which would clip
    the tails of broad traces). Pixels are split between traces by a watershed of the dip
    seeded with the trace masks. For each trace, iterated from its mask: the background is
    a plane fitted to the dip in the annulus ``window`` < m ≤ ``window`` + 2 of its basin
    (m = Mahalanobis radius (x - μ)ᵀ Σ⁻¹ (x - μ) under the current moments), and the
    moments are those of the dip above that plane inside m ≤ ``window``. A 2D Gaussian
    keeps 98.7 % of its variance at 3.5.
    """
    from skimage.segmentation import watershed

    if not ts.traces:
        return np.zeros(0)
    img = np.asarray(image, dtype=np.float64)
    dip = -(ndimage.gaussian_filter(img, sigma) if sigma > 0 else img)
    lab = ts.labels
    basins = watershed(-dip, markers=lab)
    H, W = dip.shape
    out = []
    # one trace at a time: re-centre the window and refit the local background a few times
    for tr in ts.traces:
        cov = second_moments(tr.coords, tr.weights)
        mu = np.asarray(tr.centroid_px, dtype=np.float64)
        for _ in range(iterations):
            half = (
                int(math.ceil((window + 2.0) * math.sqrt(max(np.linalg.eigvalsh(cov)[-1], 0.25))))
                + 1
            )
            r0, r1 = max(int(mu[0]) - half, 0), min(int(mu[0]) + half + 1, H)
            c0, c1 = max(int(mu[1]) - half, 0), min(int(mu[1]) + half + 1, W)
            rr, cc = np.mgrid[r0:r1, c0:c1]
            pts = np.stack([rr.ravel(), cc.ravel()], axis=1).astype(np.float64)
            own = (basins[r0:r1, c0:c1] == tr.label).ravel()
            d = pts - mu
            m = np.sqrt(np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d))
            win = own & (m <= window)
            ring = own & (m > window) & (m <= window + 2.0)
            vals = dip[r0:r1, c0:c1].ravel()
            if ring.sum() >= 6:
                A = np.column_stack([np.ones(int(ring.sum())), d[ring]])
                coef = np.linalg.lstsq(A, vals[ring], rcond=None)[0]
                bg = coef[0] + d[win] @ coef[1:]
            else:
                bg = np.full(int(win.sum()), float(np.median(vals[~win])) if (~win).any() else 0.0)
            w = np.clip(vals[win] - bg, 0.0, None)
            if win.sum() == 0 or w.sum() <= 0:
                break
            new_cov = second_moments(pts[win], w)
            new_mu = (w[:, None] * pts[win]).sum(axis=0) / w.sum()
            done = np.allclose(new_cov, cov, rtol=1e-3, atol=1e-4) and np.allclose(
                new_mu, mu, atol=1e-3
            )
            cov, mu = new_cov, new_mu
            if done:
                break
        out.append(float(np.trace(cov)))
    return np.asarray(out, dtype=np.float64)


def _spreads(image: np.ndarray, ts: TraceSet, cfg: Config) -> np.ndarray:
    """:func:`_moment_spreads` of the traces ``ts`` found in ``image``."""
    return _moment_spreads(ts, image, cfg.trace_sigma, cfg.moment_window)


def _footprints(ts: TraceSet, ts_ref: TraceSet, spread_ref: np.ndarray) -> np.ndarray:
    """Still-particle spread (px²) for each trace of an averaged image: that of the
    reference particle whose centroid lies on the trace (the nearest one if several),
    else the median over the reference particles (NaN without any)."""
    fallback = float(np.median(spread_ref)) if spread_ref.size else float("nan")
    out = np.full(len(ts.traces), fallback)
    if not ts_ref.traces:
        return out
    cen = np.array([t.centroid_px for t in ts_ref.traces])  # [P, 2]
    pix = np.clip(np.rint(cen).astype(np.int64), 0, np.array(ts.labels.shape) - 1)
    on = ts.labels[pix[:, 0], pix[:, 1]]  # trace label under each reference particle
    for k, tr in enumerate(ts.traces):
        cand = np.flatnonzero(on == tr.label)
        if cand.size:
            dist = np.hypot(*(cen[cand] - np.asarray(tr.centroid_px)).T)
            out[k] = spread_ref[cand[np.argmin(dist)]]
    return out


def _region_map_at(region_map: np.ndarray, res: int) -> np.ndarray:
    """Nearest-neighbour region map after the frames' centre crop and resize to ``res``.

    >>> rm = np.array([[0, 0, 1, 1, 2, 2]] * 4)       # 4 x 6: crop keeps columns 1..4
    >>> _region_map_at(rm, 2).tolist()
    [[1, 2], [1, 2]]
    """
    rm = np.asarray(region_map)
    side = min(rm.shape)
    r0, c0 = (rm.shape[0] - side) // 2, (rm.shape[1] - side) // 2
    rm = rm[r0 : r0 + side, c0 : c0 + side]
    idx = np.minimum(((np.arange(res) + 0.5) * side / res).astype(np.int64), side - 1)
    return rm[np.ix_(idx, idx)].astype(np.int64)


def _planted_mode(rm_res: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    n = rm_res.shape[0]
    r = np.clip(np.rint(rows).astype(np.int64), 0, n - 1)
    c = np.clip(np.rint(cols).astype(np.int64), 0, n - 1)
    return rm_res[r, c]


def _planted_motion(
    truth: Mapping[str, np.ndarray], lag: int, px_nm: float
) -> dict[int, dict[str, float]]:
    """Per planted mode, from the true trajectories (nm²), over ``lag`` frames:

    * ``msd``: mean squared displacement between frames t and t + lag (the spread of the
      states reachable after that time, what A estimates if samples are such states);
    * ``window_spread``: mean tr of the positions' covariance inside windows of ``lag``
      frames (what A measures on an average of ``lag`` consecutive frames; 2Dt/3 for
      free diffusion, i.e. MSD / 6).

    Only pairs / windows of one particle id with the centre inside the frame count.

    >>> pos = np.zeros((5, 1, 2)); pos[:, 0, 1] = np.arange(5.0)     # 1 px per frame
    >>> t = {"positions_px": pos, "slot_mode": np.array([0])}
    >>> _planted_motion(t, 2, 10.0)[0]
    {'msd': 400.0, 'window_spread': 25.0}
    """
    pos = np.asarray(truth["positions_px"], dtype=np.float64)  # [T, S, 2]
    T = pos.shape[0]
    if lag < 1 or lag >= T:
        return {}
    ids = np.asarray(truth.get("particle_ids", np.zeros(pos.shape[:2])))
    vis = np.asarray(truth.get("visible", np.ones(pos.shape[:2]))).astype(bool)
    mode = np.asarray(truth["slot_mode"]).ravel()
    d2 = ((pos[lag:] - pos[:-lag]) ** 2).sum(axis=-1) * px_nm**2  # [T - lag, S]
    ok = (ids[lag:] == ids[:-lag]) & vis[lag:] & vis[:-lag]
    n_win = T // lag
    win = pos[: n_win * lag].reshape(n_win, lag, *pos.shape[1:])  # [W, lag, S, 2]
    spread = win.var(axis=1).sum(axis=-1) * px_nm**2  # [W, S]
    w_ids = ids[: n_win * lag].reshape(n_win, lag, -1)
    w_vis = vis[: n_win * lag].reshape(n_win, lag, -1)
    w_ok = (w_ids == w_ids[:, :1]).all(axis=1) & w_vis.all(axis=1)
    out = {}
    # one entry per planted mode
    for m in np.unique(mode):
        cols = mode == m
        if ok[:, cols].any() and w_ok[:, cols].any():
            out[int(m)] = {
                "msd": float(d2[:, cols][ok[:, cols]].mean()),
                "window_spread": float(spread[:, cols][w_ok[:, cols]].mean()),
            }
    return out


def _name_clusters(
    labels: np.ndarray, aniso: np.ndarray, area: np.ndarray, k: int
) -> dict[int, str]:
    """Cluster id -> mode name (see module docstring); generic names unless k == 3."""
    ids = [int(c) for c in np.unique(labels)]
    if k != 3 or len(ids) != 3:
        return {c: f"cluster {c}" for c in ids}
    mean_a = {c: float(np.nanmean(aniso[labels == c])) for c in ids}
    directed = max(ids, key=lambda c: mean_a[c])
    rest = [c for c in ids if c != directed]
    mean_area = {c: float(np.nanmean(area[labels == c])) for c in rest}
    free = max(rest, key=lambda c: mean_area[c])
    confined = next(c for c in rest if c != free)
    return {directed: "directed", free: "free", confined: "confined"}


# ----------------------------------------------------------------------------- figures


def _titled(fig: Figure, title: str) -> Figure:
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _pair_grid(
    top: np.ndarray,
    bottom: np.ndarray,
    top_label: str,
    bottom_label: str,
    ps: float,
    unit: str,
    bottom_titles: Sequence[str] | None = None,
) -> Figure:
    n = min(len(top), len(bottom))
    titles = [f"{top_label} {i + 1}" for i in range(n)]
    titles += (
        list(bottom_titles[:n])
        if bottom_titles is not None
        else [f"{bottom_label} {i + 1}" for i in range(n)]
    )
    return image_grid(
        np.concatenate([top[:n], bottom[:n]]),
        pixel_size=ps,
        unit=unit,
        ncols=n,
        titles=titles,
        shared_range=False,
    )


def _hist_figure(
    values: np.ndarray,
    *,
    xlabel: str,
    title: str,
    lines: Sequence[tuple[float, str, str, str]] = (),
) -> Figure:
    """Histogram with vertical lines (value, label, colour, style)."""
    fig = Figure(figsize=(4.4, 3.0))
    ax = fig.add_subplot()
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    ax.hist(v, bins=max(5, min(40, int(np.sqrt(max(v.size, 1))) * 2)), color="0.6")
    for x, label, color, style in lines:
        if x is not None and math.isfinite(x):
            ax.axvline(x, color=color, ls=style, lw=1.2, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
    if lines:
        ax.legend(fontsize=7)
    return _titled(fig, title)


def _ref_vs_avg_figure(df: pd.DataFrame, groups: str | None, names: Mapping[int, str]) -> Figure:
    """Anisotropy of traces in the reference frames vs after averaging, per group."""
    keys = [None] if groups is None else sorted(int(g) for g in df[groups].unique() if g >= 0)
    fig = Figure(figsize=(max(3.2, 1.6 * len(keys) + 1.0), 3.0))
    ax = fig.add_subplot()
    data, ticks, colours = [], [], []
    # two boxes per group: reference frames, averaged images
    for g in keys:
        sub = df if g is None else df[df[groups] == g]
        for src, col in (("reference", "#2ca02c"), ("averaged", "#e6b800")):
            data.append(sub.loc[sub.source == src, "anisotropy"].to_numpy(dtype=np.float64))
            ticks.append(f"{'all' if g is None else names.get(g, str(g))}\n{src[:3]}")
            colours.append(col)
    bp = ax.boxplot([d if d.size else np.array([np.nan]) for d in data], patch_artist=True)
    for patch, col in zip(bp["boxes"], colours):
        patch.set_facecolor(col)
        patch.set_alpha(0.6)
    ax.set_xticks(range(1, len(ticks) + 1))
    ax.set_xticklabels(ticks, fontsize=7)
    ax.set_ylabel("anisotropy")
    return _titled(fig, "Traces before (reference frames) and after latent averaging")


# ----------------------------------------------------------------------------- stages


@dataclass
class _Ctx:
    """What every stage needs: resolution, units, the figure writer and the logger."""

    out_dir: Path
    res: int
    dim: int
    ps: float  # physical size of one generated pixel (``unit``)
    unit: str
    nm: float | None  # nm per ``unit`` (None when unknown)
    log: Callable[[dict], None]
    figures: list[str]

    @property
    def area_unit(self) -> str:
        return "nm^2" if self.nm is not None else f"{self.unit}^2"

    @property
    def length_unit(self) -> str:
        return "nm" if self.nm is not None else self.unit

    @property
    def to_area(self) -> float:
        """px² -> nm² (or unit² when the unit is unknown)."""
        return self.ps**2 * (self.nm**2 if self.nm is not None else 1.0)

    def save(self, fig: Figure, name: str) -> None:
        for p in save_figure(fig, self.out_dir / "figures" / name):
            self.figures.append(str(p.relative_to(self.out_dir)))


def _fidelity(ctx: _Ctx, generator: Any, real: np.ndarray, cfg: Config, seed: int) -> dict:
    """Noise checks, then particle-area W1, SWD and S₂ with real-vs-real baselines (Fig. 5a/b)."""
    z = torch.randn(
        cfg.n_fidelity, ctx.dim, generator=torch.Generator().manual_seed(seed * 1_000_003 + 7)
    )
    gen = _generate(generator, z, cfg.batch_size, ctx.res)
    r1_real, r1_gen = float(np.median(_lag1_corr(real))), float(np.median(_lag1_corr(gen)))
    if r1_real > 0.2 and r1_gen < cfg.noise_corr_ratio * r1_real:
        raise AnalysisError(
            f"generated frames look like noise: median lag-1 pixel autocorrelation {r1_gen:.3f} vs "
            f"{r1_real:.3f} in the observed frames (< {cfg.noise_corr_ratio} x); check the bundle "
            "(untrained or wrong checkpoint?)"
        )
    depth = float(np.nanmedian([_particle_depth(x[0], cfg) for x in real[: cfg.depth_frames]]))
    if not math.isfinite(depth) or depth <= 0:
        raise AnalysisError(
            f"no particles found in the observed frames at {ctx.res} px with sigma={cfg.trace_sigma}, "
            f"tophat_radius={cfg.tophat_radius}, min_area={cfg.min_area}; adjust the trace settings"
        )
    # the same segmentation for both sets, at a fraction of the observed particle depth
    binarizer = Binarizer(
        threshold=cfg.trace_threshold * depth,
        dark=True,
        sigma=cfg.trace_sigma,
        tophat_radius=cfg.tophat_radius,
    )
    mask_real, mask_gen = binarizer(real), binarizer(gen)
    idx_real, a_real = particle_areas_batch(mask_real, min_area=cfg.min_area)
    idx_gen, a_gen = particle_areas_batch(mask_gen, min_area=cfg.min_area)
    if a_real.size < 2:
        raise AnalysisError(
            f"fewer than 2 particles in {len(real)} observed frames at {ctx.res} px; adjust the "
            "trace settings"
        )
    if a_gen.size == 0:
        raise AnalysisError(
            f"no particles found in {len(gen)} generated frames (particle dips >= "
            f"{cfg.trace_threshold} x the observed depth {depth:.3g}, >= {cfg.min_area} px): "
            "all-noise or collapsed generator? check the bundle"
        )
    a_real, a_gen = a_real * ctx.to_area, a_gen * ctx.to_area
    reps = cfg.baseline_repeats
    swd_kw = dict(
        n_patches=cfg.swd_patches,
        n_directions=cfg.swd_directions,
        n_repeats=cfg.swd_repeats,
        min_size=min(16, ctx.res),
        patch_size=min(7, ctx.res),
    )

    def swd(a: np.ndarray, b: np.ndarray) -> float:
        return sliced_wasserstein(a, b, seed=seed, **swd_kw).mean

    s2_r = two_point_correlation(mask_real, batch=True, periodic=False)[1]
    s2_g = two_point_correlation(mask_gen, batch=True, periodic=False)[1]
    norm_text = {
        "range": "areas mapped to [0, 1] by the min and max of the pooled observed+generated areas",
        "std": "areas divided by the observed areas' standard deviation",
        None: f"raw areas in {ctx.area_unit}",
    }
    fid = {
        "n_real": int(len(real)),
        "n_generated": int(len(gen)),
        "particle_depth_observed": depth,
        "particle_area_w1": {
            "value": wasserstein_1d(a_real, a_gen, cfg.area_normalize),
            "baseline": wasserstein_baseline(a_real, cfg.area_normalize, n_repeats=reps, seed=seed),
            "normalize": cfg.area_normalize or "none",
            "normalization": norm_text[cfg.area_normalize],
        },
        "particle_area_w1_raw": {
            "value": wasserstein_1d(a_real, a_gen, None),
            "baseline": wasserstein_baseline(a_real, None, n_repeats=reps, seed=seed),
            "unit": ctx.area_unit,
        },
        "particle_area_observed": _stats(a_real),
        "particle_area_generated": _stats(a_gen),
        "particles_per_frame": {
            "observed": float(np.bincount(idx_real, minlength=len(real)).mean()),
            "generated": float(np.bincount(idx_gen, minlength=len(gen)).mean()),
        },
        "swd": {
            "value": swd(real, gen),
            # halves by hand: swd_baseline's own n_repeats would clash with the SWD's
            "baseline": float(np.mean(split_half_baseline(real, swd, n_repeats=1, seed=seed))),
        },
        "s2": {
            "value": s2_distance(s2_r, s2_g),
            "baseline": s2_baseline(mask_real, periodic=False, n_repeats=reps, seed=seed),
        },
        "lag1_autocorrelation": {"observed": r1_real, "generated": r1_gen},
    }
    logged = {}
    for k in ("particle_area_w1", "swd", "s2"):
        logged[f"fidelity/{k}"] = fid[k]["value"]
        logged[f"fidelity/{k}_baseline"] = fid[k]["baseline"]
    ctx.log(logged)
    n = min(cfg.n_show, len(real), len(gen))
    grid = _pair_grid(real[:n], gen[:n], "observed", "generated", ctx.ps, ctx.unit)
    ctx.save(
        _titled(grid, "Fig. 5a: observed (top) and generated (bottom) phase images"),
        "fig5a_observed_generated",
    )
    w = fid["particle_area_w1"]
    fig = distribution_comparison(
        a_real,
        a_gen,
        xlabel=f"particle area ({ctx.area_unit})",
        names=["particle area"],
        distances={"particle area": w["value"]},
    )
    fig.axes[0].ticklabel_format(style="sci", scilimits=(-3, 4))
    title = (
        f"Fig. 5b: NP areas, observed vs generated (W1 {w['normalize']}; "
        f"real-vs-real {w['baseline']:.3g})"
    )
    ctx.save(_titled(fig, title), "fig5b_particle_area")
    return fid


def _entropy_threshold(
    cfg: Config, base_frames: np.ndarray, ent: EntropyDifference, n_store: int
) -> tuple[float, str, Any]:
    """(threshold, where it came from, consecutive-frame DistributionSummary or None)."""
    base = None
    if len(base_frames) > cfg.baseline_stride:
        base = consecutive_differences(base_frames, [ent], stride=cfg.baseline_stride)
        base = base.summary[ent.name]
    thr = cfg.threshold_value()
    if thr is not None:
        return thr, "fixed", base
    if base is None or base.n == 0:
        raise AnalysisError(
            f"entropy_threshold=auto needs more than {cfg.baseline_stride} consecutive observed "
            f"frames; the store has {n_store}: give a number instead"
        )
    thr = float(base.max if cfg.entropy_bound == "max" else base.p95)
    return thr, f"auto:{cfg.entropy_bound} of consecutive observed frames", base


def _filter_summary(
    ctx: _Ctx, cfg: Config, result: Any, thr: float, source: str, base: Any, gamma: float
) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """Check the filter kept something; (filters dict, n_kept, rejection rates, used refs)."""
    n_kept = result["mean/n_kept"].astype(np.int64)
    ediff = result["metrics/entropy_diff"]
    M, N = len(n_kept), cfg.n_samples
    rej = 1.0 - n_kept / N
    seen = summarize(ediff)
    if n_kept.sum() == 0:
        raise AnalysisError(
            f"the entropy filter (entropy_diff <= {thr:.4g}, {source}) rejected all {M * N} "
            f"samples at gamma={gamma:g}; observed entropy differences min {seen.min:.4g}, median "
            f"{seen.median:.4g}, p95 {seen.p95:.4g}, max {seen.max:.4g}: raise entropy_threshold "
            "(or use auto) or lower gamma"
        )
    # a reference needs min_kept samples (and at least one when G(z_i) is not averaged in)
    used = n_kept >= max(int(cfg.min_kept), 0 if cfg.include_reference else 1)
    if not used.any():
        raise AnalysisError(
            f"no reference kept >= min_kept={cfg.min_kept} of {N} samples (most kept: "
            f"{int(n_kept.max())}; entropy_diff <= {thr:.4g}, observed median {seen.median:.4g}); "
            "lower min_kept, raise entropy_threshold or lower gamma"
        )
    overall = float(1.0 - n_kept.sum() / (M * N))
    per_ref = {"min": float(rej.min()), "median": float(np.median(rej)), "max": float(rej.max())}
    filters = {
        "entropy_diff": {
            "threshold": thr,
            "threshold_source": source,
            "rejection_rate_overall": overall,
            "rejection_rate_per_reference_summary": per_ref,
            "rejection_rate_per_reference": [float(v) for v in rej],
            "observed": seen.as_dict(),
            "consecutive_observed": base.as_dict() if base is not None else None,
            "references_used": int(used.sum()),
            "min_kept": int(cfg.min_kept),
        }
    }
    ctx.log(
        {"filters/entropy_diff/threshold": thr, "filters/entropy_diff/rejection_rate": overall}
        | {f"filters/entropy_diff/rejection_rate_ref_{k}": v for k, v in per_ref.items()}
    )
    lines = [(thr, f"threshold {thr:.3g}", "C3", "--")]
    if base is not None:
        lines.append((base.max, f"consecutive observed max {base.max:.3g}", "C2", ":"))
    fig = _hist_figure(
        ediff.ravel(),
        xlabel="entropy difference to the reference (bits)",
        lines=lines,
        title=f"Entropy filter at γ = {gamma:g}: rejected {100 * overall:.0f} %",
    )
    ctx.save(fig, "filter_entropy_diff")
    return filters, n_kept, rej, used


def _trace_table(
    ctx: _Ctx,
    cfg: Config,
    refs: np.ndarray,
    means: np.ndarray,
    ref_indices: np.ndarray,
    n_kept: np.ndarray,
    rej: np.ndarray,
    used: np.ndarray,
) -> pd.DataFrame:
    """One row per trace: the particles of each reference image and the traces of each
    averaged image, with descriptors and the diffusion area."""
    M = len(refs)
    depths = np.array([_particle_depth(refs[i, 0], cfg) for i in range(M)])
    if not np.isfinite(depths).any():
        raise AnalysisError(
            f"no particles found in any of the {M} reference images; all-noise generator or "
            "trace settings unsuited to this resolution"
        )
    fallback = float(np.nanmedian(depths))
    rows: list[pd.DataFrame] = []
    # each reference: describe its particles (still) and the traces of its averaged image
    for i in range(M):
        d = depths[i] if math.isfinite(depths[i]) else fallback
        ts_ref = _extract(refs[i, 0], ctx.ps, cfg, d)
        spread_ref = _spreads(refs[i, 0], ts_ref, cfg)
        # still particles against their median: the noise floor of the diffusion area
        floor = np.full(spread_ref.size, np.median(spread_ref) if spread_ref.size else np.nan)
        sources = [("reference", refs[i, 0], ts_ref, spread_ref, floor)]
        if used[i]:
            ts = _extract(means[i, 0], ctx.ps, cfg, d)
            foot = _footprints(ts, ts_ref, spread_ref)
            sources.append(("averaged", means[i, 0], ts, _spreads(means[i, 0], ts, cfg), foot))
        for src, img, ts, spread, footprint in sources:
            df = _describe(img, ctx.ps, cfg, d)
            if len(df) != len(ts.traces):  # same extraction twice: must agree
                raise AnalysisError("trace extraction is not deterministic; please report this")
            df.insert(0, "trace", df.pop("label"))
            df.insert(0, "ref_index", int(ref_indices[i]))
            df.insert(0, "source", src)
            df["spread_px2"] = spread
            df["footprint_px2"] = footprint
            df["diffusion_area"] = (spread - footprint) * ctx.to_area
            # √MSD: a length, far less skewed than the area (a better clustering feature)
            df["rms_displacement"] = np.sqrt(np.clip(df["diffusion_area"].to_numpy(), 0.0, None))
            df["depth"] = d
            df["n_kept"] = int(n_kept[i])
            df["rejection_rate"] = float(rej[i])
            rows.append(df)
    table = pd.concat(rows, ignore_index=True)
    if ctx.nm is not None:  # physical columns of trace_descriptors are in the bundle's unit
        for col, power in (
            ("area", 2),
            ("ellipse_area", 2),
            ("major_sigma", 1),
            ("minor_sigma", 1),
        ):
            table[col] *= ctx.nm**power
    return table


def _cluster(
    ctx: _Ctx, cfg: Config, table: pd.DataFrame
) -> tuple[dict, dict[str, HACResult], np.ndarray]:
    """HAC of the averaged traces with each method (Fig. 6c/d); adds ``cluster_<method>`` and
    ``mode_<method>`` columns. Returns (summary, results, table index of the clustered rows)."""
    avg = table[table.source == "averaged"]
    feats = list(cfg.features)
    robust_feats = list(cfg.robust_features) or feats
    every = list(dict.fromkeys(feats + robust_feats))
    finite = np.isfinite(avg[every].to_numpy(dtype=np.float64)).all(axis=1)
    X_by = {"paper": avg[feats].to_numpy(dtype=np.float64),
            "robust": avg[robust_feats].to_numpy(dtype=np.float64)}
    if finite.sum() < cfg.n_modes:
        raise AnalysisError(
            f"only {int(finite.sum())} of {len(avg)} averaged traces have finite {every}; need "
            f">= n_modes={cfg.n_modes}: all-noise generator, or raise n_refs / lower trace_threshold"
        )
    rows = avg.index.to_numpy()[finite]
    sub = table.loc[rows]
    aniso, area = sub["anisotropy"].to_numpy(), sub["diffusion_area"].to_numpy()
    shown = list(dict.fromkeys(["anisotropy", "tortuosity"] + every))
    units = {"diffusion_area": ctx.area_unit, "rms_displacement": ctx.length_unit}
    described = list(dict.fromkeys(every + ["anisotropy", "tortuosity", "diffusion_area"]))
    methods: dict[str, Any] = {}
    results: dict[str, HACResult] = {}
    # one clustering per method: the paper's average linkage and the robust variants
    for method in cfg.methods:
        method_feats = feats if method == "average" else robust_feats
        X = X_by["paper" if method == "average" else "robust"]
        try:
            if method == "trimmed":
                res = trimmed_hac(
                    X[finite], cfg.n_modes, z_max=cfg.trim_z, method="average", scaling=cfg.scaling
                )
            else:
                res = hac(X[finite], cfg.n_modes, method=method, scaling=cfg.scaling)
        except AnalysisError as err:
            if method == cfg.methods[0]:
                raise
            methods[method] = {"error": str(err)}
            continue
        results[method] = res
        names = _name_clusters(res.labels, aniso, area, cfg.n_modes)
        col = pd.Series(-1, index=table.index, dtype=np.int64)
        col.loc[rows] = res.labels
        table[f"cluster_{method}"] = col
        table[f"mode_{method}"] = col.map(lambda c, names=names: names.get(int(c), ""))
        modes = {}
        for c in sorted(names):
            sel = sub[res.labels == c]
            modes[names[c]] = {"cluster": int(c), "n": int(len(sel))} | {
                f"mean_{f}": _f(sel[f].mean()) for f in described
            }
        methods[method] = {
            "features": method_feats,
            "sizes": [int((res.labels == c).sum()) for c in sorted(names)],
            "modes": modes,
            "n_trimmed": int((~res.kept).sum()),
        }
        label = "average linkage, trimmed" if method == "trimmed" else f"{method} linkage"
        if len(res.linkage):
            fig = dendrogram_figure(res.linkage, k=cfg.n_modes, xlabel="NP variations")
            ctx.save(
                _titled(fig, f"Fig. 6c: HAC ({label}) on scaled {', '.join(method_feats)}"),
                f"fig6c_dendrogram_{method}",
            )
        fig = cluster_boxplots(
            {f: sub[f].to_numpy(dtype=np.float64) for f in shown},
            res.labels,
            group_names=names,
            units=units,
        )
        ctx.save(
            _titled(fig, f"Fig. 6d: descriptors per mode ({label})"), f"fig6d_boxplots_{method}"
        )
    summary = {
        "features": feats,
        "robust_features": robust_feats,
        "scaling": cfg.scaling or "none",
        "n_modes": int(cfg.n_modes),
        "n_traces": int(finite.sum()),
        "methods": methods,
    }
    return summary, results, rows


def _recovery(
    ctx: _Ctx,
    cfg: Config,
    store: Any,
    truth: Mapping[str, np.ndarray],
    table: pd.DataFrame,
    results: Mapping[str, HACResult],
    rows: np.ndarray,
) -> dict:
    """Ground-truth scores of a synthetic store (adds the ``planted_mode`` column)."""
    names_t = list((store.truth_attrs or {}).get("mode_names", MODE_NAMES))
    mode_names = {i: str(n) for i, n in enumerate(names_t)}
    rm = _region_map_at(truth["region_map"], ctx.res)
    table["planted_mode"] = _planted_mode(
        rm, table["centroid_row"].to_numpy(), table["centroid_col"].to_numpy()
    )
    planted = table.loc[rows, "planted_mode"].to_numpy()
    inside = planted >= 0
    aniso = table.loc[rows, "anisotropy"].to_numpy(dtype=np.float64)
    area = table.loc[rows, "diffusion_area"].to_numpy(dtype=np.float64)
    rec: dict[str, Any] = {"n_traces_in_regions": int(inside.sum()), "n_traces": int(len(planted))}
    for method, res in results.items():
        ok = inside.sum() >= 2
        rec[f"ari_{method}"] = adjusted_rand(planted[inside], res.labels[inside]) if ok else None
    pos = planted[inside] == CONFINED
    both = bool(pos.any() and (~pos).any())
    rec["anisotropy_auc_confined"] = auc(pos, -aniso[inside]) if both else None
    rec["diffusion_area_auc_confined"] = auc(pos, -area[inside]) if both else None
    rec["anisotropy_auc_goal"] = 0.75
    t_s = float(cfg.gamma_time_s)
    d_modes = np.asarray(truth.get("mode_diffusion_nm2_s", []), dtype=np.float64).ravel()
    lag = None
    if getattr(store.meta, "frame_interval", None):
        lag = int(round(t_s / float(store.meta.frame_interval)))
    motion: dict[int, dict[str, float]] = {}
    if lag and "positions_px" in truth and "slot_mode" in truth:
        motion = _planted_motion(truth, lag, float(store.meta.pixel_size) * (ctx.nm or 1.0))
    per_mode = {}
    # per planted mode: anisotropy before/after averaging, diffusion area vs planted
    for m, name in mode_names.items():
        sel = table.planted_mode == m
        a_ref = table.loc[sel & (table.source == "reference"), "anisotropy"]
        a_avg = table.loc[sel & (table.source == "averaged"), "anisotropy"]
        d_avg = table.loc[sel & (table.source == "averaged"), "diffusion_area"]
        per_mode[name] = {
            "n_reference": int(a_ref.size),
            "n_averaged": int(a_avg.size),
            "anisotropy_reference_mean": _f(a_ref.mean()) if a_ref.size else None,
            "anisotropy_averaged_mean": _f(a_avg.mean()) if a_avg.size else None,
            "diffusion_area": _stats(d_avg),
            "planted_4Dt": _f(4.0 * d_modes[m] * t_s) if m < d_modes.size else None,
            "planted_msd": motion.get(m, {}).get("msd"),
            "planted_window_spread": motion.get(m, {}).get("window_spread"),
        }
    rec["modes"] = per_mode
    directed, free = per_mode.get("directed", {}), per_mode.get("free", {})
    rec["directed_anisotropy_reference"] = directed.get("anisotropy_reference_mean")
    rec["directed_anisotropy_averaged"] = directed.get("anisotropy_averaged_mean")
    rec["free_diffusion_area_mean"] = free.get("diffusion_area", {}).get("mean")
    rec["free_diffusion_area_std"] = free.get("diffusion_area", {}).get("std")
    rec["free_planted_4Dt"] = free.get("planted_4Dt")
    rec["free_planted_msd"] = free.get("planted_msd")
    rec["free_planted_window_spread"] = free.get("planted_window_spread")
    rec["planted_msd_lag_frames"] = lag
    rec["unit"] = ctx.area_unit
    ctx.log({f"recovery/{k}": v for k, v in rec.items() if isinstance(v, (int, float))})
    ctx.save(
        _ref_vs_avg_figure(table, "planted_mode", mode_names),
        "traces_anisotropy_reference_averaged",
    )
    fig = cluster_boxplots(
        {
            "anisotropy": aniso[inside],
            "tortuosity": table.loc[rows, "tortuosity"].to_numpy(dtype=np.float64)[inside],
            "diffusion area": area[inside],
        },
        planted[inside],
        group_names=mode_names,
        units={"diffusion area": ctx.area_unit},
    )
    for ax in fig.axes:
        ax.set_xlabel("planted mode")
    ctx.save(
        _titled(fig, "Descriptors of averaged traces per planted mode (ground truth)"),
        "recovery_planted_modes",
    )
    return rec


# ----------------------------------------------------------------------------- run


def run(
    generator: Any,
    store: Any,
    cfg: Config,
    *,
    gamma: float,
    sampler: Any = None,
    out_dir: Path,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[dict], None] | None = None,
) -> dict:
    """Run the NP-diffusion analysis; write figures + table into out_dir; return the summary."""
    cfg.validate()
    if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma > 0):
        raise ConfigError(f"gamma must be a number > 0, got {gamma!r}")
    if int(seed) != seed or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    out_dir = Path(out_dir)
    res, dim = _check_inputs(generator, store)
    ps, unit, warnings = _pixel_size(generator, store, res)
    ctx = _Ctx(out_dir, res, dim, ps, unit, _NM_PER_UNIT.get(unit), log or (lambda _d: None), [])

    # observed frames at the generator resolution: a consecutive run and a spread sample
    n_store = len(store)
    fid_idx = np.unique(np.linspace(0, n_store - 1, min(cfg.n_fidelity, n_store)).round())
    base_frames, real = _load_real(
        store, res, min(cfg.baseline_frames, n_store), fid_idx.astype(np.int64)
    )
    if len(real) < 4:
        raise AnalysisError(f"{store.path} has {n_store} frame(s); fidelity needs at least 4")
    fidelity = _fidelity(ctx, generator, real, cfg, int(seed))
    swd = fidelity["swd"]
    if swd["value"] > 10.0 * max(swd["baseline"], 1e-12):
        warnings.append(
            f"generated frames are far from the observed ones (SWD {swd['value']:.3g} vs "
            f"real-vs-real {swd['baseline']:.3g}); is the generator trained?"
        )

    # latent Monte Carlo with the entropy filter, averaged per reference (FilteredMean)
    ent = EntropyDifference(bins=cfg.entropy_bins)
    thr, source, base = _entropy_threshold(cfg, base_frames, ent, n_store)
    engine = VariationEngine(
        generator,
        sampler if sampler is not None else UniformSampler(gamma),  # matdyn.gamma.resolve_sampler
        n_refs=cfg.n_refs,
        n_samples=cfg.n_samples,
        seed=int(seed),
        metrics=[ent],
        reducers=[
            FilteredMean(
                MetricFilter(upper={ent.name: thr}),
                include_reference=cfg.include_reference,
                name="mean",
            ),
            SampleMetrics([ent.name], name="metrics"),
        ],
        batch_size=cfg.batch_size,
        progress=progress,
    )
    result = engine.run(out_dir / "variations")
    filters, n_kept, rej, used = _filter_summary(ctx, cfg, result, thr, source, base, gamma)
    means, refs = result["mean/mean"], result["mean/reference"]

    # traces, descriptors, diffusion areas
    table = _trace_table(ctx, cfg, refs, means, result.ref_indices, n_kept, rej, used)
    avg = table[table.source == "averaged"]
    if len(avg) < cfg.n_modes:
        raise AnalysisError(
            f"only {len(avg)} traces found in {int(used.sum())} averaged images, fewer than "
            f"n_modes={cfg.n_modes}; all-noise generator, or raise n_refs / lower trace_threshold"
        )
    truth = dict(store.truth or {})
    t_s = float(cfg.gamma_time_s)
    d_modes = np.asarray(truth.get("mode_diffusion_nm2_s", []), dtype=np.float64).ravel()
    d_free = d_modes[FREE] if d_modes.size > FREE else PAPER["xpcs_diffusion_nm2_per_s"]["mean"] / 4
    diffusion = {
        "unit": ctx.area_unit,
        "definition": "MSD-equivalent spread: (tr Σ_trace - tr Σ of the still reference "
        "particle) × pixel_size²",
        "time_s": t_s,
        **_stats(avg["diffusion_area"]),
        "planted_free_4Dt": float(4.0 * d_free * t_s),
        "paper": PAPER["diffusion_area_nm2"],
    }
    if diffusion["n"]:
        ctx.log({"diffusion_area/mean": diffusion["mean"], "diffusion_area/std": diffusion["std"]})
    clustering, results, rows = _cluster(ctx, cfg, table)

    # figures of the variations
    shown = np.flatnonzero(used)[: cfg.n_show]
    grid = _pair_grid(
        refs[shown],
        means[shown],
        "reference",
        "averaged",
        ps,
        unit,
        bottom_titles=[f"avg ({int(n_kept[i])} kept)" for i in shown],
    )
    ctx.save(
        _titled(grid, f"References (top) and their averaged variations (bottom), γ = {gamma:g}"),
        "fig5a_references_averaged",
    )
    mean_line = (
        (diffusion["mean"], f"mean {diffusion['mean']:.0f} ± {diffusion['std']:.0f}", "red", "-")
        if diffusion["n"]
        else (float("nan"), "", "red", "-")
    )
    paper_line = PAPER["diffusion_area_nm2"]["mean"] if ctx.nm is not None else float("nan")
    fig = _hist_figure(
        avg["diffusion_area"].to_numpy(),
        xlabel=f"diffusion area ({ctx.area_unit})",
        title=f"Fig. 6b: diffusion areas of NP variations (γ = {gamma:g} ≈ {t_s:g} s)",
        lines=[
            mean_line,
            (
                diffusion["planted_free_4Dt"],
                f"planted free 4Dt {diffusion['planted_free_4Dt']:.0f}",
                "C0",
                "--",
            ),
            (paper_line, "paper 7712", "C2", ":"),
        ],
    )
    ctx.save(fig, "fig6b_diffusion_area")

    recovery = None
    if truth and "region_map" in truth:
        recovery = _recovery(ctx, cfg, store, truth, table, results, rows)
    else:
        ctx.save(_ref_vs_avg_figure(table, None, {}), "traces_anisotropy_reference_averaged")

    table_path = out_dir / "variations.csv"
    tmp = table_path.with_name(f".{table_path.name}.tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(table_path)

    ref_rows = table.source == "reference"
    summary: dict[str, Any] = {
        "case": CASE,
        "gamma": float(gamma),
        "counts": {
            "n_refs": int(len(refs)),
            "n_samples": int(cfg.n_samples),
            "n_refs_used": int(used.sum()),
            "n_traces_averaged": int(len(avg)),
            "n_traces_reference": int(ref_rows.sum()),
            "n_fidelity": int(cfg.n_fidelity),
        },
        "resolution": res,
        "pixel_size": ps,
        "unit": unit,
        "fidelity": fidelity,
        "filters": filters,
        "traces": {
            "anisotropy_reference": _stats(table.loc[ref_rows, "anisotropy"]),
            "anisotropy_averaged": _stats(avg["anisotropy"]),
            "tortuosity_averaged": _stats(avg["tortuosity"]),
            "tortuosity_convention": "arc-chord ratio of the smoothed skeleton path, >= 1 "
            "(1 = straight)",
        },
        "diffusion_area": diffusion,
        "clustering": clustering,
        "figures": ctx.figures,
        "table": str(table_path.relative_to(out_dir)),
        "table_units": {
            "centroid_row": "px",
            "centroid_col": "px",
            "area_px": "px",
            "spread_px2": "px^2",
            "footprint_px2": "px^2",
            "area": ctx.area_unit,
            "ellipse_area": ctx.area_unit,
            "diffusion_area": ctx.area_unit,
            "rms_displacement": ctx.length_unit,
            "major_sigma": ctx.length_unit,
            "minor_sigma": ctx.length_unit,
            "orientation_deg": "deg",
        },
        "paper": PAPER,
        "case_config": asdict(cfg),
    }
    if recovery is not None:
        summary["recovery"] = recovery
    if warnings:
        summary["warnings"] = warnings
    return summary
