"""Lightning module: progressive-growing WGAN-GP with manual optimisation and generator EMA.

Each training step is one critic update on one real batch; every ``n_critic``-th step also
updates the generator and its exponential moving average (EMA), which is the network used
for sampling and export. The current ``stage`` / ``fade_alpha`` are set from outside
(:class:`~matdyn.training.schedule.ProgressiveSchedule`) from ``images_seen``, which this
module counts and stores in every checkpoint together with the EMA weights and both
optimisers' state.

Randomness. Each training step draws its latents (critic and generator updates) and the
gradient penalty's interpolation weights from its own generator seeded with
:func:`step_seed` ``(seed, global rank, images_seen)``; the real batch comes from the
DataModule's :class:`~matdyn.data.datamodule.FrameOrder`, whose position is in the
checkpoint. No state is carried in torch's global RNG, so a run resumed from a checkpoint
is bit-identical to an uninterrupted one on CPU with the same thread count (issue 13,
tests/test_resume.py); on a GPU that also needs deterministic kernels
(``trainer.deterministic=true``; not measured here).

Speed options (runtime only, not hyperparameters; a run may resume with other values):
``channels_last`` keeps G, D, the EMA and the real batches in channels_last(_3d) memory;
``compile`` runs the generator and the critic's plain forward passes through
``torch.compile(dynamic=False)`` with ``fade_alpha`` passed as a 0-dim tensor, so graphs are
built once per stage, not per alpha. The gradient penalty's critic pass stays eager: compiled
graphs do not support its double backward. On our CPU compiling made training slower
(quick widths, 64 px 2D / 16 px 3D: -25 % / -17 %, after 30-50 s of compiling), so
``perf.compile`` defaults to off; it is there for GPUs. Mixed precision is the Trainer's
``precision="bf16-mixed"``; critic scores are cast to float32 before the losses.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from matdyn.errors import CheckpointError, ConfigError
from matdyn.models import Discriminator, Generator, downsample, stage_resolution, upsample
from matdyn.models.layers import canonical_memory_format, channels_last_format
from matdyn.training.losses import (
    DRIFT_WEIGHT,
    GP_WEIGHT,
    critic_loss,
    drift_penalty,
    generator_loss,
    gradient_penalty,
)

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]

# paper Section S1 (via issue #3): Adam, lr 1e-3, betas (0, 0.99), eps 1e-8 (as PGGAN)
DEFAULT_OPTIMIZER: OptimizerFactory = partial(torch.optim.Adam, lr=1e-3, betas=(0.0, 0.99), eps=1e-8)


def step_seed(seed: int, rank: int, images_seen: int) -> int:
    """A 63-bit torch seed for one training step, well mixed from (seed, rank, images_seen) by
    numpy's SeedSequence (no collisions between ranks or runs as a sum would give).

    >>> step_seed(0, 0, 0) != step_seed(0, 1, 0) != step_seed(0, 0, 8)
    True
    """
    words = np.random.SeedSequence([int(seed) % 2**64, int(rank), int(images_seen)]).generate_state(2)
    return (int(words[0]) << 32 | int(words[1])) & (2**63 - 1)


def match_resolution(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Average-pool or nearest-upsample [N, C, *S] by factors of 2 to ``resolution``.

    Needed for the one prefetched batch that straddles a stage switch."""
    while x.shape[-1] > resolution:
        x = downsample(x)
    while x.shape[-1] < resolution:
        x = upsample(x)
    return x


