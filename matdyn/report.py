"""The reproduction report: ``report.md`` and a self-contained ``report.html``.

For each case study it shows our versions of the paper's figures (captioned with the
paper's figure number) and a table *paper value | ours on the synthetic stand-in | ground
truth* for every number the paper reports. A value that could not be computed is shown
with the reason, never left blank.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matdyn.io import atomic_write_text

Value = Any
Getter = Callable[[Mapping[str, Any]], Value]


class Missing(str):
    """A table cell that could not be computed; the text says why."""


def dig(ctx: Mapping[str, Any], path: str) -> Value:
    """``dig(ctx, "analysis.recovery.ari")``; a Missing naming the first absent key otherwise."""
    cur: Any = ctx
    done: list[str] = []
    for part in path.split("."):
        if isinstance(cur, Mapping) and set(cur) == {"error"}:
            return Missing(f"not computed: {cur['error']}")
        if isinstance(cur, Mapping) and part in cur and cur[part] is not None:
            cur = cur[part]
            done.append(part)
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
            done.append(part)
        else:
            src = path.split(".")[0]
            if not done:
                return Missing(f"not computed: no {src} output (step not run or failed)")
            return Missing(f"not computed: `{'.'.join(done + [part])}` absent from the {src} output")
        if isinstance(cur, Mapping) and set(cur) == {"error"}:
            return Missing(f"not computed: {cur['error']}")
    return cur


def fmt(v: Value, spec: str = ".3g") -> str:
    if isinstance(v, Missing):
        return str(v)
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return format(v, spec)
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt(x, spec) for x in v)
    return str(v)


@dataclass
class Row:
    label: str
    paper: str
    ours: str | Getter          # dotted path into the case context, or a function of it
    truth: str | Getter | None = None   # dotted path, function, or None (no ground truth)
    spec: str = ".3g"
    #: a function of the context giving why the row's step did not run (None: it ran)
    skipped: Callable[[Mapping[str, Any]], str | None] | None = None

    def cells(self, ctx: Mapping[str, Any]) -> list[str]:
        why = self.skipped(ctx) if self.skipped is not None else None
        if why:
            return [self.label, self.paper, f"not run: {why}", "—"]

        def get(x: str | Getter | None) -> str:
            if x is None:
                return "—"
            if callable(x):
                try:
                    return fmt(x(ctx), self.spec)
                except Exception as e:  # a getter that fails explains itself in the cell
                    return f"not computed: {type(e).__name__}: {e}"
            if x.startswith("="):
                return x[1:]
            return fmt(dig(ctx, x), self.spec)

        return [self.label, self.paper, get(self.ours), get(self.truth)]


def _pm(mean_path: str, std_path: str, spec: str = ".0f") -> Getter:
    def g(ctx: Mapping[str, Any]) -> Value:
        m, s = dig(ctx, mean_path), dig(ctx, std_path)
        if isinstance(m, Missing):
            return m
        if isinstance(s, Missing):
            return fmt(m, spec)
        return f"{fmt(m, spec)} ± {fmt(s, spec)}"

    return g


def _per_channel_w1(ctx: Mapping[str, Any], which: str) -> Value:
    """``name value / name value ...`` of the training summary's per-channel mass-fraction W1
    (channel names from the store)."""
    per = dig(ctx, "train.composition.mass_fraction")
    if isinstance(per, Missing) or not isinstance(per, Mapping):
        return per if isinstance(per, Missing) else Missing("not computed")
    return " / ".join(f"{k} {fmt(dig(v, f'w1.{which}'), '.3f')}" for k, v in per.items())


def _either(first: str | Getter, second: str | Getter) -> Getter:
    """The first of two paths/getters that is not missing (e.g. nested or top-level)."""
    def g(ctx: Mapping[str, Any]) -> Value:
        for x in (first, second):
            v = x(ctx) if callable(x) else dig(ctx, x)
            if not isinstance(v, Missing):
                return v
        return v

    return g


def _rays_skipped(ctx: Mapping[str, Any]) -> str | None:
    """Why the latent-ray rows are empty: the analysis did not follow particles along rays."""
    if dig(ctx, "analysis.config.ray_samples") == 0:
        return "particles not followed along latent rays (analysis.ray_samples: 0)"
    return None


def _rays_d(ctx: Mapping[str, Any]) -> Value:
    r = dig(ctx, "analysis.mc_vs_tracking.D_rays_over_tracking")
    if isinstance(r, Missing):
        return r
    return f"{fmt(r, '.2f')}; {fmt(dig(ctx, 'analysis.particles.ensemble.rays.lost_fraction'), '.0%')}"


def _rays_alpha(ctx: Mapping[str, Any]) -> Value:
    a = dig(ctx, "analysis.mc_vs_tracking.mc_rays_msd_exponent")
    if isinstance(a, Missing):
        return a
    return (f"{fmt(a, '.2f')} ({fmt(dig(ctx, 'analysis.mc_vs_tracking.rays_motion'))}) vs "
            f"{fmt(dig(ctx, 'analysis.mc_vs_tracking.tracking_alpha'), '.2f')}")


def _traces_skipped(ctx: Mapping[str, Any]) -> str | None:
    """Why the paper's averaged-image trace rows are empty: the analysis ran without them."""
    d = dig(ctx, "analysis.config.descriptors")
    if d == "particles":
        return ("the paper's trace protocol is off (analysis.descriptors=particles); "
                "set analysis.descriptors=both to add it")
    return None


