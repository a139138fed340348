"""Random streams and work partition of the variation engine (paper §2.2).

z_i and ε_i· of reference i come from CPU generators seeded by ``SeedSequence(seed,
spawn_key=(i,))``: they depend on (seed, i) only, never on the batch size, the block size,
the shard or the order of work. References are grouped into blocks of consecutive indices
(the unit of checkpointing) and blocks into shards (the unit of parallel work).
"""

from __future__ import annotations

import numpy as np
import torch

from matdyn.errors import ConfigError
from matdyn.sampling.samplers import PerturbationSampler

__all__ = ["block_ranges", "parse_shard", "shard_blocks", "variation_latents"]


# ----------------------------------------------------------------------------- streams
def _reference_seeds(seed: int, index: int) -> tuple[int, int]:
    """Two 64-bit seeds (for z_i and for ε_i·) derived from (seed, i) only."""
    words = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(index),)).generate_state(
        2, np.uint64
    )
    return int(words[0]), int(words[1])


def variation_latents(
    seed: int,
    index: int,
    n_samples: int,
    dim: int,
    sampler: PerturbationSampler,
    reference: np.ndarray | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """z_i [d] and ε_i [N, d] (float32, CPU) of reference ``index``, exactly as the engine
    draws them; use it to regenerate any sample later: ``G(z + eps[j])``.

    >>> from matdyn.sampling.samplers import UniformSampler
    >>> z, eps = variation_latents(0, 3, 5, 8, UniformSampler(1.0))
    >>> z.shape, eps.shape, bool(torch.equal(z, variation_latents(0, 3, 1, 8, UniformSampler(2.0))[0]))
    (torch.Size([8]), torch.Size([5, 8]), True)
    """
    z_seed, eps_seed = _reference_seeds(seed, index)
    if reference is None:
        z = torch.randn(
            int(dim), generator=torch.Generator().manual_seed(z_seed), dtype=torch.float32
        )
    else:
        z = torch.as_tensor(reference, dtype=torch.float32).reshape(int(dim)).clone()
    eps = sampler.sample(int(n_samples), int(dim), torch.Generator().manual_seed(eps_seed))
    return z, eps


# ----------------------------------------------------------------------------- blocks, shards
def block_ranges(n_refs: int, block_size: int) -> list[tuple[int, int]]:
    """Consecutive reference ranges [start, stop) of ``block_size`` (the last may be shorter).

    >>> block_ranges(7, 3)
    [(0, 3), (3, 6), (6, 7)]
    """
    return [(s, min(s + block_size, n_refs)) for s in range(0, n_refs, block_size)]


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int]:
    """``"k/n"`` or ``(k, n)`` with 0 <= k < n -> (k, n); None -> (0, 1).

    >>> parse_shard("2/8")
    (2, 8)
    """
    if shard is None:
        return 0, 1
    try:
        k, n = (int(v) for v in (shard.split("/") if isinstance(shard, str) else shard))
    except (ValueError, TypeError):
        raise ConfigError(f"shard must look like 'k/n' (e.g. '2/8'), got {shard!r}") from None
    if not (n >= 1 and 0 <= k < n):
        raise ConfigError(f"shard {shard!r} is out of range: use 'k/n' with n >= 1 and 0 <= k < n (0-based)")
    return k, n


def shard_blocks(n_blocks: int, shard: str | tuple[int, int] | None) -> range:
    """Block indices of one shard: n contiguous, near-equal groups.

    >>> list(shard_blocks(10, "1/3")), list(shard_blocks(2, "2/3"))
    ([4, 5, 6], [])
    """
    k, n = parse_shard(shard)
    base, extra = divmod(n_blocks, n)
    start = k * base + min(k, extra)
    return range(start, start + base + (1 if k < extra else 0))
