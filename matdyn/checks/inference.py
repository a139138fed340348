"""Generator-inference checks: ``precision="auto"`` and per-variant throughput with
descriptor agreement against fp32 (bounds: :mod:`matdyn.checks.agreement`)."""

from __future__ import annotations

import time
from collections.abc import Callable

from matdyn.checks.base import CheckFailed, Context

#: inference variants timed, as named in matdyn.benchmarks (eager = plain fp32 NCHW module;
#: bundle = GeneratorBundle fp32, memory_format auto; _bf16 = precision="bf16"; _compile =
#: torch.compile)
VARIANTS = ("eager", "bundle", "bundle_bf16", "bundle_bf16_compile")
RESOLUTIONS = (64, 128)
AGREEMENT_IMAGES = 128  # images compared per variant (tests/test_precision.py: 48)


def check_bundle_auto(ctx: Context) -> None:
    """load_generator(precision="auto") runs bf16 exactly where capabilities() says so."""
    import torch

    from matdyn.checks.hardware import capabilities
    from matdyn.models import Generator
    from matdyn.training.bundle import load_generator, save_bundle

    caps = capabilities()
    torch.manual_seed(0)
    path = save_bundle(ctx.workdir / "g.pt", Generator(8, 1, 2, [16, 16, 8]), stage=2)
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    devices = ["cpu"] + (["cuda"] if ctx.device == "cuda" and caps.cuda else [])
    for dev in devices:
        auto = load_generator(path, map_location=dev, precision="auto")
        ref = load_generator(path, map_location=dev)
        with torch.inference_mode():
            x, r = auto(z.to(dev)), ref(z.to(dev))
        want = "bf16" if caps.bf16(dev) else "fp32"
        diff = float((x - r).abs().max())
        ctx.record(**{f"{dev}_active": auto.active_precision, f"{dev}_expected": want,
                      f"{dev}_max_abs_diff_vs_fp32": diff})
        if auto.active_precision != want:
            raise CheckFailed(f"{dev}: precision auto ran {auto.active_precision}, "
                              f"capabilities say {want}")
        if not torch.isfinite(x).all() or x.dtype != torch.float32:
            raise CheckFailed(f"{dev}: precision auto gave non-finite or non-float32 output")
        if want == "fp32" and diff > 1e-4:
            raise CheckFailed(f"{dev}: auto chose fp32 but differs from fp32 by {diff:.3g}")


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _throughput(fn: Callable, z, device: str, min_time: float = 0.5, max_iters: int = 30
                ) -> tuple[float, float]:
    """(seconds of the first call incl. any compile, images per second after it)."""
    t0 = time.perf_counter()
    fn(z)
    _sync(device)
    first = time.perf_counter() - t0
    fn(z)  # second warm-up (autotuning, allocator)
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while True:
        fn(z)
        n += 1
        _sync(device)
        dt = time.perf_counter() - t0
        if dt >= min_time or n >= max_iters:
            return first, n * z.shape[0] / dt


def _reference(g, stage: int, z):
    """fp32 images with TF32 off (the true fp32 reference), clamped like the bundle's."""
    import torch

    flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.inference_mode():
            return g(z, stage, 1.0).float().clamp(-1, 1).cpu().numpy()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def check_inference(ctx: Context) -> None:
    """img/s per variant at 64² and 128² (NP widths) and descriptor agreement with fp32."""
    import torch

    from matdyn.benchmarks import make_generator_fn
    from matdyn.checks.agreement import calibrate_output, descriptor_agreement, violations
    from matdyn.checks.hardware import capabilities
    from matdyn.checks.tasks import NP_FILTERS, TINY_FILTERS
    from matdyn.models import Generator

    dev, caps = ctx.device, capabilities()
    filters = TINY_FILTERS if ctx.tiny else NP_FILTERS
    batch = 256 if dev == "cuda" else 8
    ctx.record(batch=batch, filters=list(filters), cudnn_allow_tf32=torch.backends.cudnn.allow_tf32)
    failures = []
    for res in RESOLUTIONS:
        stage = res.bit_length() - 3  # 4 * 2**stage = res
        torch.manual_seed(stage)
        g = calibrate_output(Generator(32, 1, 2, list(filters[: stage + 1])).to(dev).eval(), stage)
        z = torch.randn(batch, 32, generator=torch.Generator().manual_seed(1)).to(dev)
        ref = _reference(g, stage, z[:AGREEMENT_IMAGES])
        for variant in VARIANTS:
            key = f"{res}px_{variant}"
            if "bf16" in variant and not caps.bf16(dev):
                ctx.record(**{key: {"skipped": f"no native bf16 on {dev}"}})
                continue
            if "compile" in variant and not caps.compile(dev):
                ctx.record(**{key: {"skipped": f"torch.compile unavailable on {dev}"}})
                continue
            if "compile" in variant and ctx.tiny and dev == "cpu":  # minutes of CPU compiling
                ctx.record(**{key: {"skipped": "--tiny on the CPU"}})
                continue
            fn = make_generator_fn(g, stage, variant, device=dev)
            first, ips = _throughput(fn, z, dev)
            with torch.inference_mode():
                x = fn(z)[:AGREEMENT_IMAGES].float().clamp(-1, 1).cpu().numpy()
            agree = descriptor_agreement(ref, x)
            bad = violations(agree)
            ctx.record(**{key: {"img_per_s": round(ips, 1), "first_call_s": round(first, 2),
                                **{k: round(v, 5) for k, v in agree.items()},
                                "violations": bad}})
            if bad:
                failures.append(f"{key}: {'; '.join(bad)}")
            del fn
            if dev == "cuda":
                torch.cuda.empty_cache()
    if failures and ctx.tiny:  # 8-channel networks: agreement says nothing about real ones
        ctx.record(agreement_violations_ignored_tiny=failures)
    elif failures:
        raise CheckFailed("descriptor agreement with fp32 broken: " + " | ".join(failures))
