"""Template matching: rigid motion of generated images and slit widths (paper §3.2, Figs. 3-4).

Convention. An image is modelled as its reference rotated counter-clockwise (as displayed,
rows pointing down) by ``angle_deg`` about the image centre ``((H-1)/2, (W-1)/2)`` —
exactly ``skimage.transform.rotate(reference, angle_deg)`` — and then shifted by
``shift = (d_row, d_col)`` pixels (content moves by +shift, as ``scipy.ndimage.shift``).
So a chart translated to the right has ``shift[1] > 0``.

Method (:func:`register_batch`):

1. every rotation in the angle grid is applied to the reference once (shared by the batch);
2. images and rotated references are made zero-mean, tapered by a circular window (so the
   compared support is the same at every angle) and scaled to unit norm; for each image
   and angle the translation-invariant score is the maximum of their circular
   cross-correlation (computed by FFT), i.e. a normalised cross-correlation in [-1, 1];
3. the best grid angle is refined by a parabola through its neighbours' scores, and the
   translation is measured against the reference rotated by that angle with
   ``skimage.registration.phase_cross_correlation`` (sub-pixel, ``upsample_factor``);
4. ``refine_iters`` times: the image is shifted back by the current estimate, the angle is
   re-searched on a fine local grid (±one grid step, 11 angles, parabola), and the residual
   translation is added. Without this the fixed window biases the angle of shifted images
   by a few tenths of a degree.

Slit widths (:func:`slit_width`, :func:`slit_widths`): the image is sampled along a
profile across the slit, averaged over a band of parallel lines, and the width is the
full width at half contrast of that averaged profile, with linear interpolation of the two
half-contrast crossings. With a :class:`Registration`, the slit given in reference
coordinates follows each image's measured shift and rotation (template-matched profiles).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import ndimage
from skimage.registration import phase_cross_correlation
from skimage.transform import rotate

from matdyn.errors import AnalysisError, ConfigError

__all__ = [
    "DEFAULT_ANGLES",
    "Registration",
    "radial_window",
    "register_batch",
    "register",
    "band_profile",
    "half_contrast_width",
    "slit_width",
    "slit_widths",
    "transform_points",
]

#: §3.2: the Ta chart set was augmented with in-plane rotations within [-30°, 30°]
DEFAULT_ANGLES = np.round(np.arange(-30.0, 30.0 + 1e-9, 0.5), 6)

_XCORR_BUDGET = 8 * 2**20  # correlation values per FFT chunk (≈32 MB in float32)


class Registration(NamedTuple):
    """Rigid motion of each image relative to the reference (see module convention)."""

    shifts_px: np.ndarray  # [N, 2] (d_row, d_col) in pixels
    angles_deg: np.ndarray  # [N] counter-clockwise rotation in degrees
    score: np.ndarray  # [N] normalised cross-correlation at the best grid angle, [-1, 1]

    def shifts_physical(self, pixel_size: float) -> np.ndarray:
        """Shifts in physical units (e.g. nm): ``shifts_px * pixel_size``."""
        return self.shifts_px * float(pixel_size)


def radial_window(shape: tuple[int, int], taper: float = 0.2) -> np.ndarray:
    """Circular window: 1 inside ``(1 - taper) R``, cosine roll-off to 0 at ``R = min(H, W)/2``.

    >>> w = radial_window((9, 9)); float(w[4, 4]), float(w[0, 0])
    (1.0, 0.0)
    """
    h, w = shape
    rr, cc = np.mgrid[:h, :w]
    radius = np.hypot(rr - (h - 1) / 2, cc - (w - 1) / 2)
    outer = min(h, w) / 2.0
    inner = (1.0 - taper) * outer
    t = np.clip((radius - inner) / max(outer - inner, 1e-9), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * t))


def _as_stack(images: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(images, dtype=np.float64)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] == 0 or min(arr.shape[1:]) < 8:
        raise AnalysisError(
            f"{name} must be images [N, H, W] (or [N, 1, H, W]) with H, W >= 8, got shape "
            f"{np.shape(images)}"
        )
    if not np.isfinite(arr).all():
        raise AnalysisError(f"{name} contain NaN/inf pixels; clean them before registration")
    return arr


def _prepare(stack: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Zero-mean, windowed, unit-norm copies of [N, H, W]."""
    out = (stack - stack.mean(axis=(1, 2), keepdims=True)) * window
    norm = np.sqrt((out**2).sum(axis=(1, 2), keepdims=True))
    return out / np.where(norm > 0, norm, 1.0)


def _rotated(reference: np.ndarray, angle: float) -> np.ndarray:
    return rotate(
        reference, float(angle), order=1, mode="constant", cval=float(reference.mean()),
        preserve_range=True,
    )  # fmt: skip