def _within(slit: str) -> Getter:
    def g(ctx: Mapping[str, Any]) -> Value:
        ok = dig(ctx, f"analysis.recovery.slit_widths.{slit}.generated_within_tolerance")
        if isinstance(ok, Missing):
            return ok
        err = dig(ctx, f"analysis.recovery.slit_widths.{slit}.generated_error_px")
        px = dig(ctx, "analysis.pixel_size")
        return f"{fmt(ok)} ({fmt(err, '.2f')} px at {fmt(px, '.1f')} nm/px)"

    return g


#: rows per case: every number the paper reports, plus our recovery scores
ROWS: dict[str, list[Row]] = {
    "ta_chart": [
        Row("slit width d1, generated (nm)", "309 ± 11", _pm("analysis.slit_widths.d1.generated.mean",
            "analysis.slit_widths.d1.generated.std"), "analysis.recovery.slit_widths.d1.truth"),
        Row("slit width d2, generated (nm)", "340 ± 12", _pm("analysis.slit_widths.d2.generated.mean",
            "analysis.slit_widths.d2.generated.std"), "analysis.recovery.slit_widths.d2.truth"),
        Row("slit width d1, observed (nm)", "311 ± 13", _pm("analysis.slit_widths.d1.observed.mean",
            "analysis.slit_widths.d1.observed.std"), "analysis.recovery.slit_widths.d1.truth"),
        Row("slit width d2, observed (nm)", "324 ± 11", _pm("analysis.slit_widths.d2.observed.mean",
            "analysis.slit_widths.d2.observed.std"), "analysis.recovery.slit_widths.d2.truth"),
        Row("generated d1 within 2 px of truth (px at the generator's pixel size)",
            "26–39 nm deviations (≈ 2 px of 20.72 nm)", _within("d1"), "=yes"),
        Row("generated d2 within 2 px of truth (px at the generator's pixel size)",
            "26–39 nm deviations (≈ 2 px of 20.72 nm)", _within("d2"), "=yes"),
        Row("γ used for the variation set", "1.0", "analysis.gamma", None),
        Row("γ chosen by the sweep", "—", "sweep.gamma", None),
        Row("translation sequence: largest step vs data step (nm)", "smooth (Fig. 3b)",
            lambda c: f"{fmt(dig(c, 'analysis.recovery.translation_smoothness.max_step'))} vs "
                      f"{fmt(dig(c, 'analysis.recovery.translation_smoothness.bound'))}",
            "=340 nm/s × 7 ms = 2.38 nm"),
        Row("translation sequence free of jumps", "yes (Fig. 3b)",
            "analysis.recovery.translation_smoothness.jump_free", "=yes"),
        Row("rotation sequence free of jumps", "steps of 1–2° (Fig. 3c)",
            "analysis.recovery.rotation_smoothness.jump_free", "=yes"),
    ],
    "np_diffusion": [
        Row("NP-area Wasserstein distance, generated vs observed, half vs half (truth column: "
            "real vs real; the paper's 0.068 compared all frames)",
            "0.068", "train.particle_area_w1.generated_vs_real", "train.particle_area_w1.real_vs_real",
            ".3f"),
        Row("γ matching consecutive-frame differences", "1.0", "sweep.gamma", None),
        Row("entropy-difference bound of consecutive frames (statistic in the sweep's bound_stat)",
            "0.26 (max)", "sweep.bound", None),
        Row("γ rule met inside the swept range (false: γ clipped to the sweep's edge)", "—",
            "analysis.gamma_rule.gamma_rule_met", "=true"),
        Row("Δt the analysis γ stands for (s, γ→Δt calibration on observed frames)", "≈ 1 s (assumed)",
            "analysis.time_calibration.dt_of_analysis_gamma", None),
        Row("free mode D from MC: ensemble MSD at the analysis γ, as tracking's emsd (nm²/s; "
            "truth: planted D)", "XPCS 7550/4 ≈ 1888",
            "analysis.recovery.modes.free.ensemble_D", "analysis.recovery.modes.free.planted_D"),
        Row("free mode D from MC: median over particles of the MSD(Δt) slope (nm²/s)", "—",
            "analysis.recovery.modes.free.median_D_slope", "analysis.recovery.modes.free.planted_D"),
        Row("free mode D from tracking the observed frames (nm²/s; truth: planted D)", "—",
            "analysis.tracking_baseline.modes.free.D", "analysis.recovery.modes.free.planted_D"),
        Row("all particles: MC D (ensemble MSD at the analysis γ, nm²/s) vs tracking D (truth "
            "column)", "—", "analysis.mc_vs_tracking.mc_D", "analysis.tracking_baseline.modes.all.D"),
        Row("MC D of all particles / tracking D of the observed frames (ensemble at γ; ensemble "
            "slope; per-particle median slope)", "—",
            lambda c: "; ".join(fmt(dig(c, f"analysis.mc_vs_tracking.{k}_over_tracking"), ".2f")
                                for k in ("D", "D_slope", "median_D_slope")),
            "=within 2×"),
        Row("MC MSD exponent α of all particles (ensemble) vs tracking α (1 = diffusive)", "—",
            lambda c: f"{fmt(dig(c, 'analysis.mc_vs_tracking.mc_msd_exponent'), '.2f')} vs "
                      f"{fmt(dig(c, 'analysis.mc_vs_tracking.tracking_alpha'), '.2f')}", None),
        Row("particles followed along latent rays: MC D / tracking D; share lost by the analysis γ",
            "—", _rays_d, "=within 2×", skipped=_rays_skipped),
        Row("MSD exponent α along the rays vs tracking α (the kind of motion is read from here)",
            "—", _rays_alpha, None, skipped=_rays_skipped),
        Row("MC MSD noise floor, median (nm²; still particles)", "—",
            "analysis.particles.msd_floor.median", None),
        Row("confined D / free D from MC (goal < 0.3)", "—",
            "analysis.recovery.confined_D_over_free", None, ".2f"),
        Row("diffusion area per ~1 s, free mode (nm², descriptors=traces)", "7712 ± 2862 (XPCS 7550 ± 850)",
            _either(_pm("analysis.recovery.traces.free_diffusion_area_mean",
                        "analysis.recovery.traces.free_diffusion_area_std"),
                    _pm("analysis.recovery.free_diffusion_area_mean",
                        "analysis.recovery.free_diffusion_area_std")),
            _either("analysis.recovery.traces.free_planted_4Dt",
                    "analysis.recovery.free_planted_4Dt"), skipped=_traces_skipped),
        Row("number of diffusion modes (from the data unless analysis.n_modes is fixed)", "3",
            "analysis.clustering.n_modes", "=3"),
        Row("ARI, paper clustering (average linkage)", "—", "analysis.recovery.ari_average", "=1"),
        Row("ARI a supervised classifier reaches on the same descriptors (what they can separate at all)",
            "—", "analysis.recovery.ari_supervised", "=1"),
        Row("ARI, robust clustering (trimmed average linkage)", "—", "analysis.recovery.ari_trimmed", "=1"),
        Row("ARI, robust clustering (Ward)", "—", "analysis.recovery.ari_ward", "=1"),
        Row("AUC of anisotropy, confined vs rest (goal ≥ 0.75; descriptors=traces)", "—",
            _either("analysis.recovery.traces.anisotropy_auc_confined",
                    "analysis.recovery.anisotropy_auc_confined"), "=1", skipped=_traces_skipped),
        Row("directed traces: anisotropy reference → averaged", "directional bias (Fig. 6d)",
            lambda c: f"{fmt(dig(c, 'analysis.recovery.directed_anisotropy_reference'))} → "
                      f"{fmt(dig(c, 'analysis.recovery.directed_anisotropy_averaged'))}", "=increase",
            skipped=_traces_skipped),
    ],
    "brass_clump": [
        Row("Wasserstein distance Cu (truth column: real vs real)", "0.010",
            "analysis.fidelity.intensity_w1.Cu", "analysis.fidelity.intensity_w1_baseline.Cu", ".3f"),
        Row("Wasserstein distance Cu₂S", "0.017", "analysis.fidelity.intensity_w1.Cu2S",
            "analysis.fidelity.intensity_w1_baseline.Cu2S", ".3f"),
        Row("Wasserstein distance CuS", "0.006", "analysis.fidelity.intensity_w1.CuS",
            "analysis.fidelity.intensity_w1_baseline.CuS", ".3f"),
        Row("γ used (IOU₃D ≈ 0.7, mass deviation < 20 %)", "0.5", "analysis.gamma", None),
        Row("γ chosen by the sweep", "—", "sweep.gamma", None),
        Row("groups ordered by mean matched stage", "A: day 0, B: 3–14, C: 14–28",
            lambda c: ", ".join(f"{g}: {m:.1f} d" for g, m in zip(dig(c, "analysis.group_order.order"),
                                                                  dig(c, "analysis.group_order.mean"))),
            "=stages 0, 3, 14, 28 d"),
        Row("groups order by stage (Spearman of group rank vs stage)", "—",
            "analysis.recovery.spearman_stage", "=1"),
        Row("ARI groups vs matched stage", "—", "analysis.recovery.ari_stage", "=1"),
        Row("ARI groups vs planted reactivity mode", "—", "analysis.recovery.ari_mode", "=1"),
    ],
}

