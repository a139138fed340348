"""The variation engine: latent Monte Carlo around M references, streamed (paper §2.2).

For each reference i it draws z_i ~ N(0, I), generates G(z_i) and N perturbed images
G(z_i + ε_ij), and hands them in large batches to reducers
(:mod:`matdyn.sampling.reducers`) that compute descriptors on the fly.

Guarantees:

* **Streams.** z_i and ε_i· come from CPU generators seeded by ``SeedSequence(seed,
  spawn_key=(i,))`` (:func:`variation_latents`): they depend on (seed, i) only, never on the
  batch size, the block size, the shard or the order of work.
* **Blocks and checkpoints.** References are processed in blocks of ``block_size``
  consecutive indices. A finished block's reducer outputs are written atomically to
  ``<out_dir>/blocks/``; a rerun with the same settings skips finished blocks, so an
  interrupted run resumes and gives the same arrays as an uninterrupted one. Batches
  never straddle blocks, so the generator sees identical batches after a resume.
* **Shards.** ``shard="k/n"`` (0 <= k < n) runs the k-th of n contiguous groups of blocks;
  :func:`merge_results` over the shards' directories equals a single-process run.
* **Memory** is bounded by one block (reducer state) plus two batches of images, whatever M.
* **Overlap.** With ``overlap=True`` one worker thread runs metrics and reducers on batch t
  while the main thread generates batch t+1 (GPU kernels or torch's CPU threads).

Layout: the streams and the block/shard partition are in :mod:`matdyn.sampling.streams`,
the on-disk results (manifest, blocks, :class:`VariationResult`, :func:`merge_results`) in
:mod:`matdyn.sampling.results`; this module runs the engine and re-exports both.

Bit-for-bit equality across *different batch sizes* also needs a generator whose output for
one latent does not depend on its batch neighbours (true for the CPU kernels we tested;
cuDNN may pick other algorithms for other batch shapes).
"""


from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matdyn.descriptors.differences import DifferenceMetric
from matdyn.errors import AnalysisError, ConfigError
from matdyn.io import atomic_write_text
from matdyn.sampling.reducers import Reducer, ReferenceBlock, RunInfo, VariationBatch
from matdyn.sampling.results import (
    FORMAT,
    FORMAT_VERSION,
    VariationResult,
    _block_path,
    _done_blocks,
    _read_manifest,
    _save_npz,
    load_results,
    merge_results,
)
from matdyn.sampling.samplers import PerturbationSampler
from matdyn.sampling.streams import block_ranges, parse_shard, shard_blocks, variation_latents

# the engine's public names; streams and results live in matdyn.sampling.{streams,results}
__all__ = [
    "VariationEngine",
    "VariationResult",
    "block_ranges",
    "load_results",
    "merge_results",
    "parse_shard",
    "shard_blocks",
    "variation_latents",
]

_OUTPUTS = ("auto", "physical", "raw")


# ----------------------------------------------------------------------------- engine
def _module_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for key, t in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _check_counts(n_refs: Any, n_samples: Any, batch_size: Any, block_size: Any, seed: Any) -> None:
    """ConfigError unless the counts are positive integers and the seed non-negative."""
    for what, v in (("n_refs (M)", n_refs), ("n_samples (N)", n_samples), ("batch_size", batch_size)):
        if isinstance(v, bool) or int(v) != v or v <= 0:
            raise ConfigError(f"{what} must be a positive integer, got {v!r}")
    if block_size is not None and (int(block_size) != block_size or block_size <= 0):
        raise ConfigError(f"block_size must be a positive integer, got {block_size!r}")
    if int(seed) != seed or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")


def _check_names(metrics: Sequence[DifferenceMetric], reducers: Sequence[Reducer]) -> None:
    """Unique metric and reducer names, and every metric a reducer needs present."""
    names = [m.name for m in metrics]
    if len(set(names)) != len(names):
        raise ConfigError(f"metric names must be unique, got {names}; set name=... on duplicates")
    rnames = [r.name for r in reducers]
    if len(set(rnames)) != len(rnames):
        raise ConfigError(f"reducer names must be unique, got {rnames}; set name=... on duplicates")
    for r in reducers:
        missing = sorted(set(r.requires) - set(names))
        if missing:
            raise ConfigError(f"reducer {r.name!r} needs metrics {missing}; add them to metrics=[...]")


