"""Latent Monte Carlo: perturbation samplers, the streaming variation engine, reducers.

Importing this package imports torch (samplers draw torch tensors).
"""

from __future__ import annotations

from matdyn.sampling.engine import (
    VariationEngine,
    VariationResult,
    load_results,
    merge_results,
    parse_shard,
    variation_latents,
)
from matdyn.sampling.reducers import (
    FilteredMean,
    IQRVariance,
    LatentStats,
    Reducer,
    ReferenceBlock,
    RunInfo,
    SampleMetrics,
    VariationBatch,
    ZarrImageSink,
)
from matdyn.sampling.samplers import GaussianSampler, PerturbationSampler, UniformSampler
from matdyn.sampling.shards import ShardReport, require_complete, run_shard

__all__ = [
    "FilteredMean",
    "GaussianSampler",
    "IQRVariance",
    "LatentStats",
    "PerturbationSampler",
    "Reducer",
    "ReferenceBlock",
    "RunInfo",
    "SampleMetrics",
    "ShardReport",
    "UniformSampler",
    "VariationBatch",
    "VariationEngine",
    "VariationResult",
    "ZarrImageSink",
    "load_results",
    "merge_results",
    "parse_shard",
    "require_complete",
    "run_shard",
    "variation_latents",
]
