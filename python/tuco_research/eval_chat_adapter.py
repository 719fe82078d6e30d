"""Evaluate the default pair's chat LoRA: refusals on held-out harmful and benign requests, and sample answers.

    python -m tuco_research.eval_chat_adapter [--n 100]

Greedy completions (≤ 30 tokens, as the paper's §5.4 samples) for ``--n`` held-out AdvBench requests and ``--n``
held-out benign chat requests (MT-Bench questions without reference answers and NQ-open), each as the user turn
of the chat template, from the fine-tuned model and, for contrast, from the pre-trained base on the same token
ids. A completion is a refusal when it contains a string of the paper's refusal list (App. E.4). Five benign
prompts get longer answers (80 tokens) to show answer quality. Writes evaluation.md into the adapter folder
(or --out) and prints it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .study import add_common_args, chat_ids, greedy_completions, load_default, offline, provenance

from tuco_kernels.models import default_pair

from . import prompt_sets
from .refusal import is_refusal

SHOWCASE = ["What is the capital of France?", "Give me three tips for staying healthy.",
            "Explain what photosynthesis is in two sentences.", "Write a haiku about the sea.",
            "How do I reverse a list in Python?"]


def refusal_rate(model, tokenizer, records) -> tuple[float, list[str]]:
    outs = greedy_completions(model, tokenizer, [chat_ids(tokenizer, [{"role": "user", "content": r["text"]}])
                                                 for r in records])
    return 100 * sum(map(is_refusal, outs)) / len(outs), outs


def main(argv=None) -> int:
    offline()
    ap = add_common_args(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    ap.add_argument("--n", type=int, default=100)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = args.out or default_pair.ADAPTER_DIR
    pair = load_default(args.device)
    tok = pair.tokenizer
    harmful = prompt_sets.harmful_requests(args.n, args.seed + 7)
    benign = prompt_sets.chat_prompts(args.n, args.seed + 7)
    rows = {}
    for name, model in (("fine-tuned (LoRA)", pair.finetuned), ("pre-trained base", pair.pretrained)):
        rh, outs_h = refusal_rate(model, tok, harmful)
        rb, _ = refusal_rate(model, tok, benign)
        rows[name] = (rh, rb, outs_h)
        print(f"{name}: refuses {rh:.0f}% of AdvBench, {rb:.0f}% of benign", flush=True)
    lines = ["# Evaluation of the chat LoRA (held-out prompts)", "",
             f"Greedy completions, ≤ 30 tokens, each prompt the user turn of the Gemma chat template; refusal = contains "
             f"a string of the paper's refusal list. {args.n} AdvBench requests, {args.n} benign requests "
             f"(MT-Bench without reference answers + NQ-open); none of them was used in training.", "",
             "| model | refuses AdvBench (%) | refuses benign (%) |", "|---|---|---|"]
    lines += [f"| {name} | {rh:.0f} | {rb:.0f} |" for name, (rh, rb, _) in rows.items()]
    lines += ["", "## Sample answers (fine-tuned, greedy, ≤ 80 tokens)", ""]
    for p in SHOWCASE:
        a = greedy_completions(pair.finetuned, tok, [chat_ids(tok, [{"role": "user", "content": p}])],
                               max_new_tokens=80)[0]
        lines += [f"**{p}**", "", "> " + a.strip().replace("\n", "\n> "), ""]
    lines += ["## First five AdvBench completions (fine-tuned)", ""]
    lines += [f"- *{r['text']}* → {o.strip()[:160]!r}" for r, o in zip(harmful[:5], rows["fine-tuned (LoRA)"][2][:5])]
    meta = provenance(t0, n=args.n, seed=args.seed)
    lines += ["", ", ".join(f"{k}: {v}" for k, v in meta.items())]
    text = "\n".join(lines) + "\n"
    tmp = Path(out) / ".evaluation.md.part"
    tmp.write_text(text)
    os.replace(tmp, Path(out) / "evaluation.md")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
