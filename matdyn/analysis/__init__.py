"""Analyses built on descriptors and variations (fidelity, clustering, cases; the γ sweep is
:mod:`matdyn.gamma`).

Kept free of imports: use ``from matdyn.analysis.clustering import ...``.
"""
