"""Analyses built on descriptors and variations.

* :mod:`matdyn.analysis.case` — the ``Case`` protocol and ``run_case()``: the one shape of
  every case study (observe → fidelity → variations → filters → describe → group → recover
  → figures) and everything they share (seeds, summaries, CSV, figures, W&B keys).
* :mod:`matdyn.analysis.cases` — one package per case study (np_diffusion, ta_chart,
  brass_clump), registered with ``register_case``.
* :mod:`matdyn.analysis.run` — the entry of ``scripts/analyze.py`` (bundle, store, γ, W&B).
* :mod:`matdyn.analysis.clustering`, :mod:`~matdyn.analysis.fidelity` — shared pieces.
* The γ sweep, its records and the consecutive-frame differences live in :mod:`matdyn.gamma`.

Kept free of imports: use ``from matdyn.analysis.case import run_case``.
"""
