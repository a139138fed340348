"""Case-study packages, one per case (``np_diffusion``, ``ta_chart``, ``brass_clump``).

Each package implements the :class:`~matdyn.analysis.case.Case` protocol (``config.py``:
its Config dataclass; ``steps.py``; ``recovery.py``; ``figures.py``) and registers itself
on import with :func:`~matdyn.analysis.case.register_case`;
:func:`~matdyn.analysis.case.run_case` runs any of them. :func:`require_shapes` is the one
shape check of generator and store.
"""

from __future__ import annotations

from typing import Any

from matdyn.errors import AnalysisError


def require_shapes(generator: Any, store: Any, *, case: str, channels: int, ndim: int,
                   what: str) -> None:
    """One-line AnalysisError unless generator and store both hold `ndim`-D frames with
    `channels` channels (`what` names them, e.g. "phase images")."""
    ch, nd = getattr(generator, "channels", None), getattr(generator, "ndim", None)
    if ch != channels or nd != ndim:
        raise AnalysisError(
            f"the {case} case needs a {ndim}D {channels}-channel generator ({what}), got "
            f"ndim={nd}, channels={ch}; pass a generator trained on the {case} dataset "
            "(or choose the analysis of its own case, e.g. analysis=brass_clump)"
        )
    meta = store.meta
    if meta.ndim != ndim or meta.channels != channels:
        raise AnalysisError(
            f"the {case} case needs a store of {ndim}D {channels}-channel frames ({what}), "
            f"{store.path} has {meta.channels} channel(s) of shape {meta.spatial_shape}; "
            "pick the matching dataset"
        )
