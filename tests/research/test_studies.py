"""The studies' building blocks (CV selection, shot contexts, prompts, sampling) and a small end-to-end run."""

import numpy as np
import pytest

from tuco_research.studies import alpha_mmlu, many_shot


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


def test_the_studies_and_tuco_steer_generate_the_same_tokens(tmp_path, tokenizer):
    """One generation path: a study's greedy and sampled completions equal `tuco steer`'s for the same prompts."""
    import json

    import tuco_kernels as tk
    from tests.fixtures.pairs import make_pair_models
    from tuco_kernels.cli import main as tuco
    from tuco_research.studies import jailbreak_detection

    pt, ft = make_pair_models("llama", tokenizer)
    pt.save_pretrained(tmp_path / "pt")
    ft.save_pretrained(tmp_path / "ft")
    tokenizer.save_pretrained(tmp_path / "ft")
    pair = tk.load_pair(tmp_path / "pt", tmp_path / "ft")
    chats = [[{"role": "user", "content": t}] for t in ("Can you help me?", "The river rose after the storm")]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"id": i, "messages": m}) + "\n" for i, m in enumerate(chats)))

    def steer(*flags):
        out = tmp_path / "o.jsonl"
        assert tuco(["steer", "--pretrained", str(tmp_path / "pt"), "--finetuned", str(tmp_path / "ft"), "--prompts",
                     str(tmp_path / "p.jsonl"), "--out", str(out), "--force", *flags]) == 0
        return [json.loads(line)["text"] for line in out.read_text().splitlines()]

    _, greedy = many_shot.harmful_rate(pair, chats)
    assert steer("--max-new-tokens", "30") == greedy
    sampled = jailbreak_detection.completions(pair, "Can you help me?", 3, 8, 0.7, 0.9, seed=5)
    cli = steer("--max-new-tokens", "8", "--sample", "--samples", "3", "--temperature", "0.7", "--top-p", "0.9",
                "--seed", "5")
    assert cli[:3] == sampled and len(set(sampled)) > 1     # three different draws, the same in both


@pytest.mark.slow
def test_web_vs_chat_study_runs_end_to_end(tmp_path, gemma_tokenizer):
    from tuco_research.studies import web_vs_chat as study_web_vs_chat

    assert study_web_vs_chat.main(["--n", "4", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "web_vs_chat.md").read_text()
    assert "| template |" in table and "| raw |" in table and "device:" in table
    assert (tmp_path / "web_vs_chat_hist_template.png").stat().st_size > 1000
    import pandas as pd

    rows = pd.read_csv(tmp_path / "web_vs_chat.csv")
    assert len(rows) == 16 and rows["tuco"].between(0, 1).all()


def test_alpha_mmlu_tasks_give_lm_eval_the_studys_prompts_and_answers(tmp_path, tokenizer):
    """The study's MMLU tasks through `tuco eval`: lm-eval's contexts are the protocol's chat prompts, and its
    per-question acc is the argmax over the letters of tk.next_token_logprobs's next-token distribution under the same α."""
    import copy
    import json

    pytest.importorskip("lm_eval")
    import tuco_kernels as tk
    from tests.fixtures.pairs import make_pair_models
    from tuco_kernels.cli import main as tuco
    from tuco_kernels.models.default_pair import CHAT_TEMPLATE

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = CHAT_TEMPLATE.read_text(encoding="utf-8")   # the default pair's: system folded into the turn
    pt, ft = make_pair_models("llama", tokenizer)
    for side, model in (("pt", pt), ("ft", ft)):
        model.save_pretrained(tmp_path / side)
        tok.save_pretrained(tmp_path / side)
    subject = "elementary_mathematics"
    qs = [{"id": f"q{i}", "question": f"What is {i} + {i}?", "choices": [str(2 * i + d) for d in (1, 0, 2, 3)],
           "answer": 1, "subject": subject} for i in range(4)]
    shots = [dict(qs[0], id="s0", question="What is 9 + 9?", choices=["18", "17", "19", "20"], answer=0)]
    (tmp_path / "tasks").mkdir()
    task = alpha_mmlu.write_task(tmp_path / "tasks", subject, qs, shots)
    out = tmp_path / "eval.json"
    assert tuco(["eval", "--pretrained", str(tmp_path / "pt"), "--finetuned", str(tmp_path / "ft"), "--tasks", task,
                 "--include-path", str(tmp_path / "tasks"), "--alpha-sweep", "0.5,1", "--num-fewshot", "1",
                 "--log-samples", "--apply-chat-template", "--fewshot-single-turn", "--engine", "--out", str(out)]) == 0
    pair = tk.load_pair(tmp_path / "pt", tmp_path / "ft")
    letters = [tok(c, add_special_tokens=False)["input_ids"][0] for c in alpha_mmlu.LETTERS]
    prompts = [alpha_mmlu.prompt_for(q, shots) for q in qs]
    for entry in json.loads(out.read_text())["sweep"]:
        samples = json.loads((tmp_path / entry["file"]).read_text())["samples"][task]
        expected = (tk.next_token_logprobs(pair, prompts, alpha=entry["alpha"], chat=True)[:, letters].argmax(-1) == 1).tolist()
        assert [bool(s["acc"]) for s in sorted(samples, key=lambda s: s["doc_id"])] == expected
        for s in samples:
            chat = [{"role": "user", "content": prompts[s["doc_id"]]}]
            assert alpha_mmlu.contexts_of(s) == {tok.apply_chat_template(chat, add_generation_prompt=True,
                                                                         tokenize=False)}
