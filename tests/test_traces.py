"""Trace extraction and descriptors (matdyn.descriptors.traces)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from matdyn.descriptors.traces import (
    anisotropy,
    extract_traces,
    mask_tortuosity,
    second_moments,
    skeleton_path,
    tortuosity_of_path,
    trace_descriptors,
    trace_descriptors_batch,
)
from matdyn.errors import AnalysisError, ConfigError

H = W = 80
YY, XX = np.mgrid[:H, :W]


def gaussian_dip(r: float, c: float, radius: float = 2.0, depth: float = 1.0) -> np.ndarray:
    return -depth * np.exp(-((YY - r) ** 2 + (XX - c) ** 2) / (2 * radius**2))


def streak(r0: float, c0: float, length: float, angle_deg: float, n: int = 80) -> np.ndarray:
    """Average of a small dip moved along a straight line (a directed-motion trace), depth 1."""
    t = np.radians(angle_deg)
    s = np.linspace(-length / 2, length / 2, n)
    avg = np.mean([gaussian_dip(r0 - si * np.sin(t), c0 + si * np.cos(t), 1.0) for si in s], axis=0)
    return avg / abs(avg.min())


def thick_curve(rows: np.ndarray, cols: np.ndarray, shape=(60, 100), width: int = 1) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[np.round(rows).astype(int), np.round(cols).astype(int)] = True
    return ndimage.binary_dilation(m, iterations=width)


# ----------------------------------------------------------------------------- anisotropy


def test_anisotropy_line_is_one_and_blob_is_zero():
    line = np.stack([np.full(30, 5), np.arange(30)], axis=1)
    assert anisotropy(line) > 0.99
    disk = np.argwhere((YY[:21, :21] - 10) ** 2 + (XX[:21, :21] - 10) ** 2 <= 64)
    assert anisotropy(disk) < 0.01
    # the convention: 2 λ1 / (λ1 + λ2) - 1 on the second moments
    lam = np.linalg.eigvalsh(second_moments(line))
    assert anisotropy(line) == pytest.approx(2 * lam[1] / lam.sum() - 1)
    # a single pixel is isotropic (pixels are unit squares)
    assert anisotropy(np.array([[3, 4]])) == pytest.approx(0.0)


def test_anisotropy_from_extracted_traces():
    img = streak(25, 40, 40, 30.0) + gaussian_dip(60, 40, 2.5)
    df = trace_descriptors(img, pixel_size=40.58)
    assert len(df) == 2
    line = df.iloc[df.centroid_row.argmin()]
    blob = df.iloc[df.centroid_row.argmax()]
    assert line.anisotropy > 0.9
    assert blob.anisotropy < 0.1
    assert line.orientation_deg == pytest.approx(30.0, abs=2.0)
    assert line.major_sigma > 3 * line.minor_sigma


# ----------------------------------------------------------------------------- tortuosity


def test_tortuosity_of_points():
    straight = np.stack([np.zeros(50), np.linspace(0, 49, 50)], axis=1)
    assert tortuosity_of_path(straight) == 1.0
    x = np.linspace(0, 80, 400)
    meander = np.stack([10 * np.sin(2 * np.pi * x / 20), x], axis=1)
    assert tortuosity_of_path(meander) > 1.5
    assert tortuosity_of_path(np.array([[1.0, 1.0]])) == 1.0  # no extent
    assert tortuosity_of_path(np.array([[0, 0], [0, 3], [0, 0]])) == float("inf")  # closed


def test_tortuosity_from_masks_orders_straight_below_meandering():
    x = np.linspace(5, 95, 3000)
    straight_h = thick_curve(np.full_like(x, 30.0), x)
    oblique = thick_curve(30 + 0.4 * (x - 50), x, shape=(80, 100))
    meander = thick_curve(30 + 10 * np.sin(2 * np.pi * x / 20), x)
    t_h, t_ob, t_me = (mask_tortuosity(m) for m in (straight_h, oblique, meander))
    assert t_h == pytest.approx(1.0, abs=0.01)
    assert t_ob < 1.03  # the pixel staircase is smoothed away
    assert t_me > 1.5
    assert t_h < t_me and t_ob < t_me
    path = skeleton_path(meander)
    steps = np.abs(np.diff(path, axis=0))
    assert steps.max() <= 1  # ordered: consecutive pixels are 8-neighbours


def test_blob_tortuosity_is_one():
    m = (YY[:21, :21] - 10) ** 2 + (XX[:21, :21] - 10) ** 2 <= 25
    assert mask_tortuosity(m) == pytest.approx(1.0, abs=0.05)


# ----------------------------------------------------------------------------- extraction


def test_extract_traces_regions_and_units():
    rng = np.random.default_rng(0)
    truth = [(15, 15), (40, 60), (65, 25)]
    img = 0.3 * (YY / H)  # slow background ramp, removed by the top-hat
    for r, c in truth:
        img = img + gaussian_dip(r, c, 2.0)
    img[70, 70] -= 0.6  # a single-pixel dip: below min_area after smoothing + threshold
    img = img + 0.01 * rng.standard_normal(img.shape)
    ts = extract_traces(img, pixel_size=40.58, depth=1.0)
    assert len(ts) == 3
    found = sorted(tr.centroid_px for tr in ts.traces)
    for (r, c), (fr, fc) in zip(sorted(truth), found):
        assert abs(fr - r) < 0.3 and abs(fc - c) < 0.3
    for tr in ts.traces:
        assert tr.area == pytest.approx(tr.area_px * 40.58**2)
        assert tr.area_px >= 6
        assert (ts.labels[tr.coords[:, 0], tr.coords[:, 1]] == tr.label).all()
        assert tr.mask().sum() == tr.area_px
    assert set(np.unique(ts.labels)) == {0, 1, 2, 3}
    assert ts.threshold == pytest.approx(0.35)
    # a higher threshold fraction shrinks every trace
    smaller = extract_traces(img, pixel_size=40.58, depth=1.0, threshold=0.6)
    assert sum(t.area_px for t in smaller.traces) < sum(t.area_px for t in ts.traces)


def test_trace_descriptor_table_and_batch():
    img = streak(25, 40, 40, 0.0) + gaussian_dip(60, 40, 2.5)
    df = trace_descriptors(img, pixel_size=2.0)
    for col in ("area", "ellipse_area", "anisotropy", "tortuosity", "centroid_row", "area_px"):
        assert col in df.columns
    assert (df.area == df.area_px * 4.0).all()
    lam_area = np.pi * df.major_sigma * df.minor_sigma  # ellipse_area = π √(λ1 λ2) px²
    assert np.allclose(df.ellipse_area, lam_area)
    assert (df.tortuosity >= 1.0).all()
    batch = trace_descriptors_batch(np.stack([img, img[::-1]]), pixel_size=2.0)
    assert batch.image.tolist() == [0, 0, 1, 1]


def test_extraction_errors():
    with pytest.raises(AnalysisError):
        extract_traces(np.zeros((2, 8, 8)))
    with pytest.raises(ConfigError):
        extract_traces(np.zeros((8, 8)), threshold=1.5)
    assert len(extract_traces(np.zeros((16, 16)))) == 0  # flat image: no traces, no error
