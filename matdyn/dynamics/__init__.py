"""Particle dynamics in physical units: Monte Carlo displacement statistics of generator
variations, a tracking baseline on observed frames, the γ ↔ Δt calibration and the number
of motion modes (issue 12; paper §2.2, §3.3)."""

from __future__ import annotations

from matdyn.dynamics.locate import LocateParams, Located, estimate_locate_params, locate_stack
from matdyn.dynamics.variation import (
    LinkResult,
    VariationDisplacements,
    cloud_stats,
    link_to_reference,
    still_variation,
    variation_displacements,
)

__all__ = [
    "LinkResult",
    "LocateParams",
    "Located",
    "VariationDisplacements",
    "cloud_stats",
    "estimate_locate_params",
    "link_to_reference",
    "locate_stack",
    "still_variation",
    "variation_displacements",
]
