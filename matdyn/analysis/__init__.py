"""Analyses built on descriptors and variations (continuity, fidelity, clustering, cases).

Kept free of imports: use ``from matdyn.analysis.continuity import ...``.
"""
