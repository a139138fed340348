"""Template matching and slit widths (matdyn.descriptors.registration)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.transform import rotate

from matdyn.descriptors.registration import (
    band_profile,
    half_contrast_width,
    register,
    register_batch,
    slit_width,
    slit_widths,
    transform_points,
)
from matdyn.errors import AnalysisError

N = 96
SLIT_W = 6.4  # px, the vertical slit right of centre
# test-chart-like layout: (kind, row, col, height, width, angle) relative to the centre, px
SHAPES = [
    ("rect", -20, -18, 16, 3, 0), ("rect", -20, -12, 16, 3, 0), ("rect", -20, -6, 16, 3, 0),
    ("rect", -18, 12, 3, 18, 0), ("rect", -12, 12, 3, 18, 0), ("rect", -6, 12, 3, 18, 0),
    ("rect", 14, -14, 6, 14, 30), ("disk", 16, 16, 7, 7, 0), ("rect", 2, -2, 4, 10, -20),
    ("rect", 26, 4, 3, 24, 0), ("rect", 0, 30, 20, SLIT_W, 0),
]  # fmt: skip


def render_chart(shift=(0.0, 0.0), angle=0.0, ss=4, blur=0.8) -> np.ndarray:
    """Render the chart rotated ccw by ``angle`` about the centre, then shifted (row, col),
    analytically with ``ss``×``ss`` supersampling: new content enters at the borders like a
    real moving chart (no wrap-around, no interpolation of a reference image)."""
    c = (N - 1) / 2
    g = (np.arange(N * ss) + 0.5) / ss - 0.5
    R, C = np.meshgrid(g, g, indexing="ij")
    r, col = R - c - shift[0], C - c - shift[1]
    t = np.radians(-angle)
    rr = r * np.cos(t) - col * np.sin(t)
    cc = r * np.sin(t) + col * np.cos(t)
    out = np.zeros_like(R)
    for kind, r0, c0, h, w, a in SHAPES:
        if kind == "disk":
            out[(rr - r0) ** 2 + (cc - c0) ** 2 <= h**2] = 1.0
            continue
        ta = np.radians(a)
        u = (rr - r0) * np.cos(ta) + (cc - c0) * np.sin(ta)
        v = -(rr - r0) * np.sin(ta) + (cc - c0) * np.cos(ta)
        out[(np.abs(u) <= h / 2) & (np.abs(v) <= w / 2)] = 1.0
    img = out.reshape(N, ss, N, ss).mean(axis=(1, 3))
    return ndimage.gaussian_filter(img, blur)


CASES = [((1.3, -2.7), 0.0), ((0.4, 3.35), 4.3), ((-2.2, 1.1), -12.6), ((3.7, -0.6), 1.5)]


@pytest.fixture(scope="module")
def chart_batch():
    rng = np.random.default_rng(0)
    ref = render_chart()
    imgs = np.stack([render_chart(s, a) + 0.02 * rng.standard_normal((N, N)) for s, a in CASES])
    return ref, imgs, register_batch(imgs, ref)


def test_convention_matches_skimage_rotate():
    ref = render_chart()
    m = np.zeros((N, N), bool)
    m[20:76, 20:76] = True  # away from the borders where new content enters
    rotated = render_chart(angle=10.0)
    assert np.corrcoef(rotated[m], rotate(ref, 10.0, order=1)[m])[0, 1] > 0.99
    # a point right of the centre goes up under a +90° (ccw) rotation
    assert transform_points(np.array([[10.0, 15.0]]), (21, 21), np.zeros(2), 90.0) == pytest.approx(
        np.array([[5.0, 10.0]])
    )


def test_register_batch_recovers_shift_and_rotation(chart_batch):
    _, _, reg = chart_batch
    truth_shift = np.array([s for s, _ in CASES])
    truth_angle = np.array([a for _, a in CASES])
    assert np.abs(reg.shifts_px - truth_shift).max() < 0.2
    assert np.abs(reg.angles_deg - truth_angle).max() < 1.0
    assert (reg.score > 0.9).all()
    assert reg.shifts_physical(20.72) == pytest.approx(reg.shifts_px * 20.72)


def test_translation_only_grid_and_single_image():
    ref = render_chart()
    img = render_chart(shift=(-1.25, 2.6))
    shift, angle, score = register(img, ref, angles=[0.0])
    assert angle == 0.0
    assert shift == pytest.approx([-1.25, 2.6], abs=0.2)
    assert score > 0.95
    with pytest.raises(AnalysisError):
        register_batch(img[None], ref[:50])


def bar_image(width: float, angle_deg: float, n: int = 64, ss: int = 8) -> np.ndarray:
    """A bright bar of ``width`` px across direction ``angle_deg`` through the centre."""
    g = (np.arange(n * ss) + 0.5) / ss - 0.5
    R, C = np.meshgrid(g, g, indexing="ij")
    t = np.radians(angle_deg)
    across = (R - (n - 1) / 2) * -np.sin(t) + (C - (n - 1) / 2) * np.cos(t)
    return (np.abs(across) <= width / 2).reshape(n, ss, n, ss).mean(axis=(1, 3))


@pytest.mark.parametrize("width", [5.5, 7.3, 12.6])
@pytest.mark.parametrize("angle", [0.0, 25.0, 90.0, 135.0])
def test_slit_width_of_rendered_bar(width, angle):
    rng = np.random.default_rng(1)
    img = ndimage.gaussian_filter(bar_image(width, angle), 0.8) + 0.03 * rng.standard_normal(
        (64, 64)
    )
    w_px = slit_width(img, (31.5, 31.5), angle, 15.0, band_width=7)
    assert abs(w_px - width) < 0.5
    # physical units and dark polarity (an absorbing bar)
    w_nm = slit_width(-img, (31.5, 31.5), angle, 15.0, pixel_size=20.72, band_width=7)
    assert abs(w_nm - width * 20.72) < 0.5 * 20.72


def test_half_contrast_width_interpolates_and_rejects_open_profiles():
    t = np.arange(-10.0, 10.01, 0.5)
    assert half_contrast_width(t, (np.abs(t) <= 3).astype(float)) == pytest.approx(6.5)
    with pytest.raises(AnalysisError):
        half_contrast_width(t, (t > -2).astype(float))  # never falls back on the right
    tt, prof = band_profile(np.ones((16, 16)), (8, 8), 0.0, 4.0)
    assert prof == pytest.approx(np.ones_like(tt))


def test_slit_widths_follow_registered_motion(chart_batch):
    ref, imgs, reg = chart_batch
    centre = ((N - 1) / 2, (N - 1) / 2 + 30)  # the slit in reference coordinates
    widths = slit_widths(imgs, centre, 0.0, 9.0, pixel_size=1.0, registration=reg)
    assert np.isfinite(widths).all()
    assert np.abs(widths - SLIT_W).max() < 0.5
    ref_w = slit_widths(ref, centre, 0.0, 9.0)[0]
    assert abs(ref_w - SLIT_W) < 0.5
