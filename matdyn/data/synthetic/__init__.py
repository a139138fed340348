"""Seeded synthetic stand-ins for the paper's three case studies, each with ground truth.

Each module offers ``simulate(...)`` (frames and truth in memory, for tiny sizes),
``recipe(...)`` (the plan, rendered lazily) and ``generate(path, ...)`` (streams a dataset
store at paper scale by default). The same seed and parameters give identical arrays.

* :mod:`~matdyn.data.synthetic.ta_chart` — Ta test chart translating and rotating (§3.2);
* :mod:`~matdyn.data.synthetic.np_diffusion` — gold NPs with three motion modes (§3.3);
* :mod:`~matdyn.data.synthetic.brass_clump` — 3-channel brass particles sulfidising (§3.4).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from matdyn.data.synthetic import brass_clump, np_diffusion, ta_chart
from matdyn.data.synthetic._common import SyntheticData
from matdyn.errors import ConfigError

#: generator modules by dataset name (the ``source`` of a store is ``synthetic:<name>``)
GENERATORS = {"ta_chart": ta_chart, "np_diffusion": np_diffusion, "brass_clump": brass_clump}


def generate(name: str, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Write the synthetic dataset ``name`` to ``path``; ``kwargs`` go to its ``generate``."""
    if name not in GENERATORS:
        raise ConfigError(f"unknown synthetic dataset '{name}'; choose one of {sorted(GENERATORS)}")
    return GENERATORS[name].generate(path, **kwargs)


__all__ = ["GENERATORS", "SyntheticData", "brass_clump", "generate", "np_diffusion", "ta_chart"]
