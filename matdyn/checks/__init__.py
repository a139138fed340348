"""Run-time capability detection and the one-command GPU check (``scripts/gpu_check.py``).

``from matdyn.checks import capabilities`` is cheap (torch only); the checks themselves live
in :mod:`matdyn.checks.gpu` (runner) and :mod:`matdyn.checks.tasks` (what each check does).
"""

from matdyn.checks.hardware import Capabilities, bf16_probe, capabilities, resolve_precision

__all__ = ["Capabilities", "bf16_probe", "capabilities", "resolve_precision"]
