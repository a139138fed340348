"""Performance measurements behind ``scripts/bench.py`` (targets live here, not in tests).

Everything is measured in one process, alternating variants within each repeat so that
machine noise hits all variants alike; we report medians and ratios to the plain eager
fp32 NCHW path. FLOPs are counted with the formulas of ``torch.utils.flop_counter`` (see
:func:`count_flops`).
"""

from __future__ import annotations

import copy
import gc
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from matdyn.models.layers import (
    canonical_memory_format,
    channels_last_format,
    is_channels_last,
)
from matdyn.models.pggan import Discriminator, Generator, stage_resolution
from matdyn.training.losses import critic_loss, drift_penalty, generator_loss, gradient_penalty

#: generator-inference variants; "bf16" = bf16 autocast, kept for sampling only after the
#: descriptor-agreement test (tests/test_precision.py) passed
GEN_VARIANTS = ("eager", "channels_last", "bf16", "bf16_channels_last", "compile", "bf16_compile")
#: the same paths through GeneratorBundle (what sampling and analysis run): "bundle" = fp32 with
#: memory_format="auto", "_bf16" = precision="bf16", "_compile" = compile=True
BUNDLE_VARIANTS = ("bundle", "bundle_bf16", "bundle_compile", "bundle_bf16_compile")
#: training variants; "bf16_channels_last" is what trainer.precision=bf16-mixed runs on 2D data
#: (perf.channels_last=auto turns channels_last on for 2D)
TRAIN_VARIANTS = ("eager", "channels_last", "bf16", "bf16_channels_last")


def _timeit(fn: Callable[[], Any], min_time: float = 0.5, max_iters: int = 50) -> float:
    """Seconds per call (after one warm-up call), averaged over >= min_time."""
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_time or n >= max_iters:
            return dt / n


