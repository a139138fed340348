"""Consecutive-frame baseline for the γ choice (paper §3.3.1, §3.4.1).

The paper picks γ so that perturbed images differ from their reference about as much as
consecutive experimental frames differ from each other (entropy difference upper bound
0.26 for the NP video; IOU₃D ≈ 0.7 and mass deviation < 20 % between aging stages).
This module measures the real side of that comparison with the *same* difference-metric
objects the variation engine uses (:mod:`matdyn.descriptors.differences`), streaming the
frames of a store in windows so memory stays bounded. :func:`case_metrics` says which
metrics each case study compares; :func:`real_baseline` prepares the store's consecutive
frames exactly as training does (:mod:`matdyn.data.frames`, honouring ``dataset.fit``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from matdyn.descriptors.differences import (
    AreaDifference,
    DensityDifference,
    DifferenceMetric,
    EntropyDifference,
    ShapeDifference,
)
from matdyn.descriptors.particles import Binarizer
from matdyn.errors import AnalysisError, ConfigError
from matdyn.gamma.specs import BaselineSpec

__all__ = [
    "ContinuityBaseline",
    "case_metrics",
    "metrics_from_spec",
    "real_baseline",
    "DistributionSummary",
    "consecutive_differences",
    "default_metrics",
    "summarize",
    "sweep_particles_dark",
]


class _FrameSource(Protocol):
    def __len__(self) -> int: ...

    def load(self, start: int = 0, stop: int | None = None) -> np.ndarray: ...


@dataclass(frozen=True)
class DistributionSummary:
    """Summary of one metric's values (NaNs ignored; ``n`` counts finite values)."""

    n: int
    mean: float
    median: float
    p5: float
    p95: float
    min: float
    max: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(values: np.ndarray) -> DistributionSummary:
    """Median, 5th/95th percentiles, extremes and mean of the finite values.

    >>> s = summarize(np.arange(101.0))
    >>> s.median, s.p95, s.max
    (50.0, 95.0, 100.0)
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        nan = float("nan")
        return DistributionSummary(0, nan, nan, nan, nan, nan, nan)
    p5, med, p95 = np.percentile(v, [5.0, 50.0, 95.0])
    return DistributionSummary(
        n=int(v.size),
        mean=float(v.mean()),
        median=float(med),
        p5=float(p5),
        p95=float(p95),
        min=float(v.min()),
        max=float(v.max()),
    )


@dataclass(frozen=True)
class ContinuityBaseline:
    """Difference metrics between frame t and frame t + stride of real data."""

    pairs: np.ndarray  # [P, 2] frame indices (t, t + stride)
    values: dict[str, np.ndarray]  # metric name -> [P]
    summary: dict[str, DistributionSummary] = field(default_factory=dict)
    stride: int = 1

    def as_dict(self) -> dict[str, dict[str, float]]:
        """``{"entropy_diff": {"median": ..., "p95": ..., "max": ...}, ...}``."""
        return {k: s.as_dict() for k, s in self.summary.items()}


def default_metrics(ndim: int, binarizer: Binarizer | None = None) -> list[DifferenceMetric]:
    """The paper's pair of continuity metrics: 2D -> entropy and particle-area difference
    (§3.3.1); 3D -> 1 - IOU₃D and total density difference (§3.4.1).

    The default binarizer is Otsu on the (channel-summed) image; pass the case's own.

    >>> [m.name for m in default_metrics(3)]
    ['shape_diff', 'density_diff']
    """
    b = binarizer if binarizer is not None else Binarizer()
    if ndim == 2:
        return [EntropyDifference(), AreaDifference(b)]
    if ndim == 3:
        return [ShapeDifference(b), DensityDifference()]
    raise ConfigError(f"ndim must be 2 or 3, got {ndim}")


def _source(frames: np.ndarray | _FrameSource | str | Path) -> tuple[Any, np.ndarray | None]:
    """(object with __len__ and load, labels dict or None)."""
    if isinstance(frames, (str, Path)):
        from matdyn.data.store import open_store

        frames = open_store(frames)
    if isinstance(frames, np.ndarray):
        if frames.ndim not in (4, 5):
            raise AnalysisError(
                f"frames must be [N, C, H, W] or [N, C, D, H, W], got shape {frames.shape}"
            )
        return frames, None
    if not (hasattr(frames, "load") and hasattr(frames, "__len__")):
        raise ConfigError(
            f"frames must be an array, a store or a store path, got {type(frames).__name__}"
        )
    return frames, getattr(frames, "labels", None)


def _groups(groups: str | np.ndarray | None, labels: Mapping[str, Any] | None,
            n_frames: int) -> np.ndarray | None:
    """Per-frame group ids [n_frames] from an array or the name of a store label."""
    if isinstance(groups, str):
        if not labels or groups not in labels:
            raise ConfigError(
                f"groups={groups!r} is not a label of the store (labels: {sorted(labels or {})})"
            )
        groups = np.asarray(labels[groups])
    if groups is None:
        return None
    groups = np.asarray(groups)
    if groups.shape != (n_frames,):
        raise ConfigError(
            f"groups must have one entry per frame ({n_frames}), got shape {groups.shape}"
        )
    return groups


def consecutive_differences(
    frames: np.ndarray | _FrameSource | str | Path,
    metrics: Sequence[DifferenceMetric] | None = None,
    *,
    stride: int = 1,
    groups: str | np.ndarray | None = None,
    start: int = 0,
    stop: int | None = None,
    batch_size: int = 64,
) -> ContinuityBaseline:
    """Difference metrics between frames t and t + ``stride`` for t in [start, stop - stride).

    Args:
        frames: array [N, C, *spatial], a store (``matdyn.data.store.open_store``) or a
            store path. Frame t + stride is compared against reference frame t.
        metrics: difference metrics; default :func:`default_metrics` for the data's ndim.
        stride: frame step (use the step that matches the intended time scale).
        groups: per-frame group ids (array, or the name of a store label such as a particle
            id): only pairs inside one group are compared.
        batch_size: frames per window read from the store.

    >>> x = np.zeros((3, 1, 4, 4)); x[1, 0, 0, 0] = 1.0
    >>> base = consecutive_differences(x, [EntropyDifference(bins=2)])
    >>> base.values["entropy_diff"].round(3).tolist(), base.pairs.tolist()
    ([0.337, 0.337], [[0, 1], [1, 2]])
    """
    src, labels = _source(frames)
    n_frames = len(src)
    stop = n_frames if stop is None else int(stop)
    if int(stride) != stride or stride < 1:
        raise ConfigError(f"stride must be a positive integer, got {stride!r}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= start < stop <= n_frames or stop - start <= stride:
        raise AnalysisError(
            f"need more than stride={stride} frames in [start, stop) = [{start}, {stop}) of {n_frames}"
        )
    groups = _groups(groups, labels, n_frames)

    if metrics is None:
        first = (
            src[start : start + 1] if isinstance(src, np.ndarray) else src.load(start, start + 1)
        )
        metrics = default_metrics(first.ndim - 2)
    names = [m.name for m in metrics]
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"need at least one metric with unique names, got {names}")

    pairs, values = [], {k: [] for k in names}
    last = stop - stride  # exclusive end of reference frames
    # one window of frames per chunk of reference frames
    for t0 in range(start, last, batch_size):
        t1 = min(t0 + batch_size, last)
        window = src[t0 : t1 + stride] if isinstance(src, np.ndarray) else src.load(t0, t1 + stride)
        t = np.arange(t0, t1)
        sel = np.ones(t.size, dtype=bool) if groups is None else groups[t] == groups[t + stride]
        if not sel.any():
            continue
        ref = window[: t1 - t0][sel]
        nxt = window[stride : stride + t1 - t0][sel]
        cache: dict = {}
        ref_cache: dict = {}
        slots = np.arange(ref.shape[0])
        for m in metrics:
            values[m.name].append(
                np.asarray(
                    m.compute(nxt, m.prepare(ref, ref_cache), slots, cache), dtype=np.float64
                )
            )
        pairs.append(np.stack([t[sel], t[sel] + stride], axis=1))
    if not pairs:
        raise AnalysisError("no consecutive pair lies inside one group; check `groups`")
    vals = {k: np.concatenate(v) for k, v in values.items()}
    return ContinuityBaseline(
        pairs=np.concatenate(pairs),
        values=vals,
        summary={k: summarize(v) for k, v in vals.items()},
        stride=int(stride),
    )


def case_metrics(dataset: str | None, ndim: int, dark: bool | None = None) -> list[DifferenceMetric]:
    """The continuity metrics of each case study; the first one decides γ by default.

    * ``np_diffusion``: entropy difference and particle-area difference in px (§3.3.1,
      Fig. 5c); NPs are dark phase dips, so masks threshold the dark side (Otsu).
    * ``ta_chart``: 1 − IoU of the chart masks (§3.2, Fig. 4a compares IOUs).
    * ``brass_clump`` (and other 3D data): 1 − IOU₃D of the clump mask (Otsu on the
      channel sum) and total density difference (§3.4.1, Fig. 7d).
    * other 2D data: entropy and particle-area difference with bright particles.

    ``dark`` (2D particle data): the particles' polarity when known (e.g.
    :func:`sweep_particles_dark` from the store), else the case default above.

    >>> [m.name for m in case_metrics("np_diffusion", 2)]
    ['entropy_diff', 'area_diff']
    >>> [m.name for m in case_metrics("mine", 3)]
    ['shape_diff', 'density_diff']
    """
    if ndim not in (2, 3):
        raise ConfigError(f"dataset ndim must be 2 or 3, got {ndim!r}")
    if dataset == "ta_chart" and ndim == 2:
        return [ShapeDifference(Binarizer())]
    if dataset == "brass_clump" or ndim == 3:
        return [ShapeDifference(Binarizer(channel=None)), DensityDifference()]
    dark = dataset == "np_diffusion" if dark is None else bool(dark)
    return [EntropyDifference(), AreaDifference(Binarizer(dark=dark), min_area=2)]


def sweep_particles_dark(dataset: Mapping[str, Any]) -> bool | None:
    """Polarity of the particles of a 2D store (``dataset.path``) from the pixel skewness of
    up to 64 evenly spaced raw frames, channel 0 (:func:`matdyn.dynamics.particle_polarity`);
    None when there is no store yet, it is not 2D, or the skewness cannot tell. Sweep jobs
    and the aggregation call it alike, so both build the same metrics."""
    from matdyn.data.store import open_store
    from matdyn.dynamics import particle_polarity

    path = Path(str(dataset.get("path") or ""))
    if not dataset.get("path") or not path.exists():
        return None
    st = open_store(path, validate=False)
    if len(st.meta.spatial_shape) != 2 or len(st) == 0:
        return None
    idx = np.unique(np.linspace(0, len(st) - 1, min(len(st), 64)).round().astype(np.int64))
    try:
        return bool(particle_polarity(np.stack([np.asarray(st.images[i, 0]) for i in idx]))[0])
    except AnalysisError:
        return None


def metrics_from_spec(spec: Any, dataset: str | None, ndim: int,
                      dark: bool | None = None) -> list[DifferenceMetric]:
    """``auto``/None -> :func:`case_metrics` (``dark``: the particles' polarity, if known);
    a list of metric objects or of plain ``{_target_: ...}`` mappings (built with Hydra's
    ``instantiate``) -> that list."""
    if spec is None or (isinstance(spec, str) and spec == "auto"):
        return case_metrics(dataset, ndim, dark)
    if isinstance(spec, (str, Mapping)) or not isinstance(spec, Sequence):
        raise ConfigError(
            f"metrics must be 'auto' or a list of metric configs with _target_, got {spec!r}"
        )
    out = []
    for item in spec:
        if isinstance(item, Mapping):
            if "_target_" not in item:
                raise ConfigError(f"metric config {dict(item)!r} has no _target_")
            from hydra.utils import instantiate

            item = instantiate(dict(item), _convert_="all")
        if not isinstance(item, DifferenceMetric):
            raise ConfigError(f"{item!r} is not a difference metric (needs name, prepare, compute)")
        out.append(item)
    names = [m.name for m in out]
    if not out or len(set(names)) != len(names):
        raise ConfigError(f"metrics need at least one entry with unique names, got {names}")
    return out


def real_baseline(
    store: Any,
    metrics: Sequence[DifferenceMetric],
    resolution: int,
    *,
    fit: str = "crop",
    spec: BaselineSpec | None = None,
) -> tuple[ContinuityBaseline, Any]:
    """Metric differences between consecutive real frames of ``store``, prepared like
    training (square with ``fit``, resized to ``resolution`` px).

    Returns (baseline, the :class:`matdyn.data.frames.FrameSequence` it compared).
    """
    from matdyn.data.frames import ObservedFrames, consecutive_sequence

    spec = spec or BaselineSpec()
    seq = consecutive_sequence(store.labels, len(store)).head(spec.max_frames)
    src = ObservedFrames(store, seq.indices, resolution, fit)
    base = consecutive_differences(
        src, metrics, stride=int(spec.stride), groups=seq.groups, batch_size=int(spec.batch_size)
    )
    return base, seq
