"""Progressive-growing GAN generator and critic (Karras et al. 2018) for 2D and 3D data.

Every stage is built up front, so parameters, optimiser state, DDP buckets and state_dict
keys never change while training grows. The stage to run and the fade-in weight are
arguments of ``forward``:

* stage ``k`` works at resolution ``4 * 2**k`` (stage 0 = 4² or 4³);
* ``fade_alpha`` blends the newest stage in: 0 = previous stage only (its output
  upsampled / its input downsampled), 1 = new stage only.

``filters[k]`` is the channel width at stage k; the number of stages is ``len(filters)``.
Paper widths (§3.1, Section S1): [512, 512, 512, 512, 256, 128, 64, 32] for the Ta chart,
half of that for NP diffusion and brass clumps; latent dimension 32.

``upsample`` picks the generator's ×2 filter: ``"nearest"`` (PGGAN and the paper's code, the
default) or ``"linear"`` (bilinear / trilinear). Nearest upsampling puts the 4-px grid of the
first stage into every later stage, which shows as pixel locking of generated particle
centroids; the linear filter removes that extra locking on the NP stand-in (README,
Configuration). The critic always downsamples by 2×2 averaging.

Control flow in ``forward`` depends only on ``stage`` (a Python int), so each stage traces to
one static graph (torch.compile, channels_last, bf16 autocast); ``fade_alpha`` may be a
float or a 0-dim tensor (a tensor avoids recompiling as alpha changes). A float alpha of
exactly 1 skips the fade branches (the generator's previous to-image layer, the critic's
previous from-image layer on the downsampled input), which cannot change the result; the
skipped layer gets no gradient instead of a zero one. Under autocast (bf16) the generator's 1×1 to-image layers run in
float32, so images are float32 with full resolution of grey levels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from matdyn.models.layers import (
    SQRT2,
    UPSAMPLE_MODES,
    EqualizedConv,
    EqualizedLinear,
    MinibatchStd,
    PixelNorm,
    _check_ndim,
    assert_shape,
    downsample,
    lrelu,
    upsample,
)

Alpha = float | torch.Tensor

#: sharpness β of the generator's optional floored output (``output_floor``):
#: ``floor + softplus(β (x − floor)) / β``; at the kink the output sits ln 2 / β = 0.069 above
#: the floor (3.5 % of the [-1, 1] range), half a unit below it within 7e-4
SOFTPLUS_BETA = 10.0


def stage_resolution(stage: int) -> int:
    """Resolution (pixels per side) of a stage: 4 · 2^stage."""
    return 4 * 2**stage


def _blend(old: torch.Tensor, new: torch.Tensor, fade_alpha: Alpha) -> torch.Tensor:
    # torch.lerp is exact at both ends (weight 0 -> old, weight 1 -> new)
    if isinstance(fade_alpha, torch.Tensor):
        fade_alpha = fade_alpha.to(device=new.device, dtype=new.dtype)
    return torch.lerp(old.to(new.dtype), new, fade_alpha)


def _is_one(fade_alpha: Alpha) -> bool:
    """True for a Python number equal to 1 (never for a tensor: no device sync, no graph break)."""
    return not isinstance(fade_alpha, torch.Tensor) and fade_alpha == 1.0


def _check_filters(filters: Sequence[int]) -> list[int]:
    widths = [int(f) for f in filters]
    if not widths or any(f < 1 for f in widths):
        raise ValueError(f"filters must be a non-empty list of positive widths, got {filters}")
    return widths


class _GBlock(nn.Sequential):
    """Upsample, then two 3×3 convs: [N, c_in, R/2...] -> [N, c_out, R...].

    The upsampling and the first conv run as one transposed conv
    (:meth:`EqualizedConv.forward_upsampled`); the modules (and state_dict keys) stay those of
    the plain sequence."""

    def __init__(self, c_in: int, c_out: int, ndim: int, mode: str = "nearest") -> None:
        super().__init__(
            _Upsample(mode),
            EqualizedConv(c_in, c_out, 3, ndim), lrelu(True), PixelNorm(inplace=True),
            EqualizedConv(c_out, c_out, 3, ndim), lrelu(True), PixelNorm(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self[0].mode == "nearest":
            x = self[1].forward_upsampled(x)  # = self[1](self[0](x))
        else:
            x = self[1](self[0](x))
        for i, layer in enumerate(self):
            if i >= 2:
                x = layer(x)
        return x


class _DBlock(nn.Sequential):
    """Two 3×3 convs, then downsample: [N, c_in, R...] -> [N, c_out, R/2...]."""

    def __init__(self, c_in: int, c_out: int, ndim: int) -> None:
        super().__init__(
            EqualizedConv(c_in, c_in, 3, ndim), lrelu(True),
            EqualizedConv(c_in, c_out, 3, ndim), lrelu(True),
            _Downsample(),
        )


class _Upsample(nn.Module):
    def __init__(self, mode: str = "nearest") -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample(x, self.mode)


class _Downsample(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return downsample(x)


class Generator(nn.Module):
    """z [N, latent_dim] -> images [N, channels, R, R(, R)] with R = 4 · 2^stage (linear output,
    trained towards data scaled to [-1, 1]).

    ``output_floor`` (None: the paper's linear output) puts a smooth floor under every channel,
    ``floor + softplus(β (x − floor)) / β`` (:data:`SOFTPLUS_BETA`), applied after the fade-in
    blend: for densities, which cannot be negative, ``-1.0`` (the scaled zero of a channel
    whose lower limit is 0) lets the generator draw empty voxels without the symmetric noise
    that a linear output leaves around them and that clipping at 0 turns into mass (issue 11).
    """

    def __init__(
        self,
        latent_dim: int = 32,
        channels: int = 1,
        ndim: int = 2,
        filters: Sequence[int] = (256, 256, 256, 256, 128, 64, 32, 16),
        normalize_latents: bool = True,
        upsample: str = "nearest",
        output_floor: float | None = None,
    ) -> None:
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        if output_floor is not None and not -1.0 <= float(output_floor) < 1.0:
            raise ValueError(f"output_floor must lie in [-1, 1) (data scaled to [-1, 1]) or be "
                             f"null, got {output_floor!r}")
        self.upsample = upsample
        self.output_floor = None if output_floor is None else float(output_floor)
        self.ndim = _check_ndim(ndim)
        self.latent_dim = int(latent_dim)
        self.channels = int(channels)
        self.filters = _check_filters(filters)
        self.normalize_latents = bool(normalize_latents)
        self.num_stages = len(self.filters)
        f0 = self.filters[0]
        self._base_shape = (f0,) + (4,) * self.ndim

        # stage 0: latent -> [N, f0, 4, 4(, 4)]; the dense layer acts as a 4^ndim "conv", whose
        # gain sqrt(2)/sqrt(4^ndim) follows the PGGAN reference code (sqrt(2)/4 in 2D)
        self.latent_norm = PixelNorm() if self.normalize_latents else nn.Identity()
        self.dense = EqualizedLinear(self.latent_dim, f0 * 4**self.ndim, gain=SQRT2 / 2**self.ndim)
        self.base = nn.Sequential(
            lrelu(True), PixelNorm(inplace=True), EqualizedConv(f0, f0, 3, self.ndim), lrelu(True),
            PixelNorm(inplace=True),
        )
        # stage k >= 1: blocks[k - 1] doubles the resolution, filters[k-1] -> filters[k]
        self.blocks = nn.ModuleList(
            _GBlock(self.filters[k - 1], self.filters[k], self.ndim, upsample)
            for k in range(1, self.num_stages)
        )
        # 1×1 to-image layer per stage, linear (gain 1)
        self.to_image = nn.ModuleList(
            EqualizedConv(f, self.channels, 1, self.ndim, gain=1.0) for f in self.filters
        )

    @property
    def max_resolution(self) -> int:
        return stage_resolution(self.num_stages - 1)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (plain types), enough to rebuild the network."""
        return {
            "latent_dim": self.latent_dim,
            "channels": self.channels,
            "ndim": self.ndim,
            "filters": list(self.filters),
            "normalize_latents": self.normalize_latents,
            "upsample": self.upsample,
        } | ({} if self.output_floor is None else {"output_floor": self.output_floor})

    def forward(self, z: torch.Tensor, stage: int, fade_alpha: Alpha = 1.0) -> torch.Tensor:
        if not 0 <= stage < self.num_stages:
            raise ValueError(f"stage {stage} outside 0..{self.num_stages - 1}")
        assert_shape(z, [None, self.latent_dim])  # [N, latent]
        x = self.dense(self.latent_norm(z))  # [N, f0 * 4^ndim]
        x = self.base(x.view(-1, *self._base_shape))  # [N, f0, 4, 4(, 4)]
        prev = x
        # grow: each block doubles the resolution up to the requested stage
        for k in range(1, stage + 1):
            prev = x
            x = self.blocks[k - 1](x)  # [N, filters[k], R_k...]
        img = self._to_image(stage, x)  # [N, C, R...]
        if stage > 0 and not _is_one(fade_alpha):
            # fade-in: previous stage's image, upsampled (skipped at a Python alpha of exactly
            # 1, where lerp returns the new image bit for bit; a tensor alpha always blends)
            img = _blend(upsample(self._to_image(stage - 1, prev), self.upsample), img, fade_alpha)
        if self.output_floor is not None:
            f = self.output_floor
            img = f + nn.functional.softplus(img - f, beta=SOFTPLUS_BETA)
        return img

    def _to_image(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """to-image layer k, in float32 under autocast: a bf16 output keeps only 256 levels per
        octave (~2000 -> ~270 distinct values in a 64² image), which shifts image entropies
        (0.03 bits at 256 bins); the 1×1 layer costs little in float32."""
        if torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return self.to_image[k](x.float())
        return self.to_image[k](x)


class Discriminator(nn.Module):
    """Critic: images [N, channels, R, R(, R)] with R = 4 · 2^stage -> scores [N]."""

    def __init__(
        self,
        channels: int = 1,
        ndim: int = 2,
        filters: Sequence[int] = (256, 256, 256, 256, 128, 64, 32, 16),
        mbstd_group: int = 4,
    ) -> None:
        super().__init__()
        self.ndim = _check_ndim(ndim)
        self.channels = int(channels)
        self.filters = _check_filters(filters)
        self.mbstd_group = int(mbstd_group)
        self.num_stages = len(self.filters)
        f0 = self.filters[0]

        # 1×1 from-image layer per stage: [N, C, R...] -> [N, filters[k], R...]
        self.from_image = nn.ModuleList(
            nn.Sequential(EqualizedConv(self.channels, f, 1, self.ndim), lrelu(True))
            for f in self.filters
        )
        # stage k >= 1: blocks[k - 1] halves the resolution, filters[k] -> filters[k-1]
        self.blocks = nn.ModuleList(
            _DBlock(self.filters[k], self.filters[k - 1], self.ndim)
            for k in range(1, self.num_stages)
        )
        # stage 0 head: minibatch stddev, 3×3 conv, dense, linear score
        self.head = nn.Sequential(
            MinibatchStd(self.mbstd_group),
            EqualizedConv(f0 + 1, f0, 3, self.ndim), lrelu(True),
            nn.Flatten(),
            EqualizedLinear(f0 * 4**self.ndim, f0), lrelu(True),
            EqualizedLinear(f0, 1, gain=1.0),
        )

    @property
    def max_resolution(self) -> int:
        return stage_resolution(self.num_stages - 1)

    @property
    def config(self) -> dict[str, Any]:
        return {
            "channels": self.channels,
            "ndim": self.ndim,
            "filters": list(self.filters),
            "mbstd_group": self.mbstd_group,
        }

    def forward(self, x: torch.Tensor, stage: int, fade_alpha: Alpha = 1.0) -> torch.Tensor:
        if not 0 <= stage < self.num_stages:
            raise ValueError(f"stage {stage} outside 0..{self.num_stages - 1}")
        r = stage_resolution(stage)
        assert_shape(x, [None, self.channels, *(r,) * self.ndim])  # [N, C, R...]
        h = self.from_image[stage](x)  # [N, filters[stage], R...]
        if stage > 0:
            h = self.blocks[stage - 1](h)  # [N, filters[stage-1], R/2...]
            if not _is_one(fade_alpha):
                # fade-in: previous stage's from-image on the downsampled input (skipped at a
                # Python alpha of exactly 1, where lerp returns h bit for bit)
                h = _blend(self.from_image[stage - 1](downsample(x)), h, fade_alpha)
            # shrink: remaining blocks down to 4 px
            for k in range(stage - 1, 0, -1):
                h = self.blocks[k - 1](h)
        return self.head(h).squeeze(1)  # [N]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def widths(base: Sequence[int], scale: float) -> list[int]:
    """Scale a width list (e.g. the paper's ×0.5), keeping every width >= 1."""
    return [max(1, int(math.floor(f * scale))) for f in base]