def matmul_ceiling(n: int = 2048, repeats: int = 5) -> float:
    """fp32 matmul GFLOP/s (median), the practical compute ceiling of this machine."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    ts = [_timeit(lambda: a @ b, min_time=0.3) for _ in range(repeats)]
    return 2 * n**3 / statistics.median(ts) / 1e9


class _DispatchFlops(TorchDispatchMode):
    """FLOPs of every dispatched op with a formula in torch's flop registry.

    ``FlopCounterMode`` also tracks modules with backward hooks, which breaks
    ``autograd.grad(create_graph=True)`` (the gradient penalty); this counts the same
    registry formulas without the module tracker.
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += int(formula(*args, **kwargs, out_val=out))
        return out


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of `fn` (convolutions and matmuls, forward and backward)."""
    with _DispatchFlops() as fc:
        fn()
    return fc.total


def _autocast(bf16: bool, device: str):
    return torch.autocast(device_type=device, dtype=torch.bfloat16) if bf16 else nullcontext()


def make_generator_fn(gen: Generator, stage: int, variant: str, device: str = "cpu"
                      ) -> Callable[[torch.Tensor], torch.Tensor]:
    """A latents -> images function for one inference variant (inference_mode inside).

    Each variant works on its own copy of `gen` (a memory-format change is in place and
    would otherwise leak into the variants built before it)."""
    g = copy.deepcopy(gen).to(device).eval()
    if variant.startswith("bundle"):
        from matdyn.training.bundle import GeneratorBundle

        if variant not in BUNDLE_VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; bundle variants: {BUNDLE_VARIANTS}")
        bundle = GeneratorBundle(g, stage, 1.0, precision="bf16" if "bf16" in variant else "fp32",
                                 compile=variant.endswith("compile")).to(device)

        def run_bundle(z: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return bundle(z)

        return run_bundle
    if variant not in GEN_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {GEN_VARIANTS + BUNDLE_VARIANTS}")
    bf16 = variant.startswith("bf16")
    if "channels_last" in variant:
        g = g.to(memory_format=channels_last_format(gen.ndim))
    fwd: Callable[..., torch.Tensor] = g
    if variant.endswith("compile"):
        fwd = torch.compile(g, dynamic=False)

    def run(z: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), _autocast(bf16, device):
            return fwd(z, stage, 1.0).float()

    return run


def bench_generator(gen: Generator, stage: int, batch: int, variants: Sequence[str],
                    repeats: int = 3, device: str = "cpu") -> dict[str, Any]:
    z = torch.randn(batch, gen.latent_dim, device=device)
    fns = {v: make_generator_fn(gen, stage, v, device) for v in variants}
    def plain_forward() -> None:  # inference_mode hides ops from dispatch modes: count under no_grad
        with torch.no_grad():
            gen(z, stage, 1.0)

    flops = count_flops(plain_forward)
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(repeats):  # alternate variants inside each repeat
        for v, fn in fns.items():
            times[v].append(_timeit(lambda fn=fn: fn(z)))
    out: dict[str, Any] = {"resolution": stage_resolution(stage), "batch": batch,
                           "gflop_per_image": flops / batch / 1e9 if flops else None}
    for v in variants:
        t = statistics.median(times[v])
        out[v] = {"img_s": batch / t}
        if flops:
            out[v]["gflop_s"] = flops / t / 1e9
    if "eager" in variants:
        for v in variants:
            out[v]["speedup"] = out[v]["img_s"] / out["eager"]["img_s"]
    return out


def wgan_gp_step(G: Generator, D: Discriminator, opt_g, opt_d, real: torch.Tensor, stage: int,
                 alpha: float, bf16: bool = False, device: str = "cpu") -> None:
    """One critic step + one generator step of WGAN-GP (the training hot path).

    With ``bf16`` the whole critic step runs under bf16 autocast, gradient penalty included,
    as ``trainer.precision=bf16-mixed`` runs ``PGGANModule.training_step`` (Lightning wraps
    the step in autocast). Until 2026-12-01 the penalty ran in fp32 here, which measured a
    slower step than training takes (64² batch 8: 2.2 vs 3.0 img/s).
    """
    n = real.shape[0]
    z = torch.randn(n, G.latent_dim, device=device)
    # critic inputs in the critic's layout, as PGGANModule._fmt does
    fmt = channels_last_format(real.dim() - 2) if is_channels_last(D.head[1].weight) else None
    real = canonical_memory_format(real, fmt)
    with _autocast(bf16, device):
        with torch.no_grad():
            fake = canonical_memory_format(G(z, stage, alpha).float(), fmt)
        real_s, fake_s = D(real, stage, alpha), D(fake, stage, alpha)
        loss_d = critic_loss(real_s.float(), fake_s.float()) + drift_penalty(real_s.float())
        gp = gradient_penalty(lambda x: D(x, stage, alpha).float(), real, fake.detach())
    opt_d.zero_grad(set_to_none=True)
    (loss_d + gp).backward()
    opt_d.step()
    # the critic is frozen for the generator step, as Lightning's toggle_optimizer does in
    # PGGANModule.training_step (no critic weight gradients are computed there)
    D.requires_grad_(False)
    with _autocast(bf16, device):
        loss_g = generator_loss(D(canonical_memory_format(G(z, stage, alpha), fmt), stage,
                                  alpha).float())
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    D.requires_grad_(True)


def bench_training(filters: Sequence[int], channels: int, ndim: int, stage: int, batch: int,
                   variants: Sequence[str], repeats: int = 3, device: str = "cpu",
                   alpha: float = 0.5) -> dict[str, Any]:
    res = stage_resolution(stage)
    setups = {}
    for v in variants:
        torch.manual_seed(0)
        G = Generator(32, channels, ndim, filters).to(device)
        D = Discriminator(channels, ndim, filters).to(device)
        real = torch.randn(batch, channels, *(res,) * ndim, device=device)
        if "channels_last" in v:
            fmt = channels_last_format(ndim)
            G, D, real = G.to(memory_format=fmt), D.to(memory_format=fmt), real.contiguous(memory_format=fmt)
        opt_g = torch.optim.Adam(G.parameters(), 1e-3, betas=(0.0, 0.99), eps=1e-8)
        opt_d = torch.optim.Adam(D.parameters(), 1e-3, betas=(0.0, 0.99), eps=1e-8)
        setups[v] = (G, D, opt_g, opt_d, real, v.startswith("bf16"))
    G, D, og, od, real, _ = setups[variants[0]]
    flops = count_flops(lambda: wgan_gp_step(G, D, og, od, real, stage, alpha, device=device))
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(repeats):
        for v, setup in setups.items():
            times[v].append(_timeit(lambda s=setup: wgan_gp_step(*s[:5], stage, alpha, s[5], device),
                                    min_time=0.5, max_iters=20))
    out: dict[str, Any] = {"resolution": res, "batch": batch, "alpha": alpha,
                           "gflop_per_step": flops / 1e9}
    for v in variants:
        t = statistics.median(times[v])
        out[v] = {"img_s": batch / t, "gflop_s": flops / t / 1e9}
    if "eager" in variants:
        for v in variants:
            out[v]["speedup"] = out[v]["img_s"] / out["eager"]["img_s"]
    gc.collect()
    return out


def bench_pipeline(gen_fn: Callable[[torch.Tensor], torch.Tensor], latent_dim: int, batch: int,
                   n_refs: int, n_samples: int, repeats: int = 3, metrics: str = "np"
                   ) -> dict[str, Any]:
    """Variation pipeline (generation + descriptors + reducers) vs bare generation, img/s."""
    import tempfile

    from matdyn.descriptors.differences import AreaDifference, EntropyDifference, MetricFilter
    from matdyn.descriptors.particles import Binarizer
    from matdyn.sampling.engine import VariationEngine
    from matdyn.sampling.reducers import FilteredMean, SampleMetrics
    from matdyn.sampling.samplers import UniformSampler

    class _G(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.latent_dim = latent_dim

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return gen_fn(z)

    g = _G()
    n_images = n_refs * (n_samples + 1)
    z = torch.randn(batch, latent_dim)

    def bare() -> None:
        for _ in range(0, n_images, batch):
            gen_fn(z)

    def pipeline() -> None:
        mets = [EntropyDifference(), AreaDifference(Binarizer(dark=True, sigma=1.0), min_area=6)]
        keep = MetricFilter(upper={"entropy_diff": 0.2})
        with tempfile.TemporaryDirectory() as d:
            VariationEngine(g, UniformSampler(1.0), n_refs=n_refs, n_samples=n_samples,
                            metrics=mets, reducers=[SampleMetrics(), FilteredMean(keep)],
                            batch_size=batch, progress=False, output="raw").run(d)

    tb, tp = [], []
    gen_fn(z)  # warm-up
    for _ in range(repeats):
        t0 = time.perf_counter(); bare(); tb.append(time.perf_counter() - t0)  # noqa: E702
        t0 = time.perf_counter(); pipeline(); tp.append(time.perf_counter() - t0)  # noqa: E702
    b, p = n_images / statistics.median(tb), n_images / statistics.median(tp)
    return {"batch": batch, "images": n_images, "bare_img_s": b, "pipeline_img_s": p,
            "ratio": p / b}


#: the side-by-side settings of ../shared/bench/run.sh (the authors' TF PGGAN as anchor): NP
#: widths (paper §3.1 / Section S1 halved), training {resolution: batch}, generation likewise
ANCHOR_FILTERS = (256, 256, 256, 256, 128, 64)
ANCHOR_TRAIN = {16: 16, 32: 16, 64: 8}
ANCHOR_GEN = {64: 256, 128: 64}


def read_anchor(path: str) -> dict[str, Any]:
    """The JSON line written by ``tf_bench.py`` ({"train": {res: {"fade", "stable"}}, "gen":
    {res: img/s}}), resolutions as ints. Raises ValueError if it is not one."""
    import json

    with open(path) as f:
        lines = [ln for ln in f.read().splitlines() if ln.strip()]
    try:
        obj = json.loads(lines[-1])
        train = {int(r): {k: float(v[k]) for k in ("fade", "stable")}
                 for r, v in obj.get("train", {}).items()}
        gen = {int(r): float(v) for r, v in obj.get("gen", {}).items()}
    except (IndexError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path} is not a tf_bench.py result ({type(e).__name__}: {e})") from None
    return {"train": train, "gen": gen, "tf": obj.get("tf")}


def anchor_ratios(anchor: Mapping[str, Any], train: Mapping[int, Mapping[str, Mapping[str, Any]]],
                  gen: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """matdyn img/s divided by the anchor's, per resolution and variant.

    ``train[res][phase][variant]["img_s"]`` with phase "fade" (α = 0.5) / "stable" (α = 1);
    ``gen[res][variant]["img_s"]``. Resolutions missing on either side are left out.
    """
    out: dict[str, Any] = {"train": {}, "gen": {}}
    for res, phases in train.items():
        ref = anchor["train"].get(int(res))
        if ref:
            out["train"][int(res)] = {
                ph: {v: row["img_s"] / ref[ph] for v, row in rows.items() if isinstance(row, Mapping)}
                for ph, rows in phases.items() if ph in ref}
    for res, rows in gen.items():
        ref = anchor["gen"].get(int(res))
        if ref:
            out["gen"][int(res)] = {v: row["img_s"] / ref for v, row in rows.items()
                                    if isinstance(row, Mapping) and "img_s" in row}
    return out


def bench_rays(size: int = 64, per_side: int = 4, n_refs: int = 4, n_rays: int = 16,
               gammas: Sequence[float] = (0.125, 0.25, 0.5, 1.0, 2.0), repeats: int = 3,
               seed: int = 0) -> dict[str, Any]:
    """Seconds per reference of :func:`matdyn.dynamics.paths.follow_rays` (locate every
    ray's image at every ladder step, link step to step), median over ``repeats``.

    The "generator" is analytic (numpy rendering, included in the time), so the number is
    the locate-and-link cost without a network's decode: ``size``² px images of
    ``per_side``² dark Gaussian particles (σ 1.5 px, as the NP stand-in's at 64 px) on a
    jittered grid (≥ 10 px apart, beyond the locator's separation) whose positions move
    linearly with the latent (1 px per unit per coordinate), plus 2 % noise. A trained
    generator adds its decode time for ladder × rays images per reference (the ``generate``
    section's img/s)."""
    import numpy as np

    from matdyn.dynamics.locate import LocateParams
    from matdyn.dynamics.paths import follow_rays, ray_ladder

    rng = np.random.default_rng(seed)
    n_particles = per_side**2
    d = 2 * n_particles
    grid = np.linspace(9, size - 10, per_side)
    base = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    base += rng.uniform(-1, 1, base.shape)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)

    def images(lat: torch.Tensor) -> np.ndarray:
        pos = base[None] + lat.numpy()[:, :d].reshape(-1, n_particles, 2)
        r2 = ((yy[None, None] - pos[..., 0, None, None]) ** 2
              + (xx[None, None] - pos[..., 1, None, None]) ** 2)
        img = -np.exp(-r2 / (2 * 1.5 ** 2)).sum(1)
        img += 0.02 * np.random.default_rng(0).standard_normal(img.shape)
        return img[:, None].astype(np.float32)

    ladder = ray_ladder(gammas)
    z = torch.zeros(n_refs, d)
    v = torch.as_tensor(rng.uniform(-1, 1, (n_refs, n_rays, d)), dtype=torch.float32)
    params = LocateParams(diameter=7, minmass=1.0)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        paths = follow_rays(images, z, v, ladder, params, radius=3.0)
        times.append((time.perf_counter() - t0) / n_refs)
    return {"size_px": size, "particles": n_particles, "rays": n_rays, "steps": int(ladder.size),
            "s_per_reference": statistics.median(times),
            "lost_fraction_at_max_gamma": paths.lost_fraction(float(max(gammas)))}
