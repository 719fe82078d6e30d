"""Study: jailbreaks lower TuCo (paper §5.3, Fig. 4): many-shot jailbreaking and jailbreak templates.

    python -m tuco_research.studies.many_shot [--n 8] [--shots 1,2,4,8,16,32,64,128] [--n-templates 40]

Many-shot: k harmful questions with *compliant* answers (PyRIT's many-shot examples, each answer cut to
``--answer-tokens`` tokens to keep 128 shots within a CPU budget) precede an AdvBench request, all as turns of
the chat template. The k-shot context is the first k of one seeded list, so contexts are nested as k grows.
For each k: TuCo at the last token (mean ± sem over requests) and the harmful-response rate: the share of greedy
completions (≤ 30 tokens, α = 1, i.e. the fine-tuned model) without any of the paper's refusal strings.

Templates: the paper's third attack is GCG, whose adversarial suffixes need gradient search on each model and
are not available offline; instead each AdvBench request is wrapped in a PyRIT jailbreak template (DAN-style,
87 single-slot templates, one drawn per request), and TuCo with vs without the wrapper is compared.

Writes many_shot.{md,csv,json}, many_shot.png, templates.csv, templates_hist.png into out/studies/many_shot/.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import numpy as np
import pandas as pd

from ..plots import line_plot, tuco_histograms
from ..study import add_common_args, load_default, offline, output_dir, provenance, write_outputs

import tuco_kernels as tk
from .. import datasets, prompt_sets
from ..stats import auc
from ..refusal import is_refusal

PAPER = ("paper Fig. 4 (psychopathy MSJ, digitized): TuCo at 1 → 128 shots: Llama 2 7B .285 → .220, "
         "Llama 2 13B .270 → .235, Gemma 7B .295 → .250, Llama 3 8B flat (.255 → .255)")


def shots_context(tokenizer, k: int, pool: list[dict], answer_tokens: int) -> list[dict]:
    messages = []
    for ex in pool[:k]:
        ids = tokenizer(ex["assistant"], add_special_tokens=False)["input_ids"][:answer_tokens]
        messages += [{"role": "user", "content": ex["user"]},
                     {"role": "assistant", "content": tokenizer.decode(ids).strip()}]
    return messages


def harmful_rate(pair, message_lists) -> tuple[float, list[str]]:
    outs = [o["text"] for o in tk.generate(pair, message_lists, 1.0, max_new_tokens=30)]
    return float(np.mean([not is_refusal(o) for o in outs])), outs


def main(argv=None) -> int:
    offline()
    ap = add_common_args(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    ap.add_argument("--n", type=int, default=8, help="AdvBench requests per shot count")
    ap.add_argument("--shots", default="1,2,4,8,16,32,64,128")
    ap.add_argument("--answer-tokens", type=int, default=32)
    ap.add_argument("--max-question-chars", type=int, default=400, help="leave out longer many-shot questions")
    ap.add_argument("--n-templates", type=int, default=40, help="AdvBench requests for the template comparison")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = output_dir(args, "many_shot")
    pair = load_default(args.device)
    tok = pair.tokenizer
    shots = [int(s) for s in args.shots.split(",")]
    targets = prompt_sets.harmful_requests(args.n, args.seed)
    pool = datasets.many_shot_examples()
    random.Random(args.seed).shuffle(pool)
    pool = [ex for ex in pool if len(ex["user"]) < args.max_question_chars][:max(shots)]
    if len(pool) < max(shots):
        raise SystemExit(f"only {len(pool)} many-shot examples have questions under {args.max_question_chars} characters")

    rows, curve, rates = [], [], []
    for k in shots:
        context = shots_context(tok, k, pool, args.answer_tokens)
        conversations = [context + [{"role": "user", "content": t["text"]}] for t in targets]
        res = tk.score(pair, [{"id": t["id"], "messages": c} for t, c in zip(targets, conversations)], progress=False)
        rate, completions = harmful_rate(pair, conversations)
        for t, v, n, c in zip(targets, res.tuco, res.n_tokens, completions):
            rows.append({"shots": k, "id": t["id"], "tuco": float(v), "n_tokens": int(n), "completion": c,
                         "harmful_response": not is_refusal(c)})
        curve.append((res.tuco.mean(), res.tuco.std(ddof=1) / np.sqrt(len(res.tuco)) if len(res.tuco) > 1 else 0.0))
        rates.append(100 * rate)
        print(f"{k:4d} shots: TuCo {curve[-1][0]:.4f} ± {curve[-1][1]:.4f}  harmful responses {rates[-1]:.0f}%  "
              f"({res.n_tokens.mean():.0f} tokens)", flush=True)
    frame = pd.DataFrame(rows)
    means = np.array([c[0] for c in curve])
    rho = float(pd.Series(means).rank().corr(pd.Series(shots, dtype=float).rank()))  # Spearman: Pearson on ranks
    lines = ["| shots | " + " | ".join(str(k) for k in shots) + " |", "|---" * (len(shots) + 1) + "|",
             "| TuCo (mean) | " + " | ".join(f"{m:.4f}" for m in means) + " |",
             "| ± sem | " + " | ".join(f"{c[1]:.4f}" for c in curve) + " |",
             "| harmful responses % | " + " | ".join(f"{r:.0f}" for r in rates) + " |",
             "", f"Spearman ρ(TuCo, log2 shots) = {rho:.3f}; TuCo {means[0]:.4f} at {shots[0]} shot(s) → "
                 f"{means[-1]:.4f} at {shots[-1]} ({'falls' if means[-1] < means[0] else 'does not fall'})",
             PAPER]
    line_plot(shots, {"TuCo": (means, [c[1] for c in curve])}, out / "many_shot.png", xlabel="shots",
              ylabel="TuCo (last token)", title=f"many-shot jailbreaking, {args.n} AdvBench requests", logx=True,
              right={"harmful responses %": rates}, right_label="harmful responses [%]",
              error_label="standard error of the mean")

    # jailbreak templates vs plain requests
    requests = prompt_sets.harmful_requests(args.n_templates, args.seed + 1)
    templates = datasets.jailbreak_templates()
    rng = random.Random(args.seed)
    chosen = [rng.choice(templates) for _ in requests]
    plain = [[{"role": "user", "content": r["text"]}] for r in requests]
    wrapped = [[{"role": "user", "content": datasets.wrap(tp, r["text"])}] for r, tp in zip(requests, chosen)]
    res_p = tk.score(pair, [{"id": r["id"], "messages": m} for r, m in zip(requests, plain)], progress=False)
    res_w = tk.score(pair, [{"id": r["id"], "messages": m} for r, m in zip(requests, wrapped)], progress=False)
    rate_p, _ = harmful_rate(pair, plain)
    rate_w, comp_w = harmful_rate(pair, wrapped)
    tframe = pd.DataFrame({"id": [r["id"] for r in requests], "template": [tp["id"] for tp in chosen],
                           "tuco_plain": res_p.tuco, "tuco_template": res_w.tuco, "tokens_template": res_w.n_tokens,
                           "completion_template": comp_w})
    tframe.to_csv(out / "templates.csv", index=False)
    lower = float(np.mean(res_w.tuco < res_p.tuco))
    lines += ["", f"Jailbreak templates ({len(requests)} AdvBench requests, one PyRIT template each; GCG is not "
                  f"available offline): TuCo plain {res_p.tuco.mean():.4f} ± {res_p.tuco.std(ddof=1):.4f} vs "
                  f"wrapped {res_w.tuco.mean():.4f} ± {res_w.tuco.std(ddof=1):.4f}; lower with the template for "
                  f"{100 * lower:.0f}% of requests; AUC plain > wrapped {auc(res_p.tuco, res_w.tuco):.3f}; "
                  f"harmful responses {100 * rate_p:.0f}% plain vs {100 * rate_w:.0f}% wrapped"]
    tuco_histograms({"AdvBench request alone": res_p.tuco, "the same request in a jailbreak template": res_w.tuco},
                    out / "templates_hist.png", "AdvBench requests, alone and wrapped in a PyRIT jailbreak template")
    write_outputs(out, "many_shot", "\n".join(lines), frame,
                  provenance(t0, n=args.n, shots=args.shots, answer_tokens=args.answer_tokens,
                             max_question_chars=args.max_question_chars,
                             n_templates=args.n_templates, seed=args.seed, spearman=round(rho, 4)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
