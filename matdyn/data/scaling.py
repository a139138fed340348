"""Robust per-channel intensity limits, shared by the importer (warning) and the DataModule
(scaling to [-1, 1]).

Min/max scaling lets one hot pixel decide the range: a single 65535 in a stack whose values
lie in 477–576 squeezes every other pixel into ~0.3 % of [-1, 1]. The limits here start from
percentiles (default 0.01 % / 99.99 %, the 1-in-10 000 tails per channel). A tail that
reaches no further than ``OUTLIER_TAIL`` (half) of the percentile range beyond its
percentile is part of the distribution (noise tails, sparse bright structures) and keeps
its data extreme as the limit, so data without outliers scale exactly as with min/max.
A tail reaching further is an outlier tail: its limit is the percentile, values beyond are
clipped when training, and the way back to physical units, ``x = x_n * scale + offset``,
stays exact inside the limits.

Percentiles use numpy's default linear interpolation (``np.percentile(method="linear")``),
computed exactly in one streaming pass by keeping only the tail values they need.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

PERCENTILES = (0.01, 99.99)  # % ; 1 pixel in 10 000 per tail may be an outlier
OUTLIER_TAIL = 0.5  # a tail beyond its percentile longer than this x the percentile range

#: value transform applied before the scaling (``MicroscopyDataModule(transform=...)``)
Transform = Literal["none", "sqrt"]


def apply_transform(x: Any, transform: str) -> Any:
    """Physical values -> the values that were scaled: ``sqrt(max(x, 0))`` for ``sqrt``
    (negative values, which the training data cannot hold, count as 0), ``x`` for ``none``.
    Works on torch tensors."""
    return x.clamp(min=0).sqrt() if transform == "sqrt" else x


def untransform(x: Any, transform: str) -> Any:
    """Inverse of :func:`apply_transform`: ``max(y, 0)²`` for ``sqrt`` (a generated value
    below the transformed zero is zero), ``y`` for ``none``. Works on torch tensors."""
    return x.clamp(min=0).square() if transform == "sqrt" else x


@dataclass
class ChannelLimits:
    """Limits of one channel: scaling limits ``lo``/``hi`` (percentile on an outlier side,
    data extreme otherwise), percentiles ``p_lo``/``p_hi``, data ``vmin``/``vmax``, ``n_out``
    values outside [lo, hi] of ``n`` in all, ``where`` = (frame, *pixel) of the most extreme
    outlier (or of the maximum when there is none)."""

    lo: float
    hi: float
    p_lo: float
    p_hi: float
    vmin: float
    vmax: float
    n_out: int
    n: int
    where: tuple[int, ...]

    @property
    def dominated(self) -> bool:
        """Whether outliers would have dictated min/max scaling (an outlier tail exists)."""
        return self.lo > self.vmin or self.hi < self.vmax


class _Tails:
    """Streaming exact percentiles of one channel of known size ``n``."""

    def __init__(self, n: int, percentiles: Sequence[float]) -> None:
        self.n = n
        q_lo, q_hi = (float(p) / 100.0 for p in percentiles)
        self.pos = (q_lo * (n - 1), q_hi * (n - 1))
        self.keep_lo = min(n, math.floor(self.pos[0]) + 2)
        self.keep_hi = min(n, n - math.floor(self.pos[1]))
        self.small = np.empty(0, np.float64)
        self.large = np.empty(0, np.float64)
        self.vmin, self.vmax = math.inf, -math.inf
        self.at_min: tuple[int, ...] = ()
        self.at_max: tuple[int, ...] = ()

    def add(self, vals: np.ndarray, offset: int) -> None:
        """Add one chunk ``[n_frames, *spatial]`` whose first frame has index ``offset``."""
        flat = vals.reshape(-1).astype(np.float64)
        i, j = int(flat.argmin()), int(flat.argmax())
        if flat[i] < self.vmin:
            self.vmin, self.at_min = float(flat[i]), _where(i, vals.shape, offset)
        if flat[j] > self.vmax:
            self.vmax, self.at_max = float(flat[j]), _where(j, vals.shape, offset)
        s = np.concatenate([self.small, flat])
        self.small = np.partition(s, self.keep_lo - 1)[: self.keep_lo] if s.size > self.keep_lo else s
        g = np.concatenate([self.large, -flat])
        self.large = np.partition(g, self.keep_hi - 1)[: self.keep_hi] if g.size > self.keep_hi else g

    def limits(self) -> ChannelLimits:
        small = np.sort(self.small)
        large = np.sort(-self.large)[::-1]  # descending: large[k] = (n-1-k)-th smallest

        def at(k: int) -> float:  # k-th smallest overall
            return float(small[k]) if k < small.size else float(large[self.n - 1 - k])

        lo_hi = []
        for pos in self.pos:
            i0 = math.floor(pos)
            i1 = min(i0 + 1, self.n - 1)
            lo_hi.append(at(i0) + (pos - i0) * (at(i1) - at(i0)))
        p_lo, p_hi = lo_hi
        span = max(p_hi - p_lo, 1e-12 * max(abs(p_lo), abs(p_hi), 1.0))
        lo_out = (p_lo - self.vmin) > OUTLIER_TAIL * span
        hi_out = (self.vmax - p_hi) > OUTLIER_TAIL * span
        lo = p_lo if lo_out else self.vmin
        hi = p_hi if hi_out else self.vmax
        n_out = int((small < lo).sum() + (large > hi).sum())
        far_hi = hi_out and (self.vmax - p_hi >= p_lo - self.vmin or not lo_out)
        where = self.at_max if far_hi or not lo_out else self.at_min
        return ChannelLimits(lo, hi, p_lo, p_hi, self.vmin, self.vmax, n_out, self.n, where)


def _where(flat_index: int, shape: tuple[int, ...], offset: int) -> tuple[int, ...]:
    idx = np.unravel_index(flat_index, shape)
    return (int(idx[0]) + offset, *(int(k) for k in idx[1:]))


def robust_limits(chunks: Iterable[np.ndarray], n_frames: int,
                  percentiles: Sequence[float] = PERCENTILES) -> list[ChannelLimits]:
    """Per-channel limits of frames streamed as chunks ``[n, C, *spatial]`` (``n_frames`` in all).

    >>> x = np.full((5, 1, 64, 64), 500.0); x[2, 0, 10, 12] = 65535.0
    >>> lim = robust_limits([x], 5)[0]
    >>> (lim.lo, lim.hi, lim.n_out, lim.where, lim.dominated)
    (500.0, 500.0, 1, (2, 10, 12), True)
    >>> robust_limits([np.linspace(0, 1, 10**5).reshape(10, 1, 100, 100)], 10)[0].hi  # no outliers
    1.0
    """
    tails: list[_Tails] = []
    offset = 0
    for chunk in chunks:
        chunk = np.asarray(chunk)
        if not tails:
            per = n_frames * int(np.prod(chunk.shape[2:], dtype=np.int64))
            tails = [_Tails(per, percentiles) for _ in range(chunk.shape[1])]
        for c, t in enumerate(tails):
            t.add(chunk[:, c], offset)
        offset += chunk.shape[0]
    return [t.limits() for t in tails]


def outlier_message(limits: Sequence[ChannelLimits], names: Sequence[str], source: str,
                    percentiles: Sequence[float] = PERCENTILES) -> str | None:
    """One warning line when outliers would have dominated min/max scaling (else None)."""
    parts = []
    for name, lim in zip(names, limits):
        if lim.dominated:
            parts.append(
                f"channel {name}: {lim.n_out} pixel(s) ({100 * lim.n_out / lim.n:.3g} %) outside "
                f"[{lim.lo:.6g}, {lim.hi:.6g}] (data range [{lim.vmin:.6g}, {lim.vmax:.6g}], most "
                f"extreme at frame {lim.where[0]} pixel {tuple(lim.where[1:])})"
            )
    if not parts:
        return None
    return (f"{source}: outliers would dominate min/max scaling; training uses the "
            f"{percentiles[0]:g}-{percentiles[1]:g} percentile limits and clips beyond them "
            "(normalization=minmax keeps them): " + "; ".join(parts))
