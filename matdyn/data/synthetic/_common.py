"""Shared machinery of the synthetic generators: seeded streams, chunked store writing.

Every generator splits its work into a *plan* (all random choices that span frames:
trajectories, layouts, particle shapes) and a per-frame renderer whose randomness comes
from a stream keyed by the frame index. The output therefore depends on the seed and the
parameters only, never on the chunk size used to stream it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from matdyn.errors import ConfigError

#: renderer contract: (start, stop) -> frames [n, C, *spatial] and per-frame truth pieces
RenderChunk = Callable[[int, int], tuple[np.ndarray, dict[str, np.ndarray]]]

P = TypeVar("P")


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """An independent generator for stream ``key`` of ``seed`` (SeedSequence spawn keys)."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in key)))


def make_params(cls: type[P], params: P | None, overrides: Mapping[str, Any]) -> P:
    """``params`` (or the class defaults) with keyword overrides applied, then validated."""
    base = params if params is not None else cls()
    if not dataclasses.is_dataclass(base) or not isinstance(base, cls):
        raise ConfigError(f"params must be a {cls.__name__}, got {type(params).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} option(s) {unknown}; valid options: {sorted(names)}"
        )
    out = dataclasses.replace(base, **overrides) if overrides else base
    validate = getattr(out, "validate", None)
    if validate is not None:
        validate()
    return out


def require(cond: bool, msg: str) -> None:
    """Raise :class:`ConfigError` with ``msg`` unless ``cond`` holds."""
    if not cond:
        raise ConfigError(msg)


@dataclass
class SyntheticData:
    """A synthetic dataset held in memory (tiny sizes): what :func:`write_store` would write."""

    frames: np.ndarray  # [N, C, *spatial] float32
    labels: dict[str, np.ndarray]
    truth: dict[str, np.ndarray]
    truth_attrs: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)  # StoreWriter keyword arguments


@dataclass
class Recipe:
    """Everything needed to produce one synthetic dataset, either in memory or as a store."""

    n_frames: int
    render_chunk: RenderChunk
    meta: dict[str, Any]  # StoreWriter keyword arguments (spatial_shape, channel_names, ...)
    labels: dict[str, np.ndarray]
    truth: dict[str, np.ndarray]  # plan-level truth (known before rendering)
    truth_attrs: dict[str, Any]
    attrs: dict[str, Any] = field(default_factory=dict)


def _join(pieces: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate(v, axis=0) for k, v in pieces.items()}


def materialize(recipe: Recipe, chunk_frames: int = 256) -> SyntheticData:
    """Render every frame into memory (use for tiny sizes)."""
    frames, pieces = [], {}
    for start in range(0, recipe.n_frames, chunk_frames):
        f, extra = recipe.render_chunk(start, min(start + chunk_frames, recipe.n_frames))
        frames.append(f)
        for k, v in extra.items():
            pieces.setdefault(k, []).append(v)
    truth = dict(recipe.truth)
    truth.update(_join(pieces))
    return SyntheticData(
        frames=np.concatenate(frames, axis=0).astype(np.float32, copy=False),
        labels=dict(recipe.labels),
        truth=truth,
        truth_attrs=dict(recipe.truth_attrs),
        meta=dict(recipe.meta),
    )


def write_store(
    path: str | os.PathLike,
    recipe: Recipe,
    *,
    chunk_frames: int = 128,
    overwrite: bool = False,
    progress: bool = True,
    desc: str = "synthetic",
) -> Path:
    """Stream ``recipe`` into a dataset store at ``path`` in chunks of ``chunk_frames``."""
    from tqdm.auto import tqdm

    from matdyn.data.store import StoreWriter

    require(chunk_frames >= 1, f"chunk_frames must be >= 1, got {chunk_frames}")
    path = Path(path)
    pieces: dict[str, list[np.ndarray]] = {}
    with StoreWriter(path, overwrite=overwrite, **recipe.meta) as w:
        with tqdm(total=recipe.n_frames, desc=desc, unit="frame", disable=not progress) as bar:
            # render and append one bounded chunk at a time
            for start in range(0, recipe.n_frames, chunk_frames):
                stop = min(start + chunk_frames, recipe.n_frames)
                frames, extra = recipe.render_chunk(start, stop)
                w.append(frames)
                for k, v in extra.items():
                    pieces.setdefault(k, []).append(v)
                bar.update(stop - start)
        for k, v in recipe.labels.items():
            w.set_label(k, v)
        for k, v in {**recipe.truth, **_join(pieces)}.items():
            w.set_truth(k, v)
        w.truth_attrs.update(recipe.truth_attrs)
        w.attrs.update(recipe.attrs)
    return path


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, ...], sigma: float
) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to zero mean, unit standard deviation."""
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    f -= f.mean()
    s = f.std()
    return f / s if s > 0 else f


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically safe logistic function."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x)))
