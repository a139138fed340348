"""Frame geometry helpers shared by training, sweeps and analyses (no Lightning import)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Fit = Literal["crop", "pad"]


def is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


def square_frames(x: torch.Tensor, fit: Fit = "crop") -> torch.Tensor:
    """Centre-crop (or zero-pad with the edge mean) frames [N, C, *spatial] to equal sides.

    >>> square_frames(torch.zeros(1, 1, 4, 6)).shape
    torch.Size([1, 1, 4, 4])
    """
    spatial = x.shape[2:]
    if len(set(spatial)) == 1:
        return x
    if fit == "crop":
        side = min(spatial)
        sl = [slice(None), slice(None)] + [slice((s - side) // 2, (s - side) // 2 + side) for s in spatial]
        return x[tuple(sl)]
    side = max(spatial)
    pad: list[int] = []
    for s in reversed(spatial):  # F.pad wants the last dimension first
        before = (side - s) // 2
        pad += [before, side - s - before]
    fill = float(x.mean())
    return F.pad(x, pad, mode="constant", value=fill)


def resize_frames(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize square frames [N, C, *spatial] to `resolution` per side with antialiasing.

    Integer downsampling factors use area averaging (exact box filter, 2D and 3D); other
    2D factors use antialiased bilinear interpolation; other 3D factors Gaussian pre-blur
    then trilinear interpolation; upsampling uses (bi/tri)linear interpolation.
    """
    side = x.shape[-1]
    ndim = x.dim() - 2
    if side == resolution:
        return x
    if side > resolution and side % resolution == 0:
        pool = F.avg_pool2d if ndim == 2 else F.avg_pool3d
        k = side // resolution
        return pool(x, kernel_size=k, stride=k)
    size = (resolution,) * ndim
    if ndim == 2:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                             antialias=side > resolution)
    if side > resolution:
        from scipy.ndimage import gaussian_filter

        sigma = 0.5 * side / resolution  # ~ scikit-image's anti_aliasing sigma (s - 1) / 2
        x = torch.from_numpy(gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma, sigma)))
    return F.interpolate(x, size=size, mode="trilinear", align_corners=False)
