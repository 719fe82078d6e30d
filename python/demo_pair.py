"""Build the small demo pair from bundled text: a config-built Llama "pre-trained" on encyclopedic
sentences, and a copy "fine-tuned" on chat-formatted conversations (helpful answers and refusals).

Both share the tokenizer (trained here on the same text) and the pre-training, so every difference
between them comes from the fine-tuning. Seeded; takes well under a minute on a 2-core CPU. The
result is cached under .cache/demo-pair/<hash of this recipe and its data>.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
from pathlib import Path

import torch

from tuco_kernels.tiny import build_model, tiny_config, train_tokenizer

HERE = Path(__file__).resolve().parent
DATA = HERE / "demo_data"
RECIPE = dict(vocab=512, hidden=128, layers=4, pretrain_steps=300, finetune_steps=200, finetune_lr=3e-4, batch=16, seed=0)


def _texts():
    web = [line.strip() for line in (DATA / "web.txt").read_text().splitlines() if line.strip()]
    chats = [json.loads(line) for line in (DATA / "chat.jsonl").read_text().splitlines() if line.strip()]
    return web, chats


def _train(model, examples: list[list[int]], steps: int, lr: float, batch: int, seed: int, pad_id: int):
    """Plain next-token training on random mini-batches of token lists (right-padded, pads ignored)."""
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for step in range(steps):
        rows = [examples[rng.randrange(len(examples))] for _ in range(batch)]
        T = max(len(r) for r in rows)
        ids = torch.full((batch, T), pad_id, dtype=torch.long)
        mask = torch.zeros((batch, T), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.detach())


def recipe_hash() -> str:
    h = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode())
    for f in (Path(__file__), DATA / "web.txt", DATA / "chat.jsonl"):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def build_demo_pair(cache_root: Path) -> Path:
    """Train (or reuse) the demo pair; returns the directory holding pt/ and ft/."""
    out = cache_root / f"demo-pair-{recipe_hash()}"
    if (out / "ft" / "model.safetensors").is_file():
        return out
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(RECIPE["seed"])
    web, chats = _texts()
    tok = train_tokenizer(web + [c["user"] + " " + c["assistant"] for c in chats], vocab_size=RECIPE["vocab"])
    cfg = tiny_config("llama", len(tok), hidden=RECIPE["hidden"], layers=RECIPE["layers"],
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    base = build_model(cfg, seed=RECIPE["seed"])
    web_ids = [tok(s)["input_ids"] + [tok.eos_token_id] for s in web]
    loss_pt = _train(base, web_ids, RECIPE["pretrain_steps"], 3e-3, RECIPE["batch"], 1, tok.pad_token_id)
    chat_ids = [tok(tok.apply_chat_template([{"role": "user", "content": c["user"]},
                                             {"role": "assistant", "content": c["assistant"]}], tokenize=False),
                    add_special_tokens=False)["input_ids"] for c in chats]
    tuned = copy.deepcopy(base)
    loss_ft = _train(tuned, chat_ids, RECIPE["finetune_steps"], RECIPE["finetune_lr"], RECIPE["batch"], 2, tok.pad_token_id)
    tmp = out.with_name(out.name + ".partial")
    for name, model in (("pt", base), ("ft", tuned)):
        model.save_pretrained(tmp / name)
        tok.save_pretrained(tmp / name)
    (tmp / "recipe.json").write_text(json.dumps({**RECIPE, "final_loss_pretrain": loss_pt,
                                                 "final_loss_finetune": loss_ft}, indent=2))
    tmp.rename(out)
    return out
