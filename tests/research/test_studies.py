"""The studies' building blocks (CV selection, shot contexts, prompts, sampling) and a small end-to-end run."""

import numpy as np
import pytest
import torch

from tests.fixtures.tiny import build_model, tiny_config
from tuco_research.studies import alpha_mmlu, many_shot
from tuco_research.study import greedy_completions, sample_completions


def test_cross_validation_picks_alpha_on_the_other_folds():
    n = 10
    correct = np.zeros((len(alpha_mmlu.ALPHAS), n), dtype=bool)
    a125 = alpha_mmlu.ALPHAS.index(1.25)
    correct[a125, :8] = True                              # α = 1.25 is right on questions 0..7
    correct[alpha_mmlu.ALPHAS.index(1.0), 8:] = True      # α = 1 only on 8, 9
    folds = [np.array([0, 1]), np.array([2, 3]), np.array([4, 5]), np.array([6, 7]), np.array([8, 9])]
    acc, chosen = alpha_mmlu.cross_validated(correct, folds)
    assert chosen == [1.25] * 5          # every training split favours 1.25
    assert acc == pytest.approx(8 / 10)  # held-out: folds 0-3 right, fold 4 wrong under 1.25


def test_cross_validation_breaks_ties_toward_alpha_one():
    correct = np.ones((len(alpha_mmlu.ALPHAS), 5), dtype=bool)
    acc, chosen = alpha_mmlu.cross_validated(correct, [np.array([i]) for i in range(5)])
    assert chosen == [1.0] * 5 and acc == 1.0


def test_mmlu_prompt_format():
    q = {"question": "2+2?", "choices": ["3", "4", "5", "6"], "answer": 1, "subject": "elementary_mathematics"}
    text = alpha_mmlu.prompt_for(q, [dict(q, question="1+1?", answer=0)])
    assert text == ("The following are multiple choice questions about elementary mathematics. Answer with the letter "
                    "of the correct option.\n\n1+1?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer: A\n\n2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:")


def test_shot_contexts_are_nested_and_cut(tokenizer):
    pool = [{"user": f"question {i}", "assistant": "Sure, " + "step " * 50} for i in range(8)]
    four = many_shot.shots_context(tokenizer, 4, pool, answer_tokens=5)
    two = many_shot.shots_context(tokenizer, 2, pool, answer_tokens=5)
    assert four[:4] == two and len(four) == 8
    assert [m["role"] for m in four] == ["user", "assistant"] * 4
    assert all(len(tokenizer(m["content"], add_special_tokens=False)["input_ids"]) <= 6 for m in four[1::2])


def test_greedy_sampling_equals_hf_generate(tokenizer):
    model = build_model(tiny_config("llama", len(tokenizer), layers=2), seed=3).eval()
    ids = tokenizer("The river rose after", add_special_tokens=True)["input_ids"]
    got = sample_completions(model, tokenizer, ids, n=2, max_new_tokens=8, temperature=0)
    with torch.no_grad():
        want = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False, eos_token_id=[],
                              pad_token_id=tokenizer.pad_token_id)
    assert got[0] == got[1] == tokenizer.decode(want[0, len(ids):], skip_special_tokens=True)
    prompts = [ids, tokenizer("Hi", add_special_tokens=True)["input_ids"], ids[:3]]
    batched = greedy_completions(model, tokenizer, prompts, max_new_tokens=8, batch=2)   # left-padded batches
    assert batched == [sample_completions(model, tokenizer, p, n=1, max_new_tokens=8, temperature=0)[0] for p in prompts]
    sampled = sample_completions(model, tokenizer, ids, n=4, max_new_tokens=8, temperature=1.0, top_p=1.0, seed=0)
    assert sampled == sample_completions(model, tokenizer, ids, n=4, max_new_tokens=8, temperature=1.0, top_p=1.0, seed=0)


def test_web_vs_chat_study_runs_end_to_end(tmp_path, gemma_tokenizer):
    from tuco_research.studies import web_vs_chat as study_web_vs_chat

    assert study_web_vs_chat.main(["--n", "4", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "web_vs_chat.md").read_text()
    assert "| template |" in table and "| raw |" in table and "device:" in table
    assert (tmp_path / "web_vs_chat_hist_template.png").stat().st_size > 1000
    import pandas as pd

    rows = pd.read_csv(tmp_path / "web_vs_chat.csv")
    assert len(rows) == 16 and rows["tuco"].between(0, 1).all()