def _images_callable(generator: Any, output: str, images_fn: Callable | None) -> tuple[Callable, str]:
    """Which callable turns latents into images, and its description for the fingerprint."""
    has_sample = callable(getattr(generator, "sample", None))
    if images_fn is not None:
        return images_fn, f"images_fn:{getattr(images_fn, '__qualname__', repr(images_fn))}"
    if output == "physical" or (output == "auto" and has_sample):
        if not has_sample:
            raise ConfigError("output='physical' needs a generator with .sample(z); use output='raw'")
        return generator.sample, "sample"
    return generator, "forward"


def _block_outputs(reducers: Sequence[Reducer], block: ReferenceBlock) -> dict[str, np.ndarray]:
    """The reducers' ``end_block`` outputs of one block as ``{"<reducer>/<key>": [K, ...]}``."""
    arrays: dict[str, np.ndarray] = {"_ref_indices": block.ref_indices}
    for r in reducers:
        for key, value in r.end_block().items():
            value = np.asarray(value)
            if value.ndim == 0 or value.shape[0] != len(block):
                raise ConfigError(
                    f"reducer {r.name!r} returned {key!r} with shape {value.shape}; "
                    f"end_block outputs need one row per reference ({len(block)})"
                )
            arrays[f"{r.name}/{key}"] = value
    return arrays


