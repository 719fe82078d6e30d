"""Study: does TuCo separate chat prompts from web text? (paper §5.2, Table 1 first column)

    python -m tuco_research.studies.web_vs_chat [--n 100]

Three ways of scoring the same texts:
* template (the main number): every text is the user turn of the chat template, so the last token is the same
  template token for all prompts and only the content differs;
* raw: every text as raw text (BOS + text); the last token is then the text's own last token, so the
  comparison also picks up the difference between a question mark and a cut-off sentence;
* mixed (what the paper most likely did: OpenWebText as raw text, HH-RLHF prompts in their chat format):
  web text raw, chat prompts in the template; the scores are those of the two runs above.

The chat set is prompt_sets.chat_prompts (held-out MT-Bench questions and NQ-open, half and half); a second
table breaks the template scores down by source, adding held-out chatterbot openers and AdvBench requests.

Writes web_vs_chat.{md,csv,json} and web_vs_chat_hist.png into out/studies/web_vs_chat/.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from ..plots import tuco_histograms
from ..study import add_common_args, load_default, offline, output_dir, provenance, write_outputs

import tuco_kernels as tk
from .. import prompt_sets
from ..stats import auc

PAPER = "paper Table 1 (HH-RLHF vs OpenWebText): Llama 2 7B/13B 1.0, Llama 3 8B 1.0, Vicuna 0.99, Mistral 0.98/0.89, Gemma 7B 0.93, Zephyr Gemma 0.63"


def main(argv=None) -> int:
    offline()
    ap = add_common_args(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    ap.add_argument("--n", type=int, default=100, help="prompts per set")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = output_dir(args, "web_vs_chat")
    pair = load_default(args.device)
    sets = {"web": prompt_sets.web_text(pair.tokenizer, args.n, args.seed),
            "chat": prompt_sets.chat_prompts(args.n, args.seed)}
    records = [r for rs in sets.values() for r in rs]
    prompts = [{"id": r["id"], "prompt": r["text"]} for r in records]
    extra = {"chatterbot": prompt_sets.chatterbot_prompts(args.n // 2, args.seed),
             "advbench": prompt_sets.harmful_requests(args.n // 2, args.seed)}
    res_extra = {k: tk.score(pair, [r["text"] for r in v], chat=True, progress=False).tuco for k, v in extra.items()}
    rows, summary = [], {}
    for variant, chat in (("template", True), ("raw", False)):
        res = tk.score(pair, prompts, chat=chat, progress=True)
        for r, t, n in zip(records, res.tuco, res.n_tokens):
            rows.append({"variant": variant, "set": r["set"], "id": r["id"], "tuco": float(t), "n_tokens": int(n)})
        by = {s: np.array([x["tuco"] for x in rows if x["variant"] == variant and x["set"] == s]) for s in sets}
        summary[variant] = by
    summary["mixed"] = {"web": summary["raw"]["web"], "chat": summary["template"]["chat"]}
    frame = pd.DataFrame(rows)
    lines = ["| scoring | web TuCo (mean ± sd) | chat TuCo (mean ± sd) | AUC chat > web |", "|---|---|---|---|"]
    for variant, by in summary.items():
        lines.append(f"| {variant} | {by['web'].mean():.4f} ± {by['web'].std(ddof=1):.4f} | "
                     f"{by['chat'].mean():.4f} ± {by['chat'].std(ddof=1):.4f} | {auc(by['chat'], by['web']):.3f} |")
    web_t = summary["template"]["web"]
    by_source = {"MT-Bench (held out)": [x["tuco"] for x in rows if x["variant"] == "template" and x["id"].startswith("mt_bench/")],
                 "NQ-open": [x["tuco"] for x in rows if x["variant"] == "template" and x["id"].startswith("nq_open/")],
                 "chatterbot (held out)": res_extra["chatterbot"], "AdvBench (harmful)": res_extra["advbench"]}
    lines += ["", "| source (template scoring) | n | TuCo (mean ± sd) | AUC > web |", "|---|---|---|---|"]
    for name, v in by_source.items():
        v = np.asarray(v)
        lines.append(f"| {name} | {len(v)} | {v.mean():.4f} ± {v.std(ddof=1):.4f} | {auc(v, web_t):.3f} |")
    lines += ["", PAPER]
    for variant, by in summary.items():
        if variant != "mixed":
            tuco_histograms({"web text (Wikipedia excerpts)": by["web"], "chat prompts": by["chat"]},
                            out / f"web_vs_chat_hist_{variant}.png", f"web text vs chat prompts, {variant} scoring")
    write_outputs(out, "web_vs_chat", "\n".join(lines), frame,
                  provenance(t0, n_per_set=args.n, seed=args.seed,
                             auc_template=round(auc(summary["template"]["chat"], summary["template"]["web"]), 4),
                             auc_raw=round(auc(summary["raw"]["chat"], summary["raw"]["web"]), 4),
                             auc_mixed=round(auc(summary["mixed"]["chat"], summary["mixed"]["web"]), 4)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