def _parabolic_peak(angles: np.ndarray, scores: np.ndarray, i: int) -> float:
    """Vertex of the parabola through the scores at i-1, i, i+1 (uniform local spacing)."""
    if i == 0 or i == len(angles) - 1:
        return float(angles[i])
    step_l, step_r = angles[i] - angles[i - 1], angles[i + 1] - angles[i]
    if not np.isclose(step_l, step_r):
        return float(angles[i])
    y0, y1, y2 = scores[i - 1], scores[i], scores[i + 1]
    denom = y0 - 2 * y1 + y2
    if denom >= 0:  # not a maximum
        return float(angles[i])
    offset = 0.5 * (y0 - y2) / denom
    return float(angles[i] + np.clip(offset, -0.5, 0.5) * step_r)


def _pcc(image: np.ndarray, template: np.ndarray, upsample_factor: int) -> np.ndarray:
    """Sub-pixel shift (d_row, d_col) that moves ``template`` onto ``image``."""
    shift, _, _ = phase_cross_correlation(
        image, template, upsample_factor=upsample_factor, normalization=None
    )
    return np.asarray(shift, dtype=np.float64)


def register_batch(
    images: np.ndarray,
    reference: np.ndarray,
    angles: np.ndarray | Sequence[float] | None = None,
    *,
    upsample_factor: int = 20,
    taper: float = 0.2,
    refine_iters: int = 2,
) -> Registration:
    """Rotation (degrees) and sub-pixel translation (px) of each image against ``reference``.

    ``images`` [N, H, W] (or [N, 1, H, W] or one [H, W]); ``reference`` [H, W]; ``angles``
    the search grid in degrees (default ±30° in 0.5° steps; pass ``[0.0]`` for
    translation only). Returns ``Registration(shifts_px [N, 2], angles_deg [N], score [N])``.

    >>> ref = np.zeros((32, 32)); ref[8:12, 6:26] = 1; ref[14:26, 14:18] = 1
    >>> reg = register_batch(np.roll(ref, (2, -3), axis=(0, 1)), ref, angles=[0.0])
    >>> reg.shifts_px.round(2).tolist(), reg.angles_deg.tolist()
    ([[2.0, -3.0]], [0.0])
    """
    stack = _as_stack(images, "images")
    ref = _as_stack(reference, "reference")
    if ref.shape[0] != 1 or ref.shape[1:] != stack.shape[1:]:
        raise AnalysisError(
            f"reference must be one image shaped like the images {stack.shape[1:]}, got {np.shape(reference)}"
        )
    ref = ref[0]
    grid = np.asarray(DEFAULT_ANGLES if angles is None else angles, dtype=np.float64).ravel()
    if grid.size == 0 or not np.isfinite(grid).all():
        raise ConfigError("angles must be a non-empty list of finite degrees")
    grid = np.unique(grid)
    if upsample_factor < 1:
        raise ConfigError(f"upsample_factor must be >= 1, got {upsample_factor}")
    h, w = stack.shape[1:]
    window = radial_window((h, w), taper)

    # rotated, prepared references and their spectra, shared by the whole batch
    refs = _prepare(np.stack([_rotated(ref, a) for a in grid]), window)  # [A, H, W]
    f_ref = np.conj(np.fft.rfft2(refs)).astype(np.complex64)
    prepared = _prepare(stack, window)  # [N, H, W]
    f_img = np.fft.rfft2(prepared).astype(np.complex64)

    scores = np.empty((len(stack), len(grid)))
    chunk = max(1, _XCORR_BUDGET // (len(grid) * h * w))
    # translation-invariant NCC for every (image, angle) pair, a chunk of images at a time
    for s in range(0, len(stack), chunk):
        xc = np.fft.irfft2(f_img[s : s + chunk, None] * f_ref[None], s=(h, w))
        scores[s : s + chunk] = xc.reshape(xc.shape[0], len(grid), -1).max(axis=2)

    best = scores.argmax(axis=1)
    angles_out = np.empty(len(stack))
    shifts = np.empty((len(stack), 2))
    step = float(np.min(np.diff(grid))) if len(grid) > 1 else 0.0
    # per image: translation at the coarse angle, then alternate (undo shift -> local fine
    # angle search -> residual shift) so the fixed window no longer biases either estimate
    for n in range(len(stack)):
        angle = _parabolic_peak(grid, scores[n], int(best[n]))
        rot = _prepare(_rotated(ref, angle)[None], window)[0]
        shift = _pcc(prepared[n], rot, upsample_factor)
        for _ in range(refine_iters):
            aligned = _prepare(
                ndimage.shift(stack[n], -shift, order=3, mode="nearest")[None], window
            )[0]
            if step > 0:
                fine = angle + step * np.linspace(-1.0, 1.0, 11)
                cand = _prepare(np.stack([_rotated(ref, a) for a in fine]), window)
                fine_scores = np.tensordot(cand, aligned, axes=([1, 2], [0, 1]))
                angle = _parabolic_peak(fine, fine_scores, int(np.argmax(fine_scores)))
                rot = _prepare(_rotated(ref, angle)[None], window)[0]
            shift = shift + _pcc(aligned, rot, upsample_factor)
        angles_out[n] = angle
        shifts[n] = shift
    return Registration(shifts, angles_out, scores[np.arange(len(stack)), best])


def register(
    image: np.ndarray,
    reference: np.ndarray,
    angles: np.ndarray | Sequence[float] | None = None,
    **kwargs: float,
) -> tuple[np.ndarray, float, float]:
    """One image: ``(shift_px [2], angle_deg, score)``; see :func:`register_batch`."""
    reg = register_batch(np.asarray(image)[None], reference, angles, **kwargs)  # type: ignore[arg-type]
    return reg.shifts_px[0], float(reg.angles_deg[0]), float(reg.score[0])


def transform_points(
    points_rc: np.ndarray, shape: tuple[int, int], shift_px: np.ndarray, angle_deg: float
) -> np.ndarray:
    """Map (row, col) points [n, 2] from reference to image coordinates (module convention).

    >>> transform_points(np.array([[10.0, 15.0]]), (21, 21), np.zeros(2), 90.0).round(6)
    array([[ 5., 10.]])
    """
    pts = np.atleast_2d(np.asarray(points_rc, dtype=np.float64))
    centre = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    t = np.radians(angle_deg)
    rel = pts - centre
    r = rel[:, 0] * np.cos(t) - rel[:, 1] * np.sin(t)
    c = rel[:, 0] * np.sin(t) + rel[:, 1] * np.cos(t)
    return np.stack([r, c], axis=1) + centre + np.asarray(shift_px, dtype=np.float64)


def band_profile(
    image: np.ndarray,
    center_rc: tuple[float, float],
    angle_deg: float,
    half_length: float,
    band_width: int = 5,
    step: float = 0.25,
    order: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Profile through ``center_rc`` along ``angle_deg`` (counter-clockwise from +col),
    averaged over ``band_width`` parallel lines 1 px apart. Returns ``(t_px, profile)``.

    >>> img = np.zeros((20, 20)); img[:, 8:12] = 1.0
    >>> t, p = band_profile(img, (10, 9.5), 0.0, 5.0, step=0.5)
    >>> p[t == 0].item(), p[0].item()
    (1.0, 0.0)
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise AnalysisError(f"band_profile needs a 2D image, got shape {img.shape}")
    if half_length <= 0 or band_width < 1 or step <= 0:
        raise ConfigError("need half_length > 0, band_width >= 1 and step > 0 for a profile")
    t = np.arange(-half_length, half_length + 1e-9, step)
    th = np.radians(angle_deg)
    u = np.array([-np.sin(th), np.cos(th)])  # along the profile, (row, col)
    v = np.array([np.cos(th), np.sin(th)])  # across the band
    offsets = np.arange(band_width) - (band_width - 1) / 2.0
    pts = (
        np.asarray(center_rc, dtype=np.float64)[None, None, :]
        + t[None, :, None] * u
        + offsets[:, None, None] * v
    )  # [band, T, 2]
    vals = ndimage.map_coordinates(img, pts.reshape(-1, 2).T, order=order, mode="nearest")
    return t, vals.reshape(band_width, len(t)).mean(axis=0)


def half_contrast_width(
    t: np.ndarray,
    profile: np.ndarray,
    polarity: str = "auto",
    edge_fraction: float = 0.15,
    level: str = "peak",
) -> float:
    """Full width at half contrast of a peak (bright) or dip (dark) profile, in units of ``t``.

    Background = median of the outer ``edge_fraction`` of samples on both ends. Level:
    ``"peak"`` = extreme of the profile lightly smoothed (σ = 0.5 px), the usual FWHM, right
    for blurred or narrow slits; ``"plateau"`` = median of the samples above the first
    half-contrast estimate, more robust to noise on wide flat-topped slits but it widens
    narrow blurred ones. The two crossings of ``(background + level) / 2`` nearest the
    extreme are linearly interpolated. ``polarity``: ``"bright"``, ``"dark"`` or ``"auto"``
    (the larger excursion from the background).

    >>> t = np.arange(-10.0, 10.5, 0.5); p = (np.abs(t) <= 3).astype(float)
    >>> half_contrast_width(t, p)
    6.5
    """
    t = np.asarray(t, dtype=np.float64)
    p = np.asarray(profile, dtype=np.float64)
    if t.shape != p.shape or t.ndim != 1 or len(t) < 5:
        raise AnalysisError("half_contrast_width needs 1D t and profile of equal length >= 5")
    n_edge = max(1, int(round(edge_fraction * len(p))))
    background = float(np.median(np.concatenate([p[:n_edge], p[-n_edge:]])))
    if polarity == "auto":
        polarity = "bright" if p.max() - background >= background - p.min() else "dark"
    if polarity not in ("bright", "dark"):
        raise ConfigError(f"polarity must be 'bright', 'dark' or 'auto', got {polarity!r}")
    q = p - background if polarity == "bright" else background - p  # peak is positive
    peak = int(np.argmax(q))
    if q[peak] <= 0:
        raise AnalysisError(
            "profile has no contrast against its background; check the slit location"
        )
    if level == "peak":
        # extreme of the profile smoothed over ~0.5 px (suppresses single-sample noise)
        dt = float(np.median(np.diff(t)))
        half = 0.5 * float(ndimage.gaussian_filter1d(q, 0.5 / dt, mode="nearest").max())
    elif level == "plateau":
        above = q >= 0.5 * q[peak]
        # median of the connected run of samples above the first half estimate
        lo = peak
        while lo > 0 and above[lo - 1]:
            lo -= 1
        hi = peak
        while hi < len(q) - 1 and above[hi + 1]:
            hi += 1
        half = 0.5 * float(np.median(q[lo : hi + 1]))
    else:
        raise ConfigError(f"level must be 'peak' or 'plateau', got {level!r}")
    # walk out from the peak to the half-contrast crossings
    i = peak
    while i > 0 and q[i - 1] >= half:
        i -= 1
    j = peak
    while j < len(q) - 1 and q[j + 1] >= half:
        j += 1
    if i == 0 or j == len(q) - 1:
        raise AnalysisError(
            "profile does not fall back to half contrast inside the band; lengthen the profile "
            "(half_length) or re-centre it on the slit"
        )
    left = t[i - 1] + (half - q[i - 1]) * (t[i] - t[i - 1]) / (q[i] - q[i - 1])
    right = t[j] + (q[j] - half) * (t[j + 1] - t[j]) / (q[j] - q[j + 1])
    return float(right - left)


def slit_width(
    image: np.ndarray,
    center_rc: tuple[float, float],
    angle_deg: float,
    half_length: float,
    pixel_size: float = 1.0,
    *,
    band_width: int = 5,
    step: float = 0.25,
    polarity: str = "auto",
    level: str = "peak",
) -> float:
    """Width of a slit in physical units: half-contrast width of the band-averaged profile
    across it × ``pixel_size``. ``angle_deg`` is the direction *across* the slit.

    >>> img = np.zeros((30, 30)); img[:, 10:17] = 1.0        # a 7 px wide vertical slit
    >>> slit_width(img, (15, 13), 0.0, 10.0, pixel_size=20.72)
    145.04
    """
    t, prof = band_profile(image, center_rc, angle_deg, half_length, band_width, step)
    return half_contrast_width(t, prof, polarity, level=level) * float(pixel_size)


def slit_widths(
    images: np.ndarray,
    center_rc: tuple[float, float],
    angle_deg: float,
    half_length: float,
    pixel_size: float = 1.0,
    *,
    registration: Registration | None = None,
    band_width: int = 5,
    step: float = 0.25,
    polarity: str = "auto",
    level: str = "peak",
) -> np.ndarray:
    """Slit width [N] in physical units for each image of a batch.

    ``center_rc`` and ``angle_deg`` locate the slit in *reference* coordinates; with a
    ``registration`` (from :func:`register_batch` against that reference) the profile
    follows each image's shift and rotation, otherwise it stays fixed. An image whose
    profile has no half-contrast crossing gets NaN.
    """
    stack = _as_stack(images, "images")
    if registration is not None and len(registration.shifts_px) != len(stack):
        raise AnalysisError(
            f"registration holds {len(registration.shifts_px)} images but {len(stack)} were given"
        )
    out = np.full(len(stack), np.nan)
    # one profile per image, moved with the image's rigid motion when registered
    for n, img in enumerate(stack):
        centre, ang = np.asarray(center_rc, dtype=np.float64), float(angle_deg)
        if registration is not None:
            centre = transform_points(
                centre, img.shape, registration.shifts_px[n], float(registration.angles_deg[n])
            )[0]
            ang += float(registration.angles_deg[n])
        try:
            out[n] = slit_width(
                img, tuple(centre), ang, half_length, pixel_size,
                band_width=band_width, step=step, polarity=polarity, level=level,
            )  # fmt: skip
        except AnalysisError:
            continue
    return out