class VariationEngine:
    """Latent Monte Carlo: M references x N perturbations, reduced on the fly.

    Args:
        generator: maps latents [B, d] to images [B, C, *spatial]; needs ``latent_dim``
            (or pass ``latent_dim``). A generator bundle from ``matdyn.load_generator``
            has ``.sample(z)`` (physical units) and ``forward(z)`` ([-1, 1]).
        sampler: perturbation sampler, e.g. ``UniformSampler(gamma=1.0)``.
        n_refs: M reference latents (paper: 1000 for the continuity curves, §3.3.1).
        n_samples: N perturbed images per reference (paper: 100 there).
        seed: root of all random streams.
        metrics: difference metrics vs the reference, computed once per batch and shared
            by all reducers through ``batch.metrics``.
        reducers: see :mod:`matdyn.sampling.reducers`; names must be unique.
        batch_size: images per generator call.
        block_size: references per checkpoint block; default ≈ 4 batches of images.
        device: where the generator runs; default: where its parameters are.
        output: "auto" (``.sample`` if the generator has it, else ``forward``),
            "physical" (``.sample``) or "raw" (``forward``, [-1, 1]).
        images_fn: custom latents -> images callable; overrides ``output``.
        references: optional fixed reference latents [M, d] (e.g. inverted real frames)
            instead of z_i ~ N(0, I).
        progress: show a tqdm bar with ETA.
        overlap: run reducers in a worker thread while the next batch is generated.
    """

    def __init__(
        self,
        generator: Callable[[torch.Tensor], torch.Tensor],
        sampler: PerturbationSampler,
        *,
        n_refs: int,
        n_samples: int,
        seed: int = 0,
        metrics: Sequence[DifferenceMetric] = (),
        reducers: Sequence[Reducer] = (),
        batch_size: int = 256,
        block_size: int | None = None,
        device: str | torch.device | None = None,
        output: str = "auto",
        images_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        latent_dim: int | None = None,
        references: np.ndarray | torch.Tensor | None = None,
        progress: bool = True,
        overlap: bool = True,
    ) -> None:
        _check_counts(n_refs, n_samples, batch_size, block_size, seed)
        if not isinstance(sampler, PerturbationSampler):
            raise ConfigError(
                f"sampler must be a PerturbationSampler (e.g. UniformSampler), got {sampler!r}"
            )
        if output not in _OUTPUTS:
            raise ConfigError(f"output must be one of {_OUTPUTS}, got {output!r}")
        self.generator = generator
        self.sampler = sampler
        self.n_refs, self.n_samples, self.seed = int(n_refs), int(n_samples), int(seed)
        self.batch_size = int(batch_size)
        per_ref = self.n_samples + 1
        self.block_size = (
            int(block_size) if block_size else max(1, round(4 * self.batch_size / per_ref))
        )
        self.metrics = list(metrics)
        self.reducers = list(reducers)
        self.progress, self.overlap = bool(progress), bool(overlap)

        dim = latent_dim if latent_dim is not None else getattr(generator, "latent_dim", None)
        if dim is None or int(dim) != dim or dim < 1:
            raise ConfigError(
                "the generator has no usable `latent_dim` attribute; pass latent_dim=... to VariationEngine"
            )
        self.latent_dim = int(dim)

        _check_names(self.metrics, self.reducers)

        self._fn, self._fn_desc = _images_callable(generator, output, images_fn)

        if device is None:
            params = list(generator.parameters()) if isinstance(generator, torch.nn.Module) else []
            device = params[0].device if params else torch.device("cpu")
        self.device = torch.device(device)

        self.references = None
        if references is not None:
            ref = torch.as_tensor(references, dtype=torch.float32).cpu()
            if tuple(ref.shape) != (self.n_refs, self.latent_dim):
                raise ConfigError(
                    f"references must be [n_refs, latent_dim] = [{self.n_refs}, {self.latent_dim}], "
                    f"got {tuple(ref.shape)}"
                )
            self.references = ref

    # -- planning ------------------------------------------------------------------
    @property
    def blocks(self) -> list[tuple[int, int]]:
        """All reference blocks [start, stop) of the run."""
        return block_ranges(self.n_refs, self.block_size)

    def plan(self, shard: str | tuple[int, int] | None = None) -> list[tuple[int, int]]:
        """Reference ranges this shard would process."""
        blocks = self.blocks
        return [blocks[b] for b in shard_blocks(len(blocks), shard)]

    # -- generation ----------------------------------------------------------------
    def _generate(self, latents: torch.Tensor) -> np.ndarray:
        """Images for latents [B, d] as float32 numpy [B, C, *spatial] (one device->host copy)."""
        with torch.inference_mode():
            out = self._fn(latents.to(self.device, non_blocking=True))
            if not isinstance(out, torch.Tensor):
                raise ConfigError(
                    f"the generator returned {type(out).__name__}, expected a torch.Tensor"
                )
            out = out.detach().to("cpu", torch.float32)
        arr = out.numpy()
        if arr.ndim not in (4, 5) or arr.shape[0] != latents.shape[0]:
            raise ConfigError(
                f"the generator returned shape {tuple(arr.shape)} for {latents.shape[0]} latents; "
                "expected [B, C, H, W] or [B, C, D, H, W]"
            )
        return arr

    def _fingerprint(self, image_shape: tuple[int, ...]) -> dict[str, Any]:
        gen = self.generator
        digest = (
            _module_digest(gen)
            if isinstance(gen, torch.nn.Module)
            else getattr(gen, "__qualname__", repr(gen))
        )
        refs = None
        if self.references is not None:
            refs = hashlib.sha256(self.references.numpy().tobytes()).hexdigest()[:16]
        fp = {
            "n_refs": self.n_refs,
            "n_samples": self.n_samples,
            "seed": self.seed,
            "latent_dim": self.latent_dim,
            "image_shape": list(image_shape),
            "batch_size": self.batch_size,
            "block_size": self.block_size,
            "sampler": repr(self.sampler),
            "metrics": [repr(m) for m in self.metrics],
            "reducers": [r.fingerprint() for r in self.reducers],
            "images": self._fn_desc,
            "generator": digest,
            "references": refs,
        }
        return json.loads(json.dumps(fp))

    def _open_dir(
        self, out_dir: Path, fingerprint: dict[str, Any], resume: bool
    ) -> dict[int, Path]:
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "n_refs": self.n_refs,
            "n_samples": self.n_samples,
            "block_size": self.block_size,
            "fingerprint": fingerprint,
            "device": self.device.type,
        }
        (out_dir / "blocks").mkdir(parents=True, exist_ok=True)
        path = out_dir / "manifest.json"
        if path.is_file():
            old = _read_manifest(out_dir)
            if old["fingerprint"] != fingerprint:
                diff = sorted(k for k in fingerprint if fingerprint[k] != old["fingerprint"].get(k))
                raise ConfigError(
                    f"{out_dir} holds results of a different run (differs in {diff}); "
                    "use a new directory or the original settings"
                )
            if old.get("device") != manifest["device"]:
                warnings.warn(
                    f"resuming {out_dir} on {manifest['device']}, written on {old.get('device')}: "
                    "images may differ in the last bits between devices",
                    stacklevel=3,
                )
        else:
            atomic_write_text(path, json.dumps(manifest, indent=1))
        done = _done_blocks(out_dir, len(self.blocks))
        if done and not resume:
            raise ConfigError(
                f"{out_dir} already holds {len(done)} finished blocks; pass resume=True or use a new directory"
            )
        return done

    # -- run -------------------------------------------------------------------------
    def run(
        self,
        out_dir: str | Path | None = None,
        *,
        shard: str | tuple[int, int] | None = None,
        resume: bool = True,
    ) -> VariationResult:
        """Process this shard's blocks (all by default) and return the result.

        With ``out_dir`` every finished block is checkpointed there and finished blocks are
        skipped; the returned result reads from disk. Without it results stay in memory.
        """
        parse_shard(shard)
        gen = self.generator
        was_training = isinstance(gen, torch.nn.Module) and gen.training
        if was_training:
            gen.eval()  # type: ignore[union-attr]
        try:
            return self._run(out_dir, shard, resume)
        finally:
            if was_training:
                gen.train()  # type: ignore[union-attr]

    def _run(
        self, out_dir: str | Path | None, shard: str | tuple[int, int] | None, resume: bool
    ) -> VariationResult:
        probe = self._generate(torch.zeros(1, self.latent_dim))
        image_shape = tuple(int(s) for s in probe.shape[1:])
        fingerprint = self._fingerprint(image_shape)
        blocks = self.blocks
        mine = list(shard_blocks(len(blocks), shard))
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "n_refs": self.n_refs,
            "n_samples": self.n_samples,
            "block_size": self.block_size,
            "fingerprint": fingerprint,
        }

        store: dict[int, Path | dict[str, np.ndarray]] = {}
        path = None
        if out_dir is not None:
            path = Path(out_dir)
            done = self._open_dir(path, fingerprint, resume)
            store.update({b: p for b, p in done.items() if b in mine})
        todo = [b for b in mine if b not in store]

        info = RunInfo(
            n_refs=self.n_refs,
            n_samples=self.n_samples,
            latent_dim=self.latent_dim,
            image_shape=image_shape,
            metric_names=tuple(m.name for m in self.metrics),
            seed=self.seed,
        )
        if todo:
            self._run_blocks(todo, blocks, info, image_shape, store, path, mine)
        return VariationResult(manifest, {b: store[b] for b in mine if b in store})

    def _run_blocks(
        self,
        todo: list[int],
        blocks: list[tuple[int, int]],
        info: RunInfo,
        image_shape: tuple[int, ...],
        store: dict[int, Path | dict[str, np.ndarray]],
        path: Path | None,
        mine: list[int],
    ) -> None:
        bar = self._progress_bar(todo, blocks, mine)
        pool = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="matdyn-reduce")
            if self.overlap
            else None
        )
        pending: list[Future] = []
        state: dict[str, Any] = {}

        def submit(fn: Callable[..., None], *args: Any) -> None:
            # at most one task in flight: worker errors surface at once, memory stays bounded
            while pending:
                pending.pop().result()
            if pool is None:
                fn(*args)
            else:
                pending.append(pool.submit(fn, *args))

        def begin(b: int, idx: np.ndarray, z: torch.Tensor, ref_images: np.ndarray) -> None:
            self._check_images(ref_images, image_shape, idx[0])
            block = ReferenceBlock(index=b, ref_indices=idx, latents=z.numpy(), images=ref_images)
            block.states = {m.name: m.prepare(ref_images, block.cache) for m in self.metrics}
            for r in self.reducers:
                r.begin_block(block)
            state["block"] = block
            bar.update(len(idx))

        def update(a: int, c: int, eps: np.ndarray, images: np.ndarray) -> None:
            self._reduce_batch(state["block"], a, c, eps, images, image_shape)
            bar.update(c - a)

        def end(b: int) -> None:
            arrays = _block_outputs(self.reducers, state.pop("block"))
            if path is None:
                store[b] = arrays
            else:
                _save_npz(_block_path(path, b), arrays)
                store[b] = _block_path(path, b)

        try:
            for r in self.reducers:
                r.start(info)
            for b in todo:
                start, stop = blocks[b]
                idx = np.arange(start, stop, dtype=np.int64)
                z_block, eps_flat = self._block_latents(start, stop)  # [K, d], [K*N, d]
                latents = (z_block.repeat_interleave(self.n_samples, dim=0) + eps_flat).contiguous()
                ref_images = self._generate_batched(z_block)
                submit(begin, b, idx, z_block, ref_images)
                eps_np = eps_flat.numpy()
                for a in range(0, latents.shape[0], self.batch_size):
                    c = min(a + self.batch_size, latents.shape[0])
                    images = self._generate(latents[a:c])
                    submit(update, a, c, eps_np[a:c], images)
                submit(end, b)
            while pending:
                pending.pop().result()
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            for r in self.reducers:
                r.close()
            bar.close()

    def _reduce_batch(self, block: ReferenceBlock, a: int, c: int, eps: np.ndarray,
                      images: np.ndarray, image_shape: tuple[int, ...]) -> None:
        """Metrics of images a..c-1 of a block (rows sorted by (reference, j)) vs their
        references, then every reducer's ``update``."""
        pos = np.arange(a, c, dtype=np.int64)
        slots, js = np.divmod(pos, self.n_samples)
        self._check_images(images, image_shape, block.ref_indices[slots[0]])
        cache: dict = {}
        metrics = {m.name: np.asarray(m.compute(images, block.states[m.name], slots, cache),
                                      dtype=np.float64)
                   for m in self.metrics}
        batch = VariationBatch(block=block, ref_indices=block.ref_indices[slots], sample_indices=js,
                               ref_slots=slots, images=images, perturbations=eps,
                               metrics=metrics, cache=cache)
        for r in self.reducers:
            r.update(batch)

    def _progress_bar(self, todo: list[int], blocks: list[tuple[int, int]], mine: list[int]) -> Any:
        """A tqdm bar over this shard's images, starting at the ones already done."""
        from tqdm.auto import tqdm

        def images(bs: list[int]) -> int:
            return sum((blocks[b][1] - blocks[b][0]) * (self.n_samples + 1) for b in bs)

        return tqdm(total=images(mine), initial=images(mine) - images(todo), unit="img",
                    disable=not self.progress, desc=f"variations {self.sampler!r}",
                    smoothing=0.05, dynamic_ncols=True)

    def _generate_batched(self, z: torch.Tensor) -> np.ndarray:
        """Images of latents z [K, d] in generator calls of at most ``batch_size``."""
        return np.concatenate([self._generate(z[a : a + self.batch_size])
                               for a in range(0, len(z), self.batch_size)])

    def _block_latents(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """z [K, d] of references start..stop-1 and their ε [K*N, d], rows sorted by
        (reference, j); from :func:`variation_latents`, so they depend on (seed, i) only."""
        zs, epss = [], []
        for i in range(start, stop):
            ref = None if self.references is None else self.references[i]
            z, eps = variation_latents(self.seed, i, self.n_samples, self.latent_dim, self.sampler, ref)
            zs.append(z)
            epss.append(eps)
        return torch.stack(zs), torch.cat(epss)

    @staticmethod
    def _check_images(images: np.ndarray, image_shape: tuple[int, ...], first_ref: int) -> None:
        if tuple(images.shape[1:]) != image_shape:
            raise ConfigError(
                f"the generator changed its output shape to {images.shape[1:]} (was {image_shape})"
            )
        if not np.isfinite(images).all():
            raise AnalysisError(
                f"the generator produced NaN/inf images in the block of reference {first_ref}"
            )
