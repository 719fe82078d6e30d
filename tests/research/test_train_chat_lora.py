"""The default adapter's recipe: seeded and reproducible, chat-formatted, trained only on non-evaluation sources."""

import pytest
import json

from tuco_research import train_chat_lora


@pytest.mark.slow
def test_two_short_runs_with_one_seed_give_the_same_adapter(tmp_path, gemma_tokenizer):
    args = ["--steps", "2", "--batch", "2", "--chatterbot", "8", "--trivia", "8", "--max-tokens", "64"]
    for name in ("a", "b"):
        assert train_chat_lora.main(args + ["--out", str(tmp_path / name)]) == 0
    a, b = (tmp_path / "a"), (tmp_path / "b")
    assert (a / "adapter_model.safetensors").read_bytes() == (b / "adapter_model.safetensors").read_bytes()
    ca, cb = (json.loads((d / "training_config.json").read_text()) for d in (a, b))
    assert ca["loss_curve"] == cb["loss_curve"] and len(ca["loss_curve"]) == 2
    assert json.loads((a / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        "gemma-3-270m-q4km-dequant-fp32"
    assert not (a / "README.md").exists()


@pytest.mark.slow
def test_training_data_excludes_every_evaluation_source(gemma_tokenizer):
    examples = train_chat_lora.training_examples(0, n_chatterbot=50, n_trivia=50)
    sources = {e["source"].split(":")[1] for e in examples}
    for held_out in ("adv_bench", "nq_open", "mmlu", "enwiki", "donotanswer", "question.jsonl"):
        assert not any(held_out in s for s in sources), held_out
    refusals = [e for e in examples if e["messages"][-1]["content"] in train_chat_lora.REFUSALS]
    assert len(refusals) == 300 + 313          # HarmBench without context strings + StrongREJECT
    ids, labels = train_chat_lora.encode(gemma_tokenizer, examples[0]["messages"], 10_000)
    rendered = gemma_tokenizer.apply_chat_template(examples[0]["messages"], tokenize=False)
    assert gemma_tokenizer.decode(ids) == rendered
    assert any(t != -100 for t in labels) and labels[0] == -100
