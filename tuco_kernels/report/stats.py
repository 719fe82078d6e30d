"""The report's statistics: AUC between groups with a seeded percentile bootstrap, per-group summaries, the mean
cumulative β profile with its 95% confidence band, and the top and bottom prompts."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import TucoError
from .read import ScoreTable


def auc(scores_a, scores_b) -> float:
    """P(a > b) + ½ P(a = b) for a drawn from ``scores_a`` and b from ``scores_b`` (Mann-Whitney U / n_a n_b)."""
    a = np.asarray(scores_a, dtype=np.float64)
    b = np.sort(np.asarray(scores_b, dtype=np.float64))
    if a.size == 0 or b.size == 0:
        raise ValueError("auc needs at least one score in each group")
    below = np.searchsorted(b, a, side="left")        # b < a
    tied = np.searchsorted(b, a, side="right") - below
    return float((below.sum() + 0.5 * tied.sum()) / (a.size * b.size))


def bootstrap_aucs(scores_a, scores_b, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """:func:`auc` of ``n_boot`` resamples, each group drawn with replacement on its own (a first, then b).

    Each value equals ``auc(a[ia], b[ib])`` for that resample's indices, computed from how often each score was
    drawn: b is sorted once and every a's place in it found once, so a resample costs O(n), not a sort.
    """
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    order = np.argsort(b, kind="stable")
    b_sorted = b[order]
    below = np.searchsorted(b_sorted, a, side="left")
    upto = np.searchsorted(b_sorted, a, side="right")
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    for i in range(n_boot):
        wa = np.bincount(rng.integers(0, a.size, a.size), minlength=a.size)
        wb = np.bincount(rng.integers(0, b.size, b.size), minlength=b.size)[order]
        cum = np.concatenate([[0], np.cumsum(wb)])
        out[i] = (wa @ cum[below] + 0.5 * (wa @ (cum[upto] - cum[below]))) / (a.size * b.size)
    return out


def bootstrap_auc(scores_a, scores_b, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`auc` (see :func:`bootstrap_aucs`)."""
    stats = bootstrap_aucs(scores_a, scores_b, n_boot, seed)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return float(lo), float(hi)


@dataclass
class AucResult:
    a: str
    b: str
    n_a: int
    n_b: int
    auc: float
    lo: float
    hi: float
    n_boot: int
    seed: int


def compare(table: ScoreTable, a: str, b: str, n_boot: int = 2000, seed: int = 0) -> AucResult:
    """AUC of TuCo, group ``a`` above group ``b``, over the rows that are not flagged."""
    va = table.valid.loc[table.valid["group"] == a, "tuco"].to_numpy()
    vb = table.valid.loc[table.valid["group"] == b, "tuco"].to_numpy()
    if va.size == 0 or vb.size == 0:
        empty = a if va.size == 0 else b
        raise TucoError(f"AUC of {a!r} above {b!r}: group {empty!r} has no rows with a valid TuCo")
    lo, hi = bootstrap_auc(va, vb, n_boot=n_boot, seed=seed)
    return AucResult(a, b, va.size, vb.size, auc(va, vb), lo, hi, n_boot, seed)


def summarise(table: ScoreTable) -> list[dict]:
    """Per group: n, flagged, and over the valid rows TuCo mean, sd, median, quartiles, mean tokens, OutputCo."""
    out = []
    for g in table.groups:
        rows = table.rows[table.rows["group"] == g]
        ok = rows[~rows["flagged"]]
        t = ok["tuco"].to_numpy()
        q1, med, q3 = np.percentile(t, [25, 50, 75]) if t.size else (np.nan,) * 3
        out.append({
            "group": g, "n": len(rows), "flagged": int(rows["flagged"].sum()), "valid": t.size,
            "mean": t.mean() if t.size else np.nan, "sd": t.std(ddof=1) if t.size > 1 else np.nan,
            "median": med, "q1": q1, "q3": q3,
            "tokens": ok["n_tokens"].mean() if ok["n_tokens"].notna().any() else np.nan,
            "output_co": ok["output_co"].mean() if ok["output_co"].notna().any() else np.nan,
        })
    return out


@dataclass
class Profile:
    group: str
    mean: np.ndarray      # [L] mean β_l over the group's valid rows
    half_width: np.ndarray  # [L] 1.96 standard errors of that mean
    n: int
    left_out: int         # valid rows without a complete β of the group's length


def beta_profile(table: ScoreTable, group: str) -> Profile | None:
    """Mean cumulative β_l of a group with a 95% normal-approximation interval; None without β."""
    betas = [b for b in table.valid.loc[table.valid["group"] == group, "beta"]]
    usable = [b for b in betas if b is not None and b.size and np.isfinite(b).all()]
    if not usable:
        return None
    lengths = pd.Series([b.size for b in usable])
    length = int(lengths.mode().iloc[0])
    stack = np.stack([b for b in usable if b.size == length])
    n = stack.shape[0]
    sem = stack.std(axis=0, ddof=1) / math.sqrt(n) if n > 1 else np.zeros(length)
    return Profile(group, stack.mean(axis=0), 1.96 * sem, n, len(betas) - n)


def extremes(table: ScoreTable, k: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The k valid rows with the highest TuCo and the k with the lowest (ties broken by file order)."""
    top = table.valid.sort_values("tuco", ascending=False, kind="mergesort")
    return top.head(k), table.valid.sort_values("tuco", kind="mergesort").head(k)
