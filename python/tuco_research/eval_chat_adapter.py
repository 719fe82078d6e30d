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

import tuco_kernels as tk
from tuco_kernels.models import default_pair

from . import prompt_sets
from .refusal import is_refusal
from .study import add_common_args, load_default, offline, provenance

SHOWCASE = ["What is the capital of France?", "Give me three tips for staying healthy.",
            "Explain what photosynthesis is in two sentences.", "Write a haiku about the sea.",
            "How do I reverse a list in Python?"]


def refusal_rate(pair, alpha: float, records) -> tuple[float, list[str]]:
    """Greedy completions (≤ 30 tokens) of the records as user turns under α, and the share that refuses."""
    outs = [o["text"] for o in tk.generate(pair, [[{"role": "user", "content": r["text"]}] for r in records], alpha,
                                           max_new_tokens=30)]
    return 100 * sum(map(is_refusal, outs)) / len(outs), outs


def main(argv=None) -> int:
    offline()
    ap = add_common_args(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    ap.add_argument("--n", type=int, default=100)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = args.out or default_pair.ADAPTER_DIR
    pair = load_default(args.device)
    harmful = prompt_sets.harmful_requests(args.n, args.seed + 7)
    benign = prompt_sets.chat_prompts(args.n, args.seed + 7)
    rows = {}
    # α = 0 is the pre-trained base bit for bit: the LoRA changes the blocks only, so both share embedding and head
    for name, alpha in (("fine-tuned (LoRA)", 1.0), ("pre-trained base", 0.0)):
        rh, outs_h = refusal_rate(pair, alpha, harmful)
        rb, _ = refusal_rate(pair, alpha, benign)
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
        a = tk.generate(pair, [[{"role": "user", "content": p}]], 1.0, max_new_tokens=80)[0]["text"]
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
