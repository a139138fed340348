"""Performance benchmarks; prints one JSON document.

    python scripts/bench.py                      # everything (several minutes on 2 cores)
    python scripts/bench.py --sections ceiling,generate --resolutions 64
    python scripts/bench.py --smoke              # seconds: tiny sizes, checks the script runs
    python scripts/bench.py --sections anchor --anchor tf.json   # ratios to the authors' TF

``--anchor`` takes the JSON of ../shared/bench/tf_bench.py (the paper authors' TF/Keras PGGAN
run on the same machine just before) and measures matdyn at the same NP widths, batches and
resolutions (matdyn.benchmarks.ANCHOR_*), reporting img/s and the ratio to the anchor per
variant; fade = α 0.5, stable = α 1.

Measure on a quiet machine (/proc/loadavg < 0.5): ratios are taken within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

from matdyn.allocator import reuse_freed_memory
from matdyn.benchmarks import (
    ANCHOR_FILTERS,
    ANCHOR_GEN,
    ANCHOR_TRAIN,
    BUNDLE_VARIANTS,
    GEN_VARIANTS,
    TRAIN_VARIANTS,
    anchor_ratios,
    bench_generator,
    bench_pipeline,
    bench_rays,
    bench_training,
    make_generator_fn,
    matmul_ceiling,
    read_anchor,
)
from matdyn.models.pggan import Generator

# paper widths (Section S1 via the issue): 512..32 x0.5 for NP (2D) and clumps (3D)
PAPER_2D = [256, 256, 256, 256, 128, 64, 32, 16]
PAPER_3D = [256, 256, 256, 256, 128, 64, 32, 16]
PAPER_BATCH_2D = [16, 16, 16, 16, 8, 4]   # NP per-stage batch sizes
PAPER_BATCH_3D = [8, 8, 4, 2]
QUICK_2D = [64, 64, 32, 16, 16]
QUICK_3D = [32, 32, 16]
QUICK_BATCH_2D = [32, 32, 32, 16, 16]
QUICK_BATCH_3D = [16, 16, 8]


def _rss_child(m: int, n: int) -> None:
    """Run a variation pipeline with M references and print the peak RSS (KiB)."""
    from matdyn.benchmarks import bench_pipeline as bp

    g = Generator(32, 1, 2, QUICK_2D)
    fn = make_generator_fn(g, 4, "eager")
    bp(fn, 32, 64, m, n, repeats=1)
    # VmHWM (peak RSS of this process image, KiB): unlike ru_maxrss it is not inherited
    # across fork + exec from the (large) parent benchmark process
    with open("/proc/self/status") as f:
        hwm = [ln.split()[1] for ln in f if ln.startswith("VmHWM:")]
    print(hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _section_train(a: argparse.Namespace, out: dict, gv: list[str], tv: list[str]) -> None:
    """The 'train' section of the benchmark (results into ``out``)."""
    configs = [("quick_2d", QUICK_2D, QUICK_BATCH_2D, 1, 2), ("quick_3d", QUICK_3D, QUICK_BATCH_3D, 3, 3),
               ("paper_2d", PAPER_2D[:5], PAPER_BATCH_2D, 1, 2), ("paper_3d", PAPER_3D[:3], PAPER_BATCH_3D, 3, 3)]
    if a.smoke:
        configs = [("smoke_2d", [8, 8], [4, 4], 1, 2), ("smoke_3d", [4, 4], [2, 2], 3, 3)]
    out["train"] = {}
    for name, filt, bs, ch, nd in configs:
        rows = []
        for stage in range(len(filt)):
            r = bench_training(filt, ch, nd, stage, bs[stage], tv, a.repeats)
            if "ceiling_gflop_s" in out:
                for v in tv:
                    r[v]["ceiling_frac"] = r[v]["gflop_s"] / out["ceiling_gflop_s"]
            rows.append(r)
            print(f"train {name} {r['resolution']}: " + ", ".join(
                f"{v} {r[v]['img_s']:.1f} img/s" for v in tv), file=sys.stderr)
        out["train"][name] = rows


def _section_generate(a: argparse.Namespace, out: dict, gv: list[str], tv: list[str]) -> None:
    """The 'generate' section of the benchmark (results into ``out``)."""
    configs = [("paper_2d", PAPER_2D, 1, 2, [16, 32, 64, 128]), ("quick_2d", QUICK_2D, 1, 2, [64]),
               ("paper_3d", PAPER_3D, 3, 3, [16]), ("quick_3d", QUICK_3D, 3, 3, [16])]
    batch = 256
    if a.smoke:
        configs, batch = [("smoke_2d", [8, 8, 8], 1, 2, [16])], 8
    out["generate"] = {}
    for name, filt, ch, nd, ress in configs:
        rows = []
        for res in ress:
            stage = res.bit_length() - 3
            g = Generator(32, ch, nd, filt[: stage + 1])
            b = batch if res < 128 and nd == 2 else 64 if nd == 2 else 32
            r = bench_generator(g, stage, b, gv, a.repeats)
            if "ceiling_gflop_s" in out:
                for v in gv:
                    r[v]["ceiling_frac"] = r[v]["gflop_s"] / out["ceiling_gflop_s"]
            rows.append(r)
            print(f"generate {name} {res}: " + ", ".join(
                f"{v} {r[v]['img_s']:.1f}" for v in gv), file=sys.stderr)
        out["generate"][name] = rows


def _section_pipeline(a: argparse.Namespace, out: dict, gv: list[str], tv: list[str]) -> None:
    """The 'pipeline' section of the benchmark (results into ``out``)."""
    g = Generator(32, 1, 2, QUICK_2D if not a.smoke else [8, 8, 8])
    stage = g.num_stages - 1
    best = next((v for v in ("bundle_bf16", "bf16") if v in gv), "eager")
    out["pipeline"] = {}
    for v in dict.fromkeys(["eager", best]):
        fn = make_generator_fn(g, stage, v)
        out["pipeline"][v] = bench_pipeline(fn, 32, 256 if not a.smoke else 16,
                                            40 if not a.smoke else 4, 63 if not a.smoke else 7,
                                            a.repeats)
        print(f"pipeline {v}: {out['pipeline'][v]}", file=sys.stderr)


def _section_rays(a: argparse.Namespace, out: dict, gv: list[str], tv: list[str]) -> None:
    """The 'rays' section: particles followed along latent rays, s per reference (the NP
    analysis's ``ray_samples``; locate-and-link cost, analytic images)."""
    out["rays"] = (bench_rays(size=32, per_side=2, n_refs=1, n_rays=4, repeats=1) if a.smoke
                   else bench_rays(repeats=a.repeats))
    print(f"rays: {out['rays']['s_per_reference']:.3f} s/reference", file=sys.stderr)


def _section_particles(a: argparse.Namespace, out: dict, gv: list[str], tv: list[str]) -> None:
    """The 'particles' section: segmentation and particle centres with depths, peaks,
    saddles, halos and faint features (matdyn.analysis.fidelity_content.dark_particle_centres,
    the training summary's and the NP analysis's fidelity locator) on NP stand-in frames at
    64 px; median s per 1000 frames, and the mask_centres part alone (no frames given: no
    halos)."""
    import statistics

    from matdyn.analysis.fidelity_content import dark_particle_centres, mask_centres
    from matdyn.data.synthetic.np_diffusion import simulate
    from matdyn.descriptors.particles import binarize, tophat_response

    n = 50 if a.smoke else 1000
    x = simulate(n_frames=n, size=64, seed=0).frames
    resp = tophat_response(x[:, 0], sigma=1.0, radius=6, dark=True)
    masks = binarize(resp, "otsu")

    def median_s(fn) -> float:  # noqa: ANN001
        ts = []
        for _ in range(max(a.repeats, 1)):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts) * 1000 / n

    out["particles"] = {
        "frames": n,
        "dark_particle_centres_s_per_1000": median_s(lambda: dark_particle_centres(x)),
        "mask_centres_s_per_1000": median_s(lambda: mask_centres(masks, response=resp)),
    }
    print(f"particles: {out['particles']}", file=sys.stderr)


