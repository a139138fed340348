"""CPU training-profile study (issue 11, part 2): which settings make the generator learn the
moving particles of the NP stand-in within a CPU budget?

Each setting (a named list of Hydra overrides of scripts/train.py: schedule, model widths,
learning rate, critic steps, batch sizes, EMA, minibatch-stddev group, precision, ...) is
trained on each layout (the default stand-in and held-out layouts with other lane / band /
trap positions, counts, speeds and seeds, made through ``dataset.synthetic`` overrides); the
run's summary.json (matdyn.analysis.evaluate) gives the per-region particle ratios
(generated / observed particles per frame in each planted region) and the SWD against its
real-vs-real baseline. Prints, and writes to ``<out>/study.md`` and ``study.json``, a table:
setting → layout → minutes → per-region ratios → SWD / baseline → flags.

    python scripts/study_profile.py                                  # quick profile, all 6 layouts
    python scripts/study_profile.py --setting "w2=model.filters=[128,128,64,32,32,16]" \\
        --setting "lr5e-4=model.optimizer.lr=0.0005" --layouts default heldout_a
    python scripts/study_profile.py --smoke                          # ~1 min end-to-end check

``minutes`` is the wall time of the whole train.py call (store generation excluded: stores
are made first; evaluation of ``--eval-frames`` frames included). Run it on a quiet machine:
timings on a shared one say nothing. Bad input ends with one ``error: ...`` line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from matdyn.analysis.fidelity_content import ATYPICAL_FLOOR  # noqa: E402
from matdyn.cli import guarded  # noqa: E402
from matdyn.errors import ConfigError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

#: held-out layouts (positions in px of the 142 px frame; FINDINGS.md "The generator learns
#: still particles first" used one like heldout_a: traps on top, lanes at the bottom)
LAYOUTS: dict[str, dict[str, object]] = {
    "default": {"seed": 0},
    "heldout_a": {"seed": 1, "trap_positions_px": [[18, 25], [30, 55], [18, 85], [30, 115]],
                  "band_rows_px": [46, 86], "lane_offsets_px": [33, 55], "particles_per_lane": 2,
                  "n_free": 7, "lane_speed_nm_s": 400.0, "free_diffusion_nm2_s": 2500.0},
    "heldout_b": {"seed": 2, "band_rows_px": [8, 44], "lane_offsets_px": [-12, 10, 32],
                  "particles_per_lane": 2, "n_free": 4, "lane_speed_nm_s": 300.0,
                  "trap_positions_px": [[124, 20], [124, 70], [124, 120]],
                  "alternate_lane_directions": False},
    # made after the issue-12 estimator changes, to check them on a layout nobody tuned on
    "heldout_c": {"seed": 3, "trap_positions_px": [[20, 30], [20, 75], [20, 120], [38, 52]],
                  "lane_offsets_px": [-10, 12], "particles_per_lane": 3,
                  "band_rows_px": [100, 136], "n_free": 6, "lane_speed_nm_s": 250.0,
                  "free_diffusion_nm2_s": 1200.0},
    # made after the 100k-image quick profile was chosen (issue 11, session 8): traps across
    # the middle, two lanes above them with 4 particles each, the band at the bottom, faster
    # free diffusion
    "heldout_d": {"seed": 4, "trap_positions_px": [[70, 25], [70, 60], [70, 95], [70, 125]],
                  "lane_offsets_px": [-45, -25], "particles_per_lane": 4,
                  "band_rows_px": [96, 136], "n_free": 5, "lane_speed_nm_s": 350.0,
                  "free_diffusion_nm2_s": 3000.0},
    # made after the issue-12 particle features were chosen on a-d (session 9): the band at
    # the top, five traps in a row, two lanes at the bottom
    "heldout_e": {"seed": 5, "trap_positions_px": [[62, 15], [62, 45], [62, 75], [62, 105],
                                                   [62, 132]],
                  "lane_offsets_px": [22, 45], "particles_per_lane": 3, "band_rows_px": [6, 46],
                  "n_free": 6, "lane_speed_nm_s": 300.0, "free_diffusion_nm2_s": 2000.0},
    # made in session 22 after the learning-rate-tail and longer-top-stage tests, to check the
    # profile on a layout nobody tuned on: the band at the top, three traps below it, three
    # lanes at the bottom, a crowded band and faster lanes
    "heldout_h": {"seed": 7, "band_rows_px": [4, 40],
                  "trap_positions_px": [[56, 30], [56, 70], [56, 110]],
                  "lane_offsets_px": [22, 42, 60], "particles_per_lane": 2, "n_free": 8,
                  "lane_speed_nm_s": 450.0, "free_diffusion_nm2_s": 2200.0},
    # made in session 23 after the halo and faint-feature measures were set, as the last
    # from-scratch check of the profile: three traps at the top, two lanes across the middle,
    # the band at the bottom, slower lanes
    "heldout_i": {"seed": 11, "trap_positions_px": [[24, 30], [24, 110], [40, 70]],
                  "lane_offsets_px": [-8, 14], "particles_per_lane": 3,
                  "band_rows_px": [98, 138], "n_free": 7, "lane_speed_nm_s": 250.0,
                  "free_diffusion_nm2_s": 1800.0},
}
DEFAULT_SETTINGS = {"quick": []}
#: the end-to-end check: 300 frames, 16 px, ~1 minute on 2 cores
SMOKE = {"smoke16": ["resolution=16", "model.filters=[32,32,16]",
                     "+schedule.datasets.np_diffusion.stages=[[4,16,0,800],[8,16,800,800],[16,16,800,800]]"]}


def make_store(name: str, store_dir: Path, n_frames: int | None) -> Path:
    """The store of one layout, generated once (matdyn.data.synthetic.np_diffusion.generate)
    before any training, so that training times do not include it."""
    from matdyn.data.synthetic.np_diffusion import generate

    if name not in LAYOUTS:
        raise ConfigError(f"unknown layout {name!r}; choose from {', '.join(LAYOUTS)}")
    spec = dict(LAYOUTS[name])
    if n_frames:
        spec["n_frames"] = n_frames
    path = store_dir / f"{name}_{spec.get('n_frames', 2000)}.zarr"
    if not path.exists():
        generate(path, progress=False, **spec)  # type: ignore[arg-type]
    return path


def layout_overrides(store: Path) -> list[str]:
    """train.py overrides that use an existing stand-in store (its planted truth included)."""
    return ["dataset=np_diffusion", "dataset.source=store", f"dataset.path={store}"]


def parse_settings(items: list[str]) -> dict[str, list[str]]:
    """``NAME=override override ...`` (whitespace-separated Hydra overrides) -> dict."""
    out: dict[str, list[str]] = {}
    for item in items:
        name, sep, rest = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--setting {item!r} must be NAME=override [override ...]")
        out[name.strip()] = rest.split()
    return out


def run_one(setting: list[str], layout: list[str], run_dir: Path, eval_frames: int,
            num_threads: int) -> tuple[float, dict | None, str]:
    """Train once; (minutes, summary or None, last lines of the log)."""
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), *layout, *setting, "~logger",
           "trainer.enable_progress_bar=false", "progress=false", f"eval_frames={eval_frames}",
           f"num_threads={num_threads}", f"hydra.run.dir={run_dir}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    minutes = (time.perf_counter() - t0) / 60
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if proc.returncode == 0 and summary_path.is_file() else None
    return minutes, summary, (proc.stdout + proc.stderr)[-1500:]


def row(setting: str, layout: str, minutes: float, s: dict | None) -> dict:
    """The table row of one run, from its summary.json."""
    r: dict = {"setting": setting, "layout": layout, "minutes": round(minutes, 2)}
    if s is None:
        return {**r, "error": "training or evaluation failed"}
    regions = (s.get("particles") or {}).get("regions") or {}
    r["ratios"] = {k: v.get("ratio") for k, v in regions.items()}
    swd = s.get("swd") or {}
    r["swd_ratio"] = (swd["generated_vs_real"] / swd["real_vs_real"]
                      if swd.get("real_vs_real") else None)
    ppf = (s.get("particles") or {}).get("particles_per_frame") or {}
    r["particles_ratio"] = ppf.get("ratio")
    r["diversity_ratio"] = (s.get("frame_diversity") or {}).get("ratio")
    # atypical (faint, half-formed, split or merged) particles, generated / observed share in
    # the worst planted region: the highest generated / max(observed, floor), the ratio that
    # matdyn.analysis.fidelity_content.atypical_fidelity flags above 2
    at = (s.get("particles") or {}).get("atypical") or {}
    worst = max(((k, v) for k, v in (at.get("regions") or {}).items()
                 if v.get("generated") is not None and v.get("real_vs_real") is not None),
                key=lambda kv: kv[1]["generated"] / max(kv[1]["real_vs_real"], ATYPICAL_FLOOR),
                default=None)
    r["atypical_worst"] = None if worst is None else {
        "region": worst[0], "generated": worst[1]["generated"],
        "observed": worst[1]["real_vs_real"]}
    # faint features (smudges too faint to segment) per frame, generated / observed
    r["faint_per_frame"] = (at.get("faint") or {}).get("per_frame")
    r["flags"] = s.get("flags", [])
    return r


def _f(v: object) -> str:
    return "—" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def _atypical(w: dict | None) -> str:
    if not w:
        return "—"
    return f"{100 * w['generated']:.1f} / {100 * w['observed']:.1f} ({w['region']})"


def _faint(f: dict | None) -> str:
    if not f or f.get("generated") is None or f.get("observed") is None:
        return "—"
    return f"{f['generated']:.2f} / {f['observed']:.2f}"


def table(rows: list[dict]) -> str:
    head = ("| setting | layout | minutes | directed | free | confined | all particles | "
            "diversity | SWD / baseline | atypical % gen / obs (worst region) | "
            "faint per frame gen / obs | flags |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['setting']} | {r['layout']} | {r['minutes']:.1f} | "
                         f"{r['error']} | | | | | | | | |")
            continue
        rat = r["ratios"]
        lines.append(f"| {r['setting']} | {r['layout']} | {r['minutes']:.1f} | "
                     + " | ".join(_f(rat.get(m)) for m in ("directed", "free", "confined"))
                     + f" | {_f(r['particles_ratio'])} | {_f(r.get('diversity_ratio'))} | "
                     f"{_f(r['swd_ratio'])} | {_atypical(r.get('atypical_worst'))} | "
                     f"{_faint(r.get('faint_per_frame'))} | {', '.join(r['flags']) or 'none'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setting", action="append", default=[], metavar="NAME=OVERRIDES",
                    help="a named setting: whitespace-separated train.py overrides (repeatable)")
    ap.add_argument("--layouts", nargs="+", default=list(LAYOUTS), help=f"from {list(LAYOUTS)}")
    ap.add_argument("--out", default="outputs/study_profile")
    ap.add_argument("--eval-frames", type=int, default=400, help="generated and observed frames")
    ap.add_argument("--n-frames", type=int, default=None, help="frames per store (default 2000)")
    ap.add_argument("--num-threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1,
                    help="trainings run side by side (default 1: minutes on a quiet machine)")
    ap.add_argument("--smoke", action="store_true", help="one tiny 16 px setting, 300 frames")
    a = ap.parse_args(argv)
    settings = parse_settings(a.setting) or (SMOKE if a.smoke else DEFAULT_SETTINGS)
    n_frames = a.n_frames or (300 if a.smoke else None)
    out = (ROOT / a.out) if not Path(a.out).is_absolute() else Path(a.out)
    if a.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {a.jobs}")
    # every store first (serially), so that parallel runs never race to create one
    stores = {lay: layout_overrides(make_store(lay, out / "stores", n_frames)) for lay in a.layouts}
    runs = [(name, lay) for lay in a.layouts for name in settings]

    def one(run: tuple[str, str]) -> dict:
        name, lay = run
        minutes, summary, log = run_one(settings[name], stores[lay], out / name / lay,
                                        a.eval_frames, a.num_threads)
        if summary is None:
            print(f"[{name} / {lay}] failed:\n{log}", file=sys.stderr)
        r = row(name, lay, minutes, summary)
        print(table([r]).splitlines()[-1], flush=True)
        return r

    # --jobs N: N trainings side by side (each with --num-threads threads); their minutes are
    # then per run on a shared machine, not a quiet one
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        rows = list(pool.map(one, runs))
    text = table(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.md").write_text(text + "\n")
    (out / "study.json").write_text(json.dumps(rows, indent=1))
    print("\n" + text)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(guarded(main)())