def _flags(ctx: Mapping[str, Any]) -> Value:
    flags = dig(ctx, "train.flags")
    return flags if isinstance(flags, Missing) else f"{len(flags)}" + (f": {', '.join(flags)}" if flags else "")


#: training-summary fidelity (issue 11: every number with its real-vs-real baseline; flags
#: name those more than 2x their baseline). Appended to every case's table.
TRAIN_ROWS: list[Row] = [
    Row("SWD, generated vs observed (truth column: real vs real)", "—", "train.swd.generated_vs_real",
        "train.swd.real_vs_real"),
    Row("fidelity numbers > 2× their real-vs-real baseline (training summary)", "—", _flags, "=0"),
]
ROWS["np_diffusion"] += [
    Row("particles per frame, generated / observed (truth column: real-vs-real ratio)", "—",
        "train.particles.particles_per_frame.ratio",
        "train.particles.particles_per_frame.real_vs_real_ratio", ".2f"),
    *(Row(f"particles per frame in the planted {m} region, generated / observed", "—",
          f"train.particles.regions.{m}.ratio", f"train.particles.regions.{m}.real_vs_real_ratio", ".2f")
      for m in ("directed", "free", "confined")),
    *(Row(f"atypical (faint, half-formed, split) particles in the planted {m} region, share "
          "generated (truth column: observed)", "—",
          f"train.particles.atypical.regions.{m}.generated",
          f"train.particles.atypical.regions.{m}.real_vs_real", ".3f")
      for m in ("directed", "free", "confined")),
    Row("particle-centre density EMD, generated vs observed (frame sides; truth: real vs real)", "—",
        "train.particles.centre_density.emd.generated_vs_real",
        "train.particles.centre_density.emd.real_vs_real"),
    Row("near-repeat distance, generated / observed (< 1: pinned particles drawn too still; "
        "truth column: real-vs-real ratio)", "—", "train.particles.near_repeat.ratio",
        "train.particles.near_repeat.real_vs_real_ratio", ".2f"),
    Row("sub-pixel locking: share of centroid coordinates within 0.05 px of a pixel centre, "
        "generated (truth column: observed; 0.10 for positions uniform within a pixel)", "—",
        "train.particles.subpixel.generated_locked_share",
        "train.particles.subpixel.real_locked_share", ".3f"),
    Row("MC MSD / true MSD at the calibrated Δt, directed / free / confined (the calibration "
        "fixes the sum; 1 = each mode moves as much as it should)", "—",
        lambda c: " / ".join(fmt(dig(c, f"analysis.recovery.msd_over_planted_at_dt.{m}"), ".2f")
                             for m in ("directed", "free", "confined")), "=1 / 1 / 1"),
]
ROWS["ta_chart"] += [
    Row(f"slit width {k}, generated at the working pixel size (training summary, nm)", "—",
        _pm(f"train.slit_widths.{k}.generated.mean", f"train.slit_widths.{k}.generated.std"),
        f"train.slit_widths.{k}.truth") for k in ("d1", "d2")
]
ROWS["brass_clump"] += [
    Row("stage mix: largest share difference, generated vs observed (truth: real vs real)", "—",
        "train.composition.stage_mix.max_share_difference.generated_vs_real",
        "train.composition.stage_mix.max_share_difference.real_vs_real", ".2f"),
    Row("mass-fraction W1 inside the clump mask, per channel, generated vs observed "
        "(truth: real vs real)", "—", lambda c: _per_channel_w1(c, "generated_vs_real"),
        lambda c: _per_channel_w1(c, "real_vs_real")),
]
for _rows in ROWS.values():
    _rows += TRAIN_ROWS