def _section_rss(a: argparse.Namespace, out: dict, gv: list[str], tv: list[str]) -> None:
    """The 'rss' section of the benchmark (results into ``out``)."""
    ms = (200, 2000) if not a.smoke else (10, 40)
    rss = {}
    for m in ms:
        r = subprocess.run([sys.executable, __file__, "--rss-child", str(m), "4", "--threads", "1"],
                           capture_output=True, text=True, check=True)
        rss[m] = int(r.stdout.strip().splitlines()[-1]) / 1024
    out["rss_mib"] = {str(k): v for k, v in rss.items()}
    out["rss_ratio"] = rss[ms[1]] / rss[ms[0]]
    print(f"rss: {out['rss_mib']} ratio {out['rss_ratio']:.3f}", file=sys.stderr)


def _rounded(x):  # noqa: ANN001, ANN202
    return {k: _rounded(v) for k, v in x.items()} if isinstance(x, dict) else round(x, 2)


def _section_anchor(a: argparse.Namespace, out: dict, gv: list[str], tv: list[str]) -> None:
    """The 'anchor' section: the side-by-side settings, with ratios to the anchor's JSON."""
    try:
        if not a.anchor:
            raise ValueError("--sections anchor needs --anchor TF_JSON (from tf_bench.py)")
        anchor = read_anchor(a.anchor)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    filt = list(ANCHOR_FILTERS) if not a.smoke else [8, 8, 8]
    tr_cfg = ANCHOR_TRAIN if not a.smoke else {8: 4, 16: 4}
    gen_cfg = ANCHOR_GEN if not a.smoke else {16: 8}
    train: dict[int, dict] = {}
    for res, bs in tr_cfg.items():
        stage = res.bit_length() - 3
        train[res] = {ph: bench_training(filt[: stage + 1], 1, 2, stage, bs, tv, a.repeats, alpha=al)
                      for ph, al in (("fade", 0.5), ("stable", 1.0))}
    gen = {}
    for res, bs in gen_cfg.items():
        stage = res.bit_length() - 3
        gen[res] = bench_generator(Generator(32, 1, 2, filt[: stage + 1]), stage, bs, gv, a.repeats)
    ratios = anchor_ratios(anchor, train, gen)
    out["anchor"] = {"source": a.anchor, "tf": anchor.get("tf"), "tf_img_s": anchor,
                     "train": train, "gen": gen, "ratio_to_anchor": ratios}
    for kind, rows in ratios.items():
        for res, row in rows.items():
            print(f"anchor {kind} {res}: {json.dumps(_rounded(row))}", file=sys.stderr)


