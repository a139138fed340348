"""Particles followed along latent rays (matdyn.dynamics.paths): known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matdyn.dynamics import LocateParams
from matdyn.dynamics.paths import follow_particles, follow_rays, ray_ladder
from matdyn.dynamics.variation import link_to_reference
from matdyn.errors import ConfigError
from matdyn.sampling.samplers import UniformSampler
from matdyn.sampling.streams import variation_latents

H = 48
START = np.array([[12.0, 12.0], [12.0, 36.0], [34.0, 24.0]])  # (row, col) px at z = 0


def _images(lat: torch.Tensor) -> np.ndarray:
    """A known 'generator': three dark Gaussian particles on a flat background. Particle 0
    moves 8 px along x per unit of latent 0, particle 1 fades out as latent 1 grows past
    0.5, particle 2 stays; so along a ray z + t·v, particle 0 moves 8·t·v0 px."""
    lat = lat.numpy().astype(np.float64)
    yy, xx = np.mgrid[:H, :H].astype(np.float64)
    out = np.zeros((len(lat), 1, H, H))
    for b, z in enumerate(lat):
        pos = START.copy()
        pos[0, 1] += 8.0 * z[0]
        depth = [1.0, float(np.clip(1.0 - 4.0 * (abs(z[1]) - 0.5), 0.0, 1.0)), 1.0]
        for (r, c), a in zip(pos, depth):
            out[b, 0] -= a * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * 1.5**2))
    return out


PARAMS = LocateParams(diameter=7, minmass=1.0)


def test_ladder_holds_the_gammas_and_steps_by_at_most_the_ratio():
    t = ray_ladder([0.3, 1.0, 2.0])
    assert t[0] == pytest.approx(0.075) and t[-1] == 2.0
    assert {0.3, 1.0, 2.0} <= set(np.round(t, 12).tolist())
    assert np.all(t[1:] / t[:-1] <= 2**0.25 + 1e-9) and len(t) <= 20
    for bad in ([], [0.0, 1.0], [1.0, np.nan]):
        with pytest.raises(ConfigError):
            ray_ladder(bad)


def test_a_particle_moving_past_the_radius_is_followed_and_a_vanishing_one_is_lost():
    z = torch.zeros(1, 2)
    v = torch.tensor([[[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]])  # 3 rays
    ladder = ray_ladder([1.0], t_min=0.125)
    paths = follow_rays(_images, z, v, ladder, PARAMS, radius=2.0)
    assert paths.n_ref.tolist() == [3]
    d = paths.at(1.0)[0]  # [N, P, 2] px
    order = np.argsort(paths.ref_yx[0, :3, 1] + 100 * paths.ref_yx[0, :3, 0])
    p0, p1, p2 = order[0], order[1], order[2]  # (12,12), (12,36), (34,24)
    # rays 0/1 move particle 0 by +8 / -8 px in x: followed, to within locate error
    assert d[0, p0, 1] == pytest.approx(8.0, abs=0.3) and d[1, p0, 1] == pytest.approx(-8.0, abs=0.3)
    assert np.all(np.abs(d[:, p2]) < 0.2)  # the still particle stays
    # ray 2 fades particle 1 out: lost there, and only there
    assert np.isnan(d[2, p1]).all() and np.isfinite(d[:2, p1]).all()
    assert paths.followed_fraction(1.0)[0, p1] == pytest.approx(2 / 3)
    assert paths.lost_fraction(1.0) == pytest.approx(1 / 9)
    msd = paths.particle_msd(1.0)[0]
    assert msd[p0] == pytest.approx(2 * 64.0 / 3, rel=0.05)  # ray 2 does not move it and msd[p2] < 0.05
    # the one-jump link within the same radius cannot see particle 0's move: it is "missing"
    end = _images(z + 1.0 * v[0])[:, 0]
    from matdyn.dynamics import locate_stack

    loc = locate_stack(end, PARAMS)
    link = link_to_reference(paths.ref_yx[0, :3], loc.coords, loc.frame, 3, 2.0)
    assert not link.matched[p0, :2].any()


def test_links_stay_on_their_own_ray_and_pick_the_nearest():
    ref = np.array([[5.0, 5.0], [5.0, 8.0]])
    # ray 0: both particles shift +1 col; ray 1: only a feature near particle 1
    steps = [(np.array([[5.0, 6.0], [5.0, 9.0], [5.0, 8.5]]), np.array([0, 0, 1]))]
    pos = follow_particles(ref, steps, 2, 1.6)[0]
    assert pos[0].tolist() == [[5.0, 6.0], [5.0, 9.0]]
    assert np.isnan(pos[1, 0]).all() and pos[1, 1].tolist() == [5.0, 8.5]
    assert np.isnan(follow_particles(ref, steps + [(np.zeros((0, 2)), np.zeros(0, int))],
                                     2, 1.6)[1]).all()  # nothing at the next step: all lost


def test_rays_are_the_engines_samples_at_every_gamma():
    # ε at γ is γ·v with one v per sample for every γ: the ray ends are the engine's samples
    _, e1 = variation_latents(0, 3, 16, 8, UniformSampler(0.5))
    _, e2 = variation_latents(0, 3, 24, 8, UniformSampler(2.0))
    assert torch.allclose(e1 / 0.5, e2[:16] / 2.0, atol=1e-6)
