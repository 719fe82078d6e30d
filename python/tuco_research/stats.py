"""Evaluation statistics of the studies: AUC (paper Table 1) and TPR at a fixed FPR (paper §5.4)."""

from __future__ import annotations

import numpy as np


def auc(scores_pos, scores_neg) -> float:
    """Area under the ROC curve: P(score_pos > score_neg) + ½ P(tie) (Mann-Whitney U / n_pos·n_neg)."""
    pos, neg = np.asarray(scores_pos, dtype=np.float64), np.asarray(scores_neg, dtype=np.float64)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("auc needs at least one score in each class")
    allv = np.concatenate([pos, neg])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty_like(allv)
    sorted_v = allv[order]
    # average ranks over ties
    i = 0
    while i < len(sorted_v):
        j = i
        while j + 1 < len(sorted_v) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


def tpr_at_fpr(scores_pos, scores_neg, fpr: float = 0.05) -> float:
    """Largest true-positive rate of a threshold rule "score > t" whose false-positive rate is at most ``fpr``.

    Thresholds range over the observed scores; ties count against the rule (a negative equal to t is not
    a false positive, a positive equal to t is not a true one), so the value is achievable, not interpolated.
    """
    pos, neg = np.asarray(scores_pos, dtype=np.float64), np.asarray(scores_neg, dtype=np.float64)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("tpr_at_fpr needs at least one score in each class")
    best = 0.0
    for t in np.concatenate([[-np.inf], np.unique(np.concatenate([pos, neg]))]):
        if (neg > t).mean() <= fpr:
            best = max(best, float((pos > t).mean()))
    return best