SECTIONS = ("ceiling", "train", "generate", "pipeline", "rays", "particles", "rss", "anchor")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default="ceiling,train,generate,pipeline,rays,particles,rss")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--gen-variants", default=",".join(GEN_VARIANTS))
    ap.add_argument("--train-variants", default=",".join(TRAIN_VARIANTS))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: check the script runs")
    ap.add_argument("--anchor", default=None, help="tf_bench.py JSON: adds ratios to the anchor")
    ap.add_argument("--rss-child", nargs=2, type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    malloc_tuned = reuse_freed_memory()  # as the entry points (MATDYN_SYSTEM_MALLOC=1: without)
    if a.rss_child:
        _rss_child(*a.rss_child)
        return
    sections = set(a.sections.split(","))
    gv = [v for v in a.gen_variants.split(",") if v]
    tv = [v for v in a.train_variants.split(",") if v]
    # refuse unknown names before any measurement (a misspelt training variant used to be timed
    # silently as eager fp32)
    for what, given, known in (("section", sections, SECTIONS),
                               ("generator variant", gv, GEN_VARIANTS + BUNDLE_VARIANTS),
                               ("training variant", tv, TRAIN_VARIANTS)):
        bad = sorted(set(given) - set(known))
        if bad:
            print(f"error: unknown {what} {', '.join(bad)}; choose from {', '.join(known)}",
                  file=sys.stderr)
            raise SystemExit(2)
    out: dict = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                 "loadavg": os.getloadavg()[0], "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                 "reuse_freed_memory": malloc_tuned}
    if a.smoke:
        a.repeats = 1
    t_start = time.perf_counter()

    if "ceiling" in sections:
        out["ceiling_gflop_s"] = matmul_ceiling(512 if a.smoke else 2048, a.repeats)
        print(f"ceiling: {out['ceiling_gflop_s']:.0f} GFLOP/s", file=sys.stderr)

    if a.anchor:
        sections.add("anchor")
    for name, section in (("train", _section_train), ("generate", _section_generate),
                          ("pipeline", _section_pipeline), ("rays", _section_rays),
                          ("particles", _section_particles),
                          ("rss", _section_rss), ("anchor", _section_anchor)):
        if name in sections:
            section(a, out, gv, tv)

    out["elapsed_s"] = time.perf_counter() - t_start
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