TITLES = {
    "ta_chart": "Ta test chart: rigid motion (paper §3.2, Figs. 3–4)",
    "np_diffusion": "Gold nanoparticles diffusing in PVA (paper §3.3, Figs. 5–6)",
    "brass_clump": "Sulfidation of brass clumps in rubber (paper §3.4, Figs. 7–8)",
}


def _read_json(p: Path) -> dict[str, Any] | None:
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def case_context(case_dir: Path) -> dict[str, Any]:
    """Outputs of one case's steps; a failed step leaves {"error": reason} instead."""
    ctx: dict[str, Any] = {}
    for key, rel in (("train", "train/summary.json"), ("sweep", "sweep/gamma.json"),
                     ("analysis", "analysis/summary.json")):
        d = _read_json(case_dir / rel)
        failed = _read_json(case_dir / Path(rel).parent / ".matdyn-step-failed.json")
        if failed is not None:
            ctx[key] = {"error": failed.get("reason", "step failed")}
        elif d is not None:
            ctx[key] = d
    return ctx


def _figures(case_dir: Path, ctx: Mapping[str, Any]) -> list[tuple[Path, str]]:
    """(png path, caption) of the case's figures: sweep curves, analysis figures, samples."""
    out: list[tuple[Path, str]] = []
    captions = (ctx.get("analysis") or {}).get("figure_captions", {})
    for p in sorted((case_dir / "sweep").glob("*.png")):
        out.append((p, captions.get(p.stem, "Continuity curves (cf. paper Fig. 5c / 7d): "
                                            "metric vs per-dimension margin, consecutive-frame "
                                            "band shaded, chosen γ marked")))
    for rel in (ctx.get("analysis") or {}).get("figures", []):
        p = case_dir / "analysis" / rel
        if p.suffix == ".png" and p.is_file():
            out.append((p, captions.get(p.stem, p.stem.replace("_", " "))))
    ovg = case_dir / "train" / "observed_vs_generated.png"
    if ovg.is_file():
        out.append((ovg, "Observed frames (top) and generated frames (bottom), same grey scale: "
                         "what the fidelity numbers summarise"))
    samples = sorted((case_dir / "train" / "samples").glob("*.png"))
    if samples:
        out.append((samples[-1], "Generated samples at the end of training (the exported generator)"))
    return out