class PGGANModule(pl.LightningModule):
    def __init__(
        self,
        latent_dim: int = 32,
        channels: int = 1,
        ndim: int = 2,
        filters: Sequence[int] = (256, 256, 256, 256, 128, 64),
        *,
        mbstd_group: int = 4,
        normalize_latents: bool = True,
        upsample: str = "nearest",
        output_floor: float | None = None,
        optimizer: OptimizerFactory | None = None,
        n_critic: int = 1,
        gp_weight: float = GP_WEIGHT,
        drift_weight: float = DRIFT_WEIGHT,
        ema_decay: float = 0.999,
        ema_start_stage: int = 0,
        sample_seed: int = 0,
        seed: int = 0,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        filters = [int(f) for f in filters]
        if n_critic < 1:
            raise ConfigError(f"n_critic must be >= 1, got {n_critic}")
        if not 0.0 <= ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {ema_decay}")
        if int(ema_start_stage) < 0:
            raise ConfigError(f"ema_start_stage must be >= 0, got {ema_start_stage}")
        self.save_hyperparameters(
            {
                "latent_dim": int(latent_dim), "channels": int(channels), "ndim": int(ndim),
                "filters": filters, "mbstd_group": int(mbstd_group),
                "normalize_latents": bool(normalize_latents), "upsample": str(upsample),
                "output_floor": None if output_floor is None else float(output_floor),
                "n_critic": int(n_critic),
                "gp_weight": float(gp_weight), "drift_weight": float(drift_weight),
                "ema_decay": float(ema_decay), "ema_start_stage": int(ema_start_stage),
                "sample_seed": int(sample_seed), "seed": int(seed),
            }
        )
        self.automatic_optimization = False
        try:
            self.generator = Generator(latent_dim, channels, ndim, filters, normalize_latents,
                                       upsample, output_floor)
        except ValueError as e:
            raise ConfigError(f"model.{e}") from None
        self.discriminator = Discriminator(channels, ndim, filters, mbstd_group)
        self.g_ema = copy.deepcopy(self.generator).requires_grad_(False)
        self._optimizer = optimizer or DEFAULT_OPTIMIZER
        # speed options (see the module docstring)
        self.channels_last, self.use_compile = bool(channels_last), bool(compile)
        self._memory_format = channels_last_format(ndim) if self.channels_last else None
        if self._memory_format is not None:
            for net in (self.generator, self.discriminator, self.g_ema):
                net.to(memory_format=self._memory_format)  # in place: same Parameter objects
        self._g_fwd: Callable[..., torch.Tensor] = self.generator.forward
        self._d_fwd: Callable[..., torch.Tensor] = self.discriminator.forward
        if self.use_compile:
            from torch import _dynamo

            # one graph per stage and grad mode (+1 for the batch straddling a stage switch)
            cfg = _dynamo.config
            key = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
            setattr(cfg, key, max(int(getattr(cfg, key)), 4 * len(filters)))
            self._g_fwd = torch.compile(self.generator.forward, dynamic=False)
            self._d_fwd = torch.compile(self.discriminator.forward, dynamic=False)
        # progress (saved in checkpoints by on_save_checkpoint)
        self.stage = 0
        self.fade_alpha = 1.0
        self.images_seen = 0  # real images shown to the critic, summed over processes
        self.critic_steps = 0
        self.generator_steps = 0
        self.lr_scale = 1.0  # factor on both learning rates (set by ProgressiveSchedule)
        self.data_info: dict[str, Any] = {}  # normalization and dataset metadata, for export

    # -- setup ---------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None:
            return
        hp = self.hparams
        if dm.channels != hp.channels:
            raise ConfigError(
                f"the dataset has {dm.channels} channel(s) but the model was built for "
                f"{hp.channels}; set model.channels={dm.channels} (or dataset.channels)"
            )
        if dm.ndim != hp.ndim:
            raise ConfigError(
                f"the dataset is {dm.ndim}D but the model is {hp.ndim}D; use model=pggan{dm.ndim}d"
            )
        if dm.resolution > self.generator.max_resolution:
            raise ConfigError(
                f"the data are served at {dm.resolution} px but the model stops at "
                f"{self.generator.max_resolution} px; give it more filter widths"
            )
        meta = dm.meta.to_dict() if hasattr(dm.meta, "to_dict") else dict(dm.meta or {})
        self.data_info = {"normalization": dict(dm.normalization), "meta": meta,
                          "train_resolution": int(dm.resolution)}

    def step_generator(self, device: torch.device) -> torch.Generator:
        """The random stream of the coming training step (see the module docstring)."""
        gen = getattr(self, "_step_gen", None)
        if gen is None or gen.device != device:
            gen = self._step_gen = torch.Generator(device=device)
        return gen.manual_seed(step_seed(self.hparams.seed, self.global_rank, self.images_seen))

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        opts = [self._optimizer(self.generator.parameters()),
                self._optimizer(self.discriminator.parameters())]
        # the configured rates, which lr_scale multiplies (kept here, not in the optimizer
        # state: a resumed run's restored param_groups hold the last scaled rate)
        self._base_lrs = [[float(g["lr"]) for g in o.param_groups] for o in opts]
        return opts

    def _apply_lr_scale(self, *opts: Any) -> None:
        bases = getattr(self, "_base_lrs", None)
        if bases is None:
            return
        for opt, base in zip(opts, bases):
            for g, lr in zip(opt.param_groups, base):
                g["lr"] = lr * self.lr_scale

    # -- training ------------------------------------------------------------------------------
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """EMA generator at the current stage and fade_alpha."""
        return self.g_ema(z, self.stage, self.fade_alpha).contiguous()

    def _critic(self, x: torch.Tensor, alpha: float | torch.Tensor | None = None) -> torch.Tensor:
        """Critic scores [N] in float32 (compiled when ``compile``; not for the penalty)."""
        alpha = self.fade_alpha if alpha is None else alpha
        return self._d_fwd(x, self.stage, alpha).float()

    def _fmt(self, x: torch.Tensor) -> torch.Tensor:
        """Critic inputs in one layout (with 1-3 channels a conv output's strides can differ
        from a converted batch's; compiled graphs would be built for each)."""
        return canonical_memory_format(x, self._memory_format)

    def _critic_eager(self, x: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
        return self.discriminator(x, self.stage, alpha).float()

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        self._apply_lr_scale(opt_g, opt_d)
        hp = self.hparams
        stage, alpha = self.stage, self.fade_alpha
        real = batch[0] if isinstance(batch, (list, tuple)) else batch  # [B, C, R...]
        real = match_resolution(real, stage_resolution(stage))
        if stage > 0 and alpha < 1.0:
            # fade the reals like the networks: blend in the previous stage's resolution
            real = torch.lerp(upsample(downsample(real), self.hparams.upsample), real, alpha)
        real = self._fmt(real)
        b = real.shape[0]
        # compiled graphs take alpha as a tensor input (no recompile as it changes)
        a = torch.tensor(float(alpha), device=real.device) if self.use_compile else alpha

        # critic update on one real batch; this step's draws, in a fixed order (module docstring)
        rng = self.step_generator(real.device)
        z = torch.randn(b, hp.latent_dim, device=real.device, generator=rng)
        gp_mix = torch.rand(b, device=real.device, generator=rng)
        with torch.no_grad():
            fake = self._fmt(self._g_fwd(z, stage, a))
        d_real, d_fake = self._critic(real, a), self._critic(fake, a)
        wdist = critic_loss(d_real, d_fake)
        gp = gradient_penalty(partial(self._critic_eager, alpha=a), real, fake, hp.gp_weight,
                              gp_mix)
        drift = drift_penalty(d_real, hp.drift_weight)
        loss_d = wdist + gp + drift
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        opt_d.step()
        self.critic_steps += 1
        self.images_seen += b * self.trainer.world_size
        logs = {"train/loss_d": loss_d.detach(), "train/wdist": -wdist.detach(),
                "train/gp": gp.detach(), "train/drift": drift.detach()}

        # generator update every n_critic critic updates
        if self.critic_steps % hp.n_critic == 0:
            self.toggle_optimizer(opt_g)
            z = torch.randn(b, hp.latent_dim, device=real.device, generator=rng)
            loss_g = generator_loss(self._critic(self._fmt(self._g_fwd(z, stage, a)), a))
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(loss_g)
            opt_g.step()
            self.untoggle_optimizer(opt_g)
            self.generator_steps += 1
            self.update_ema()
            logs["train/loss_g"] = loss_g.detach()
        self.log_dict(logs, on_step=True, on_epoch=False, prog_bar=False)

    @torch.no_grad()
    def update_ema(self) -> None:
        """g_ema ← decay · g_ema + (1 - decay) · generator, with a short warm-up
        (decay ≤ (1 + n) / (10 + n) after n generator steps) so early samples are usable.
        Before the stable phase of stage ``ema_start_stage`` the decay is 0: g_ema follows the
        generator exactly (``schedule`` key ``ema_from: top_stable``; issue 11, session 21)."""
        n = self.generator_steps
        s0 = self.hparams.get("ema_start_stage", 0)
        started = self.stage > s0 or (self.stage == s0 and self.fade_alpha >= 1.0)
        decay = min(self.hparams.ema_decay, (1.0 + n) / (10.0 + n)) if started else 0.0
        for p_ema, p in zip(self.g_ema.parameters(), self.generator.parameters()):
            p_ema.lerp_(p, 1.0 - decay)
        for b_ema, b in zip(self.g_ema.buffers(), self.generator.buffers()):
            b_ema.copy_(b)

    @torch.no_grad()
    def sample(
        self, n: int, seed: int | None = None, stage: int | None = None,
        fade_alpha: float | None = None, ema: bool = True,
    ) -> torch.Tensor:
        """n images [n, C, R...] from a seeded latent batch (default: current stage / alpha)."""
        g = torch.Generator().manual_seed(self.hparams.sample_seed if seed is None else seed)
        z = torch.randn(n, self.hparams.latent_dim, generator=g).to(self.device)
        net = self.g_ema if ema else self.generator
        return net(z, self.stage if stage is None else stage,
                   self.fade_alpha if fade_alpha is None else fade_alpha).contiguous()

    # -- checkpoints ---------------------------------------------------------------------------
    def progress(self) -> dict[str, Any]:
        return {
            "images_seen": int(self.images_seen), "stage": int(self.stage),
            "fade_alpha": float(self.fade_alpha), "critic_steps": int(self.critic_steps),
            "generator_steps": int(self.generator_steps),
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["matdyn"] = {"progress": self.progress(), "data_info": self.data_info}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("matdyn")
        if state is None:
            raise CheckpointError("checkpoint has no matdyn training state; was it written by "
                                  "matdyn's train script? Use init_from=<ckpt> for weights only")
        p = state["progress"]
        self.images_seen, self.stage = int(p["images_seen"]), int(p["stage"])
        self.fade_alpha = float(p["fade_alpha"])
        self.critic_steps, self.generator_steps = int(p["critic_steps"]), int(p["generator_steps"])
        self.data_info = dict(state.get("data_info") or {})

    def load_weights(self, checkpoint: dict[str, Any], source: str = "checkpoint") -> None:
        """Load G, D and EMA weights only (``init_from``); progress starts from zero."""
        sd = checkpoint.get("state_dict")
        if not isinstance(sd, dict):
            raise CheckpointError(f"{source} holds no state_dict; pass a Lightning .ckpt")
        try:
            self.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            detail = next((ln.strip() for ln in first[1:] if ln.strip()), first[0] if first else "")
            raise CheckpointError(
                f"{source} does not fit this model (different channels, ndim or filters?): {detail}"
            ) from None
