"""The studies' evaluation statistics against brute-force counting."""

import numpy as np
import pytest

from tuco_research.stats import auc, tpr_at_fpr


def test_auc_against_pair_counting():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 40).round(1), rng.normal(0, 1, 30).round(1)  # rounding makes ties
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auc(pos, neg) == pytest.approx(brute)
    assert auc([1, 2], [0]) == 1.0 and auc([0], [1, 2]) == 0.0
    with pytest.raises(ValueError):
        auc([], [1.0])


def test_tpr_at_fpr():
    neg = np.arange(20) / 20.0           # 0.00 … 0.95
    pos = np.array([0.5, 0.93, 0.96, 0.97, 0.99])
    # t = 0.90 lets through one negative of 20 (0.95 > 0.90): FPR 5%; positives above 0.90: 4 of 5
    assert tpr_at_fpr(pos, neg, 0.05) == 0.8
    # FPR 0 needs t ≥ 0.95, the largest negative: 0.96, 0.97, 0.99 remain, 3 of 5
    assert tpr_at_fpr(pos, neg, 0.0) == 0.6
    assert tpr_at_fpr([2.0], [1.0]) == 1.0 and tpr_at_fpr([1.0], [2.0]) == 0.0
    with pytest.raises(ValueError):
        tpr_at_fpr([], [1.0])


def test_every_import_of_the_research_package_resolves():
    """Each import in tuco_research, also inside functions, names a module that exists (scripts once reached
    each other through sys.path; a leftover bare `from plots import ...` would fail only when run)."""
    import ast
    import importlib.util
    from pathlib import Path

    import tuco_research

    root = Path(tuco_research.__file__).parent
    missing = []
    for path in sorted(root.rglob("*.py")):
        package = "tuco_research." + ".".join(path.relative_to(root).parent.parts) if path.parent != root \
            else "tuco_research"
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) \
                    if node.level else node.module
                names = [base]
            missing += [f"{path.name}:{node.lineno} {n}" for n in names if importlib.util.find_spec(n) is None]
    assert missing == []