INTRO = """\
> **These results are on synthetic stand-ins, not on the paper's data.** The paper's CXDI
> and XAFS-CT data cannot be downloaded here, so every case study runs on a seeded
> synthetic dataset that reproduces the paper's geometry and records the ground truth
> (`python scripts/make_data.py dataset=<case>`). The "ground truth" column is what we
> planted; the "paper" column is what Dao et al. (Digital Discovery 2025) report on the
> real data. The two are not expected to agree number for number.

**Running on real data.** Import your frames (`python scripts/import_data.py src=<folder>
out=<store.zarr> pixel_size=<value> unit=nm`), then run the same pipeline with the store:
`python scripts/reproduce.py --cases np_diffusion --store np_diffusion=<store.zarr>`
(or step by step: `scripts/train.py`, `scripts/sweep_gamma.py -m`, `scripts/analyze.py`
with `dataset.source=store dataset.path=<store.zarr>`).
"""


def build_report(root: str | os.PathLike, cases: list[str] | None = None, *,
                 scale: str = "", timings: Mapping[str, float] | None = None) -> tuple[Path, Path]:
    """Write ``root/report.md`` and ``root/report.html``; returns both paths."""
    root = Path(root)
    cases = cases or [c for c in ROWS if (root / c).is_dir()]
    md = [f"# matdyn reproduction report{f' ({scale})' if scale else ''}", "", INTRO]
    body = [f"<h1>matdyn reproduction report{f' ({html.escape(scale)})' if scale else ''}</h1>",
            _md_block_to_html(INTRO)]
    for case in cases:
        ctx = case_context(root / case)
        md += [f"## {TITLES.get(case, case)}", ""]
        body.append(f"<h2>{html.escape(TITLES.get(case, case))}</h2>")
        rows = [r.cells(ctx) for r in ROWS.get(case, [])]
        md.append("| quantity | paper | ours (synthetic stand-in) | ground truth |")
        md.append("|---|---|---|---|")
        md += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
        md.append("")
        body.append("<table><tr><th>quantity</th><th>paper</th><th>ours (synthetic stand-in)</th>"
                    "<th>ground truth</th></tr>" + "".join(
                        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                    + "</table>")
        for png, caption in _figures(root / case, ctx):
            rel = os.path.relpath(png, root)
            md += [f"![{caption}]({rel})", f"*{caption}*", ""]
            data = base64.b64encode(png.read_bytes()).decode()
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    if timings:
        md += ["## Timings", "", "| step | seconds |", "|---|---|"]
        md += [f"| {k} | {v:.0f} |" for k, v in timings.items()]
        body.append("<h2>Timings</h2><table><tr><th>step</th><th>seconds</th></tr>" + "".join(
            f"<tr><td>{html.escape(k)}</td><td>{v:.0f}</td></tr>" for k, v in timings.items()) + "</table>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>matdyn report</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}"
            "blockquote{background:#fff7e0;border-left:4px solid #e0a000;margin:0;padding:.5em 1em}"
            "img{max-width:100%}figure{margin:1.5em 0}figcaption{font-style:italic;color:#444}"
            "</style></head><body>" + "\n".join(body) + "</body></html>")
    return atomic_write_text(root / "report.md", "\n".join(md) + "\n"), atomic_write_text(root / "report.html", page)


def _md_block_to_html(text: str) -> str:
    """The intro's few markdown features: quote lines, **bold**, `code`, paragraphs."""
    import re

    paras, quote = [], []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        is_quote = all(line.startswith(">") for line in lines)
        t = " ".join(line.lstrip("> ").strip() for line in lines)
        t = html.escape(t)
        t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
        t = re.sub(r"`(.+?)`", r"<code>\1</code>", t)
        (quote if is_quote else paras).append(f"<p>{t}</p>")
    return (f"<blockquote>{''.join(quote)}</blockquote>" if quote else "") + "".join(paras)
