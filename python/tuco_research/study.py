"""Shared plumbing of the studies: output folders, provenance, tables, chat token ids, sampled completions.

The studies are modules of this package, run as ``python -m tuco_research.studies.<name>``; they set
``HF_HUB_OFFLINE=1`` (nothing is fetched from a model hub) through :func:`offline`.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from datetime import date
from pathlib import Path

import torch

import tuco_kernels as tk

ROOT = Path(__file__).resolve().parents[2]   # the checkout (editable install): out/ is written there


def offline() -> None:
    """Nothing from a model hub, and only errors from transformers' logging."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def add_common_args(ap):
    ap.add_argument("--out", type=Path, default=None, help="output folder (default out/studies/<study>)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return ap


def output_dir(args, study: str) -> Path:
    out = args.out or ROOT / "out" / "studies" / study
    out.mkdir(parents=True, exist_ok=True)
    return out


def provenance(started: float, **extra) -> dict:
    """Device, versions, date and wall time of a study run, written beside its table."""
    import transformers

    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = ""
    device = (torch.cuda.get_device_name() if torch.cuda.is_available()
              else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} threads)")
    return {"date": date.today().isoformat(), "device": device, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(), "commit": commit,
            "pair": tk.default_pair.NAME, "seconds": round(time.perf_counter() - started, 1), **extra}


def write_outputs(out: Path, name: str, table: str, frame, meta: dict) -> None:
    """Write <name>.md (the table + provenance), <name>.csv (rows) and <name>.json (provenance), atomically."""
    md = table + "\n\n" + ", ".join(f"{k}: {v}" for k, v in meta.items()) + "\n"
    for suffix, text in ((".md", md), (".json", json.dumps(meta, indent=1))):
        tmp = out / f".{name}{suffix}.part"
        tmp.write_text(text)
        os.replace(tmp, out / f"{name}{suffix}")
    tmp = out / f".{name}.csv.part"
    frame.to_csv(tmp, index=False)
    os.replace(tmp, out / f"{name}.csv")
    print("\n" + md)


def load_default(device: str):
    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    pair = tk.load_pair(device=device)
    print(f"{pair}  [{time.perf_counter() - t0:.0f} s]", flush=True)
    return pair


def chat_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of a conversation rendered with the chat template and the generation prompt."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def stop_ids(tokenizer) -> list[int]:
    """EOS and the chat turn's end token; a tokenizer without ``<end_of_turn>`` maps it to unk, which is left out."""
    ids = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")}
    return sorted(t for t in ids if t is not None and t != tokenizer.unk_token_id)


@torch.no_grad()
def sample_completions(model, tokenizer, ids: list[int], *, n: int = 8, max_new_tokens: int = 30,
                       temperature: float = 0.7, top_p: float = 0.9, seed: int = 0) -> list[str]:
    """``n`` sampled completions (≤ ``max_new_tokens``) of one prompt: one prefill, the KV cache repeated n times.

    ``temperature=0`` decodes greedily (then the n completions are identical; pass n=1).
    """
    device = next(model.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out = model(input_ids=torch.tensor([ids], device=device), use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    cache.batch_repeat_interleave(n)
    logits = out.logits[:, -1].float().repeat(n, 1)
    eos = set(stop_ids(tokenizer))
    tokens = [[] for _ in range(n)]
    done = torch.zeros(n, dtype=torch.bool)
    for _ in range(max_new_tokens):
        if temperature == 0:
            nxt = logits.argmax(-1).cpu()
        else:
            probs = torch.softmax(logits / temperature, -1).cpu()
            sorted_p, order = probs.sort(-1, descending=True)
            keep = sorted_p.cumsum(-1) - sorted_p < top_p
            sorted_p = sorted_p * keep
            pick = torch.multinomial(sorted_p / sorted_p.sum(-1, keepdim=True), 1, generator=gen)
            nxt = order.gather(-1, pick).squeeze(-1)
        for i in range(n):
            if not done[i]:
                if int(nxt[i]) in eos:
                    done[i] = True
                else:
                    tokens[i].append(int(nxt[i]))
        if bool(done.all()):
            break
        out = model(input_ids=nxt[:, None].to(device), past_key_values=cache, use_cache=True)
        cache, logits = out.past_key_values, out.logits[:, -1].float()
    return [tokenizer.decode(t, skip_special_tokens=True) for t in tokens]


@torch.no_grad()
def greedy_completions(model, tokenizer, id_lists: list[list[int]], *, max_new_tokens: int = 30,
                       batch: int = 16) -> list[str]:
    """Greedy completions of many prompts, ``batch`` at a time, left-padded, with HF ``generate``."""
    device = next(model.parameters()).device
    eos = stop_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    order = sorted(range(len(id_lists)), key=lambda i: len(id_lists[i]))  # similar lengths share a batch
    out = [""] * len(id_lists)
    for start in range(0, len(order), batch):
        chunk = order[start:start + batch]
        width = max(len(id_lists[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            ids[row, width - len(id_lists[i]):] = torch.tensor(id_lists[i])
            mask[row, width - len(id_lists[i]):] = 1
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=eos, pad_token_id=pad)
        for row, i in enumerate(chunk):
            out[i] = tokenizer.decode(gen[row, width:], skip_special_tokens=True)
    return out
