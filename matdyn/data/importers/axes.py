"""Axis interpretation for imported arrays: the one place that maps a source's axis order to
matdyn's frame layout ``[N, C, (D,) H, W]``.

Axis letters follow tifffile's series codes (also used by OME-TIFF and ImageJ):

* ``Y``, ``X`` — image rows and columns (always required);
* ``Z`` — depth: the spatial D axis when ``ndim=3``, another frame axis when ``ndim=2``;
* ``C`` — channels (kept as they are);
* ``S`` — colour samples of one pixel (RGB, RGBA, grey + alpha): alpha is dropped, three
  equal colour samples collapse to one grey channel (lossless);
* anything else (``T`` time, ``Q``/``I`` generic pages, ``P``, ``R``, ``A``, ...) — frames.

Several frame axes are flattened into N in their order of appearance (``TZCYX`` with
``ndim=2`` gives T·Z frames). With ``ndim=3`` and no ``Z``, the frame axis nearest to Y is
taken as depth (a plain page stack read as one volume).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from matdyn.errors import ImportDataError

# ITU-R BT.601 luma weights (as PIL's convert("L") uses): grey = 0.299 R + 0.587 G + 0.114 B
LUMA_BT601 = (0.299, 0.587, 0.114)
SPATIAL = "ZYX"
SMALL_CHANNELS = 4  # a per-frame axis of size <= 4 next to larger ones looks like channels


@dataclass
class Block:
    """A piece of a source: an array, its axis letters and where it came from."""

    array: np.ndarray
    axes: str
    origin: str


@dataclass
class Notes:
    """What the axis mapping did, gathered over all blocks for the import summary."""

    axes: list[str] = field(default_factory=list)
    dropped_alpha: bool = False
    grey_collapsed: bool = False
    luma: bool = False
    colour: bool = False

    def add_axes(self, text: str) -> None:
        if text not in self.axes:
            self.axes.append(text)


def check_axes(axes: str, shape: tuple[int, ...], origin: str) -> str:
    """Validate an axis string against an array shape; return it upper-cased."""
    ax = str(axes).strip().upper()
    if len(ax) != len(shape) or len(set(ax)) != len(ax) or not ax.isalpha():
        raise ImportDataError(
            f"{origin}: axes={axes!r} does not fit an array of shape {tuple(shape)}; give one "
            f"distinct letter per dimension ({len(shape)}), e.g. axes="
            f"{'TYX' if len(shape) == 3 else 'TCYX' if len(shape) == 4 else 'YX'}"
        )
    if "Y" not in ax or "X" not in ax:
        raise ImportDataError(f"{origin}: axes={ax} has no Y and X; every frame needs both")
    if "C" in ax and "S" in ax:
        raise ImportDataError(f"{origin}: axes={ax} has both C and S; use one channel axis")
    return ax


def roles(axes: str, ndim: int, origin: str) -> str:
    """One role per axis: N (frame), C (channel), S (colour), Z, Y, X."""
    out = []
    for a in axes:
        if a in "YXCS":
            out.append(a)
        elif a == "Z" and ndim == 3:
            out.append("Z")
        else:
            out.append("N")
    if ndim == 3 and "Z" not in out:
        frame_pos = [i for i, r in enumerate(out) if r == "N"]
        if not frame_pos:
            raise ImportDataError(
                f"{origin}: ndim=3 needs a depth axis but axes {axes} have none; pass axes= "
                "with a Z (e.g. axes=ZYX or axes=TZYX), or ndim=2 for images"
            )
        out[frame_pos[-1]] = "Z"
    return "".join(out)


def describe(axes: str, role: str) -> str:
    """Readable axis mapping, e.g. 'TZCYX (T->frames, C->channels, ZYX)'."""
    parts = []
    frames = [a for a, r in zip(axes, role) if r == "N"]
    if frames:
        parts.append(f"{''.join(frames)}->frames")
    ch = [a for a, r in zip(axes, role) if r in "CS"]
    if ch:
        parts.append(f"{''.join(ch)}->{'colour' if ch == ['S'] else 'channels'}")
    depth = [a for a, r in zip(axes, role) if r == "Z"]
    if depth and depth[0] != "Z":
        parts.append(f"{depth[0]}->depth")
    return f"{axes} ({', '.join(parts)})" if parts else axes


def to_frames(block: Block, ndim: int, notes: Notes) -> np.ndarray:
    """Block -> float32 ``[N, C, *spatial]`` using its axis letters.

    Errors: ImportDataError naming the origin when the axes cannot give ``ndim`` spatial
    axes or the dtype is not numeric.
    """
    arr = np.asarray(block.array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ImportDataError(f"{block.origin}: dtype {arr.dtype} is not real-valued numeric")
    ax = check_axes(block.axes, arr.shape, block.origin)
    role = roles(ax, ndim, block.origin)
    notes.add_axes(describe(ax, role))
    n_ax = [i for i, r in enumerate(role) if r == "N"]
    c_ax = [i for i, r in enumerate(role) if r in "CS"]
    s_ax = [role.index(r) for r in ("Z", "Y", "X") if r in role]
    arr = np.transpose(arr, n_ax + c_ax + s_ax)
    spatial = arr.shape[len(n_ax) + len(c_ax):]
    n = int(np.prod(arr.shape[: len(n_ax)], dtype=np.int64)) if n_ax else 1
    c = int(np.prod(arr.shape[len(n_ax): len(n_ax) + len(c_ax)], dtype=np.int64)) if c_ax else 1
    arr = arr.reshape(n, c, *spatial)
    if "S" in role:
        arr = _colour(arr, notes, block.origin)
    return arr


def _colour(arr: np.ndarray, notes: Notes, origin: str) -> np.ndarray:
    """Colour samples: drop alpha (2 = grey+alpha, 4 = RGBA); equal RGB -> one grey channel."""
    c = arr.shape[1]
    if c in (2, 4):
        arr = arr[:, : c - 1]
        notes.dropped_alpha = True
    if arr.shape[1] == 3:
        equal = np.array_equal(arr[:, 0], arr[:, 1]) and np.array_equal(arr[:, 0], arr[:, 2])
        if equal and not notes.colour:  # once colour was seen, later blocks stay colour
            notes.grey_collapsed = True
            return arr[:, :1]
        notes.colour = True
    elif arr.shape[1] != 1:
        raise ImportDataError(
            f"{origin}: {c} colour samples per pixel; expected grey, grey+alpha, RGB or RGBA "
            "(pass axes= with C for a channel axis)"
        )
    return arr


def select_channels(frames: np.ndarray, grey: bool, channels: list[int] | None,
                    origin: str, notes: Notes) -> np.ndarray:
    """Apply ``channels=`` (pick by index) then ``grey=true`` (RGB -> BT.601 luma)."""
    if channels is not None:
        bad = [i for i in channels if not -frames.shape[1] <= int(i) < frames.shape[1]]
        if bad or not channels:
            raise ImportDataError(
                f"{origin}: channels={list(channels)} but frames have {frames.shape[1]} "
                f"channel(s); pick indices 0..{frames.shape[1] - 1}"
            )
        frames = frames[:, [int(i) for i in channels]]
    if grey and frames.shape[1] != 1:
        if frames.shape[1] != 3:
            raise ImportDataError(
                f"{origin}: grey=true needs RGB (3 channels) but frames have {frames.shape[1]}; "
                "use channels=[i] to pick one"
            )
        w = np.asarray(LUMA_BT601, np.float32).reshape(1, 3, *([1] * (frames.ndim - 2)))
        frames = (frames.astype(np.float32) * w).sum(axis=1, keepdims=True)
        notes.luma = True
        notes.colour = False
    return frames


def infer_frame_axes(shape: tuple[int, ...], ndim: int, n_names: int | None,
                     origin: str, lead: str = "") -> str:
    """Axis letters of one array frame whose layout carries no metadata (.npy, HDF5).

    ``lead`` is prepended for leading axes already known (``"T"`` for a stack). A frame
    with ``ndim`` dims is spatial; one more dim is a channel axis, first or last: the end
    whose size matches ``len(channel_names)``, else the end of size <= 4 next to a larger
    one. Anything else is ambiguous and raises an error naming the ``axes=`` to pass.
    """
    sp = SPATIAL[-ndim:]
    rest = shape[len(lead):]
    if len(rest) == ndim:
        return lead + sp
    first_last = {"C" + sp: "first", sp + "C": "last"}
    if len(rest) == ndim + 1:
        a, b = rest[0], rest[-1]
        if n_names:
            if a == n_names and b != n_names:
                return lead + "C" + sp
            if b == n_names and a != n_names:
                return lead + sp + "C"
        elif a <= SMALL_CHANNELS < b:
            return lead + "C" + sp
        elif b <= SMALL_CHANNELS < a:
            return lead + sp + "C"
        opts = " or ".join(f"axes={lead}{k} (channels {v})" for k, v in first_last.items())
        raise ImportDataError(
            f"{origin}: frame shape {tuple(rest)} is ambiguous for ndim={ndim}; pass {opts}"
        )
    raise ImportDataError(
        f"{origin}: array of shape {tuple(shape)} does not fit ndim={ndim} frames "
        f"({lead}{sp} or with a channel axis); pass axes= (e.g. axes={lead or 'T'}C{sp}) or "
        f"{'ndim=3 for volumes' if ndim == 2 else 'ndim=2 for images'}"
    )


def infer_stack_axes(shape: tuple[int, ...], ndim: int, n_names: int | None, origin: str) -> str:
    """Axis letters of a stack without metadata (one .npy file, an HDF5 dataset).

    ``ndim`` dims: one frame; ``ndim + 1``: frames of one channel, unless the last axis is
    channel-sized (<= 4) and the others are not — then it may be one frame with channels
    last, and the error names both ``axes=``; ``ndim + 2``: frames with a channel axis
    (see :func:`infer_frame_axes`).
    """
    sp = SPATIAL[-ndim:]
    if len(shape) == ndim:
        return sp
    if len(shape) == ndim + 1:
        if shape[-1] <= SMALL_CHANNELS < min(shape[:-1]):
            raise ImportDataError(
                f"{origin}: shape {tuple(shape)} is ambiguous for ndim={ndim}; pass axes=T{sp} "
                f"({shape[0]} frames) or axes={sp}C (one frame, {shape[-1]} channels last)"
            )
        return "T" + sp
    return infer_frame_axes(shape, ndim, n_names, origin, lead="T")
