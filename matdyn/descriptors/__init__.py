"""Descriptors: pure numpy functions on batches of images, masks and latents.

Batches are [B, *spatial] for single-channel functions (masks, particles, IoU) and
[B, C, *spatial] for multi-channel ones (composition, :class:`Binarizer`, difference
metrics). Nothing here holds torch or Hydra state.
"""

from __future__ import annotations

from matdyn.descriptors.composition import (
    channel_iqr,
    channel_mass,
    density_difference,
    iqr_variance,
    mass_deviation,
)
from matdyn.descriptors.differences import (
    AreaDifference,
    DensityDifference,
    DifferenceMetric,
    EntropyDifference,
    IoU,
    MassDeviation,
    MetricFilter,
    ShapeDifference,
)
from matdyn.descriptors.entropy import quantize, shannon_entropy, shannon_entropy_batch
from matdyn.descriptors.latent import (
    angular_step,
    expected_angular_step,
    expected_per_dimension_distance,
    expected_perturbation_norm,
    per_dimension_distance,
    pixel_normalize,
)
from matdyn.descriptors.overlap import iou, iou_3d, iou_batch
from matdyn.descriptors.particles import (
    Binarizer,
    binarize,
    otsu_thresholds,
    particle_areas_batch,
    particle_totals,
    segment_particles,
)

__all__ = [
    "AreaDifference",
    "Binarizer",
    "DensityDifference",
    "DifferenceMetric",
    "EntropyDifference",
    "IoU",
    "MassDeviation",
    "MetricFilter",
    "ShapeDifference",
    "angular_step",
    "binarize",
    "channel_iqr",
    "channel_mass",
    "density_difference",
    "expected_angular_step",
    "expected_per_dimension_distance",
    "expected_perturbation_norm",
    "iou",
    "iou_3d",
    "iou_batch",
    "iqr_variance",
    "mass_deviation",
    "otsu_thresholds",
    "particle_areas_batch",
    "particle_totals",
    "per_dimension_distance",
    "pixel_normalize",
    "quantize",
    "segment_particles",
    "shannon_entropy",
    "shannon_entropy_batch",
]
