"""Progressive-growing schedule driven by the number of real images shown to the critic.

A schedule is a list of stages ``(resolution, batch_size, fade_images, stable_images)``.
Stage k (resolution 4 · 2^k) first fades in over ``fade_images`` images (``fade_alpha``
rising linearly 0 → 1; 0 = previous stage only, 1 = new stage only), then trains stable
(``fade_alpha`` = 1) for ``stable_images``. Stage 0 has nothing to fade from, so its
``fade_images`` must be 0. ``images_seen`` counts real images over all processes, so the
same schedule means the same training on one device or many; ``batch_size`` is per process.

Because (stage, fade_alpha) is a pure function of ``images_seen`` and ``images_seen`` is saved
in every checkpoint, a resumed run can neither restart nor skip a fade-in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info

from matdyn.errors import ConfigError


@dataclass(frozen=True)
class StageSpec:
    resolution: int
    batch_size: int
    fade_images: int
    stable_images: int

    @property
    def images(self) -> int:
        return self.fade_images + self.stable_images


def _is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def parse_stages(stages: Sequence[Any]) -> list[StageSpec]:
    """Accept StageSpec, 4-item lists/tuples or dicts with the field names."""
    out = []
    for i, s in enumerate(stages):
        try:
            if isinstance(s, StageSpec):
                out.append(s)
            elif isinstance(s, Mapping):
                out.append(StageSpec(*(int(s[k]) for k in StageSpec.__dataclass_fields__)))
            else:
                r, b, f, st = (int(v) for v in s)
                out.append(StageSpec(r, b, f, st))
        except (TypeError, ValueError, KeyError) as e:
            raise ConfigError(
                f"schedule stage {i} ({s!r}) is not [resolution, batch_size, fade_images, "
                f"stable_images]: {e}"
            ) from None
    return out


def validate_schedule(
    stages: Sequence[Any], top_resolution: int | None = None
) -> list[StageSpec]:
    """Parse and check a stage list; raise ConfigError naming the first problem."""
    specs = parse_stages(stages)
    if not specs:
        raise ConfigError("the schedule has no stages; list stages from resolution 4 upwards")
    if top_resolution is not None and (not _is_pow2(int(top_resolution)) or top_resolution < 4):
        raise ConfigError(
            f"training resolution {top_resolution} is not a power of two >= 4; use e.g. 16, 32, 64"
        )
    for k, s in enumerate(specs):
        if not _is_pow2(s.resolution) or s.resolution < 4:
            raise ConfigError(
                f"schedule stage {k}: resolution {s.resolution} is not a power of two >= 4"
            )
        expected = 4 * 2**k
        if s.resolution != expected:
            what = "skips" if s.resolution > expected else "repeats or goes below"
            raise ConfigError(
                f"schedule stage {k} has resolution {s.resolution} but stage {k} must be "
                f"{expected} (the schedule {what} a resolution); list every power of two from 4 up"
            )
        if s.batch_size < 1:
            raise ConfigError(f"schedule stage {k} ({s.resolution} px): batch_size must be >= 1")
        if s.fade_images < 0 or s.stable_images < 0 or s.images == 0:
            raise ConfigError(
                f"schedule stage {k} ({s.resolution} px): fade_images and stable_images must be "
                f">= 0 with a positive sum, got {s.fade_images} and {s.stable_images}"
            )
    if specs[0].fade_images != 0:
        raise ConfigError("schedule stage 0 (4 px) has nothing to fade from: set its fade_images to 0")
    if top_resolution is not None and specs[-1].resolution != top_resolution:
        raise ConfigError(
            f"the schedule ends at {specs[-1].resolution} px but the training resolution is "
            f"{top_resolution} px; make its last stage {top_resolution} or change the resolution"
        )
    return specs


def total_images(stages: Sequence[StageSpec]) -> int:
    return sum(s.images for s in stages)


def stage_start(stages: Sequence[StageSpec], stage: int) -> int:
    """Images seen when ``stage`` begins."""
    return sum(s.images for s in stages[:stage])


def schedule_position(images_seen: int, stages: Sequence[StageSpec]) -> tuple[int, float]:
    """Map images seen to (stage, fade_alpha); past the end, the last stage with alpha 1.

    >>> s = [StageSpec(4, 8, 0, 100), StageSpec(8, 8, 100, 100)]
    >>> schedule_position(150, s)
    (1, 0.5)
    """
    start = 0
    for k, s in enumerate(stages):
        if images_seen < start + s.fade_images:
            return k, (images_seen - start) / s.fade_images
        if images_seen < start + s.images:
            return k, 1.0
        start += s.images
    return len(stages) - 1, 1.0


def lr_scale(images_seen: int, total: int, decay_images: int, final_scale: float) -> float:
    """Learning-rate factor at ``images_seen``: 1 until the last ``decay_images`` images of the
    schedule, then falling linearly to ``final_scale`` at ``total`` (and staying there). A pure
    function of ``images_seen`` like ``fade_alpha``, so a resumed run decays exactly as an
    unbroken one (schedule keys ``lr_decay_images`` / ``lr_final_scale``; issue 11, session 22).

    >>> [round(lr_scale(n, 1000, 200, 0.1), 6) for n in (0, 800, 900, 1000, 1200)]
    [1.0, 1.0, 0.55, 0.1, 0.1]
    """
    start = int(total) - int(decay_images)
    if decay_images <= 0 or images_seen <= start:
        return 1.0
    t = min(1.0, (images_seen - start) / decay_images)
    return 1.0 + t * (float(final_scale) - 1.0)


def build_stages(
    profile: Mapping[str, Any], dataset_name: str, ndim: int, top_resolution: int,
    n_frames: int | None = None,
) -> tuple[list[StageSpec], list[int], dict[str, Any]]:
    """Resolve a schedule profile (a plain dict, see ``conf/schedule/*.yaml``) for one dataset.

    The profile gives per-stage lists ``batch_size_{2d,3d}`` and ``filters_{2d,3d}`` and
    ``fade_images`` / ``stable_images`` (a number or a per-stage list); an entry under
    ``datasets.<dataset_name>`` overrides any of these keys or gives an explicit ``stages``
    list. ``epochs_per_phase`` (a number or per-stage list; ``schedule=paper``) counts every
    fade and stable phase in passes over the dataset instead, as the authors' code does:
    with ``n_frames`` (frames in the training set) known, each phase shows
    ``epochs_per_phase × n_frames`` images and ``fade_images`` / ``stable_images`` are
    ignored; without it they are the fallback. Returns (validated stages ending at
    ``top_resolution``, filters per stage, the remaining scalar options such as
    ``ema_decay``).

    >>> prof = {"filters_2d": [8, 8], "batch_size_2d": [4, 4], "epochs_per_phase": 32}
    >>> [s.images for s in build_stages(prof, "x", 2, 8, n_frames=100)[0]]
    [3200, 6400]
    """
    merged = {k: v for k, v in profile.items() if k != "datasets"}
    merged.update((profile.get("datasets") or {}).get(dataset_name) or {})
    if not _is_pow2(int(top_resolution)) or top_resolution < 4:
        raise ConfigError(
            f"training resolution {top_resolution} is not a power of two >= 4; use e.g. 16, 32, 64"
        )
    n = int(top_resolution).bit_length() - 2  # stages 4 .. top_resolution
    d = f"{ndim}d"
    filters = [int(f) for f in merged.get("filters") or merged.get(f"filters_{d}") or []]
    if len(filters) < n:
        raise ConfigError(
            f"schedule profile {profile.get('name')!r} gives {len(filters)} filter widths but "
            f"{top_resolution} px needs {n}; extend filters_{d} or set model.filters"
        )
    if merged.get("stages"):
        stages = validate_schedule(merged["stages"], top_resolution)
    else:
        def per_stage(key: str) -> list[int]:
            v = merged.get(key)
            vals = list(v) if isinstance(v, Sequence) and not isinstance(v, str) else [v] * n
            if len(vals) < n or any(x is None for x in vals[:n]):
                raise ConfigError(
                    f"schedule profile {profile.get('name')!r}: {key} needs {n} values for "
                    f"{top_resolution} px, got {v!r}"
                )
            return [int(x) for x in vals[:n]]

        bs = per_stage(f"batch_size_{d}")
        if merged.get("epochs_per_phase") is not None and n_frames is not None:
            if int(n_frames) < 1:
                raise ConfigError(f"epochs_per_phase needs a dataset with frames, got {n_frames}")
            fade = stable = [e * int(n_frames) for e in per_stage("epochs_per_phase")]
        else:
            fade, stable = per_stage("fade_images"), per_stage("stable_images")
        stages = validate_schedule(
            [(4 * 2**k, bs[k], 0 if k == 0 else fade[k], stable[k]) for k in range(n)],
            top_resolution,
        )
    extras = {
        k: v for k, v in merged.items()
        if not k.startswith(("filters", "batch_size_"))
        and k not in ("stages", "fade_images", "stable_images", "epochs_per_phase")
    }
    return stages, filters[:n], extras


class ProgressiveSchedule(pl.Callback):
    """Sets ``pl_module.stage`` / ``pl_module.fade_alpha`` / ``pl_module.lr_scale`` and the
    DataModule's resolution and batch size from ``pl_module.images_seen`` before every batch;
    stops training when the schedule is done. It keeps no state of its own (nothing to
    checkpoint).

    ``lr_decay_images`` > 0 lowers both learning rates linearly to ``lr_final_scale`` of their
    configured value over the last ``lr_decay_images`` images (:func:`lr_scale`); 0 (default,
    PGGAN and the paper) keeps them constant.

    Raises:
        ConfigError: ``lr_decay_images`` negative or beyond the top stage's stable phase, or
            ``lr_final_scale`` outside (0, 1].
    """

    def __init__(self, stages: Sequence[Any], lr_decay_images: int = 0,
                 lr_final_scale: float = 1.0) -> None:
        super().__init__()
        self.stages = validate_schedule(stages)
        self.total = total_images(self.stages)
        self.lr_decay_images, self.lr_final_scale = int(lr_decay_images), float(lr_final_scale)
        if not 0 <= self.lr_decay_images <= self.stages[-1].stable_images:
            raise ConfigError(
                f"schedule lr_decay_images must lie in [0, {self.stages[-1].stable_images}] (the "
                f"top stage's stable images), got {lr_decay_images}"
            )
        if not 0.0 < self.lr_final_scale <= 1.0:
            raise ConfigError(f"schedule lr_final_scale must lie in (0, 1], got {lr_final_scale}")
        self._announced: int | None = None  # last stage written to the log

    def _apply(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stage, alpha = schedule_position(int(pl_module.images_seen), self.stages)
        if stage != self._announced:
            self._announced = stage
            spec = self.stages[stage]
            rank_zero_info(
                f"[schedule] stage {stage}: {spec.resolution} px, batch {spec.batch_size}, "
                f"from {pl_module.images_seen} images seen"
            )
        pl_module.stage, pl_module.fade_alpha = stage, alpha
        pl_module.lr_scale = lr_scale(int(pl_module.images_seen), self.total,
                                      self.lr_decay_images, self.lr_final_scale)
        dm = trainer.datamodule
        spec = self.stages[stage]
        if dm is not None and (dm.stage_resolution, dm.batch_size) != (spec.resolution,
                                                                        spec.batch_size):
            dm.set_stage(spec.resolution, spec.batch_size)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        n_model = pl_module.generator.num_stages
        if len(self.stages) > n_model:
            raise ConfigError(
                f"the schedule has {len(self.stages)} stages but the model only {n_model}; "
                f"give the model {len(self.stages)} filter widths"
            )
        dm = trainer.datamodule
        if dm is not None and self.stages[-1].resolution != dm.resolution:
            raise ConfigError(
                f"the schedule ends at {self.stages[-1].resolution} px but the data are served at "
                f"{dm.resolution} px; make them equal"
            )
        self._announced = None
        self._apply(trainer, pl_module)
        if pl_module.images_seen >= self.total:
            trainer.should_stop = True

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: D102
        self._apply(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: D102
        pl_module.log_dict(
            {
                "train/stage": float(pl_module.stage),
                "train/fade_alpha": float(pl_module.fade_alpha),
                "train/kimg": pl_module.images_seen / 1000.0,
                "train/lr_scale": float(getattr(pl_module, "lr_scale", 1.0)),
            },
            on_step=True,
            on_epoch=False,
        )
        # advance now, so a checkpoint written after this batch holds the position that the
        # next batch trains at (stage and fade_alpha always equal schedule_position(images_seen))
        self._apply(trainer, pl_module)
        if pl_module.images_seen >= self.total:
            trainer.should_stop = True
