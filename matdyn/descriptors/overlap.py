"""Intersection over union of binary masks (2D) and volumes (IOU₃D, paper §3.4.1).

One code path serves both: a mask is any boolean array, 2D or 3D. Two empty masks are
identical and get IoU = 1.
"""

from __future__ import annotations

import numpy as np

from matdyn.errors import AnalysisError

__all__ = ["iou", "iou_3d", "iou_batch"]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU = |a ∧ b| / |a ∨ b| of two masks of the same shape (1.0 when both are empty).

    >>> a = np.zeros((4, 4), bool); a[:2] = True
    >>> b = np.zeros((4, 4), bool); b[1:3] = True
    >>> round(iou(a, b), 4)
    0.3333
    """
    return float(iou_batch(np.asarray(a)[None], np.asarray(b))[0])


def iou_3d(a: np.ndarray, b: np.ndarray) -> float:
    """IOU₃D of two volumes [D, H, W] (the paper's shape similarity, §3.4.1).

    >>> a = np.zeros((2, 2, 2), bool); a[0] = True
    >>> iou_3d(a, np.ones((2, 2, 2), bool))
    0.5
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 3:
        raise AnalysisError(f"iou_3d takes volumes [D, H, W], got shape {a.shape}")
    return iou(a, b)


def iou_batch(masks: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """IoU of every mask of a batch [B, *spatial] against ``reference`` -> [B] float64.

    ``reference`` is one mask [*spatial] (shared) or a batch [B, *spatial] (pairwise).

    >>> ref = np.zeros((3, 3), bool); ref[1, 1] = True
    >>> m = np.stack([ref, ~ref, np.zeros_like(ref)])
    >>> iou_batch(m, ref).tolist()
    [1.0, 0.0, 0.0]
    """
    m = np.asarray(masks, dtype=bool)
    r = np.asarray(reference, dtype=bool)
    if m.ndim < 2 or (r.shape != m.shape and r.shape != m.shape[1:]):
        raise AnalysisError(
            f"iou_batch: masks {m.shape} and reference {r.shape} do not match; "
            "reference must be [*spatial] or [B, *spatial]"
        )
    n = m.shape[0]
    inter = np.logical_and(m, r).reshape(n, -1).sum(axis=1)
    union = np.logical_or(m, r).reshape(n, -1).sum(axis=1)
    return np.divide(inter, union, out=np.ones(n, dtype=np.float64), where=union > 0)
