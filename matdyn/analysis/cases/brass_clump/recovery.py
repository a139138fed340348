"""Ground truth of the synthetic brass store against the groups (``summary["recovery"]``):
ARI of groups vs matched aging stage and vs the planted reactivity mode, and whether the
groups order by stage (Spearman / Kendall of group rank vs matched mean stage)."""

from __future__ import annotations

from typing import Any

import numpy as np

from matdyn.analysis.clustering import adjusted_rand, order_groups


def recover(labels: np.ndarray, go: Any, tm: Any, mode_names: list[str]) -> dict[str, Any]:
    """Scores of the cluster ``labels`` [V] (GroupOrder ``go``, StageMapping ``tm``)."""
    from scipy.stats import kendalltau, spearmanr

    rec: dict[str, Any] = {}
    if tm.stage is not None:
        rec["ari_stage"] = adjusted_rand(tm.stage, labels)
        # each variation's group rank (A = 0, ...) against its matched mean stage
        member_rank = np.array([list(go.groups).index(g) for g in labels], dtype=np.float64)
        sp = spearmanr(member_rank, tm.stage_mean)
        rec["spearman_stage"] = float(sp.statistic)
        rec["spearman_stage_pvalue"] = float(sp.pvalue)
        rec["kendall_stage"] = float(kendalltau(member_rank, tm.stage_mean).statistic)
        # groups are named by mean stage; "ordered" means the ranking is not chance
        rec["groups_order_by_stage"] = bool(sp.statistic > 0 and sp.pvalue < 0.05)
    if tm.matched_mode is not None:
        rec["ari_mode"] = adjusted_rand(tm.matched_mode, labels)
        rec["spearman_mode"] = order_groups(labels, tm.score, planted=tm.matched_mode).spearman
        rec["mode_names"] = list(mode_names)
    return rec
