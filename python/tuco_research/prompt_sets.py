"""The evaluation prompt sets of the demo and the studies, all held out from the default adapter's training.

* ``web``: 97-token Wikipedia excerpts (the paper cut 97-token substrings of OpenWebText; §4.2).
* ``chat``: user requests: the 50 MT-Bench questions without a reference answer (the 30 with one trained
  the adapter) and NQ-open questions, half and half.
* ``harmful``: AdvBench behaviours (the paper's harmful prompts).

Every set is a list of records ``{"id", "text", "set", "source"}``, sampled with a seed.
"""

from __future__ import annotations

import json

from tuco_kernels.models.default_pair import ADAPTER_DIR

from . import datasets


def _tag(records: list[dict], name: str) -> list[dict]:
    return [{"id": r["id"], "text": r["text"], "set": name, "source": r["source"]} for r in records]


def web_text(tokenizer, n: int = 100, seed: int = 0) -> list[dict]:
    """``n`` 97-token Wikipedia excerpts (gensim's enwiki extract), tokens counted by ``tokenizer``."""
    return _tag(datasets.wikipedia_excerpts(tokenizer, n=n, seed=seed), "web")


def chat_prompts(n: int = 100, seed: int = 0) -> list[dict]:
    """``n`` chat requests: MT-Bench questions with no reference answer, topped up with NQ-open questions."""
    trained = {r["id"] for r in datasets.mt_bench_reference_answers()}
    mt = [r for r in datasets.mt_bench() if r["id"] not in trained]
    take_mt = min(len(mt), n // 2)
    return _tag(datasets.sample(mt, take_mt, seed) + datasets.sample(datasets.nq_open(), n - take_mt, seed), "chat")


def chatterbot_prompts(n: int = 100, seed: int = 0) -> list[dict]:
    """``n`` distinct chatterbot-corpus openers that the default adapter did not train on (its data manifest)."""
    trained = set(json.loads((ADAPTER_DIR / "data_manifest.json").read_text())["examples"])
    seen, rows = set(), []
    for r in datasets.chatterbot_pairs():
        if r["id"] not in trained and r["text"].lower() not in seen:
            seen.add(r["text"].lower())
            rows.append(r)
    return _tag(datasets.sample(rows, n, seed), "chat")


def harmful_requests(n: int = 100, seed: int = 0) -> list[dict]:
    """``n`` AdvBench harmful behaviours."""
    return _tag(datasets.sample(datasets.advbench(), n, seed), "harmful")
