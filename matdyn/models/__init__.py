"""Progressive-growing WGAN-GP networks (2D and 3D from one code path)."""

from matdyn.models.layers import (
    EqualizedConv,
    EqualizedLinear,
    MinibatchStd,
    PixelNorm,
    assert_shape,
    downsample,
    upsample,
)
from matdyn.models.pggan import Discriminator, Generator, count_parameters, stage_resolution

__all__ = [
    "Discriminator",
    "EqualizedConv",
    "EqualizedLinear",
    "Generator",
    "MinibatchStd",
    "PixelNorm",
    "assert_shape",
    "count_parameters",
    "downsample",
    "stage_resolution",
    "upsample",
]
